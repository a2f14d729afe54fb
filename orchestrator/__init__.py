"""The orchestrator: POST /classify chains the embedding service and the TF Serving head."""
