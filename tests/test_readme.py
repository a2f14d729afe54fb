"""The README is a front page, and what it and docs/ say about settings, flags, ports and make targets is
what the code does: docs/configuration.md lists every setting of both HTTP services with its real default,
docs/heads.md every flag of the head with its default."""

import re
import shutil
import subprocess

import pytest
from pydantic_settings import BaseSettings

from embedding_service.settings import EmbeddingSettings
from head_service.options import parser as head_flags
from orchestrator.settings import OrchestratorSettings
from stack.services import ROOT
from tests.test_docs import documents

SERVICES = [("EMBEDDING_", EmbeddingSettings), ("ORCHESTRATOR_", OrchestratorSettings)]
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
HEADS = ROOT / "docs" / "heads.md"
# The limit for a front page; decimal kilobytes, the stricter reading.
README_MAX_BYTES = 12_000


def _default_text(default: object) -> str:
    return str(default).lower() if isinstance(default, bool) else str(default).removesuffix(".0")


@pytest.mark.parametrize(("prefix", "settings"), SERVICES)
def test_every_setting_is_documented_and_nothing_else(prefix: str, settings: type[BaseSettings]) -> None:
    page = CONFIGURATION.read_text(encoding="utf-8")
    documented = set(re.findall(rf"^\| `({prefix}[A-Z_]+)` \|", page, flags=re.MULTILINE))
    assert documented == {f"{prefix}{name.upper()}" for name in settings.model_fields}


@pytest.mark.parametrize(("prefix", "settings"), SERVICES)
def test_documented_defaults_are_the_real_defaults(prefix: str, settings: type[BaseSettings]) -> None:
    page = CONFIGURATION.read_text(encoding="utf-8")
    rows = dict(re.findall(rf"^\| `{prefix}([A-Z_]+)` \| `([^`]*)` \|", page, flags=re.MULTILINE))
    for name, field in settings.model_fields.items():
        assert rows[name.upper()] == _default_text(field.default), name


def test_every_head_flag_is_documented_with_its_default() -> None:
    page = HEADS.read_text(encoding="utf-8")
    rows = re.findall(r"^\| (`--[a-z_]+`(?: / `--[a-z_]+`)*) \| ([^|]*) \|", page, flags=re.MULTILINE)
    documented = {flag for cell, _ in rows for flag in re.findall(r"`(--[a-z_]+)`", cell)}
    actions = [action for action in head_flags()._actions if action.option_strings != ["-h", "--help"]]
    assert documented == {action.option_strings[0] for action in actions}
    defaults = {action.option_strings[0]: action.default for action in actions}
    for cell, default_cell in rows:
        flags = re.findall(r"`(--[a-z_]+)`", cell)
        if len(flags) == 1 and default_cell.strip().startswith("`"):
            assert default_cell.strip().strip("`") == _default_text(defaults[flags[0]]), flags[0]


def make_targets() -> set[str]:
    """The Makefile's targets: those written out, and those make derives (`$(BENCHES): bench-%: ...`), from
    its own database when make is installed."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, flags=re.MULTILINE))
    if make := shutil.which("make"):
        database = subprocess.run([make, "-pRrq", "-f", "Makefile", ":"], cwd=ROOT, capture_output=True, text=True)
        targets |= set(re.findall(r"^([a-z][a-z0-9-]*):", database.stdout, flags=re.MULTILINE))
    return targets


def test_every_make_target_the_documents_name_exists() -> None:
    targets = make_targets()
    # A target's name ends in a letter or digit: `make bench-<name>` names the family, checked through `bench`.
    name = r"make ([a-z](?:[a-z0-9-]*[a-z0-9])?)"
    named = {
        (path.relative_to(ROOT).as_posix(), target)
        for path in documents()
        for text in [path.read_text(encoding="utf-8")]
        for target in {*re.findall(rf"`{name}", text), *re.findall(rf"^{name}", text, flags=re.MULTILINE)}
    }
    assert {target for path, target in named if path == "README.md"} >= {"run", "test"}, "the two commands"
    assert not {(path, target) for path, target in named if target not in targets}


def test_the_readme_is_a_front_page() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes: move the detail to docs/"


def test_the_ports_in_the_readme_are_the_real_defaults() -> None:
    flags = head_flags().parse_args([])
    defaults = {
        EmbeddingSettings.model_fields["port"].default,
        OrchestratorSettings.model_fields["port"].default,
        flags.port,
        flags.rest_api_port,
    }
    used = {int(port) for port in re.findall(r"(?:localhost|127\.0\.0\.1):(\d+)", README.read_text(encoding="utf-8"))}
    assert used, "the README shows no address"
    assert used <= defaults, used - defaults
