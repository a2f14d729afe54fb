"""TF Serving's JSON formatting that its request and response sides share (SRC `util/json_tensor.cc`): rapidjson's
pretty writer, its string quoting and number format, and the TF dtype names and JSON integer ranges."""

import math
import re
import struct
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]

F32 = struct.Struct("<f")
_INT32 = (-(2**31), 2**31 - 1)
# JSON integers each dtype takes; the small ones travel in TensorProto.int_val, so they take any int32 and wrap.
INT_RANGES = {
    **dict.fromkeys(["int8", "int16", "int32", "uint8"], _INT32),
    "int64": (-(2**63), 2**63 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}
_TF_NAMES = {"float32": "float", "float64": "double", "float16": "half", "object": "string"}
_ESCAPE = re.compile(r'["\\\x00-\x1f]')
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


class JsonWriter:
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


def write_decimal(value: float, single: bool) -> str:
    """WriteDecimal: 6 significant digits, or 9 (float) / 17 (double) if 6 do not round-trip; whole numbers get
    '.0' unless in exponent form."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = f"{value:.6g}"
    back = float(text)
    if (F32.unpack(F32.pack(back))[0] if single else back) != value:
        text = f"{value:.{9 if single else 17}g}"
    return text if "." in text or "e" in text else text + ".0"


def quote(text: str) -> str:
    return '"' + _ESCAPE.sub(lambda m: _ESCAPES.get(m[0], f"\\u{ord(m[0]):04X}"), text) + '"'


def tf_dtype_name(dtype: np.dtype[Any]) -> str:
    return _TF_NAMES.get(dtype.name, dtype.name)
