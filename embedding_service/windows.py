"""Long texts embedded whole: overlapping windows of the model's max length, and the token-weighted mean
of their vectors (re-normalised for a normalising model). One window is the text itself, bit for bit."""

import numpy as np
import numpy.typing as npt

from embedding_service.encoder import FloatArray
from embedding_service.pooling import l2_normalize


def windows(content: npt.NDArray[np.int32], size: int, overlap: int) -> list[npt.NDArray[np.int32]]:
    """Content ids cut into windows of at most `size`, each sharing `overlap` ids with the one before;
    the last window ends with the text."""
    if len(content) <= size:
        return [content]
    step = size - overlap
    return [content[start : start + size] for start in range(0, len(content) - overlap, step)]


def combine(vectors: list[FloatArray], tokens: list[int], *, normalize: bool) -> FloatArray:
    """The windows' vectors weighted by their token counts."""
    if len(vectors) == 1:
        return vectors[0]
    mean = np.average(np.stack(vectors), axis=0, weights=np.asarray(tokens, dtype=np.float64))
    mean32 = np.asarray(mean, dtype=np.float32)
    return l2_normalize(mean32) if normalize else mean32
