"""TF Serving's REST request JSON -> input tensors: every rule of protocol spec sections 1.3 and 1.6, exact messages."""

import json
from typing import Any

import grpc
import numpy as np
import pytest

from head_service.errors import HeadError
from head_service.json_decode import InputSpec, decode_inputs
from head_service.json_encode import encode_outputs
from head_service.json_parse import parse_body


def spec(dtype: str, shape: tuple[int | None, ...] | None = None) -> InputSpec:
    return InputSpec(np.dtype(dtype), shape)


F32 = {"x": spec("float32", (None, 4))}
AB = {"a": spec("float32", (None, 2)), "b": spec("object", (None,))}


def decode(body: object, inputs: dict[str, InputSpec]) -> tuple[dict[str, np.ndarray], bool]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return decode_inputs(parse_body(raw), inputs)


def error_of(call: Any, *args: Any) -> HeadError:
    with pytest.raises(HeadError) as caught:
        call(*args)
    return caught.value


def assert_arrays(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name, array in want.items():
        assert got[name].dtype == array.dtype, name
        assert got[name].shape == array.shape, name
        np.testing.assert_array_equal(got[name], array)


# --- decode_inputs: what is accepted ----------------------------------------------------------------------------------

DECODED = [
    (  # row, one input: a matrix, one row per instance
        {"instances": [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]},
        F32,
        {"x": np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32)},
        True,
    ),
    ({"instances": [1.0, 2, 5.5]}, {"x": spec("float32")}, {"x": np.array([1, 2, 5.5], np.float32)}, True),
    (  # row, one input, objects keyed by its name
        {"instances": [{"x": [1.0, 2.0]}, {"x": [3.0, 4.0]}]},
        {"x": spec("float32")},
        {"x": np.array([[1, 2], [3, 4]], np.float32)},
        True,
    ),
    (  # row, several inputs; other top-level keys are ignored
        {"instances": [{"a": [1.0, 2.0], "b": "x"}, {"b": "y", "a": [3.0, 4.0]}], "extra": 1},
        AB,
        {"a": np.array([[1, 2], [3, 4]], np.float32), "b": np.array([b"x", b"y"], object)},
        True,
    ),
    (  # row, b64 strings
        {"instances": [{"b64": "aGVsbG8="}, {"b64": "aGk"}]},
        {"s": spec("object")},
        {"s": np.array([b"hello", b"hi"], object)},
        True,
    ),
    (  # columnar, several inputs; extra keys are ignored
        {"inputs": {"a": [[1.0, 2.0], [3.0, 4.0]], "b": ["x", "y"], "zzz": 3}},
        AB,
        {"a": np.array([[1, 2], [3, 4]], np.float32), "b": np.array([b"x", b"y"], object)},
        False,
    ),
    ({"inputs": [[1.0, 2.0, 3.0, 4.0]]}, F32, {"x": np.array([[1, 2, 3, 4]], np.float32)}, False),
    ({"inputs": {"x": [[1.0, 2.0]]}}, F32, {"x": np.array([[1, 2]], np.float32)}, False),
    ({"inputs": 2.5}, F32, {"x": np.array(2.5, np.float32)}, False),  # a scalar
    ({"inputs": {"b64": "aGk="}}, {"s": spec("object")}, {"s": np.array(b"hi", object)}, False),
    ({"inputs": []}, F32, {"x": np.zeros((0,), np.float32)}, False),
    ({"instances": [[], []]}, F32, {"x": np.zeros((2, 0), np.float32)}, True),
    (  # TF Serving's own MultipleNamedTensor case
        {
            "instances": [
                {"i": [[1, 2], [3, 4], [5, 6]], "s": ["foo", "bar"], "f": [1.0, float("nan")], "d": [float("nan")]},
                {"i": [[7, 8], [9, 0], [1, 2]], "s": ["baz", "bat"], "f": [2.0, float("inf")], "d": [2.0]},
            ]
        },
        {"i": spec("int32"), "s": spec("object"), "f": spec("float32"), "d": spec("float64")},
        {
            "i": np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], np.int32),
            "s": np.array([[b"foo", b"bar"], [b"baz", b"bat"]], object),
            "f": np.array([[1, np.nan], [2, np.inf]], np.float32),
            "d": np.array([[np.nan], [2]], np.float64),
        },
        True,
    ),
]


@pytest.mark.parametrize(("body", "inputs", "arrays", "row_format"), DECODED)
def test_decode(body: object, inputs: dict[str, InputSpec], arrays: dict[str, np.ndarray], row_format: bool) -> None:
    got, got_row_format = decode(body, inputs)
    assert got_row_format is row_format
    assert_arrays(got, arrays)


TYPED = [
    ("float32", [0.1, 16777215, -16777215, 3.4e38], np.array([0.1, 16777215, -16777215, 3.4e38], np.float32)),
    ("float64", [0.1, 9007199254740991, 1e300], np.array([0.1, 9007199254740991, 1e300], np.float64)),
    ("int32", [2**31 - 1, -(2**31)], np.array([2**31 - 1, -(2**31)], np.int32)),
    ("int64", [2**63 - 1, -(2**63)], np.array([2**63 - 1, -(2**63)], np.int64)),
    ("int16", [-5, 70000], np.array([-5, 70000 - 2**16], np.int16)),  # int_val wraps to the narrow type
    ("int8", [127, -129], np.array([127, 127], np.int8)),
    ("uint8", [255, 300, -1], np.array([255, 44, 255], np.uint8)),
    ("bool", [True, False], np.array([True, False])),
    ("object", ["é", "a\x00b", {"b64": " aG k= "}], np.array(["é".encode(), b"a\x00b", b"hi"], object)),
]


@pytest.mark.parametrize(("dtype", "values", "array"), TYPED)
def test_decode_dtypes(dtype: str, values: list[object], array: np.ndarray) -> None:
    got, _ = decode({"inputs": values}, {"t": spec(dtype)})
    assert_arrays(got, {"t": array})


def test_decode_non_finite_floats() -> None:
    got, _ = decode(b'{"instances": [NaN, Infinity, -Infinity]}', {"x": spec("float32")})
    assert got["x"].dtype == np.float32
    assert np.isnan(got["x"][0])
    assert list(got["x"][1:]) == [np.inf, -np.inf]


def test_decode_floats_round_like_a_cast_from_double() -> None:
    got, _ = decode({"inputs": [0.1, 1e-50, 3.141592653589793]}, {"x": spec("float32")})
    assert got["x"].tolist() == [np.float32(0.1), 0.0, np.float32(np.pi)]


# --- decode_inputs: what is rejected, with TF Serving's message ------------------------------------------------------

ELEMENT_0 = "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
ELEMENT_1 = "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
INT32 = {"x": spec("int32")}
STRING = {"x": spec("object")}

DECODE_ERRORS = [
    ({"signature_name": "s"}, F32, "Missing 'inputs' or 'instances' key"),
    (
        {"inputs": {"a": 1}, "instances": [1]},
        F32,
        'JSON Value: {\n    "inputs": {\n        "a": 1\n    },\n    "instances": [\n        1\n    ]\n} Not formatted'
        " correctly expecting only one of 'inputs' or 'instances' keys to exist ",
    ),
    ({"instances": 1}, F32, "JSON Value: {\n    \"instances\": 1\n} Excepting 'instances' to be an list/array"),
    ({"instances": []}, F32, "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array"),
    (
        {"instances": [[1.0, 2.0], [3.0, 4.0]]},
        AB,
        "instances is a plain list, but expecting list of objects as multiple input tensors required as per"
        " tensorinfo_map",
    ),
    (
        {"instances": [{"a": [1.0, 2.0]}]},
        AB,
        "Failed to process element: 0 of 'instances' list. JSON object: {\n    \"a\": [\n        1.0,\n        2.0\n"
        "    ]\n} keys must be equal to: a,b",
    ),
    (
        {"instances": [{"a": [1.0, 2.0], "b": "x", "c": 1}]},
        AB,
        "Failed to process element: 0 key: c of 'instances' list. Error: INVALID_ARGUMENT: JSON object: does not have"
        " named input: c",
    ),
    (
        {"instances": [{"a": [1.0, 2.0], "b": "x"}, {"a": [1.0], "b": "y"}]},
        AB,
        "Failed to process element: 1 key: a of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2"
        " but got: 1",
    ),
    (
        {"instances": [{"a": [1.0, 2.0], "b": "x"}, [1.0]]},
        AB,
        "Expecting object but got list at item 1 of input list",
    ),
    ({"instances": [[1.0], {"x": [1.0]}]}, F32, "Expecting value/list but got object at item 1 of input list"),
    ({"inputs": {"a": [[1.0, 2.0]], "c": 1}}, AB, "Missing named input: b in 'inputs' object."),
    (
        {"inputs": [[1.0, 2.0]]},
        AB,
        "inputs is a plain value/list, but expecting an object as multiple input tensors required as per"
        " tensorinfo_map",
    ),
    ({"instances": ["x"]}, F32, ELEMENT_0 + 'JSON Value: "x" Type: String is not of expected type: float'),
    ({"inputs": ["x"]}, F32, 'JSON Value: "x" Type: String is not of expected type: float'),  # columnar: unwrapped
    ({"instances": [1, 1.0]}, INT32, ELEMENT_1 + "JSON Value: 1.0 Type: Number is not of expected type: int32"),
    ({"inputs": [3.14159265]}, INT32, "JSON Value: 3.14159274 Type: Number is not of expected type: int32"),
    ({"inputs": [2**31]}, INT32, "JSON Value: 2147483648 Type: Number is not of expected type: int32"),
    ({"inputs": [2**31]}, {"x": spec("int8")}, "JSON Value: 2147483648 Type: Number is not of expected type: int8"),
    (
        {"inputs": [2**63]},
        {"x": spec("int64")},
        "JSON Value: 9223372036854775808 Type: Number is not of expected type: int64",
    ),
    ({"inputs": [1]}, {"x": spec("bool")}, "JSON Value: 1 Type: Number is not of expected type: bool"),
    ({"inputs": [True]}, F32, "JSON Value: true Type: True is not of expected type: float"),
    ({"inputs": [False]}, INT32, "JSON Value: false Type: False is not of expected type: int32"),
    ({"inputs": [None]}, F32, "JSON Value: null Type: Null is not of expected type: float"),
    ({"inputs": [1]}, STRING, "JSON Value: 1 Type: Number is not of expected type: string"),
    (
        {"inputs": [["x"], "y"]},
        STRING,
        'JSON Value: "y" found at incorrect level: 2 in the JSON DOM. Expected at level: 2',
    ),
    (
        {"inputs": [{"b64": "aGk="}]},
        F32,
        'JSON Value: {\n    "b64": "aGk="\n} Type: Object is not of expected type: float',
    ),
    (
        {"inputs": [{"b64": "aGk=", "x": 1}]},
        STRING,
        'JSON Value: {\n    "b64": "aGk=",\n    "x": 1\n} not formatted correctly for base64 data',
    ),
    ({"inputs": [{"b64": 1}]}, STRING, 'JSON Value: {\n    "b64": 1\n} not formatted correctly for base64 data'),
    ({"inputs": [{"b64": "a"}]}, STRING, "Unable to base64 decode"),
    ({"inputs": [{"b64": "aGk=x"}]}, STRING, "Unable to base64 decode"),
    ({"inputs": [{"b64": "aGk=="}]}, STRING, "Unable to base64 decode"),
    ({"inputs": [{"b64": "aG-k"}]}, STRING, "Unable to base64 decode"),
    ({"inputs": [16777216]}, F32, "Cannot convert JSON value: 16777216 to float without loss of precision."),
    ({"inputs": [-16777216]}, F32, "Cannot convert JSON value: -16777216 to float without loss of precision."),
    ({"inputs": [1e39]}, F32, "Cannot convert JSON value: 1e+39 to float without loss of precision."),
    (
        {"inputs": [2**53]},
        {"x": spec("float64")},
        "Cannot convert JSON value: 9007199254740992 to double without loss of precision.",
    ),
    ({"instances": [[1, 2, 3], [4, 5]]}, F32, ELEMENT_1 + "Expecting tensor size: 3 but got: 2"),
    ({"instances": [[1, 2, 3, 4], [[1, 2], [3, 4]]]}, F32, ELEMENT_1 + "Expecting shape [4] but got: [2,2]"),
    (
        {"instances": [[[1, 2], [3]]]},
        F32,
        ELEMENT_0 + "Encountered list at unexpected size: 1 at level: 1 expected size: 2",
    ),
    ({"inputs": [[1, 2], [3]]}, F32, "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
    ({"instances": [[1, [2]]]}, F32, ELEMENT_0 + "Encountered list at unexpected level: 1 expected < 1"),
    (
        {"instances": [[[1], 2]]},
        F32,
        ELEMENT_0 + "JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at level: 2",
    ),
    ({"instances": [1]}, {}, "Failed to get input map for signature: DEFAULT"),
    ({"signature_name": "s", "instances": [1]}, {}, "Failed to get input map for signature: s"),
    (
        {"instances": [1.0]},
        {"x": spec("float16")},
        "Failed to process element: 0 of 'instances' list. Error: UNIMPLEMENTED: Conversion of JSON Value: 1.0 to"
        " type: half",
    ),
]


@pytest.mark.parametrize(("body", "inputs", "message"), DECODE_ERRORS)
def test_decode_errors(body: object, inputs: dict[str, InputSpec], message: str) -> None:
    error = error_of(decode, body, inputs)
    assert (error.code, error.message) == (grpc.StatusCode.INVALID_ARGUMENT, message)


def test_unsupported_input_dtype_is_unimplemented_in_columnar_format() -> None:
    error = error_of(decode, {"inputs": [1.0]}, {"x": spec("float16")})
    assert (error.code, error.message) == (grpc.StatusCode.UNIMPLEMENTED, "Conversion of JSON Value: 1.0 to type: half")


def test_errors_quote_json_as_rapidjson_writes_it() -> None:
    """Nested doubles in shortest form with rapidjson's exponent layout; strings escaped as rapidjson does."""
    values = [1e-7, 1e16, 0.5, 1e22, 123456.789, -0.0, 1e-05, 1.5e-300, 12]
    error = error_of(decode, {"instances": [{"a": values}]}, {"a": spec("float64"), "b": spec("float64")})
    assert error.message == (
        "Failed to process element: 0 of 'instances' list. JSON object: {\n    \"a\": [\n        1e-7,\n"
        "        10000000000000000.0,\n        0.5,\n        1e22,\n        123456.789,\n        -0.0,\n"
        "        0.00001,\n        1.5e-300,\n        12\n    ]\n} keys must be equal to: a,b"
    )
    error = error_of(decode, {"inputs": ['a"b\\\n\u0001/é']}, F32)
    assert error.message == 'JSON Value: "a\\"b\\\\\\n\\u0001/é" Type: String is not of expected type: float'


def test_a_b64_first_instance_with_several_inputs_fills_only_the_first_input() -> None:
    """TF Serving's quirk: the model run then reports the missing input."""
    got, row_format = decode({"instances": [{"b64": "aGk="}]}, {"s": spec("object"), "t": spec("object")})
    assert row_format
    assert_arrays(got, {"s": np.array([b"hi"], object)})


def test_row_request_round_trips_through_decode_and_encode() -> None:
    arrays, row_format = decode({"instances": [{"a": [0.1, 2.0], "b": "é"}, {"a": [1e-7, -3.5], "b": "z"}]}, AB)
    assert encode_outputs(arrays, row_format).decode() == (
        '{\n    "predictions": [\n'
        '        {\n            "a": [0.1, 2.0],\n            "b": "é"\n        },\n'
        '        {\n            "a": [1e-07, -3.5],\n            "b": "z"\n        }\n'
        "    ]\n}"
    )
