"""TF Serving's REST request body as rapidjson parses it, and its signature name: protocol spec sections 1.3 and
1.6, exact messages and offsets."""

import json

import grpc
import numpy as np
import pytest

from head_service.errors import HeadError
from head_service.json_parse import parse_body, signature_name

# --- parse_body -------------------------------------------------------------------------------------------------------

PARSE_ERRORS = [
    (b"", "JSON Parse error: The document is empty"),
    (b" \n\t", "JSON Parse error: The document is empty. at offset: 3"),
    (b"x", "JSON Parse error: Invalid value. at offset: 0"),
    (b'{"a": x}', "JSON Parse error: Invalid value. at offset: 6"),
    ('{"é": x}'.encode(), "JSON Parse error: Invalid value. at offset: 7"),  # a byte offset, as rapidjson's
    (b"\xef\xbb\xbfx", "JSON Parse error: Invalid value. at offset: 3"),  # after a UTF-8 BOM
    (b"{", "JSON Parse error: Missing a name for object member. at offset: 1"),
    (b"{a: 1}", "JSON Parse error: Missing a name for object member. at offset: 1"),
    (b'{"a" 1}', "JSON Parse error: Missing a colon after a name of object member. at offset: 5"),
    (b'{"a": 1 "b": 2}', "JSON Parse error: Missing a comma or '}' after an object member. at offset: 8"),
    (b'{"a": "[" 1}', "JSON Parse error: Missing a comma or '}' after an object member. at offset: 10"),
    (b"[1 2]", "JSON Parse error: Missing a comma or ']' after an array element. at offset: 3"),
    (b'{"a": [1 2]}', "JSON Parse error: Missing a comma or ']' after an array element. at offset: 9"),
    (b"{} {}", "JSON Parse error: The document root must not be followed by other values. at offset: 3"),
    (b'{"a": "x', "JSON Parse error: Missing a closing quotation mark in string. at offset: 8"),
    (b'{"a": "\\q"}', "JSON Parse error: Invalid escape character in string. at offset: 7"),
    (b'{"a": "\\u12G4"}', "JSON Parse error: Incorrect hex digit after \\u escape in string. at offset: 7"),
    (b'{"a": "\x01"}', "JSON Parse error: Invalid encoding in string. at offset: 7"),
    (b'{"a": "\xff"}', "JSON Parse error: Invalid encoding in string. at offset: 7"),
    (b"[" * 100_000 + b"]" * 100_000, "JSON Parse error: The document is nested too deeply."),
    (b"[1, 2]", "JSON Value: [\n    1,\n    2\n] Is not object"),
    (b"3.5", "JSON Value: 3.5 Is not object"),
    (b'"s"', 'JSON Value: "s" Is not object'),
    (b"null", "JSON Value: null Is not object"),
]


@pytest.mark.parametrize(("body", "message"), PARSE_ERRORS)
def test_parse_errors(body: bytes, message: str) -> None:
    with pytest.raises(HeadError) as caught:
        parse_body(body)
    assert (caught.value.code, caught.value.message) == (grpc.StatusCode.INVALID_ARGUMENT, message)


def test_parse_accepts_non_finite_tokens_and_a_bom() -> None:
    doc = parse_body(b'\xef\xbb\xbf{"a": [NaN, Infinity, -Infinity]}')
    values = doc["a"]
    assert isinstance(values, list)
    assert np.isnan(values[0])
    assert values[1:] == [float("inf"), float("-inf")]


def test_parse_keeps_the_first_of_duplicate_keys_like_rapidjson() -> None:
    assert parse_body(b'{"a": 1, "b": 2, "a": 3}') == {"a": 1, "b": 2}


def test_parse_turns_integers_beyond_64_bits_into_doubles() -> None:
    doc = parse_body(b'{"u": 18446744073709551615, "big": 18446744073709551616, "neg": -9223372036854775809}')
    assert doc == {"u": 2**64 - 1, "big": 2.0**64, "neg": -(2.0**63)}
    assert [type(v) for v in doc.values()] == [int, float, float]


# --- signature_name -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "name"),
    [({}, "serving_default"), ({"signature_name": ""}, "serving_default"), ({"signature_name": "foo"}, "foo")],
)
def test_signature_name(doc: dict[str, object], name: str) -> None:
    assert signature_name(doc) == name


@pytest.mark.parametrize("value", [1, None, ["a"]])
def test_signature_name_must_be_a_string(value: object) -> None:
    doc = {"signature_name": value, "instances": [1]}
    with pytest.raises(HeadError) as caught:
        signature_name(doc)
    error = caught.value
    pretty = json.dumps(value, indent=4).replace("\n", "\n    ")
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == (
        f'JSON Value: {{\n    "signature_name": {pretty},\n    "instances": [\n        1\n    ]\n}} '
        "not formatted correctly. 'signature_name' key must be a string value."
    )
