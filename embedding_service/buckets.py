"""Padded shapes: batches and sequences are rounded up to a few sizes so compiled graphs are reused."""

from dataclasses import dataclass
from itertools import product

MIN_SEQ_BUCKET = 16


def _powers_of_two_to(limit: int, start: int) -> tuple[int, ...]:
    sizes = []
    size = start
    while size < limit:
        sizes.append(size)
        size *= 2
    return (*sizes, limit)


@dataclass(frozen=True)
class Buckets:
    batch_sizes: tuple[int, ...]
    seq_lengths: tuple[int, ...]

    @classmethod
    def powers_of_two(cls, max_batch_size: int, max_seq_length: int) -> "Buckets":
        """Batch sizes 1, 2, 4 ... max_batch_size; sequence lengths 16, 32 ... max_seq_length."""
        return cls(_powers_of_two_to(max_batch_size, 1), _powers_of_two_to(max_seq_length, MIN_SEQ_BUCKET))

    def batch_size(self, texts: int) -> int:
        return next(size for size in self.batch_sizes if size >= texts)

    def seq_length(self, tokens: int) -> int:
        return next(length for length in self.seq_lengths if length >= tokens)

    def shapes(self, max_batch_tokens: int) -> list[tuple[int, int]]:
        """Every (batch, sequence) shape a batch within the token budget can take: what warm-up compiles."""
        return [(b, t) for b, t in product(self.batch_sizes, self.seq_lengths) if b == 1 or b * t <= max_batch_tokens]
