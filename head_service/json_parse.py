"""TF Serving's REST request body parsed as its rapidjson parses it (SRC `util/json_tensor.cc`): rapidjson's error
texts and offsets, the signature name, and JSON values quoted in errors as rapidjson writes them."""

import codecs
import json
import math
import re
from decimal import Decimal

from head_service.errors import HeadError, invalid_argument
from head_service.json_format_tf import F32, JsonWriter, quote, write_decimal

DEFAULT_SIGNATURE = "serving_default"
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
        raise invalid_argument(f"JSON Value: {value_str(doc)} Is not object")
    return doc


def signature_name(doc: dict[str, object]) -> str:
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {value_str(doc)} not formatted correctly. 'signature_name' key must be a string value."
        )
    return name or DEFAULT_SIGNATURE


def value_str(value: object) -> str:
    """JsonValueToString: a bare decimal in float range prints as a float32 would; the rest as rapidjson writes it."""
    if isinstance(value, float):
        in_range = abs(value) <= 3.4028234e38  # rapidjson's IsFloat()
        return write_decimal(F32.unpack(F32.pack(value))[0] if in_range else value, single=in_range)
    writer = JsonWriter()
    _write_json(writer, value)
    return writer.text()


def _write_json(writer: JsonWriter, value: object) -> None:
    if isinstance(value, dict):
        writer.start(array=False)
        for key, item in value.items():
            writer.value(quote(key))
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
        writer.value(quote(value) if isinstance(value, str) else str(value))


def _shortest(value: float) -> str:
    """rapidjson's Writer::Double (shortest round-trip digits, its own exponent layout), for values inside lists and
    objects quoted in errors."""
    if not math.isfinite(value):
        return write_decimal(value, single=False)
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
