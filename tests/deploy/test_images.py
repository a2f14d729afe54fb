"""The Python images start from what their Dockerfiles copy, reproduced without Docker (none is here).

Each image's build stage is copied and installed (not editable, offline, no dependencies) into a fresh venv
that sees the dev venv's third-party packages but not the project; then the image's ENTRYPOINT runs with the
final stage's ENV from an empty WORKDIR. See checks.image_errors."""

import ast
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy import checks
from tests.deploy.checks import ROOT

DEPLOY = Path("deploy")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_embedding_image_imports_the_service_and_reaches_the_model(tmp_path: Path) -> None:
    """No model is mounted: the service imports everything, reads its settings from the ENV and stops at
    the model directory it was pointed at, in the app factory (ModelSlot reads the manifest there)."""
    missing = tmp_path / "no-such-encoder"
    errors = checks.image_errors(
        ROOT,
        DEPLOY / "embedding.Dockerfile",
        tmp_path / "image",
        env={"EMBEDDING_MODEL_DIR": str(missing)},
        exit_naming=(f"{missing}/manifest.json not found", "in create_app"),
        timeout_s=90,
    )
    assert errors == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_orchestrator_image_serves_its_health_endpoint(tmp_path: Path) -> None:
    assert checks.image_errors(ROOT, DEPLOY / "orchestrator.Dockerfile", tmp_path) == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_model_image_build_steps_run_from_the_copied_tree(tmp_path: Path) -> None:
    """Its final stage is busybox; the build stage runs `python -m models.export_encoder` and `... train_head`."""
    assert checks.image_errors(ROOT, DEPLOY / "models.Dockerfile", tmp_path) == []


@pytest.mark.parametrize("dockerfile", ["embedding.Dockerfile", "orchestrator.Dockerfile", "models.Dockerfile"])
def test_build_time_tools_install_only_in_the_models_image(dockerfile: str) -> None:
    """pyproject's `models` extra (nncf: int8 quantization) is the models image's alone: a service image's
    install pulls none of it in, and each image's import check above proves no module it copies imports it,
    so the services import and start without it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    optional = project["optional-dependencies"]
    build_time = {canonicalize_name(Requirement(r).name) for r in optional["models"]}
    installs = [
        word
        for stage in checks.dockerfile_stages(ROOT / DEPLOY / dockerfile)
        for words in checks.run_commands(stage)
        if words[0].endswith("/bin/pip") and words[1:2] == ["install"]
        for word in words[2:]
        if word.startswith(".")
    ]
    extras = {e.strip() for spec in installs for e in spec.removeprefix(".").strip("[]").split(",") if e.strip()}
    required = [*project["dependencies"], *(r for extra in extras for r in optional[extra])]
    installed = build_time & checks.distribution_closure(required)
    assert build_time and installed == (build_time if dockerfile == "models.Dockerfile" else set())


def test_the_dockerfile_parser_reads_the_final_stage() -> None:
    build, final = checks.dockerfile_stages(ROOT / DEPLOY / "embedding.Dockerfile")
    assert (build.name, build.workdir, build.args) == ("build", "/src", {"EXTRAS": "ml,gpu"})
    assert ["service_common/"] in [sources for sources, _ in build.copies]
    assert any(words[-1] == ".[ml,gpu]" for words in checks.run_commands(build))
    assert final.env["PATH"] == f"/opt/venv/bin:{checks.HOST_PATH}"
    assert final.env["EMBEDDING_MODEL_DIR"] == "/models/encoder"
    assert (final.workdir, final.entrypoint) == ("/tmp", ["python", "-m", "embedding_service"])


def test_the_dockerignore_matcher() -> None:
    ignore = checks.DockerIgnore(ROOT / ".dockerignore")
    assert not ignore.excluded("service_common/app.py")
    assert not ignore.excluded("models/data/sentiment/train.tsv")
    assert ignore.excluded("service_common/__pycache__/app.cpython-311.pyc")
    assert ignore.excluded("tests/deploy/checks.py")
    assert ignore.excluded(".venv")


def test_runtime_imports_skip_optional_and_type_checking_imports() -> None:
    source = (
        "import os.path\nfrom typing import TYPE_CHECKING\nfrom . import sibling\n"
        "if TYPE_CHECKING:\n    import models\n"
        "try:\n    import optional_dep\nexcept ImportError:\n    pass\n"
        "def f():\n    from models.manifest import X\n"
    )
    assert checks.runtime_imports(ast.parse(source)) == [(1, "os"), (2, "typing"), (11, "models")]


def test_container_paths_get_their_stand_ins_once() -> None:
    paths = {"/opt/venv": Path("/tmp/t/venv"), "/tmp": Path("/tmp/t/workdir")}
    variables = {"PATH": "/opt/venv/bin:/usr/bin", "HOME": "/tmp", "CACHE": "/tmp/xla", "OTHER": "/tmpfs:/x/tmp"}
    assert checks.stand_in_paths(variables, paths) == {
        "PATH": "/tmp/t/venv/bin:/usr/bin",
        "HOME": "/tmp/t/workdir",
        "CACHE": "/tmp/t/workdir/xla",
        "OTHER": "/tmpfs:/x/tmp",
    }


def test_a_fresh_venv_sees_the_dependencies_but_not_the_project(tmp_path: Path) -> None:
    """The guard that makes the image checks able to fail: the dev venv's editable install is not active."""
    python = checks.fresh_venv(tmp_path / "venv")
    (tmp_path / "empty").mkdir()
    env = {"PATH": checks.HOST_PATH, "HOME": str(tmp_path)}
    project = sorted(checks.top_level_packages(ROOT))
    assert "embedding_service" in project
    assert checks.importable(python, project, tmp_path / "empty", env) == []
    assert checks.importable(python, ["fastapi", "pydantic_settings"], tmp_path / "empty", env) == [
        "fastapi",
        "pydantic_settings",
    ]
