"""Property-based fuzzing of the head's TF Serving REST parser, in-process: whatever the body, `parse_body`,
`signature_name` and `decode_inputs` either succeed or raise HeadError (TF Serving's error, never an unexpected
exception, which the REST front end would turn into a 500), and each example finishes within the deadline."""

import json
from typing import Any

import grpc
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from head_service.errors import HeadError
from head_service.json_decode import InputSpec, decode_inputs
from head_service.json_format_tf import quote, write_decimal
from head_service.json_parse import parse_body, signature_name, value_str

FUZZ = settings(max_examples=300, deadline=2000, database=None, suppress_health_check=[HealthCheck.too_slow])
# The head's own signature, and others of every dtype family TF Serving's JSON decoder handles.
SIGNATURES = [
    {"embeddings": InputSpec(np.dtype("float32"), (None, 384))},
    {"x": InputSpec(np.dtype("float64"), (None, 2))},
    {"x": InputSpec(np.dtype("int8"), None)},
    {"x": InputSpec(np.dtype("uint64"), None)},
    {"x": InputSpec(np.dtype("bool"), None)},
    {"x": InputSpec(np.dtype("object"), (None,))},
    {"x": InputSpec(np.dtype("float16"), None)},
    {"a": InputSpec(np.dtype("float32"), (None, 2)), "b": InputSpec(np.dtype("object"), (None,))},
]
EXPECTED_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED}

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.builds(lambda s: {"b64": s}, st.text(alphabet="AZaz09+/=. \n", max_size=12))
)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=40,
)
# Numbers in nested lists, mostly rectangular: the shapes that get furthest into the decoder.
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**65), 2**65), st.booleans())
tensors = st.recursive(numbers, lambda inner: st.lists(inner, min_size=0, max_size=4), max_leaves=30)
docs = st.fixed_dictionaries(
    {},
    optional={
        "instances": st.one_of(json_values, st.lists(tensors, max_size=4)),
        "inputs": st.one_of(json_values, tensors, st.dictionaries(st.sampled_from(["a", "b", "x"]), tensors)),
        "signature_name": st.one_of(st.sampled_from(["", "serving_default"]), json_values),
    },
)


def body_of(doc: Any) -> bytes:
    return json.dumps(doc).encode()  # NaN and Infinity as bare tokens, which TF Serving accepts


def decode_all(body: bytes) -> None:
    """The REST front end's parsing path, for every signature; HeadError (with TF Serving's codes) is the only way
    out besides success."""
    try:
        doc = parse_body(body)
        signature_name(doc)
    except HeadError as error:
        assert error.code in EXPECTED_CODES, error
        return
    for inputs in SIGNATURES:
        try:
            decode_inputs(doc, inputs)
        except HeadError as error:
            assert error.code in EXPECTED_CODES, error


@FUZZ
@given(docs)
def test_structured_requests(doc: dict[str, Any]) -> None:
    decode_all(body_of(doc))


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes(body: bytes) -> None:
    decode_all(body)


@FUZZ
@given(docs, st.data())
def test_corrupted_requests(doc: dict[str, Any], data: st.DataObject) -> None:
    """A valid body with bytes cut, inserted or overwritten: the parse errors' offsets and messages."""
    body = bytearray(body_of(doc))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(body)))
        action = data.draw(st.sampled_from(["cut", "insert", "overwrite"]))
        byte = data.draw(st.sampled_from([*b'[]{}",:\\0123456789.eE-+ntfu\x00\x80\xff\xc3', 0x1F]))
        if action == "cut":
            del body[at : at + 1]
        elif action == "insert":
            body.insert(at, byte)
        elif at < len(body):
            body[at] = byte
    decode_all(bytes(body))


@FUZZ
@given(st.integers(1, 50_000), st.sampled_from([b"[", b"{", b'{"a":', b"[{", b'{"instances":[']))
def test_deep_nesting(depth: int, opener: bytes) -> None:
    decode_all(opener * depth)


@FUZZ
@given(json_values)
def test_values_quoted_in_errors_always_format(value: Any) -> None:
    assert isinstance(value_str(value), str)


@FUZZ
@given(st.text(), st.floats(allow_nan=True, allow_infinity=True), st.floats(width=32))
def test_strings_and_numbers_always_format(text: str, double: float, single: float) -> None:
    assert quote(text).startswith('"')
    assert write_decimal(double, single=False)
    assert write_decimal(single, single=True)  # `single` is for float32 values only
