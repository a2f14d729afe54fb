"""auto's measurements kept on disk (EMBEDDING_PRECISION_MEMO_DIR), one file per model, CPU and runtime, so
that a restart on the same machine decides at once. The figures are kept, not the choice: the rule
(embedding_service.precision.decide) is applied to them at every start."""

import hashlib
import json
import logging
import os
from pathlib import Path

from pydantic import ValidationError

from embedding_service.host import PRECISION_FLAGS, cpu
from embedding_service.precision import Measurement
from embedding_service.precision_probe import LONG, ROUNDS, SHORT

logger = logging.getLogger(__name__)


def memo_key(identity: str, runtime: str, threads: int) -> dict[str, object]:
    """What a measurement holds for: the model (its identity), the CPU (model name, the flags that decide
    precision speed, the threads a call uses), the runtime and its version, and the probe itself."""
    model_name, flags = cpu()
    probe = hashlib.sha256(json.dumps([SHORT, LONG, ROUNDS]).encode()).hexdigest()[:16]
    return {
        "identity": identity,
        "cpu": model_name,
        "flags": sorted(flags & PRECISION_FLAGS),
        "threads": threads,
        "runtime": runtime,
        "probe": probe,
    }


class PrecisionMemo:
    """A directory of measurements; None: nothing is kept (every start measures)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def recall(self, key: dict[str, object]) -> Measurement | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            kept = json.loads(path.read_text(encoding="utf-8"))
            if kept.get("key") != key:  # a digest collision, or a file written by hand
                return None
            return Measurement.model_validate(kept["measurement"])
        except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
            logger.warning("ignoring the unreadable precision memo %s: %s", path, exc)
            return None

    def keep(self, key: dict[str, object], measurement: Measurement) -> None:
        """Written in one rename, so a reader never sees half a file; a memo that cannot be written costs
        only the next start's measurement."""
        path = self._path(key)
        if path is None:
            return
        staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            record = {"key": key, "measurement": measurement.model_dump()}
            staging.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            staging.replace(path)
        except OSError as exc:
            logger.warning("cannot keep the precision measurement in %s (%s): the next start measures again", path, exc)

    def _path(self, key: dict[str, object]) -> Path | None:
        if self.directory is None:
            return None
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        return self.directory / f"{key['identity']}-{digest}.json"
