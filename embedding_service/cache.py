"""The exact embedding cache: a text's sentence vector, keyed by the encoder's identity and the exact token
ids it ran (after truncation, with the special tokens), in an LRU bounded in bytes.

A hit is bit for bit the vector its miss computed (kept read-only). The key starts with a digest of
every file of the exported encoder, so another export (other weights, pooling or normalisation) can never
answer from this one's entries.

Only sentence vectors are cached: token-level vectors ([tokens, D]) cost about as many times more memory
as a text has tokens (~20x for a sentence), so a cache of them would hold twenty times fewer texts, for
the few callers who want them. Token-level requests compute their texts (sharing identical ones in flight),
and what they compute fills the cache for everyone else."""

import hashlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

from embedding_service.encoder import FloatArray
from embedding_service.manifest import SAVED_MODEL_DIR
from embedding_service.metrics import CACHE_BYTES, CACHE_EVICTIONS_TOTAL, CACHE_HITS_TOTAL, CACHE_MISSES_TOTAL

# What one entry costs beyond its key and vector: the OrderedDict node, the bytes and array objects.
_ENTRY_OVERHEAD_BYTES = 240


def encoder_fingerprint(export_dir: Path) -> bytes:
    """SHA-256 over the SavedModel's files, names and contents: the graph with its pooling and its weights."""
    digest = hashlib.sha256()
    root = export_dir / SAVED_MODEL_DIR
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with path.open("rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    return digest.digest()


class EmbeddingCache:
    """The LRU store, shared by every encoder that uses it (`for_encoder`); bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[bytes, tuple[FloatArray, int]] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._entries)

    def for_encoder(self, fingerprint: bytes) -> "EncoderCache":
        return EncoderCache(self, fingerprint)

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
    """One encoder's entries in a store: every key starts with the encoder's fingerprint."""

    def __init__(self, store: EmbeddingCache, fingerprint: bytes) -> None:
        self.store = store
        self._fingerprint = fingerprint

    def get(self, ids: bytes) -> tuple[FloatArray, int] | None:
        """The sentence vector and token count of the text that ran as `ids` (their bytes), or None; counts
        a hit or a miss."""
        return self.store._get(self._fingerprint + ids)

    def put(self, ids: bytes, sentence: FloatArray, tokens: int) -> None:
        self.store._put(self._fingerprint + ids, sentence, tokens)


def _size(key: bytes, sentence: FloatArray) -> int:
    return len(key) + sentence.nbytes + _ENTRY_OVERHEAD_BYTES
