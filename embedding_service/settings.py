"""EmbeddingSettings: every knob of the embedding service, read from EMBEDDING_* variables."""

import math
import os
from pathlib import Path
from typing import Self

from pydantic import Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from embedding_service.backend_choice import BackendSetting, ChosenEncoder, load_chosen, resolve_backend
from embedding_service.encoder import Backend
from embedding_service.lanes import ANONYMOUS, OTHER, LanePolicy
from embedding_service.precision import PrecisionSetting
from service_common.settings import ServiceSettings, key_digest, read_keys


class EmbeddingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EMBEDDING_", frozen=True, extra="ignore")

    port: int = Field(8081, ge=1, le=65535)
    model_dir: Path = Field(Path("build/encoder"), description="exported encoder (python -m models.export_encoder)")
    max_batch_size: int = Field(32, ge=1, le=1024, description="texts per encoder call")
    max_batch_tokens: int = Field(8192, ge=16, description="padded tokens per encoder call")
    max_wait_ms: float = Field(0.0, ge=0, le=1000, description="how long a batch waits to fill")
    max_queue_texts: int = Field(4096, ge=1, description="texts admitted and not yet answered before 429")
    max_texts_per_request: int = Field(2048, ge=1, description="texts in one request (OpenAI's limit)")
    max_chars_per_text: int = Field(20_000, ge=1, description="characters (or token ids) in one text")
    max_response_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="estimated size of a token-level /embed answer before 400"
    )
    model_aliases: str = Field("", description="more names `model` may give, comma-separated")
    chunk_overlap_tokens: int = Field(32, ge=0, description="tokens each window of a chunked text shares")
    tokenizer_threads: int = Field(1, ge=1, le=64, description="threads tokenizing requests off the event loop")
    lanes: bool = Field(True, description="share the encoder fairly between callers' lanes; false: one FIFO queue")
    lane_weights: str = Field("orchestrator:4", description="`lane:weight` pairs, comma-separated; others weigh 1")
    lane_quotas: str = Field("", description="`lane:tokens_per_second` pairs, comma-separated; others: no quota")
    max_lanes: int = Field(
        256,
        ge=2,
        description="live `user` flows of the anonymous lane; past it idle ones expire, new names share `other`",
    )
    lane_idle_s: float = Field(60.0, gt=0, description="an idle `user` flow unused this long is dropped first")
    lane_keys: SecretStr = Field(
        SecretStr(""),
        description="keys that give their caller a lane, comma-separated `name:key`; accepted even with auth off",
    )
    lane_keys_file: str = Field("", description="a file of more lane keys, one `name:key` per line")
    cache_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="exact embedding cache size; 0: no cache, and no sharing of identical texts in flight",
    )
    backend: BackendSetting = Field(
        "auto", description="encoder runtime: tensorflow, openvino, or auto (tensorflow on a GPU, else openvino)"
    )
    encoder_threads: int = Field(0, ge=0, le=256, description="threads one encoder call uses; 0: every core")
    group_window: int = Field(
        512,
        ge=0,
        le=4096,
        description="most queued texts a batch is chosen from (within max_batch_tokens of virtual time), grouped "
        "by length; 0: in order",
    )
    xla: bool = Field(True, description="XLA-compile the encoder (jit_compile)")
    xla_cache_dir: str = Field("build/xla-cache", description="persistent XLA compile cache; empty: none")
    precision: PrecisionSetting = Field(
        "auto",
        description="what the encoder computes in: fp32, bf16 (tensorflow: its mixed precision, fp16 on a GPU, needs "
        "xla=false), int8 (openvino: the model `make models-int8` built), or auto: bf16 where measured faster and "
        "within the parity contract, else fp32 (docs/precision.md)",
    )
    precision_memo_dir: str = Field(
        "build/precision", description="where auto keeps its measurements, per model and CPU; empty: measure each start"
    )
    test_encoder_gate: str = Field("", description="tests only: while this file exists, encoder batches wait")

    _lane_key_digests: tuple[bytes, ...] = PrivateAttr(())
    _lane_key_names: tuple[str, ...] = PrivateAttr(())

    @property
    def identity_key_digests(self) -> tuple[bytes, ...]:
        """SHA-256 of every lane key (the keys themselves are not kept)."""
        return self._lane_key_digests

    @property
    def identity_key_names(self) -> tuple[str, ...]:
        """Each lane key's name, its caller's lane, in the order of `identity_key_digests` (a name may
        repeat: two keys of one lane while one replaces the other)."""
        return self._lane_key_names

    @property
    def model_alias_list(self) -> list[str]:
        return [alias.strip() for alias in self.model_aliases.split(",") if alias.strip()]

    @property
    def encoder_backend(self) -> Backend:
        return resolve_backend(self.backend)

    @property
    def lane_policy(self) -> LanePolicy:
        return LanePolicy(
            enabled=self.lanes,
            weights=_named_numbers(self.lane_weights, "lane_weights"),
            quotas=_named_numbers(self.lane_quotas, "lane_quotas"),
            named=frozenset(name for name in (*self.api_key_names, *self.identity_key_names) if name),
            max_lanes=self.max_lanes,
            idle_s=self.lane_idle_s,
        )

    @model_validator(mode="after")
    def _read_lane_keys(self) -> Self:
        named = read_keys(self.lane_keys, self.lane_keys_file, "lane_keys")
        for number, (_, name) in enumerate(named, 1):
            if name is None:
                raise ValueError(f"lane key {number} is not `name:key`: a lane key names its caller's lane")
        self._lane_key_digests = tuple(key_digest(key) for key, _ in named)
        self._lane_key_names = tuple(name for _, name in named if name)
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        self.lane_policy  # noqa: B018 - validates both lists at start-up
        if reserved := {ANONYMOUS, OTHER} & {*self.api_key_names, *self.identity_key_names}:
            raise ValueError(f"a key may not be named {sorted(reserved)[0]!r}: it names the unauthenticated callers")
        if self.max_texts_per_request > self.max_queue_texts:
            raise ValueError("max_texts_per_request must not exceed max_queue_texts: such a request could never run")
        if self.encoder_backend == "tensorflow" and self.precision == "int8":
            raise ValueError("precision int8 runs on the openvino backend (EMBEDDING_BACKEND=openvino)")
        if self.encoder_backend == "tensorflow" and self.precision == "bf16" and self.xla:
            # TF's auto mixed precision is a graph rewrite that does not reach into XLA-compiled functions.
            raise ValueError("precision bf16 on the tensorflow backend needs xla=false (EMBEDDING_XLA=false)")
        return self


def _named_numbers(text: str, setting: str) -> dict[str, float]:
    """`a:4,b:0.5` -> {"a": 4.0, "b": 0.5}; each number positive."""
    numbers: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, number = item.rpartition(":")
        try:
            value = float(number)
        except ValueError:
            value = math.nan
        if not name.strip() or not value > 0 or math.isinf(value):
            raise ValueError(f"{setting}: {item!r} is not `name:number` with a positive number")
        numbers[name.strip()] = value
    return numbers


def chosen_encoder(settings: EmbeddingSettings) -> ChosenEncoder:
    """The encoder these settings describe (backend, model, batch size, threads, precision), loaded, and
    why it runs at its precision (what the service publishes)."""
    return load_chosen(
        settings.encoder_backend,
        settings.model_dir,
        setting=settings.precision,
        max_batch_size=settings.max_batch_size,
        threads=settings.encoder_threads,
        xla=settings.xla,
        memo_dir=Path(settings.precision_memo_dir) if settings.precision_memo_dir else None,
    )


def use_xla_cache(settings: EmbeddingSettings) -> None:
    """Points TensorFlow's XLA compile cache at `xla_cache_dir`. TensorFlow reads its XLA flags when it is
    first imported, so this runs before anything imports it."""
    if settings.xla and settings.xla_cache_dir:
        flag = f"--tf_xla_persistent_cache_directory={settings.xla_cache_dir}"
        os.environ["TF_XLA_FLAGS"] = f"{os.environ.get('TF_XLA_FLAGS', '')} {flag}".strip()
