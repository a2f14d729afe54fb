"""Version directories are ASCII decimal numbers that fit TF Serving's int64 fields; any other name is
ignored with one log line, and polling goes on loading real versions beside it."""

import logging
import shutil
from pathlib import Path

import pytest
from tensorflow_serving.config import model_server_config_pb2

from head_service.manager import Model

pytestmark = pytest.mark.slow

NOT_VERSIONS = ("\u00b2", "\u0661", "12345678901234567890", "v2", "-1", " 3")


async def test_odd_directory_names_are_ignored_once_and_real_versions_still_load(
    default_head: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = tmp_path / "base"
    for name in NOT_VERSIONS:
        shutil.copytree(default_head / "1", base / name)
    shutil.copytree(default_head / "1", base / "1")
    model = Model(model_server_config_pb2.ModelConfig(name="head", base_path=str(base)), lambda path, loaded: None)

    with caplog.at_level(logging.WARNING, logger="head_service.manager"):
        await model.sync()
        await model.sync()
    assert set(model.loaded) == {1}
    ignored = [r.getMessage() for r in caplog.records if "not a version number" in r.getMessage()]
    assert len(ignored) == len(NOT_VERSIONS), ignored
    assert all(any(repr(name) in line for line in ignored) for name in NOT_VERSIONS)

    shutil.copytree(default_head / "1", base / "002")
    await model.sync()
    assert set(model.loaded) == {2}
