"""Hugging Face fast tokenizer, reduced to what the service needs: a text's content ids (no special tokens,
never cut), and the model's own special tokens put around them, so texts and caller-given token ids take
one path: cut, refused or split into windows by the embedder, and wrapped the same way."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from transformers import AutoTokenizer

Ids = npt.NDArray[np.int32]


@dataclass(frozen=True)
class TokenizedText:
    ids: Ids  # with the special tokens, at most the model's max sequence length
    truncated: bool


@dataclass(frozen=True)
class Tokens:
    """One text as POST /tokenize returns it."""

    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]  # character span of each token in the text; (0, 0) for special tokens


class Tokenizer:
    def __init__(self, tokenizer_dir: Path, max_seq_length: int) -> None:
        backend = AutoTokenizer.from_pretrained(str(tokenizer_dir), use_fast=True).backend_tokenizer
        backend.no_padding()
        backend.no_truncation()
        self._backend = backend
        specials = backend.encode("").ids
        if len(specials) != 2:
            raise ValueError(f"{tokenizer_dir}: expected a `[CLS] text [SEP]` tokenizer, its empty text is {specials}")
        self.prefix_id, self.suffix_id = specials
        self.max_seq_length = max_seq_length
        self.max_content = max_seq_length - 2  # content tokens that fit beside the two special tokens
        self.vocab_size = backend.get_vocab_size()

    def content(self, texts: list[str]) -> list[Ids]:
        """Each text's token ids without special tokens, however long."""
        # encode_batch hands even one text to the Rust thread pool, which costs more than the text.
        if len(texts) == 1:
            encodings = [self._backend.encode(texts[0], add_special_tokens=False)]
        else:
            encodings = self._backend.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(encoding.ids, dtype=np.int32) for encoding in encodings]

    def strip(self, ids: Ids) -> Ids:
        """Caller-given ids as content: a leading [CLS] and a trailing [SEP] are dropped when present."""
        start = 1 if len(ids) and ids[0] == self.prefix_id else 0
        stop = len(ids) - 1 if len(ids) > start and ids[-1] == self.suffix_id else len(ids)
        return ids[start:stop]

    def wrap(self, content: Ids) -> Ids:
        """Content ids (at most `max_content`) as the model reads them."""
        wrapped = np.empty(len(content) + 2, dtype=np.int32)
        wrapped[0], wrapped[-1] = self.prefix_id, self.suffix_id
        wrapped[1:-1] = content
        return wrapped

    def __call__(self, texts: list[str]) -> list[TokenizedText]:
        """Texts as the model reads them, cut to the max sequence length."""
        return [
            TokenizedText(self.wrap(ids[: self.max_content]), truncated=len(ids) > self.max_content)
            for ids in self.content(texts)
        ]

    def tokens(self, texts: list[str], *, add_special_tokens: bool) -> list[Tokens]:
        encodings = [self._backend.encode(text, add_special_tokens=add_special_tokens) for text in texts]
        return [Tokens(e.ids, e.tokens, [(int(a), int(b)) for a, b in e.offsets]) for e in encodings]
