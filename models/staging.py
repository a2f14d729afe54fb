"""Writing a model directory so that no reader (a server polling for versions) ever sees half of it."""

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged(output: Path) -> Iterator[Path]:
    """Yields a new directory beside `output`, hidden by its leading dot (TF Serving takes only numbered
    directories as versions); when the block succeeds, it replaces `output` in one rename. On failure it
    is removed and `output` is left as it was."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        yield staging
        if output.exists():
            shutil.rmtree(output)
        staging.chmod(0o755)  # mkdtemp makes it owner-only; a server running as another user must read it
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
