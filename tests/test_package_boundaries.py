"""Each service imports only itself and service_common: a service's image copies exactly those two, and
build-time code (models/), the benchmarks and the local launcher never ship in one."""

import ast
from pathlib import Path

import pytest

from stack.services import ROOT

SERVICES = ("embedding_service", "head_service", "orchestrator", "service_common")
OURS = {*SERVICES, "models", "perf", "stack", "tests"}


def imported_packages(package: str, root: Path = ROOT) -> dict[str, set[str]]:
    """Our top-level packages each module of `package` imports, at any depth (function bodies included)."""
    found: dict[str, set[str]] = {}
    for path in sorted((root / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(root))] = names & OURS
    return found


@pytest.mark.parametrize("package", SERVICES)
def test_a_service_imports_only_itself_and_the_shared_package(package: str) -> None:
    allowed = {package, "service_common"}
    crossing = {module: sorted(names - allowed) for module, names in imported_packages(package).items()}
    assert {module: names for module, names in crossing.items() if names} == {}


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "app.py").write_text("import os\n\ndef load():\n    from models.manifest import X\n")
    assert imported_packages("svc", tmp_path) == {"svc/app.py": {"models"}}
