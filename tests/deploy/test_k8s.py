"""k8s/: every overlay, alone and with each component, renders, validates against Kubernetes' schemas (and our
custom resources against KEDA's and prometheus-operator's), passes checkov and our structural rules."""

from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy import checks, monitoring_checks
from tests.deploy.checks import RENDERINGS, Obj

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
# What each component adds to an overlay: the second encoder is the embedding service's objects once more.
ADDED_KINDS = {
    "second-encoder": {
        "ServiceAccount": 1,
        "Deployment": 1,
        "Service": 1,
        "PodDisruptionBudget": 1,
        "NetworkPolicy": 1,
    },
    "autoscale-embedding": {"ScaledObject": 1},
    "monitoring": {"PodMonitor": 1, "PrometheusRule": 1, "NetworkPolicy": 1, "ConfigMap": 1},
}
ADDED_DEPLOYMENTS = {"second-encoder": {"embedding-next"}}
GPU_RENDERINGS = [r for r in RENDERINGS if r.split("+")[0] == "gpu"]
UPGRADES = [r for r in RENDERINGS if "second-encoder" in r.split("+")[1:]]
# Both autoscale-embedding and monitoring are rendered together (checks.RENDERINGS).
MONITORED = [r for r in RENDERINGS if "monitoring" in r.split("+")[1:]]
ENCODERS = ["embedding", "embedding-next"]


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_rendering_is_the_whole_pipeline_in_one_namespace(rendered: dict[str, list[Obj]], rendering: str) -> None:
    objects = rendered[rendering]
    kinds, deployments = Counter(EXPECTED_KINDS), {"embedding", "head", "orchestrator"}
    for component in rendering.split("+")[1:]:
        kinds.update(ADDED_KINDS[component])
        deployments |= ADDED_DEPLOYMENTS.get(component, set())
    assert Counter(o["kind"] for o in objects) == kinds
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {"split-embedding"}
    assert set(checks.by_kind(objects, "Deployment")) == deployments


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_rendering_is_valid_for_current_kubernetes(rendered: dict[str, list[Obj]], rendering: str) -> None:
    assert checks.schema_errors(rendered[rendering]) == []


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_rendering_structure(rendered: dict[str, list[Obj]], rendering: str) -> None:
    expect_gpu = rendering in GPU_RENDERINGS
    assert checks.structural_errors(rendered[rendering], expect_gpu=expect_gpu) == []


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_tfserving_config_in_k8s_is_the_head_services_byte_for_byte(
    rendered: dict[str, list[Obj]], rendering: str
) -> None:
    assert checks.tfserving_config_errors(rendered[rendering]) == []


@pytest.mark.parametrize("rendering", GPU_RENDERINGS)
def test_gpu_overlay_puts_only_the_encoders_on_gpu_nodes(rendered: dict[str, list[Obj]], rendering: str) -> None:
    objects = rendered[rendering]
    encoders = checks.running(objects, "embedding")
    assert encoders
    for name, deployment in encoders.items():
        embedding = deployment["spec"]["template"]["spec"]
        assert embedding["containers"][0]["resources"]["limits"][checks.GPU] == "1", name
        assert embedding["containers"][0]["image"].endswith("-gpu"), name
    for name in ("head", "orchestrator"):
        assert "tolerations" not in checks.by_kind(objects, "Deployment")[name]["spec"]["template"]["spec"], name


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_the_orchestrators_lane_key_reaches_every_service_from_one_secret(
    rendered: dict[str, list[Obj]], rendering: str
) -> None:
    objects = rendered[rendering]
    assert checks.k8s_lane_key_errors(objects) == []
    (secret,) = checks.by_kind(objects, "Secret").values()
    for name in [*checks.running(objects, "embedding"), "orchestrator"]:
        pod = checks.by_kind(objects, "Deployment")[name]["spec"]["template"]["spec"]
        mounted = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
        assert mounted == [secret["metadata"]["name"]], name  # the generated name: a new key rolls the pods
        assert not any("valueFrom" in e for c in pod["containers"] for e in c.get("env", [])), "a file, not env"


# ---- the second encoder (k8s/components/second-encoder) -----------------------------------------


def models_image(deployment: Obj) -> str:
    (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
    image: str = init["image"]
    return image


@pytest.mark.parametrize("rendering", UPGRADES)
def test_the_second_encoder_is_the_base_embedding_service_on_another_models_image(
    rendered: dict[str, list[Obj]], rendering: str
) -> None:
    """Catches the new encoder's tag set to the old one's, in embedding-next/kustomization.yaml or by an
    overlay's `images:` entry for the models image (both Deployments then serve the old encoder), and any
    drift of the second from the base's embedding service (but the replica count, which components/
    autoscale-embedding gives the first's autoscaler)."""
    first, second = (dict(checks.running(rendered[rendering], "embedding")[n]) for n in ENCODERS)
    assert models_image(first) != models_image(second)
    for deployment in (first, second):
        deployment["spec"] = {k: v for k, v in deployment["spec"].items() if k != "replicas"}
    renamed = yaml.safe_dump(second).replace("embedding-next", "embedding")
    assert yaml.safe_load(renamed.replace(models_image(second), models_image(first))) == first


@pytest.mark.parametrize("rendering", UPGRADES)
def test_each_encoder_deployment_and_service_selects_only_its_own_pods(
    rendered: dict[str, list[Obj]], rendering: str
) -> None:
    """Catches relabel.yaml left out (nameSuffix alone: both Deployments and Services on the same pods), or
    its Service line dropped (embedding-next's Service sending the new encoder's texts to the old one)."""
    objects = rendered[rendering]
    workloads = checks.by_kind(objects, "Deployment")
    services = checks.by_kind(objects, "Service")
    selectors = [workloads[n]["spec"]["selector"]["matchLabels"] for n in ENCODERS]
    assert selectors[0] != selectors[1]
    for name, selector in zip(ENCODERS, selectors, strict=True):
        assert checks.selected(selector, workloads) == [name]
        assert checks.selected(services[name]["spec"]["selector"], workloads) == [name]


@pytest.mark.parametrize("rendering", UPGRADES)
def test_the_orchestrator_calls_both_encoders(rendered: dict[str, list[Obj]], rendering: str) -> None:
    """Catches the component's orchestrator patch dropped or misspelt (no head could move to the new one)."""
    objects = rendered[rendering]
    orchestrator = checks.by_kind(objects, "Deployment")["orchestrator"]
    env = {e["name"]: e.get("value") for e in checks.containers(orchestrator)[0]["env"]}
    urls = str(env["ORCHESTRATOR_EMBEDDING_URLS"]).split(",")
    assert sorted(urlsplit(url).hostname or "" for url in urls) == ENCODERS
    assert checks.embedding_url_errors(objects) == []


@pytest.mark.parametrize("rendering", UPGRADES)
def test_network_policies_let_the_orchestrator_reach_both_encoders(
    rendered: dict[str, list[Obj]], rendering: str
) -> None:
    """Catches relabel.yaml's NetworkPolicy line dropped: the second encoder's pods under default-deny only."""
    objects = rendered[rendering]
    deployments = checks.by_kind(objects, "Deployment")
    orchestrator = checks.pod_labels(deployments["orchestrator"])
    for name in ENCODERS:
        pods = checks.pod_labels(deployments[name])
        rules = [
            rule
            for policy in checks.by_kind(objects, "NetworkPolicy").values()
            if all(pods.get(k) == v for k, v in policy["spec"]["podSelector"].get("matchLabels", {}).items())
            for rule in policy["spec"].get("ingress", [])
        ]
        assert any(
            {"port": 8081, "protocol": "TCP"} in rule["ports"]
            and any(
                checks.matches(peer.get("podSelector", {}).get("matchLabels", {}), orchestrator)
                for peer in rule["from"]
            )
            for rule in rules
        ), name
    assert checks.network_policy_errors(objects) == []


def test_every_image_is_pinned(rendered: dict[str, list[Obj]]) -> None:
    for rendering, objects in rendered.items():
        for name, deployment in checks.by_kind(objects, "Deployment").items():
            for container in checks.containers(deployment, init=True):
                image = container["image"]
                tag = image.rsplit("/", 1)[-1].partition(":")[2]
                assert "@sha256:" in image or (tag and tag != "latest"), f"{rendering} {name}: {image}"


@pytest.mark.slow
def test_checkov_finds_nothing_unexplained(rendered: dict[str, list[Obj]], tmp_path: Path) -> None:
    files = [*sorted((checks.ROOT / "deploy").glob("*.Dockerfile"))]
    for rendering, objects in rendered.items():
        files.append(tmp_path / f"{rendering}.yaml")
        files[-1].write_text(yaml.safe_dump_all(objects))
    failed, unexplained = checks.checkov_findings(files)
    assert failed == []
    assert unexplained == []


# ---- autoscaling and monitoring (k8s/components/autoscale-embedding, k8s/components/monitoring) ---------


@pytest.mark.parametrize("rendering", MONITORED)
def test_the_encoder_scales_on_its_queue_and_prometheus_scrapes_loads_the_rules_and_grafana_the_dashboard(
    rendered: dict[str, list[Obj]], rendering: str
) -> None:
    """Scaling fast up, slowly down (target_errors, in test_rendering_structure, keeps it above the PDB and
    owning the replica count); every pod scraped as its service, the rules and the dashboard from their files."""
    objects = rendered[rendering]
    assert monitoring_checks.scaling_errors(objects) == []
    (scaled,) = checks.by_kind(objects, "ScaledObject").values()
    assert scaled["spec"]["scaleTargetRef"]["name"] == "embedding"
    assert "replicas" not in checks.by_kind(objects, "Deployment")["embedding"]["spec"]
    assert [t["name"] for t in scaled["spec"]["triggers"]] == ["admitted-texts", "refused-texts"]
    assert monitoring_checks.scrape_errors(objects) == []
    assert monitoring_checks.dashboard_config_map_errors(objects) == []
    (rule,) = checks.by_kind(objects, "PrometheusRule").values()
    assert rule["spec"] == yaml.safe_load(monitoring_checks.RULES.read_text())
