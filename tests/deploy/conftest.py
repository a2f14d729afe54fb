"""Each rendering (an overlay, alone or with components) built once per session with the pinned kustomize."""

import pytest

from tests.deploy.checks import RENDERINGS, Obj, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Obj]]:
    return {rendering: render(rendering) for rendering in RENDERINGS}
