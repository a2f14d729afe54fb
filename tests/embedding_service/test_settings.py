"""Settings that cannot work together stop the service at start-up with a message naming them."""

import pytest

from embedding_service.settings import EmbeddingSettings


def test_a_precision_the_backend_cannot_run_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="precision bf16 on the tensorflow backend needs xla=false"):
        EmbeddingSettings(backend="tensorflow", precision="bf16", xla=True)
    assert EmbeddingSettings(backend="tensorflow", precision="bf16", xla=False).precision == "bf16"
    with pytest.raises(ValueError, match="precision int8 runs on the openvino backend"):
        EmbeddingSettings(backend="tensorflow", precision="int8", xla=False)
    # OpenVINO's bf16 is a precision hint of its own: XLA does not apply to it.
    assert EmbeddingSettings(backend="openvino", precision="bf16", xla=True).precision == "bf16"
    # auto measures only where it may choose bf16 (OpenVINO): on TensorFlow with XLA it is fp32.
    assert EmbeddingSettings(backend="tensorflow", precision="auto", xla=True).precision == "auto"
    with pytest.raises(ValueError, match="precision"):
        EmbeddingSettings(precision="fp16")  # type: ignore[arg-type]


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


def test_the_default_precision_is_chosen_by_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    # The suite pins fp32 for its own servers (tests/conftest.py); the product's default is auto.
    monkeypatch.delenv("EMBEDDING_PRECISION", raising=False)
    assert EmbeddingSettings().precision == "auto"
