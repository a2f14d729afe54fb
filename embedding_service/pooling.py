"""Pooling of token embeddings for /embed callers who ask for other than the model's own pooling."""

from typing import Literal

import numpy as np

from embedding_service.encoder import FloatArray

Pooling = Literal["mean", "cls", "max"]


def pool(tokens: FloatArray, pooling: Pooling) -> FloatArray:
    """[tokens, D] -> [D]; padding is already gone, so no mask is needed."""
    if pooling == "cls":
        pooled = tokens[0]
    elif pooling == "max":
        pooled = tokens.max(axis=0)
    else:
        pooled = tokens.mean(axis=0)
    return np.asarray(pooled, dtype=np.float32)


def l2_normalize(vectors: FloatArray) -> FloatArray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)
