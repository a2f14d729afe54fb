"""The exact embedding cache: a text's sentence vector, keyed by the encoder's identity and the exact token
ids it ran (after truncation, with the special tokens), in an LRU bounded in bytes.

A hit is bit for bit the vector its miss computed (kept read-only). The key starts with the encoder's
identity (its manifest's digest of weights, tokenizer, pooling, normalisation and max length) and the
precision it runs at, so another export, or the same one at another precision, never answers from this
one's entries.

Only sentence vectors are cached: token-level vectors ([tokens, D]) cost about as many times more memory
as a text has tokens (~20x for a sentence), so a cache of them would hold twenty times fewer texts, for
the few callers who want them. Token-level requests compute their texts (sharing identical ones in flight),
and what they compute fills the cache for everyone else."""

from collections import OrderedDict

import numpy as np

from embedding_service.encoder import FloatArray, Precision
from embedding_service.metrics import CACHE_BYTES, CACHE_EVICTIONS_TOTAL, CACHE_HITS_TOTAL, CACHE_MISSES_TOTAL

# What one entry costs beyond its key and vector: the OrderedDict node, the bytes and array objects.
_ENTRY_OVERHEAD_BYTES = 240


class EmbeddingCache:
    """The LRU store, shared by every encoder that uses it (`for_encoder`); bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[bytes, tuple[FloatArray, int]] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._entries)

    def for_encoder(self, identity: str, precision: Precision) -> "EncoderCache":
        return EncoderCache(self, identity, precision)

    def _get(self, key: bytes) -> tuple[FloatArray, int] | None:
        entry = self._entries.get(key)
        if entry is None:
            CACHE_MISSES_TOTAL.inc()
            return None
        self._entries.move_to_end(key)
        CACHE_HITS_TOTAL.inc()
        return entry

    def _put(self, key: bytes, sentence: FloatArray, tokens: int) -> None:
        size = _size(key, sentence)
        if size > self.max_bytes or key in self._entries:
            return
        vector = np.array(sentence, dtype=np.float32, copy=True)
        vector.setflags(write=False)
        self._entries[key] = (vector, tokens)
        self.bytes += size
        while self.bytes > self.max_bytes:
            old_key, (old, _) = self._entries.popitem(last=False)
            self.bytes -= _size(old_key, old)
            CACHE_EVICTIONS_TOTAL.inc()
        CACHE_BYTES.set(self.bytes)


class EncoderCache:
    """One encoder's entries in a store: every key starts with the encoder's identity and precision."""

    def __init__(self, store: EmbeddingCache, identity: str, precision: Precision) -> None:
        if "\0" in identity + precision:
            raise ValueError("an encoder identity or precision with a NUL byte would make keys ambiguous")
        self.store = store
        # NUL-terminated parts, so that no (identity, precision) prefix is the start of another one's.
        self._prefix = f"{identity}\0{precision}\0".encode()

    def get(self, ids: bytes) -> tuple[FloatArray, int] | None:
        """The sentence vector and token count of the text that ran as `ids` (their bytes), or None; counts
        a hit or a miss."""
        return self.store._get(self._prefix + ids)

    def put(self, ids: bytes, sentence: FloatArray, tokens: int) -> None:
        self.store._put(self._prefix + ids, sentence, tokens)


def _size(key: bytes, sentence: FloatArray) -> int:
    return len(key) + sentence.nbytes + _ENTRY_OVERHEAD_BYTES
