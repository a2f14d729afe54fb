"""Settings that cannot work together stop the service at start-up with a message naming them."""

import pytest

from embedding_service.settings import EmbeddingSettings


def test_mixed_precision_with_xla_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="mixed_precision needs xla=false"):
        EmbeddingSettings(mixed_precision=True, xla=True)
    assert EmbeddingSettings(mixed_precision=True, xla=False).mixed_precision


def test_a_request_larger_than_the_queue_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="max_texts_per_request must not exceed max_queue_texts"):
        EmbeddingSettings(max_texts_per_request=300, max_queue_texts=256)
