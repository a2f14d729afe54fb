"""OpenAI's four forms of `input` (a string, strings, one text's token ids, several texts' token ids),
checked by hand so that every refusal names the exact item, as `input[3]` or `input[3][17]`."""

from dataclasses import dataclass
from typing import Any

import numpy as np

from embedding_service.tokenizer import Ids
from service_common.errors import InvalidRequestError

FOREIGN_IDS = (
    "token ids must come from this model's own tokenizer (POST /tokenize gives them); ids from tiktoken, "
    "which LangChain's OpenAIEmbeddings sends unless check_embedding_ctx_length=False, are not"
)


@dataclass(frozen=True)
class Inputs:
    """Either texts or token id arrays (never both), with the name each one has in errors."""

    texts: list[str] | None
    ids: list[Ids] | None
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)


def invalid(param: str, message: str, code: str = "invalid_value") -> InvalidRequestError:
    return InvalidRequestError(f"{param} {message}", param=param, code=code)


def texts_input(texts: list[str], field: str) -> Inputs:
    names = [f"{field}[{i}]" for i in range(len(texts))]
    for name, text in zip(names, texts, strict=True):
        if not text:
            raise invalid(name, "is empty: there is nothing to embed")
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise invalid(name, "is not valid Unicode: it holds a lone surrogate") from None
    return Inputs(texts, None, names)


def parse_input(raw: Any, *, vocab_size: int) -> Inputs:
    """`input` as OpenAI defines it; ids are checked against this model's vocabulary."""
    if isinstance(raw, str):
        return texts_input([raw], "input")
    if not isinstance(raw, list) or not raw:
        raise invalid("input", "must be a string, or a non-empty array of strings, of ints, or of int arrays")
    first = raw[0]
    if isinstance(first, str):
        for i, item in enumerate(raw):
            if not isinstance(item, str):
                raise invalid(f"input[{i}]", "is not a string: an array of strings holds only strings")
        return texts_input(raw, "input")
    if isinstance(first, list):
        for i, item in enumerate(raw):
            if not isinstance(item, list):
                raise invalid(f"input[{i}]", "is not an array of ints: an array of token id arrays holds only those")
        names = [f"input[{i}]" for i in range(len(raw))]
        return Inputs(None, [_ids(item, name, vocab_size) for item, name in zip(raw, names, strict=True)], names)
    return Inputs(None, [_ids(raw, "input", vocab_size)], ["input"])


def _ids(items: list[Any], name: str, vocab_size: int) -> Ids:
    """One text's token ids: ints (not booleans, not floats) within the vocabulary."""
    if not items:
        raise invalid(name, "is empty: a text needs at least one token id")
    for j, item in enumerate(items):
        if type(item) is not int:
            raise invalid(f"{name}[{j}]", f"is {type(item).__name__} {str(item)[:20]!r}, not a token id (an int)")
        if not 0 <= item < vocab_size:
            raise invalid(
                f"{name}[{j}]",
                f"is token id {str(item)[:24]}, outside this model's vocabulary of {vocab_size} ids: {FOREIGN_IDS}",
                code="invalid_token_id",
            )
    return np.asarray(items, dtype=np.int32)
