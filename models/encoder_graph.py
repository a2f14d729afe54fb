"""Builds the inference-only TF graph: BERT from safetensors weights, then pooling and normalisation."""

from typing import Any

import tensorflow as tf
from transformers import BertConfig, TFBertModel
from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

from embedding_service.manifest import Pooling
from models.checkpoint import Checkpoint, CheckpointError

INPUT_SIGNATURE = (
    tf.TensorSpec([None, None], tf.int32, name="input_ids"),
    tf.TensorSpec([None, None], tf.int32, name="attention_mask"),
)


def load_bert(checkpoint: Checkpoint) -> TFBertModel:
    """TFBertModel with the checkpoint's weights, loaded from safetensors without torch."""
    model = TFBertModel(BertConfig.from_dict(checkpoint.config), add_pooling_layer=False)
    model(model.dummy_inputs, training=False)
    state = checkpoint.tensors()
    try:
        load_pytorch_state_dict_in_tf2_model(model, state, allow_missing_keys=False)
    except (AttributeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{checkpoint.weights} does not fit {checkpoint.path}/config.json: {exc}") from exc
    return model


def pool(hidden: tf.Tensor, mask: tf.Tensor, pooling: Pooling) -> tf.Tensor:
    """Pools [B, T, D] hidden states over the unmasked tokens, as sentence-transformers does."""
    weights = tf.cast(mask, hidden.dtype)[:, :, tf.newaxis]
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "max":
        return tf.reduce_max(hidden + (weights - 1.0) * 1e9, axis=1)
    return tf.reduce_sum(hidden * weights, axis=1) / tf.maximum(tf.reduce_sum(weights, axis=1), 1e-9)


class SentenceEncoder(tf.Module):  # type: ignore[misc]
    """The exported module: token ids in, sentence and token embeddings out."""

    def __init__(self, bert: TFBertModel, pooling: Pooling, normalize: bool) -> None:
        super().__init__(name="sentence_encoder")
        self.bert = bert
        self.pooling = pooling
        self.normalize = normalize

    @tf.function(input_signature=INPUT_SIGNATURE)  # type: ignore[untyped-decorator]
    def encode(self, input_ids: tf.Tensor, attention_mask: tf.Tensor) -> dict[str, Any]:
        hidden = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=tf.zeros_like(input_ids),
            training=False,
        ).last_hidden_state
        pooled = pool(hidden, attention_mask, self.pooling)
        if self.normalize:
            pooled = tf.math.l2_normalize(pooled, axis=1, epsilon=1e-12)
        return {"sentence_embedding": pooled, "token_embeddings": hidden}
