"""The head's Keras model and its TF Serving export: signature `serving_default` (embeddings -> probabilities),
`labels` (the label names of this version) and `encoder` (the identity of the encoder whose vectors it was
trained on: its stamp), plus a warm-up record and the version's held-out scores."""

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf
import tf_keras as keras
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from embedding_service.manifest import IDENTITY_PATTERN
from head_service.servable import WARMUP_FILE

# Inside the version directory, so the scores travel (and are replaced) with the weights they describe.
METRICS_FILE = Path("assets.extra") / "metrics.json"
SERVING_SIGNATURE, LABELS_SIGNATURE, ENCODER_SIGNATURE = "serving_default", "labels", "encoder"


def train_head(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], classes: int, *, hidden: int, epochs: int, seed: int
) -> Any:
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    layers: list[Any] = [keras.Input(shape=(x.shape[1],), name="embeddings")]
    if hidden:
        layers += [keras.layers.Dense(hidden, activation="relu"), keras.layers.Dropout(0.1)]
    layers.append(keras.layers.Dense(classes, activation="softmax", name="probabilities"))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, shuffle=True, verbose=0)
    return model


def embeddings_spec(dim: int) -> tf.TensorSpec:
    return tf.TensorSpec([None, dim], tf.float32, name="embeddings")


def constant_rows(values: tf.Tensor, embeddings: tf.Tensor) -> tf.Tensor:
    """One row of `values` per input row: TF Serving's batching (and REST's row format) need every output
    batch-aligned."""
    return tf.tile(values[tf.newaxis], [tf.shape(embeddings)[0], 1])


def encoder_function(identity: str, dim: int) -> Any:
    """The `encoder` signature's function: [rows, 1] strings, each the identity."""
    stamp = tf.constant([identity])
    return tf.function(
        lambda embeddings: {ENCODER_SIGNATURE: constant_rows(stamp, embeddings)},
        input_signature=[embeddings_spec(dim)],
    )


class _Head(tf.Module):  # type: ignore[misc]
    def __init__(self, model: Any, labels: list[str], encoder: str) -> None:
        super().__init__(name="head")
        self.model = model
        self.label_names = tf.constant(labels)
        spec = embeddings_spec(model.input_shape[-1])
        self.serve = tf.function(
            lambda embeddings: {"probabilities": self.model(embeddings, training=False)}, input_signature=[spec]
        )
        self.labels = tf.function(
            lambda embeddings: {LABELS_SIGNATURE: constant_rows(self.label_names, embeddings)}, input_signature=[spec]
        )
        self.encoder = encoder_function(encoder, model.input_shape[-1])


def export_head(
    model: Any, labels: list[str], path: Path, model_name: str, metrics: dict[str, Any], *, encoder: str
) -> None:
    """`encoder`: the identity of the encoder whose vectors `model` was trained on (its manifest's)."""
    if not re.fullmatch(IDENTITY_PATTERN, encoder):
        raise ValueError(f"{encoder!r} is not an encoder identity (16 lowercase hex digits)")
    head = _Head(model, labels, encoder)
    tf.saved_model.save(
        head,
        str(path),
        signatures={
            SERVING_SIGNATURE: head.serve.get_concrete_function(),
            LABELS_SIGNATURE: head.labels.get_concrete_function(),
            ENCODER_SIGNATURE: head.encoder.get_concrete_function(),
        },
    )
    write_extras(path, model_name, model.input_shape[-1], {**metrics, "encoder": encoder})


def write_extras(path: Path, model_name: str, dim: int, metrics: dict[str, Any]) -> None:
    """assets.extra/: TF Serving's warm-up record (one zero row to `serving_default`) and the metrics."""
    (path / "assets.extra").mkdir(exist_ok=True)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = SERVING_SIGNATURE
    request.inputs["embeddings"].CopyFrom(tf.make_tensor_proto(np.zeros((1, dim), np.float32)))
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    with tf.io.TFRecordWriter(str(path / WARMUP_FILE)) as writer:
        writer.write(log.SerializeToString())
    (path / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
