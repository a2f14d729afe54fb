"""TF Serving's REST request JSON -> numpy input tensors (SRC `util/json_tensor.cc`): the row (`instances`) and
columnar (`inputs`) formats, their shape and type rules and error texts. Pure: parsed JSON in, numpy out."""

import base64
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from head_service.errors import HeadError, invalid_argument
from head_service.json_format_tf import INT_RANGES, Array, tf_dtype_name
from head_service.json_parse import value_str

Convert = Callable[[object], object]

_FLT_MAX = float(np.finfo(np.float32).max)
_B64_SPACE = re.compile(r"[ \t\n\v\f\r]")
_B64_DATA = re.compile(r"[A-Za-z0-9+/]*")


@dataclass(frozen=True)
class InputSpec:
    dtype: np.dtype[Any]  # DT_STRING is dtype object holding bytes
    shape: tuple[int | None, ...] | None  # None dims unknown; None = unknown rank


def decode_inputs(doc: dict[str, object], inputs: dict[str, InputSpec]) -> tuple[dict[str, Array], bool]:
    """The input tensors and whether the request used the row (`instances`) format. Shapes are not checked against
    the signature (the model run reports that). As in TF Serving, a `{"b64": ...}` first instance with several
    inputs fills only the first input."""
    if not inputs:
        name = doc.get("signature_name")
        raise invalid_argument(f"Failed to get input map for signature: {name if name else 'DEFAULT'}")
    if "instances" in doc and "inputs" in doc:
        raise invalid_argument(
            f"JSON Value: {value_str(doc)} Not formatted correctly expecting only one of 'inputs' or 'instances'"
            " keys to exist "
        )
    try:
        if "inputs" in doc:
            return _decode_columns(doc["inputs"], inputs), False
        if "instances" not in doc:
            raise invalid_argument("Missing 'inputs' or 'instances' key")
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid_argument(f"JSON Value: {value_str(doc)} Excepting 'instances' to be an list/array")
        if not instances:
            raise invalid_argument(f"JSON Value: {value_str(doc)} No values in 'instances' array")
        return _decode_rows(instances, inputs), True
    except RecursionError:
        raise invalid_argument("JSON Value nested too deeply") from None


def _decode_rows(instances: list[object], inputs: dict[str, InputSpec]) -> dict[str, Array]:
    """FillTensorMapFromInstancesList: one row per instance, every row the size and shape of the first."""
    if not isinstance(instances[0], dict) and len(inputs) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors required as per"
            " tensorinfo_map"
        )
    converters = {name: _converter(np.dtype(spec.dtype)) for name, spec in inputs.items()}
    values: dict[str, list[object]] = {}
    shapes: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}

    def add(item: object, name: str) -> None:
        if name not in inputs:
            raise invalid_argument(f"JSON object: does not have named input: {name}")
        shape = _shape_of(item)
        out: list[object] = []
        _fill(item, 0, shape, converters[name], out)
        if name not in sizes:
            sizes[name], shapes[name], values[name] = len(out), shape, out
            return
        if len(out) != sizes[name]:
            raise invalid_argument(f"Expecting tensor size: {sizes[name]} but got: {len(out)}")
        if shape != shapes[name]:
            raise invalid_argument(f"Expecting shape {_shape_str(shapes[name])} but got: {_shape_str(shape)}")
        values[name].extend(out)

    named = _is_named(instances[0])
    for index, instance in enumerate(instances):
        if named:
            if not isinstance(instance, dict) or not _is_named(instance):
                raise invalid_argument(f"Expecting object but got list at item {index} of input list")
            for key, item in instance.items():
                try:
                    add(item, key)
                except HeadError as error:
                    raise invalid_argument(
                        f"Failed to process element: {index} key: {key} of 'instances' list. Error: {_status(error)}"
                    ) from None
            if set(instance) != set(inputs):
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: {value_str(instance)}"
                    f" keys must be equal to: {','.join(sorted(inputs))}"
                )
        else:
            if _is_named(instance):
                raise invalid_argument(f"Expecting value/list but got object at item {index} of input list")
            try:
                add(instance, next(iter(inputs)))
            except HeadError as error:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. Error: {_status(error)}"
                ) from None
    return {name: _array(values[name], [len(instances), *shapes[name]], inputs[name].dtype) for name in values}


def _decode_columns(value: object, inputs: dict[str, InputSpec]) -> dict[str, Array]:
    """FillTensorMapFromInputsMap: one tensor per named input (extra keys ignored), or the bare tensor of one input."""
    if not isinstance(value, dict) or not _is_named(value):
        if len(inputs) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors required as per"
                " tensorinfo_map"
            )
        name, spec = next(iter(inputs.items()))
        return {name: _tensor(value, np.dtype(spec.dtype))}
    tensors = {}
    for name, spec in inputs.items():
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = _tensor(value[name], np.dtype(spec.dtype))
    return tensors


def _tensor(value: object, dtype: np.dtype[Any]) -> Array:
    shape = _shape_of(value)
    out: list[object] = []
    _fill(value, 0, shape, _converter(dtype), out)
    return _array(out, shape, dtype)


def _shape_of(value: object) -> list[int]:
    """GetDenseTensorShape: the first element decides each level."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: object, level: int, shape: list[int], convert: Convert, out: list[object]) -> None:
    """FillTensorProto: every leaf at depth len(shape), every list as long as the shape says."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {value_str(value)} found at incorrect level: {level + 1} in the JSON DOM."
                f" Expected at level: {rank}"
            )
        out.append(convert(value))
    elif level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    elif len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: {shape[level]}"
        )
    elif level == rank - 1 and not any(isinstance(item, list) for item in value):
        out.extend(map(convert, value))  # the innermost list, without a call per value
    else:
        for item in value:
            _fill(item, level + 1, shape, convert, out)


def _converter(dtype: np.dtype[Any]) -> Convert:
    """AddValueToTensor: the JSON values each dtype takes."""
    tf_name = tf_dtype_name(dtype)
    decimal = dtype.kind == "f" and dtype.itemsize in (4, 8)
    max_int, limit = (2**24 - 1, _FLT_MAX) if dtype.itemsize == 4 else (2**53 - 1, sys.float_info.max)
    low, high = INT_RANGES.get(dtype.name, (1, 0))
    strings, known = dtype.kind == "O", decimal or low <= high or dtype.kind in "bO"

    def convert(value: object) -> object:
        if decimal and type(value) is float and -limit <= value <= limit:  # the common case, first
            return value
        if decimal and isinstance(value, int | float) and not isinstance(value, bool):
            if abs(value) > max_int if isinstance(value, int) else math.isfinite(value) and abs(value) > limit:
                raise invalid_argument(
                    f"Cannot convert JSON value: {value_str(value)} to {tf_name} without loss of precision."
                )
            return value
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return value
        if isinstance(value, bool) and dtype.kind == "b":
            return value
        if strings and isinstance(value, str | dict):
            return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else _unbase64(value)
        if known or isinstance(value, dict):
            raise invalid_argument(
                f"JSON Value: {value_str(value)} Type: {_json_type(value)} is not of expected type: {tf_name}"
            )
        raise HeadError(
            grpc.StatusCode.UNIMPLEMENTED, f"Conversion of JSON Value: {value_str(value)} to type: {tf_name}"
        )

    return convert


def _unbase64(value: dict[Any, object]) -> bytes:
    """absl::Base64Unescape: whitespace anywhere, padding ('=' or '.') optional but exact when present."""
    text = value.get("b64")
    if len(value) != 1 or not isinstance(text, str):
        raise invalid_argument(f"JSON Value: {value_str(value)} not formatted correctly for base64 data")
    data = _B64_SPACE.sub("", text)
    core = data.rstrip("=.")
    padding = len(data) - len(core)
    if not _B64_DATA.fullmatch(core) or len(core) % 4 == 1 or padding not in (0, -len(core) % 4):
        raise invalid_argument("Unable to base64 decode")
    return base64.b64decode(core + "=" * (-len(core) % 4))


def _array(values: list[object], shape: list[int], dtype: np.dtype[Any]) -> Array:
    dtype = np.dtype(dtype)
    if dtype.name in INT_RANGES:  # build wide, then wrap to the narrow type as TensorProto.int_val does
        wide = np.array(values, dtype=np.uint64 if dtype.name == "uint64" else np.int64)
        return wide.astype(dtype).reshape(shape)
    return np.array(values, dtype=dtype).reshape(shape)


def _json_type(value: object) -> str:
    if value is None or isinstance(value, bool):
        return {None: "Null", True: "True", False: "False"}[value]
    if isinstance(value, dict | list | str):
        return "Object" if isinstance(value, dict) else "Array" if isinstance(value, list) else "String"
    return "Number"


def _is_named(value: object) -> bool:
    """An object of named tensors, as opposed to a `{"b64": "..."}` string value."""
    return isinstance(value, dict) and not (len(value) == 1 and isinstance(value.get("b64"), str))


def _shape_str(shape: list[int]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def _status(error: HeadError) -> str:
    return f"{error.code.name}: {error.message}"  # Status::ToString()
