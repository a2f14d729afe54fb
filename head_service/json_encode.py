"""numpy output tensors -> TF Serving's REST response body (SRC `util/json_tensor.cc`, MakeJsonFromTensors), byte for
byte as its rapidjson writer prints it. Pure: numpy in, bytes out."""

import base64
from collections.abc import Iterator

import numpy as np

from head_service.errors import invalid_argument
from head_service.json_format_tf import INT_RANGES, Array, JsonWriter, quote, tf_dtype_name, write_decimal


def encode_outputs(outputs: dict[str, Array], row_format: bool) -> bytes:
    """MakeJsonFromTensors: the response body, pretty-printed as rapidjson does; string tensors whose name ends in
    `_bytes` go out as `{"b64": ...}`, other strings as their raw bytes."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    outputs = {name: np.asarray(array) for name, array in outputs.items()}
    named = len(outputs) > 1
    writer = JsonWriter()
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
                    writer.value(quote(name))
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
                writer.value(quote(name))
            _write_tensor(writer, *_cells(name, array), array.shape)
        if named:
            writer.end()
    writer.end()
    return writer.text().encode("utf-8", "surrogateescape")


def _cells(name: str, array: Array) -> tuple[Iterator[str], bool]:
    """AddSingleValueAndAdvance: each value's JSON text in row-major order, and whether strings go out as b64."""
    dtype, values = array.dtype, array.ravel().tolist()
    if dtype.kind == "f" and dtype.itemsize in (4, 8):
        return iter([write_decimal(v, single=dtype.itemsize == 4) for v in values]), False
    if dtype.name in INT_RANGES:
        return iter([str(v) for v in values]), False
    if dtype.kind == "b":
        return iter(["true" if v else "false" for v in values]), False
    if dtype.kind in "OSU":
        raw = [v.encode() if isinstance(v, str) else bytes(v) for v in values]
        if name.endswith("_bytes"):
            return iter([quote(base64.b64encode(v).decode()) for v in raw]), True
        return iter([quote(v.decode("utf-8", "surrogateescape")) for v in raw]), False
    if values:
        raise invalid_argument(f"Failed to write JSON value for tensor type: {tf_dtype_name(dtype)}")
    return iter([]), False


def _write_tensor(writer: JsonWriter, cells: Iterator[str], b64: bool, shape: tuple[int, ...]) -> None:
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
