"""The encoder manifest: what an exported encoder directory holds. A run-time contract of the embedding
service (it reads it at start-up); build-time models.export_encoder writes it."""

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Pooling = Literal["mean", "cls", "max"]
# An encoder identity: 16 hex digits of a SHA-256 over what determines the vectors (models.encoder_identity).
IDENTITY_PATTERN = "^[0-9a-f]{16}$"

MANIFEST_FILE = "manifest.json"
SAVED_MODEL_DIR = "saved_model"
TOKENIZER_DIR = "tokenizer"


class EncoderManifest(BaseModel):
    """Facts about an exported encoder; the SavedModel's graph already applies `pooling` and `normalize`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str
    identity: str = Field(pattern=IDENTITY_PATTERN, description="what determines the vectors, as one digest")
    embedding_dim: int
    max_seq_length: int
    pooling: Pooling
    normalize: bool
    vocab_size: int
    source: str

    def write(self, export_dir: Path) -> None:
        (export_dir / MANIFEST_FILE).write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, export_dir: Path) -> "EncoderManifest":
        path = export_dir / MANIFEST_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {export_dir} is not an exported encoder (run `python -m models.export_encoder`)"
            )
        text = path.read_text(encoding="utf-8")
        try:
            fields = json.loads(text)
        except json.JSONDecodeError:
            fields = None  # model_validate_json says what is wrong with it
        if isinstance(fields, dict) and "identity" not in fields:
            raise ValueError(
                f"{path} has no encoder identity: {export_dir} was exported before identities existed; "
                f"re-export it with `python -m models.export_encoder --output {export_dir}`"
            )
        return cls.model_validate_json(text)
