"""The int8 encoder beside an export (`<export>/int8/`): OpenVINO IR quantized ahead of time by
models.quantize_encoder, and its manifest, which records the fidelity the build measured and the heads it
checked. A run-time contract of the embedding service (EMBEDDING_PRECISION=int8 reads it)."""

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from embedding_service.manifest import IDENTITY_PATTERN, MANIFEST_FILE

INT8_DIR = "int8"
INT8_MODEL = "encoder.xml"  # its weights beside it, in encoder.bin
# The contract a build must hold to write the int8 model (docs/precision.md).
MIN_COSINE = 0.99
MAX_ACCURACY_DROP = 0.01  # one point of held-out accuracy


class Fidelity(BaseModel):
    """int8's vectors against fp32's on held-out texts (neither calibration nor benchmark texts)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_cosine: float
    mean_cosine: float
    texts: int


class CheckedHead(BaseModel):
    """A head version whose held-out accuracy the build measured on int8 vectors: the only versions that
    may be given them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: int
    fp32_accuracy: float
    int8_accuracy: float
    examples: int


class Int8Manifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    identity: str = Field(pattern=IDENTITY_PATTERN, description="the encoder it was quantized from (its manifest's)")
    fidelity: Fidelity
    heads: list[CheckedHead]
    calibration_texts: int
    quantizer: str  # what built it: NNCF's and OpenVINO's versions, and the settings

    def write(self, int8_dir: Path) -> None:
        (int8_dir / MANIFEST_FILE).write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, export_dir: Path) -> "Int8Manifest":
        path = export_dir / INT8_DIR / MANIFEST_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {export_dir} has no int8 model (build it with `make models-int8`, or "
                f"`python -m models.quantize_encoder --encoder {export_dir}`)"
            )
        return cls.model_validate_json(path.read_text(encoding="utf-8"))
