"""The README's configuration tables list every setting of both HTTP services, with its real default."""

import re

import pytest
from pydantic_settings import BaseSettings

from embedding_service.settings import EmbeddingSettings
from orchestrator.settings import OrchestratorSettings
from tests.servers import ROOT

SERVICES = [("EMBEDDING_", EmbeddingSettings), ("ORCHESTRATOR_", OrchestratorSettings)]


@pytest.mark.parametrize(("prefix", "settings"), SERVICES)
def test_every_setting_is_documented_and_nothing_else(prefix: str, settings: type[BaseSettings]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(rf"^\| `({prefix}[A-Z_]+)` \|", readme, flags=re.MULTILINE))
    assert documented == {f"{prefix}{name.upper()}" for name in settings.model_fields}


@pytest.mark.parametrize(("prefix", "settings"), SERVICES)
def test_documented_defaults_are_the_real_defaults(prefix: str, settings: type[BaseSettings]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(rf"^\| `{prefix}([A-Z_]+)` \| `([^`]*)` \|", readme, flags=re.MULTILINE))
    for name, field in settings.model_fields.items():
        default = field.default
        expected = str(default).lower() if isinstance(default, bool) else str(default).removesuffix(".0")
        assert rows[name.upper()] == expected, name


def test_every_make_target_the_readme_names_exists() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.MULTILINE))
    named = set(re.findall(r"`make ([a-z][a-z-]*)", readme)) | set(re.findall(r"^make ([a-z][a-z-]*)", readme, re.M))
    assert named, "the README names no make target"
    assert named <= targets, named - targets
