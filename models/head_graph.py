"""The head's Keras model and its TF Serving export: signature `serving_default` (embeddings -> probabilities)
and `labels` (the label names of this version), plus a warm-up record and the version's held-out scores."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf
import tf_keras as keras
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from head_service.servable import WARMUP_FILE

# Inside the version directory, so the scores travel (and are replaced) with the weights they describe.
METRICS_FILE = Path("assets.extra") / "metrics.json"


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


class _Head(tf.Module):  # type: ignore[misc]
    def __init__(self, model: Any, labels: list[str]) -> None:
        super().__init__(name="head")
        self.model = model
        self.label_names = tf.constant(labels)
        dim = model.input_shape[-1]
        spec = tf.TensorSpec([None, dim], tf.float32, name="embeddings")
        self.serve = tf.function(
            lambda embeddings: {"probabilities": self.model(embeddings, training=False)}, input_signature=[spec]
        )
        # One row of label names per input row: TF Serving's batching (and REST's row format) need every
        # output batch-aligned.
        self.labels = tf.function(
            lambda embeddings: {"labels": tf.tile(self.label_names[tf.newaxis], [tf.shape(embeddings)[0], 1])},
            input_signature=[spec],
        )


def export_head(model: Any, labels: list[str], path: Path, model_name: str, metrics: dict[str, Any]) -> None:
    head = _Head(model, labels)
    tf.saved_model.save(
        head,
        str(path),
        signatures={
            "serving_default": head.serve.get_concrete_function(),
            "labels": head.labels.get_concrete_function(),
        },
    )
    (path / "assets.extra").mkdir(exist_ok=True)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = "serving_default"
    request.inputs["embeddings"].CopyFrom(tf.make_tensor_proto(np.zeros((1, model.input_shape[-1]), np.float32)))
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    with tf.io.TFRecordWriter(str(path / WARMUP_FILE)) as writer:
        writer.write(log.SerializeToString())
    (path / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
