"""Hugging Face fast tokenizer, truncating to the model's max sequence length and saying which it cut."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from transformers import AutoTokenizer


@dataclass(frozen=True)
class TokenizedText:
    ids: npt.NDArray[np.int32]
    truncated: bool


class Tokenizer:
    def __init__(self, tokenizer_dir: Path, max_seq_length: int) -> None:
        backend = AutoTokenizer.from_pretrained(str(tokenizer_dir), use_fast=True).backend_tokenizer
        backend.no_padding()
        backend.enable_truncation(max_length=max_seq_length)
        self._backend = backend

    def __call__(self, texts: list[str]) -> list[TokenizedText]:
        # encode_batch hands even one text to the Rust thread pool, which costs more than the text.
        encodings = [self._backend.encode(texts[0])] if len(texts) == 1 else self._backend.encode_batch(texts)
        return [
            TokenizedText(np.asarray(encoding.ids, dtype=np.int32), truncated=bool(encoding.overflowing))
            for encoding in encodings
        ]
