"""k8s/: every overlay renders, validates against Kubernetes' schemas, passes checkov and our structural rules."""

from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.deploy import checks
from tests.deploy.checks import OVERLAYS, Obj

EXPECTED_KINDS = {
    "Namespace": 1,
    "ServiceAccount": 3,
    "Deployment": 3,
    "Service": 3,
    "ConfigMap": 1,
    "Secret": 1,
    "HorizontalPodAutoscaler": 2,
    "PodDisruptionBudget": 3,
    "NetworkPolicy": 4,
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_whole_pipeline_into_one_namespace(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    assert Counter(o["kind"] for o in objects) == EXPECTED_KINDS
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {"split-embedding"}
    assert set(checks.by_kind(objects, "Deployment")) == {"embedding", "head", "orchestrator"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_is_valid_for_current_kubernetes(rendered: dict[str, list[Obj]], overlay: str) -> None:
    assert checks.schema_errors(rendered[overlay]) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_structure(rendered: dict[str, list[Obj]], overlay: str) -> None:
    assert checks.structural_errors(rendered[overlay], expect_gpu=overlay == "gpu") == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_tfserving_config_in_k8s_is_the_head_services_byte_for_byte(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    assert checks.tfserving_config_errors(rendered[overlay]) == []


def test_gpu_overlay_puts_only_the_encoder_on_gpu_nodes(rendered: dict[str, list[Obj]]) -> None:
    deployments = checks.by_kind(rendered["gpu"], "Deployment")
    embedding = deployments["embedding"]["spec"]["template"]["spec"]
    assert embedding["containers"][0]["resources"]["limits"][checks.GPU] == "1"
    assert embedding["containers"][0]["image"].endswith("-gpu")
    for name in ("head", "orchestrator"):
        assert "tolerations" not in deployments[name]["spec"]["template"]["spec"], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_orchestrators_lane_key_reaches_both_services_from_one_secret(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    assert checks.k8s_lane_key_errors(objects) == []
    (secret,) = checks.by_kind(objects, "Secret").values()
    for name in ("embedding", "orchestrator"):
        pod = checks.by_kind(objects, "Deployment")[name]["spec"]["template"]["spec"]
        mounted = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
        assert mounted == [secret["metadata"]["name"]], name  # the generated name: a new key rolls the pods
        assert not any("valueFrom" in e for c in pod["containers"] for e in c.get("env", [])), "a file, not env"


def test_every_image_is_pinned(rendered: dict[str, list[Obj]]) -> None:
    for overlay, objects in rendered.items():
        for name, deployment in checks.by_kind(objects, "Deployment").items():
            for container in checks.containers(deployment, init=True):
                image = container["image"]
                tag = image.rsplit("/", 1)[-1].partition(":")[2]
                assert "@sha256:" in image or (tag and tag != "latest"), f"{overlay} {name}: {image}"


@pytest.mark.slow
def test_checkov_finds_nothing_unexplained(rendered: dict[str, list[Obj]], tmp_path: Path) -> None:
    files = [*sorted((checks.ROOT / "deploy").glob("*.Dockerfile"))]
    for overlay, objects in rendered.items():
        files.append(tmp_path / f"{overlay}.yaml")
        files[-1].write_text(yaml.safe_dump_all(objects))
    failed, unexplained = checks.checkov_findings(files)
    assert failed == []
    assert unexplained == []
