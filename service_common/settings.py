"""Settings every HTTP service shares; each service subclasses it with its own env prefix."""

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = Field(True, description="one JSON object per log line (false: plain text)")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="larger request bodies get 413")
    request_timeout_s: float = Field(30.0, gt=0, description="a request still unanswered after this gets 504")
    graceful_shutdown_s: float = Field(30.0, ge=0, description="time in-flight requests get after SIGTERM")
