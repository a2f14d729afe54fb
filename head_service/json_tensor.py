"""TF Serving's REST `:predict` JSON <-> numpy codec (SRC `util/json_tensor.cc`): its shape and type rules, its error
texts and its rapidjson output format. Pure: bytes and numpy in, numpy and bytes out."""

import base64
import codecs
import json
import math
import re
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from head_service.errors import HeadError, invalid_argument

Array = npt.NDArray[Any]
Convert = Callable[[object], object]

DEFAULT_SIGNATURE = "serving_default"
_FLT_MAX = float(np.finfo(np.float32).max)
_F32 = struct.Struct("<f")
_INT32 = (-(2**31), 2**31 - 1)
# JSON integers each dtype takes; the small ones travel in TensorProto.int_val, so they take any int32 and wrap.
_INT_RANGES = {
    **dict.fromkeys(["int8", "int16", "int32", "uint8"], _INT32),
    "int64": (-(2**63), 2**63 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}
_TF_NAMES = {"float32": "float", "float64": "double", "float16": "half", "object": "string"}
_PARSE_ERRORS = {  # Python's json messages -> rapidjson's
    "Extra data": "The document root must not be followed by other values.",
    "Expecting property name": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Unterminated string": "Missing a closing quotation mark in string.",
    "Invalid control character": "Invalid encoding in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
}
_STRING_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"')
_ESCAPE = re.compile(r'["\\\x00-\x1f]')
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_B64_SPACE = re.compile(r"[ \t\n\v\f\r]")
_B64_DATA = re.compile(r"[A-Za-z0-9+/]*")


@dataclass(frozen=True)
class InputSpec:
    dtype: np.dtype[Any]  # DT_STRING is dtype object holding bytes
    shape: tuple[int | None, ...] | None  # None dims unknown; None = unknown rank


def parse_body(body: bytes) -> dict[str, object]:
    """ParseJson, with rapidjson's messages (and byte offsets) for what Python's json rejects."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    bom = len(codecs.BOM_UTF8) if body.startswith(codecs.BOM_UTF8) else 0  # rapidjson skips a UTF-8 BOM
    try:
        text = body[bom:].decode()
    except UnicodeDecodeError as error:
        raise _parse_error("Invalid encoding in string.", bom + error.start) from None
    if not text.strip(" \t\n\r"):
        raise _parse_error("The document is empty.", len(body))
    try:
        doc = json.loads(text, object_pairs_hook=_first_member, parse_int=_parse_int)
    except json.JSONDecodeError as error:
        message = next((m for p, m in _PARSE_ERRORS.items() if error.msg.startswith(p)), "Invalid value.")
        offset = error.pos
        if message.startswith("Missing a closing"):
            offset = len(text)  # rapidjson reports where the input ran out
        elif message.startswith("Incorrect hex"):
            offset -= 1  # rapidjson reports the backslash, Python the 'u'
        if error.msg.startswith("Expecting ','"):
            inner = _innermost(text[:offset])
            message = f"Missing a comma or '{inner}' after an {'object member' if inner == '}' else 'array element'}."
        raise _parse_error(message, bom + len(text[:offset].encode())) from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: The document is nested too deeply.") from None
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {_value_str(doc)} Is not object")
    return doc


def signature_name(doc: dict[str, object]) -> str:
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {_value_str(doc)} not formatted correctly. 'signature_name' key must be a string value."
        )
    return name or DEFAULT_SIGNATURE


def decode_inputs(doc: dict[str, object], inputs: dict[str, InputSpec]) -> tuple[dict[str, Array], bool]:
    """The input tensors and whether the request used the row (`instances`) format. Shapes are not checked against
    the signature (the model run reports that). As in TF Serving, a `{"b64": ...}` first instance with several
    inputs fills only the first input."""
    if not inputs:
        name = doc.get("signature_name")
        raise invalid_argument(f"Failed to get input map for signature: {name if name else 'DEFAULT'}")
    if "instances" in doc and "inputs" in doc:
        raise invalid_argument(
            f"JSON Value: {_value_str(doc)} Not formatted correctly expecting only one of 'inputs' or 'instances'"
            " keys to exist "
        )
    try:
        if "inputs" in doc:
            return _decode_columns(doc["inputs"], inputs), False
        if "instances" not in doc:
            raise invalid_argument("Missing 'inputs' or 'instances' key")
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid_argument(f"JSON Value: {_value_str(doc)} Excepting 'instances' to be an list/array")
        if not instances:
            raise invalid_argument(f"JSON Value: {_value_str(doc)} No values in 'instances' array")
        return _decode_rows(instances, inputs), True
    except RecursionError:
        raise invalid_argument("JSON Value nested too deeply") from None


def encode_outputs(outputs: dict[str, Array], row_format: bool) -> bytes:
    """MakeJsonFromTensors: the response body, pretty-printed as rapidjson does; string tensors whose name ends in
    `_bytes` go out as `{"b64": ...}`, other strings as their raw bytes."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    outputs = {name: np.asarray(array) for name, array in outputs.items()}
    named = len(outputs) > 1
    writer = _Writer()
    writer.start(array=False)
    if row_format:
        batch = -1
        for name, array in outputs.items():
            if array.ndim == 0:
                raise invalid_argument(f"Tensor name: {name} has no shape information ")
            if batch >= 0 and array.shape[0] != batch:
                raise invalid_argument(
                    f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch}"
                )
            batch = array.shape[0]
        columns = [(name, *_cells(name, array), array.shape[1:]) for name, array in outputs.items()]
        writer.value('"predictions"')
        writer.start(array=True)
        for _ in range(batch):
            if named:
                writer.start(array=False)
            writer.single_line = True
            for name, cells, b64, shape in columns:
                if named:
                    writer.value(_quote(name))
                _write_tensor(writer, cells, b64, shape)
            writer.single_line = False
            if named:
                writer.end()
        writer.end()
    else:
        writer.value('"outputs"')
        if named:
            writer.start(array=False)
        for name, array in outputs.items():
            if named:
                writer.value(_quote(name))
            _write_tensor(writer, *_cells(name, array), array.shape)
        if named:
            writer.end()
    writer.end()
    return writer.text().encode("utf-8", "surrogateescape")


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
                    f"Failed to process element: {index} of 'instances' list. JSON object: {_value_str(instance)}"
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
                f"JSON Value: {_value_str(value)} found at incorrect level: {level + 1} in the JSON DOM."
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
    tf_name = _tf_name(dtype)
    decimal = dtype.kind == "f" and dtype.itemsize in (4, 8)
    max_int, limit = (2**24 - 1, _FLT_MAX) if dtype.itemsize == 4 else (2**53 - 1, sys.float_info.max)
    low, high = _INT_RANGES.get(dtype.name, (1, 0))
    strings, known = dtype.kind == "O", decimal or low <= high or dtype.kind in "bO"

    def convert(value: object) -> object:
        if decimal and type(value) is float and -limit <= value <= limit:  # the common case, first
            return value
        if decimal and isinstance(value, int | float) and not isinstance(value, bool):
            if abs(value) > max_int if isinstance(value, int) else math.isfinite(value) and abs(value) > limit:
                raise invalid_argument(
                    f"Cannot convert JSON value: {_value_str(value)} to {tf_name} without loss of precision."
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
                f"JSON Value: {_value_str(value)} Type: {_json_type(value)} is not of expected type: {tf_name}"
            )
        raise HeadError(
            grpc.StatusCode.UNIMPLEMENTED, f"Conversion of JSON Value: {_value_str(value)} to type: {tf_name}"
        )

    return convert


def _unbase64(value: dict[Any, object]) -> bytes:
    """absl::Base64Unescape: whitespace anywhere, padding ('=' or '.') optional but exact when present."""
    text = value.get("b64")
    if len(value) != 1 or not isinstance(text, str):
        raise invalid_argument(f"JSON Value: {_value_str(value)} not formatted correctly for base64 data")
    data = _B64_SPACE.sub("", text)
    core = data.rstrip("=.")
    padding = len(data) - len(core)
    if not _B64_DATA.fullmatch(core) or len(core) % 4 == 1 or padding not in (0, -len(core) % 4):
        raise invalid_argument("Unable to base64 decode")
    return base64.b64decode(core + "=" * (-len(core) % 4))


def _array(values: list[object], shape: list[int], dtype: np.dtype[Any]) -> Array:
    dtype = np.dtype(dtype)
    if dtype.name in _INT_RANGES:  # build wide, then wrap to the narrow type as TensorProto.int_val does
        wide = np.array(values, dtype=np.uint64 if dtype.name == "uint64" else np.int64)
        return wide.astype(dtype).reshape(shape)
    return np.array(values, dtype=dtype).reshape(shape)


def _cells(name: str, array: Array) -> tuple[Iterator[str], bool]:
    """AddSingleValueAndAdvance: each value's JSON text in row-major order, and whether strings go out as b64."""
    dtype, values = array.dtype, array.ravel().tolist()
    if dtype.kind == "f" and dtype.itemsize in (4, 8):
        return iter([_decimal(v, single=dtype.itemsize == 4) for v in values]), False
    if dtype.name in _INT_RANGES:
        return iter([str(v) for v in values]), False
    if dtype.kind == "b":
        return iter(["true" if v else "false" for v in values]), False
    if dtype.kind in "OSU":
        raw = [v.encode() if isinstance(v, str) else bytes(v) for v in values]
        if name.endswith("_bytes"):
            return iter([_quote(base64.b64encode(v).decode()) for v in raw]), True
        return iter([_quote(v.decode("utf-8", "surrogateescape")) for v in raw]), False
    if values:
        raise invalid_argument(f"Failed to write JSON value for tensor type: {_tf_name(dtype)}")
    return iter([]), False


def _write_tensor(writer: "_Writer", cells: Iterator[str], b64: bool, shape: tuple[int, ...]) -> None:
    """AddTensorValues: nested lists; a rank-0 tensor is a bare value."""
    if shape:
        writer.start(array=True)
        for _ in range(shape[0]):
            _write_tensor(writer, cells, b64, shape[1:])
        writer.end()
    elif b64:
        writer.start(array=False)
        writer.value('"b64"')
        writer.value(next(cells))
        writer.end()
    else:
        writer.value(next(cells))


class _Writer:
    """rapidjson's PrettyWriter (4-space indent), which writes TF Serving's bodies and the JSON its errors quote."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.stack: list[list[int]] = []  # per open container: [is array, values written]
        self.single_line = False  # kFormatSingleLineArray: arrays on one line, ", " between values

    def _prefix(self) -> None:
        if not self.stack:
            return
        level = self.stack[-1]
        indent = "\n" + "    " * len(self.stack)
        if level[0]:
            if level[1]:
                self.parts.append(", " if self.single_line else ",")
            if not self.single_line:
                self.parts.append(indent)
        elif level[1] % 2:
            self.parts.append(": ")
        else:
            self.parts.append(("," if level[1] else "") + indent)
        level[1] += 1

    def value(self, text: str) -> None:
        self._prefix()
        self.parts.append(text)

    def start(self, array: bool) -> None:
        self._prefix()
        self.parts.append("[" if array else "{")
        self.stack.append([array, 0])

    def end(self) -> None:
        array, count = self.stack.pop()
        if count and not (array and self.single_line):
            self.parts.append("\n" + "    " * len(self.stack))
        self.parts.append("]" if array else "}")

    def text(self) -> str:
        return "".join(self.parts)


def _value_str(value: object) -> str:
    """JsonValueToString: a bare decimal in float range prints as a float32 would; the rest as rapidjson writes it."""
    if isinstance(value, float):
        in_range = abs(value) <= 3.4028234e38  # rapidjson's IsFloat()
        return _decimal(_F32.unpack(_F32.pack(value))[0] if in_range else value, single=in_range)
    writer = _Writer()
    _write_json(writer, value)
    return writer.text()


def _write_json(writer: _Writer, value: object) -> None:
    if isinstance(value, dict):
        writer.start(array=False)
        for key, item in value.items():
            writer.value(_quote(key))
            _write_json(writer, item)
        writer.end()
    elif isinstance(value, list):
        writer.start(array=True)
        for item in value:
            _write_json(writer, item)
        writer.end()
    elif value is None or isinstance(value, bool):
        writer.value({None: "null", True: "true", False: "false"}[value])
    elif isinstance(value, float):
        writer.value(_shortest(value))
    else:
        writer.value(_quote(value) if isinstance(value, str) else str(value))


def _decimal(value: float, single: bool) -> str:
    """WriteDecimal: 6 significant digits, or 9 (float) / 17 (double) if 6 do not round-trip; whole numbers get
    '.0' unless in exponent form."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = f"{value:.6g}"
    back = float(text)
    if (_F32.unpack(_F32.pack(back))[0] if single else back) != value:
        text = f"{value:.{9 if single else 17}g}"
    return text if "." in text or "e" in text else text + ".0"


def _shortest(value: float) -> str:
    """rapidjson's Writer::Double (shortest round-trip digits, its own exponent layout), for values inside lists and
    objects quoted in errors."""
    if not math.isfinite(value):
        return _decimal(value, single=False)
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    k = exponent + len(digit_tuple) - len(digits)
    kk = len(digits) + k  # 10^(kk-1) <= value < 10^kk
    if k >= 0 and kk <= 21:
        text = digits + "0" * k + ".0"
    elif 0 < kk <= 21:
        text = f"{digits[:kk]}.{digits[kk:]}"
    elif -6 < kk <= 0:
        text = "0." + "0" * -kk + digits
    else:
        text = f"{digits[0]}{'.' + digits[1:] if len(digits) > 1 else ''}e{kk - 1}"
    return ("-" if value < 0 else "") + text


def _quote(text: str) -> str:
    return '"' + _ESCAPE.sub(lambda m: _ESCAPES.get(m[0], f"\\u{ord(m[0]):04X}"), text) + '"'


def _json_type(value: object) -> str:
    if value is None or isinstance(value, bool):
        return {None: "Null", True: "True", False: "False"}[value]
    if isinstance(value, dict | list | str):
        return "Object" if isinstance(value, dict) else "Array" if isinstance(value, list) else "String"
    return "Number"


def _is_named(value: object) -> bool:
    """An object of named tensors, as opposed to a `{"b64": "..."}` string value."""
    return isinstance(value, dict) and not (len(value) == 1 and isinstance(value.get("b64"), str))


def _tf_name(dtype: np.dtype[Any]) -> str:
    return _TF_NAMES.get(dtype.name, dtype.name)


def _shape_str(shape: list[int]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def _status(error: HeadError) -> str:
    return f"{error.code.name}: {error.message}"  # Status::ToString()


def _parse_error(message: str, offset: int) -> HeadError:
    return invalid_argument(f"JSON Parse error: {message} at offset: {offset}")


def _innermost(text: str) -> str:
    """The closing bracket of the innermost container still open at the end of `text`."""
    stack = []
    for char in _STRING_TOKEN.sub("", text):
        if char in "[{":
            stack.append("]" if char == "[" else "}")
        elif char in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else "]"


def _first_member(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """rapidjson's FindMember finds the first of duplicate keys (Python's json keeps the last)."""
    obj: dict[str, object] = {}
    for key, value in pairs:
        obj.setdefault(key, value)
    return obj


def _parse_int(token: str) -> int | float:
    """rapidjson keeps integers that fit int64 or uint64; larger ones become doubles."""
    if len(token) <= 21:  # longer ones cannot fit (and int() caps digit counts)
        value = int(token)
        if -(2**63) <= value < 2**64:
            return value
    return float(token)
