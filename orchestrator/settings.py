"""OrchestratorSettings: every knob of the orchestrator, read from ORCHESTRATOR_* variables."""

from typing import Literal, Self

from pydantic import Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from service_common.settings import ServiceSettings, read_keys


class OrchestratorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", frozen=True, extra="ignore")

    port: int = Field(8080, ge=1, le=65535)
    embedding_urls: str = Field(
        "http://127.0.0.1:8081",
        description="the embedding services' base URLs, comma-separated: each head goes to the one serving "
        "the encoder its version was trained on (several during an encoder upgrade)",
    )
    embedding_timeout_s: float = Field(10.0, gt=0, description="budget of one embedding call")
    embedding_api_key: SecretStr = Field(
        SecretStr(""), description="bearer key sent to the embedding service (its API key or lane key)"
    )
    embedding_api_key_file: str = Field(
        "", description="a file whose first key is that key (the embedding service's lane keys file will do)"
    )
    embedding_max_connections: int = Field(128, ge=1, description="pooled keep-alive connections to it")
    head_protocol: Literal["grpc", "rest"] = Field("grpc", description="how to call the head (TF Serving)")
    head_grpc_target: str = Field("127.0.0.1:8500", description="the head's gRPC host:port")
    head_rest_url: str = Field("http://127.0.0.1:8501", description="the head's REST base URL")
    head_config_file: str = Field(
        "head_service/tfserving/models.config",
        description="TF Serving's model config file (text ModelServerConfig): the heads it serves, by name",
    )
    default_head: str = Field("sentiment", min_length=1, description="the head that answers when a request names none")
    head_timeout_s: float = Field(2.0, gt=0, description="budget of one head call")
    connect_retries: int = Field(2, ge=0, le=10, description="retries of a hop that could not be reached")
    retry_backoff_ms: float = Field(50.0, ge=0, description="first retry's backoff ceiling; doubles, full jitter")
    max_batch_texts: int = Field(32, ge=1, description="texts of concurrent requests merged into one hop call")
    max_in_flight_batches: int = Field(
        2, ge=1, description="merged calls under way at once (more for a GPU encoder, whose batches are quicker)"
    )
    max_queue_texts: int = Field(256, ge=1, description="texts waiting for a call slot before 429")
    ready_interval_s: float = Field(1.0, gt=0, description="how often the downstreams are checked for /readyz")
    ready_timeout_s: float = Field(1.0, gt=0, description="budget of each downstream check behind /readyz")

    _embedding_key: str = PrivateAttr("")

    @property
    def embedding_url_list(self) -> list[str]:
        return [url.strip().rstrip("/") for url in self.embedding_urls.split(",")]

    @property
    def embedding_key(self) -> str:
        """The bearer key sent to the embedding service (`name:key` sends `key`); empty: none."""
        return self._embedding_key

    @model_validator(mode="after")
    def _check_embedding_urls(self) -> Self:
        urls = self.embedding_url_list
        for url in urls:
            if not url.startswith(("http://", "https://")) or len(url) <= len("https://"):
                raise ValueError(f"embedding_urls: {url!r} is not an http:// or https:// base URL")
        if len(set(urls)) != len(urls):
            raise ValueError(f"embedding_urls: {self.embedding_urls!r} names a URL twice")
        return self

    @model_validator(mode="after")
    def _read_embedding_key(self) -> Self:
        if self.embedding_api_key.get_secret_value() and self.embedding_api_key_file:
            raise ValueError("set embedding_api_key or embedding_api_key_file, not both")
        keys = read_keys(self.embedding_api_key, self.embedding_api_key_file, "embedding_api_key")
        self._embedding_key = keys[0][0] if keys else ""
        return self
