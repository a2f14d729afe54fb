"""Each overlay rendered once per session with the pinned kustomize."""

import pytest

from tests.deploy.checks import OVERLAYS, ROOT, Obj, kustomize_build


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Obj]]:
    return {overlay: kustomize_build(ROOT / "k8s" / "overlays" / overlay) for overlay in OVERLAYS}
