"""Settings every HTTP service shares; each service subclasses it with its own env prefix."""

import hashlib
import re
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# `name:key` gives a key a name (the caller's lane in the embedding service, in logs never the key itself).
_KEY_NAME = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,63}):(.+)")


class ServiceSettings(BaseSettings):
    # Inputs are hidden in validation errors: a start-up failure must not print the API keys it was given.
    model_config = SettingsConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool | None = Field(
        None, description="one JSON object per log line (false: plain text; unset: JSON unless stderr is a terminal)"
    )
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="larger request bodies get 413")
    body_read_timeout_s: float = Field(10.0, gt=0, description="a request body not all received after this gets 408")
    request_timeout_s: float = Field(30.0, gt=0, description="a request still unanswered after this gets 504")
    graceful_shutdown_s: float = Field(30.0, ge=0, description="time in-flight requests get after SIGTERM")
    api_keys: SecretStr = Field(
        SecretStr(""), description="bearer keys, comma-separated, each `key` or `name:key`; none (and no file): no auth"
    )
    api_keys_file: str = Field("", description="a file of more bearer keys, one `key` or `name:key` per line")
    auth_ops_routes: bool = Field(False, description="require a key on /healthz, /readyz and /metrics too")
    cors_origins: str = Field("", description="browser origins allowed by CORS, comma-separated; empty: no CORS")

    _key_digests: tuple[bytes, ...] = PrivateAttr(())
    _key_names: tuple[str | None, ...] = PrivateAttr(())

    @property
    def api_key_digests(self) -> tuple[bytes, ...]:
        """SHA-256 of every accepted key (the keys themselves are not kept); empty: auth is off."""
        return self._key_digests

    @property
    def api_key_names(self) -> tuple[str | None, ...]:
        """Each key's name (`name:key`), in the order of `api_key_digests`; None for an unnamed key."""
        return self._key_names

    @property
    def identity_key_digests(self) -> tuple[bytes, ...]:
        """Keys that name their caller without being required: accepted with auth on too, and with auth off a
        request without one still passes, as anonymous. None here (the embedding service has its lane keys)."""
        return ()

    @property
    def identity_key_names(self) -> tuple[str, ...]:
        """Each identity key's name, in the order of `identity_key_digests`."""
        return ()

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @model_validator(mode="after")
    def _read_api_keys(self) -> Self:
        named = read_keys(self.api_keys, self.api_keys_file, "api_keys")
        self._key_digests = tuple(key_digest(key) for key, _ in named)
        self._key_names = tuple(name for _, name in named)
        return self


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def read_keys(inline: SecretStr, file: str, setting: str) -> list[tuple[str, str | None]]:
    """(key, name or None) of each key of the setting `setting` (comma-separated in `inline`) and of its file
    (one a line), each `key` or `name:key`. Errors name the setting, the file and a key's position, never a key."""
    keys = [key.strip() for key in inline.get_secret_value().split(",") if key.strip()]
    if file:
        keys += read_key_file(file, f"{setting}_file")
    named = [(match[2], match[1]) if (match := _KEY_NAME.fullmatch(key)) else (key, None) for key in keys]
    label = setting.removesuffix("s").replace("_", " ")
    for number, (key, _) in enumerate(named, 1):
        if not (key.isascii() and key.isprintable()) or " " in key:
            raise ValueError(f"{label} {number} has characters a bearer token cannot carry (printable ASCII only)")
    return named


def read_key_file(file: str, setting: str) -> list[str]:
    """The non-empty lines of the key file `file`, which the setting `setting` names."""
    path = Path(file)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"{setting} {path} cannot be read: {reason}") from None
    keys = [line.strip() for line in lines if line.strip()]
    if not keys:  # auth silently off because of an empty file would be worse than not starting
        raise ValueError(f"{setting} {path} holds no keys")
    return keys
