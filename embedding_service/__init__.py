"""The shared sentence-embedding service: tokenizer -> dynamic batcher -> TF encoder."""
