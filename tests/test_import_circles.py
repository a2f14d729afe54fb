"""`make lint`'s import contracts (pyproject.toml's [tool.importlinter]) cover every package we ship, and the
circle contract catches a circle however its imports are written: at the top, in a function body, or only
under TYPE_CHECKING."""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from stack.services import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
LINTER: dict[str, Any] = PYPROJECT["tool"]["importlinter"]
CONTRACTS = {contract["id"]: contract for contract in LINTER["contracts"]}
SHIPPED = {pattern.rstrip("*") for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
DEMO = "circles_demo"


def test_every_package_we_ship_is_checked() -> None:
    assert set(LINTER["root_packages"]) == SHIPPED
    assert set(CONTRACTS["no-circles"]["ancestors"]) == SHIPPED
    layered = {name.strip() for layer in CONTRACTS["packages-one-way"]["layers"] for name in layer.split("|")}
    assert layered == SHIPPED


def lint_demo(root: Path, modules: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with our circle contract and our options on a package `circles_demo` made of `modules`
    (a path inside the package -> its source)."""
    for name, source in {"__init__.py": "", **modules}.items():
        path = root / DEMO / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(source, encoding="utf-8")
    options = {key: value for key, value in LINTER.items() if key not in ("root_packages", "contracts")}
    contract = {**CONTRACTS["no-circles"], "ancestors": [DEMO]}
    # JSON strings, lists and booleans are valid TOML values.
    lines = ["[tool.importlinter]", f"root_packages = {json.dumps([DEMO])}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in options.items()]
    lines += ["[[tool.importlinter.contracts]]", *(f"{key} = {json.dumps(value)}" for key, value in contract.items())]
    (root / "pyproject.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return subprocess.run(
        [Path(sys.executable).parent / "lint-imports", "--no-cache", "--no-logo"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


TYPE_CHECKING_ONLY = f"from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from {DEMO}.b import B\n"
IN_A_FUNCTION = f"def load() -> None:\n    from {DEMO} import a\n"


@pytest.mark.parametrize(
    ("modules", "package"),
    [
        pytest.param({"a.py": TYPE_CHECKING_ONLY, "b.py": IN_A_FUNCTION}, DEMO, id="type-checking-and-lazy"),
        pytest.param(
            {"a.py": f"import {DEMO}.b\n", "b.py": f"import {DEMO}.c\n", "c.py": f"from {DEMO}.a import x\n"},
            DEMO,
            id="three-modules",
        ),
        pytest.param(
            {"sub/x.py": f"from {DEMO}.sub import y\n", "sub/y.py": f"from {DEMO}.sub.x import X\n"},
            f"{DEMO}.sub",
            id="in-a-subpackage",
        ),
        pytest.param(
            {"a.py": f"from {DEMO}.sub.x import X\n", "sub/x.py": f"def f() -> None:\n    from {DEMO} import a\n"},
            DEMO,
            id="through-a-subpackage",
        ),
    ],
)
def test_a_circle_is_reported(tmp_path: Path, modules: dict[str, str], package: str) -> None:
    found = lint_demo(tmp_path, modules)
    assert found.returncode == 1, found.stdout + found.stderr
    assert f"No cycles are allowed in {package}." in found.stdout


def test_imports_one_way_pass(tmp_path: Path) -> None:
    found = lint_demo(
        tmp_path,
        {
            "a.py": f"from {DEMO}.b import B\nfrom {DEMO}.sub import x\n",
            "b.py": f"from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from {DEMO}.c import C\n",
            "c.py": "import json\n",
            "sub/x.py": f"def f() -> None:\n    from {DEMO}.c import C\n",
        },
    )
    assert found.returncode == 0, found.stdout + found.stderr
    assert "1 kept, 0 broken" in found.stdout
