"""TF Serving's REST response body from output tensors: protocol spec sections 1.4 and 1.6, exact bytes and messages."""

import json
from typing import Any

import grpc
import numpy as np
import pytest

from head_service.errors import HeadError
from head_service.json_encode import encode_outputs


def body(outputs: dict[str, np.ndarray], row_format: bool) -> str:
    return encode_outputs(outputs, row_format).decode()


def test_row_format_one_output_is_tf_servings_exact_body() -> None:
    assert body({"y": np.array([2.5, 3.0, 4.5], np.float32)}, True) == (
        '{\n    "predictions": [2.5, 3.0, 4.5\n    ]\n}'
    )
    assert body({"y": np.array([[1, 2], [3, 4]], np.int64)}, True) == (
        '{\n    "predictions": [[1, 2], [3, 4]\n    ]\n}'
    )


def test_row_format_several_outputs_gives_one_object_per_row() -> None:
    outputs = {"probs": np.array([[0.25, 0.75], [1.0, 0.0]], np.float32), "label": np.array([1, 0], np.int32)}
    assert body(outputs, True) == (
        '{\n    "predictions": [\n'
        '        {\n            "probs": [0.25, 0.75],\n            "label": 1\n        },\n'
        '        {\n            "probs": [1.0, 0.0],\n            "label": 0\n        }\n'
        "    ]\n}"
    )


def test_row_format_bytes_output_goes_out_as_b64_objects() -> None:
    assert body({"img_bytes": np.array([b"hi", b"\x00"], object)}, True) == (
        '{\n    "predictions": [{\n            "b64": "aGk="\n        }, {\n            "b64": "AA=="\n        }\n'
        "    ]\n}"
    )


def test_row_format_empty_batch() -> None:
    assert body({"y": np.zeros((0, 3), np.float32)}, True) == '{\n    "predictions": []\n}'
    outputs = {"s": np.zeros((0, 1, 2), object), "f": np.zeros((0, 3, 4), np.float32)}
    assert body(outputs, True) == '{\n    "predictions": []\n}'


def test_columnar_one_output_is_the_bare_tensor() -> None:
    assert body({"y": np.array([[1.5, 2.0]], np.float32)}, False) == (
        '{\n    "outputs": [\n        [\n            1.5,\n            2.0\n        ]\n    ]\n}'
    )
    assert body({"y": np.array(3.5, np.float64)}, False) == '{\n    "outputs": 3.5\n}'


def test_columnar_several_outputs_are_keyed_by_name() -> None:
    outputs = {"n": np.array([1, 2], np.int8), "ok": np.array(True), "s_bytes": np.array(b"\xff", object)}
    assert body(outputs, False) == (
        '{\n    "outputs": {\n        "n": [\n            1,\n            2\n        ],\n        "ok": true,\n'
        '        "s_bytes": {\n            "b64": "/w=="\n        }\n    }\n}'
    )


def test_columnar_body_parses_back() -> None:
    outputs = {"a": np.arange(6, dtype=np.float32).reshape(2, 3) / 4, "b": np.array([b"x", b"y"], object)}
    assert json.loads(encode_outputs(outputs, False)) == {
        "outputs": {"a": [[0.0, 0.25, 0.5], [0.75, 1.0, 1.25]], "b": ["x", "y"]}
    }


OUTPUT_ERRORS = [
    ({}, True, "Cannot convert empty tensor map to JSON"),
    ({"y": np.array(1.0, np.float32)}, True, "Tensor name: y has no shape information "),
    (
        {"y": np.zeros(2, np.float32), "z": np.zeros(3, np.float32)},
        True,
        "Tensor name: z has inconsistent batch size: 3 expecting: 2",
    ),
    ({"y": np.zeros(2, np.float16)}, False, "Failed to write JSON value for tensor type: half"),
    ({"y": np.zeros(2, np.uint16)}, True, "Failed to write JSON value for tensor type: uint16"),
    ({"y": np.ones(2, np.complex64)}, True, "Failed to write JSON value for tensor type: complex64"),
    (
        {"a": np.zeros((0, 2), np.int32), "b": np.array([["x", "y"]], object)},
        True,
        "Tensor name: b has inconsistent batch size: 1 expecting: 0",
    ),
]


@pytest.mark.parametrize(("outputs", "row_format", "message"), OUTPUT_ERRORS)
def test_output_errors(outputs: dict[str, np.ndarray], row_format: bool, message: str) -> None:
    with pytest.raises(HeadError) as caught:
        encode_outputs(outputs, row_format)
    assert (caught.value.code, caught.value.message) == (grpc.StatusCode.INVALID_ARGUMENT, message)


NUMBERS = [
    (np.float32(0.1), "0.1"),
    (np.float32(1 / 3), "0.333333343"),
    (np.float64(1 / 3), "0.33333333333333331"),
    (np.float64(0.1), "0.1"),
    (np.float64(0.1 + 0.2), "0.30000000000000004"),
    (np.float32(4.0), "4.0"),
    (np.float32(100.0), "100.0"),
    (np.float32(-0.0), "-0.0"),
    (np.float32(2.5), "2.5"),
    (np.float32(1e-7), "1e-07"),
    (np.float64(1e-7), "1e-07"),
    (np.float32(1.5e-5), "1.5e-05"),
    (np.float32(1e7), "1e+07"),
    (np.float32(1234567.0), "1234567.0"),
    (np.float32(123456789.0), "123456792.0"),
    (np.float32(3.14159265), "3.14159274"),
    (np.float32(9000000), "9e+06"),  # the six-digit cases of TF Serving's own json_tensor_test.cc
    (np.float32(999999), "999999.0"),
    (np.float32(0.0003), "0.0003"),
    (np.float32(3e-05), "3e-05"),
    (np.float32(555557.5), "555557.5"),
    (np.finfo(np.float32).max, "3.40282347e+38"),
    (np.float32(np.nan), "NaN"),
    (np.float32(np.inf), "Infinity"),
    (np.float64(-np.inf), "-Infinity"),
    (np.int64(2**62), "4611686018427387904"),
    (np.int8(-5), "-5"),
    (np.uint8(255), "255"),
    (np.uint64(2**64 - 1), "18446744073709551615"),
    (np.bool_(False), "false"),
    ("é".encode(), '"é"'),
    (b'a"b\\\n\x01/\t', '"a\\"b\\\\\\n\\u0001/\\t"'),
]


@pytest.mark.parametrize(("value", "text"), NUMBERS)
def test_value_format(value: Any, text: str) -> None:
    array = np.array([value], object if isinstance(value, bytes) else None)
    assert body({"y": array}, True) == '{\n    "predictions": [' + text + "\n    ]\n}"


def test_bytes_that_are_not_utf8_go_out_raw_as_tf_serving_writes_them() -> None:
    assert encode_outputs({"y": np.array(b"\xff", object)}, False) == b'{\n    "outputs": "\xff"\n}'


def test_bytes_suffix_only_matters_for_strings() -> None:
    assert body({"n_bytes": np.array([7], np.int32)}, True) == '{\n    "predictions": [7\n    ]\n}'


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_floats_round_trip(dtype: type) -> None:
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2 ** (8 * np.dtype(dtype).itemsize), 2000, dtype=np.uint64, endpoint=False)
    values: np.ndarray = bits.astype(np.uint32 if dtype == np.float32 else np.uint64).view(dtype)
    values = values[np.isfinite(values)]
    back = json.loads(encode_outputs({"y": values}, False))["outputs"]
    np.testing.assert_array_equal(np.array(back, dtype), values)
