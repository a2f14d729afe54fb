"""Settings that cannot work together stop the service at start-up with a message naming them."""

import pytest

from embedding_service.settings import EmbeddingSettings


def test_mixed_precision_with_xla_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="mixed_precision needs xla=false"):
        EmbeddingSettings(backend="tensorflow", mixed_precision=True, xla=True)
    assert EmbeddingSettings(backend="tensorflow", mixed_precision=True, xla=False).mixed_precision
    # OpenVINO's bf16 is a precision hint of its own: XLA does not apply to it.
    assert EmbeddingSettings(backend="openvino", mixed_precision=True, xla=True).mixed_precision


def test_auto_is_openvino_on_a_cpu_and_tensorflow_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # every GPU hidden, whatever the driver lists
    assert EmbeddingSettings(backend="auto").encoder_backend == "openvino"
    assert EmbeddingSettings(backend="tensorflow").encoder_backend == "tensorflow"
    monkeypatch.setattr("embedding_service.backend_choice.gpu_visible", lambda: True)
    assert EmbeddingSettings(backend="auto").encoder_backend == "tensorflow"
    assert EmbeddingSettings(backend="openvino").encoder_backend == "openvino"


def test_a_request_larger_than_the_queue_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="max_texts_per_request must not exceed max_queue_texts"):
        EmbeddingSettings(max_texts_per_request=300, max_queue_texts=256)
