"""The checks catch what they are for: each test breaks a copy of a real file in one way and runs the same
check function the real files pass. A replacement that no longer applies fails the test, never passes it."""

import shutil
from pathlib import Path

import pytest
import yaml

from tests.deploy import checks, monitoring_checks
from tests.deploy.checks import ROOT, Obj


def break_file(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not exactly once in {path}"
    path.write_text(text.replace(old, new))


def broken_render(tmp_path: Path, file: str, old: str, new: str, rendering: str = "cpu") -> list[Obj]:
    """k8s/ and the trees it reads copied (same relative layout), one file broken, the rendering built."""
    for tree in checks.K8S_SOURCES:
        shutil.copytree(ROOT / tree, tmp_path / tree)
    break_file(tmp_path / file, old, new)
    return checks.render(rendering, tmp_path)


def test_a_service_selecting_no_pod(tmp_path: Path) -> None:
    objects = broken_render(
        tmp_path,
        "k8s/base/head.yaml",
        "  selector:\n    app.kubernetes.io/name: head\n",
        "  selector:\n    app.kubernetes.io/name: heads\n",
    )
    assert checks.selector_errors(objects) == ["Service head: selector matches no pod"]


def test_a_pdb_selecting_no_pod(tmp_path: Path) -> None:
    old = "kind: PodDisruptionBudget\nmetadata:\n  name: orchestrator\nspec:\n  minAvailable: 1\n"
    old += "  selector:\n    matchLabels:\n      app.kubernetes.io/name: orchestrator\n"
    objects = broken_render(
        tmp_path, "k8s/base/orchestrator.yaml", old, old.replace("name: orchestrator\n", "name: orchestra\n")
    )
    errors = checks.selector_errors(objects) + checks.target_errors(objects)
    assert "PodDisruptionBudget orchestra: selector matches no pod" in errors
    assert "Deployment orchestrator: no PodDisruptionBudget" in errors


def test_an_hpa_scaling_a_missing_deployment(tmp_path: Path) -> None:
    objects = broken_render(
        tmp_path,
        "k8s/base/head.yaml",
        "    kind: Deployment\n    name: head\n",
        "    kind: Deployment\n    name: header\n",
    )
    assert checks.target_errors(objects) == [
        "HorizontalPodAutoscaler head: target Deployment/header does not exist",
        "Deployment head: no HorizontalPodAutoscaler",
    ]


def test_a_missing_probe(tmp_path: Path) -> None:
    probe = (
        "          readinessProbe:\n            httpGet: {path: /readyz, port: http}\n"
        "            periodSeconds: 5\n            timeoutSeconds: 3\n            failureThreshold: 2\n"
    )
    objects = broken_render(tmp_path, "k8s/base/orchestrator.yaml", probe, "")
    assert "Deployment orchestrator: no readinessProbe" in checks.port_and_probe_errors(objects)


def test_a_probe_on_a_path_the_service_does_not_serve(tmp_path: Path) -> None:
    old = "          readinessProbe:\n            httpGet: {path: /readyz, port: http}\n"
    old += "            periodSeconds: 5\n            timeoutSeconds: 2\n"
    objects = broken_render(tmp_path, "k8s/base/embedding/embedding.yaml", old, old.replace("/readyz", "/ready"))
    assert checks.port_and_probe_errors(objects) == [
        "Deployment embedding: readinessProbe path /ready is no health endpoint"
    ]


def test_a_container_port_other_than_the_services_default(tmp_path: Path) -> None:
    objects = broken_render(tmp_path, "k8s/base/embedding/embedding.yaml", "containerPort: 8081", "containerPort: 8082")
    assert "Deployment embedding: container ports {'http': 8082} != the service's defaults {'http': 8081}" in (
        checks.port_and_probe_errors(objects)
    )


@pytest.mark.parametrize(
    ("file", "old", "new"),
    [
        (
            "k8s/base/orchestrator.yaml",
            "apiVersion: apps/v1\nkind: Deployment",
            "apiVersion: extensions/v1beta1\nkind: Deployment",
        ),
        ("k8s/base/head.yaml", "apiVersion: autoscaling/v2\n", "apiVersion: autoscaling/v2beta2\n"),
        ("k8s/base/embedding/embedding.yaml", "apiVersion: policy/v1\n", "apiVersion: policy/v1beta1\n"),
    ],
    ids=["extensions-v1beta1-deployment", "autoscaling-v2beta2-hpa", "policy-v1beta1-pdb"],
)
def test_a_removed_api_version(tmp_path: Path, file: str, old: str, new: str) -> None:
    errors = checks.schema_errors(broken_render(tmp_path, file, old, new))
    assert errors and all("no such API version or kind" in e for e in errors), errors


def test_an_unknown_field(tmp_path: Path) -> None:
    objects = broken_render(tmp_path, "k8s/base/head.yaml", "  minReplicas: 2\n", "  minReplicas: 2\n  minReplica: 2\n")
    assert checks.schema_errors(objects)


def test_gpu_requests_unequal_to_limits(tmp_path: Path) -> None:
    old = 'limits: {cpu: "4", memory: 8Gi, nvidia.com/gpu: "1"}'
    objects = broken_render(
        tmp_path, "k8s/overlays/gpu/embedding-gpu.yaml", old, old.replace('gpu: "1"', 'gpu: "2"'), "gpu"
    )
    assert checks.gpu_errors(objects, expect_gpu=True) == [
        "Deployment embedding/embedding: nvidia.com/gpu requests 1 != limits 2"
    ]


def test_a_gpu_pod_without_its_toleration(tmp_path: Path) -> None:
    objects = broken_render(tmp_path, "k8s/overlays/gpu/embedding-gpu.yaml", "key: nvidia.com/gpu", "key: gpu", "gpu")
    assert checks.gpu_errors(objects, expect_gpu=True) == [
        "Deployment embedding: requests a GPU without tolerating the nvidia.com/gpu taint"
    ]


def test_tfserving_config_drifting_from_the_head_service(tmp_path: Path) -> None:
    objects = broken_render(
        tmp_path,
        "head_service/tfserving/batching.config",
        "batch_timeout_micros { value: 0 }",
        "batch_timeout_micros { value: 1000 }",
    )
    source = checks.TFSERVING_CONFIG
    assert checks.tfserving_config_errors(objects, source) == [
        f"ConfigMap batching.config differs from {source / 'batching.config'}"
    ]


def test_tfserving_reading_a_config_file_that_is_not_mounted(tmp_path: Path) -> None:
    objects = broken_render(
        tmp_path, "k8s/base/head.yaml", "--monitoring_config_file=/config/", "--monitoring_config_file=/etc/"
    )
    assert checks.tfserving_config_errors(objects) == [
        "head: --monitoring_config_file=/config/monitoring.config is not among its arguments"
    ]


def test_a_model_listed_twice(tmp_path: Path) -> None:
    models = "head_service/tfserving/models.config"
    objects = broken_render(tmp_path, models, 'name: "topic"', 'name: "sentiment"')
    source = tmp_path / "head_service" / "tfserving"
    assert checks.tfserving_config_errors(objects, source) == ["models.config: model 'sentiment' is listed 2 times"]


def test_a_base_path_outside_the_models_volume(tmp_path: Path) -> None:
    models = "head_service/tfserving/models.config"
    objects = broken_render(tmp_path, models, 'base_path: "/models/heads/topic"', 'base_path: "/models/topic"')
    source = tmp_path / "head_service" / "tfserving"
    assert checks.tfserving_config_errors(objects, source) == [
        "head: model 'topic': nothing an init container fills is mounted above its base path /models/topic"
    ]
    dockerfile = ROOT / "deploy" / "head.Dockerfile"
    assert checks.head_dockerfile_errors(dockerfile, source) == [
        "head.Dockerfile: model 'topic': its base path /models/topic is in nothing copied from the models image"
    ]


def test_the_init_container_copying_another_tree_of_the_models_image(tmp_path: Path) -> None:
    objects = broken_render(
        tmp_path, "k8s/base/head.yaml", "cp -R /models/heads/. /target/", "cp -R /models/head/. /target/"
    )
    assert checks.tfserving_config_errors(objects) == [
        "head: init container models does not copy the models image's /models/heads into models"
    ]


def test_probes_on_a_model_the_config_does_not_list(tmp_path: Path) -> None:
    objects = broken_render(
        tmp_path,
        "k8s/base/head.yaml",
        "httpGet: {path: /v1/models/sentiment/metadata, port: rest}",
        "httpGet: {path: /v1/models/head/metadata, port: rest}",
    )
    assert checks.port_and_probe_errors(objects) == [
        "Deployment head: readinessProbe path /v1/models/head/metadata is no health endpoint"
    ]
    # The probed model renamed in models.config: every probe now asks about a model it does not list.
    renamed = broken_render(
        tmp_path / "renamed", "head_service/tfserving/models.config", 'name: "sentiment"', 'name: "mood"'
    )
    source = tmp_path / "renamed" / "head_service" / "tfserving"
    assert [e.split(" path ")[0] for e in checks.port_and_probe_errors(renamed, source)] == [
        f"Deployment head: {probe}" for probe in checks.PROBES
    ]


def test_compose_and_image_health_checks_on_a_model_the_config_does_not_list(tmp_path: Path) -> None:
    shutil.copytree(checks.TFSERVING_CONFIG, tmp_path / "head_service" / "tfserving")
    (tmp_path / "deploy").mkdir()
    for file in ("docker-compose.yml", "head.Dockerfile"):
        shutil.copy(ROOT / "deploy" / file, tmp_path / "deploy" / file)
        break_file(tmp_path / "deploy" / file, "GET /v1/models/sentiment/metadata", "GET /v1/models/head/metadata")
    source = tmp_path / "head_service" / "tfserving"
    unlisted = "the health check names model 'head', which models.config does not list"
    assert checks.compose_head_errors(tmp_path / "deploy" / "docker-compose.yml", source) == [
        f"compose head: {unlisted}"
    ]
    assert checks.head_dockerfile_errors(tmp_path / "deploy" / "head.Dockerfile", source) == [
        f"head.Dockerfile: {unlisted}"
    ]


def test_compose_heads_off_the_models_volume(tmp_path: Path) -> None:
    shutil.copytree(checks.TFSERVING_CONFIG, tmp_path / "head_service" / "tfserving")
    (tmp_path / "deploy").mkdir()
    compose = tmp_path / "deploy" / "docker-compose.yml"
    shutil.copy(ROOT / "deploy" / "docker-compose.yml", compose)
    break_file(
        compose,
        "      - models:/models:ro\n      - ../head_service",
        "      - models:/encoder:ro\n      - ../head_service",
    )
    errors = checks.compose_head_errors(compose, tmp_path / "head_service" / "tfserving")
    assert errors == [
        f"compose head: model {name!r}: its base path /models/heads/{name} is on no volume the models service fills"
        for name in ("sentiment", "topic")
    ]


def test_the_head_opened_to_every_pod(tmp_path: Path) -> None:
    old = "  ingress:\n    - from:\n        - podSelector:\n            matchLabels:\n"
    old += "              app.kubernetes.io/name: orchestrator\n      ports:\n        - {port: 8500"
    objects = broken_render(
        tmp_path, "k8s/base/network-policies.yaml", old, "  ingress:\n    - ports:\n        - {port: 8500"
    )
    assert checks.network_policy_errors(objects) == [
        "head: ingress allowed from [{}], expected exactly [{'app.kubernetes.io/name': 'orchestrator'}]"
    ]


UPGRADE = "cpu+second-encoder"
NEXT = "k8s/components/second-encoder"


def test_a_second_encoder_not_relabelled(tmp_path: Path) -> None:
    """nameSuffix alone: the two Deployments, Services and PDBs all on the same pods."""
    old = "transformers:\n  - relabel.yaml\n"
    errors = checks.selector_errors(
        broken_render(tmp_path, f"{NEXT}/embedding-next/kustomization.yaml", old, "", UPGRADE)
    )
    assert "Deployment embedding: selector also matches the pods of ['embedding-next']" in errors
    both = "['embedding', 'embedding-next']"
    assert f"Service embedding-next: selects the pods of {both}, expected ['embedding-next']" in errors


def test_a_second_encoders_service_on_the_first_encoders_pods(tmp_path: Path) -> None:
    old = "  - {kind: Service, path: spec/selector, create: true}\n"
    objects = broken_render(tmp_path, f"{NEXT}/embedding-next/relabel.yaml", old, "", UPGRADE)
    assert checks.selector_errors(objects) == [
        "Service embedding-next: selects the pods of ['embedding'], expected ['embedding-next']"
    ]


def test_a_second_encoder_spread_over_the_first_encoders_pods(tmp_path: Path) -> None:
    old = "  - {kind: Deployment, path: spec/template/spec/topologySpreadConstraints/labelSelector/matchLabels}\n"
    objects = broken_render(tmp_path, f"{NEXT}/embedding-next/relabel.yaml", old, "", UPGRADE)
    assert checks.selector_errors(objects) == [
        "Deployment embedding-next: topology spread counts the pods of ['embedding'], expected ['embedding-next']"
    ]


def test_a_second_encoder_under_the_first_encoders_network_policy(tmp_path: Path) -> None:
    """Its pods get default-deny only (the orchestrator cannot reach them); the first's get the rules twice."""
    old = "  - {kind: NetworkPolicy, path: spec/podSelector/matchLabels, create: true}\n"
    objects = broken_render(tmp_path, f"{NEXT}/embedding-next/relabel.yaml", old, "", UPGRADE)
    errors = checks.network_policy_errors(objects)
    assert [e.split(":")[0] for e in errors] == ["embedding", "embedding-next"]
    assert errors[1].startswith("embedding-next: ingress allowed from [], expected exactly ")


def test_an_orchestrator_not_calling_the_second_encoder(tmp_path: Path) -> None:
    objects = broken_render(
        tmp_path,
        f"{NEXT}/orchestrator-embedding-urls.yaml",
        "http://embedding-next:8081",
        "http://embedding-nxt:8081",
        UPGRADE,
    )
    assert checks.embedding_url_errors(objects) == [
        "orchestrator: http://embedding-nxt:8081 names no Service in namespace split-embedding",
        "Deployment embedding-next: ORCHESTRATOR_EMBEDDING_URLS names no Service in front of it",
    ]


def test_an_orchestrator_calling_a_port_its_embedding_service_does_not_serve(tmp_path: Path) -> None:
    old = '{name: ORCHESTRATOR_EMBEDDING_URLS, value: "http://embedding:8081"}'
    objects = broken_render(tmp_path, "k8s/base/orchestrator.yaml", old, old.replace("8081", "8080"))
    assert checks.embedding_url_errors(objects) == [
        "orchestrator: http://embedding:8080: Service embedding has no port 8080"
    ]


def test_a_deployment_running_none_of_the_services(tmp_path: Path) -> None:
    old = "        app.kubernetes.io/component: classifier\n"
    objects = broken_render(tmp_path, "k8s/base/head.yaml", old, old.replace("classifier", "classifer"))
    assert checks.port_and_probe_errors(objects) == [
        "0 Deployments run the head service, expected one",
        "Deployment head: app.kubernetes.io/component names none of ['api', 'classifier', 'encoder']",
    ]


def test_a_writable_root_filesystem_in_an_init_container(tmp_path: Path) -> None:
    old = "limits: {cpu: 500m, memory: 128Mi}\n          securityContext:\n            runAsNonRoot: true\n"
    old += "            runAsUser: 10001\n            runAsGroup: 10001\n            readOnlyRootFilesystem: true\n"
    objects = broken_render(
        tmp_path, "k8s/base/embedding/embedding.yaml", old, old.replace("Filesystem: true", "Filesystem: false")
    )
    assert checks.security_errors(objects) == ["Deployment embedding/models: readOnlyRootFilesystem is not True"]


def test_a_misspelt_setting(tmp_path: Path) -> None:
    objects = broken_render(
        tmp_path, "k8s/base/orchestrator.yaml", "name: ORCHESTRATOR_EMBEDDING_URLS", "name: ORCHESTRATOR_EMBEDING_URLS"
    )
    assert checks.settings_errors(objects) == [
        "Deployment orchestrator: unknown ORCHESTRATOR_* settings ['embeding_urls']"
    ]


def test_an_invalid_setting_value(tmp_path: Path) -> None:
    old = '{name: EMBEDDING_MAX_BATCH_SIZE, value: "128"}'
    objects = broken_render(tmp_path, "k8s/overlays/gpu/embedding-gpu.yaml", old, old.replace("128", "4096"), "gpu")
    errors = checks.settings_errors(objects)
    assert len(errors) == 1 and "max_batch_size" in errors[0]


def test_an_orchestrator_without_its_lane_key(tmp_path: Path) -> None:
    old = "            - {name: ORCHESTRATOR_EMBEDDING_API_KEY_FILE, value: /run/secrets/lane-key/lane-keys}\n"
    objects = broken_render(tmp_path, "k8s/base/orchestrator.yaml", old, "")
    assert checks.k8s_lane_key_errors(objects) == [
        "k8s embedding: the orchestrator sends no key to the embedding service"
    ]


def test_compose_giving_the_orchestrator_a_key_of_a_lane_without_weight(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    for file in ("docker-compose.yml", "orchestrator-lane-key"):
        shutil.copy(ROOT / "deploy" / file, tmp_path / "deploy" / file)
    break_file(tmp_path / "deploy" / "orchestrator-lane-key", "orchestrator:", "bulk:")
    assert checks.compose_lane_key_errors(tmp_path / "deploy" / "docker-compose.yml") == [
        f"compose {name}: the orchestrator's lane 'bulk' weighs 1, as much as anyone's"
        for name in ("embedding-gpu", "embedding-cpu")
    ]


def test_a_dockerfile_on_the_latest_tag(tmp_path: Path) -> None:
    dockerfile = tmp_path / "orchestrator.Dockerfile"
    shutil.copy(ROOT / "deploy" / "orchestrator.Dockerfile", dockerfile)
    break_file(dockerfile, "FROM python:3.11.13-slim-bookworm AS build", "FROM python:latest AS build")
    assert any("DL3007" in finding for finding in checks.hadolint_findings(dockerfile))


def test_compose_depending_on_a_missing_service(tmp_path: Path) -> None:
    compose = tmp_path / "docker-compose.yml"
    shutil.copy(ROOT / "deploy" / "docker-compose.yml", compose)
    break_file(
        compose,
        "      head:\n        condition: service_healthy\n",
        "      heads:\n        condition: service_healthy\n",
    )
    assert checks.compose_errors(compose, "cpu")


@pytest.mark.slow
def test_checkov_on_a_privileged_pod_and_a_dockerfile_without_healthcheck(tmp_path: Path) -> None:
    objects = broken_render(tmp_path, "k8s/base/orchestrator.yaml", "            allowPrivilegeEscalation: false\n", "")
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    dockerfile = tmp_path / "embedding.Dockerfile"
    shutil.copy(ROOT / "deploy" / "embedding.Dockerfile", dockerfile)
    text = dockerfile.read_text()
    dockerfile.write_text(text[: text.index("HEALTHCHECK")] + text[text.index("ENTRYPOINT") :])
    failed, _ = checks.checkov_findings([manifest, dockerfile])
    assert {f.split()[0] for f in failed} >= {"CKV_K8S_20", "CKV_DOCKER_2"}, failed


@pytest.mark.slow
def test_checkov_skip_without_a_reason(tmp_path: Path) -> None:
    dockerfile = tmp_path / "models.Dockerfile"
    shutil.copy(ROOT / "deploy" / "models.Dockerfile", dockerfile)
    text = dockerfile.read_text()
    reason = text[text.index("# checkov:skip=CKV_DOCKER_2:") :].splitlines()[0]
    break_file(dockerfile, reason, "# checkov:skip=CKV_DOCKER_2")
    _, unexplained = checks.checkov_findings([dockerfile])
    assert len(unexplained) == 1 and unexplained[0].startswith("CKV_DOCKER_2 skipped without a reason")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_an_image_missing_a_package_it_imports_and_a_dependency_it_does_not_install(tmp_path: Path) -> None:
    """The orchestrator image without its `COPY service_common/` (it dies at import), and with a lazy
    import of TensorFlow, which its base-dependencies-only install does not bring."""
    root = tmp_path / "repo"
    no_caches = shutil.ignore_patterns("__pycache__")
    for directory in ("service_common", "orchestrator"):
        shutil.copytree(ROOT / directory, root / directory, ignore=no_caches)
    for file in ("pyproject.toml", ".dockerignore", "deploy/orchestrator.Dockerfile"):
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / file, root / file)
    break_file(root / "deploy/orchestrator.Dockerfile", "COPY service_common/ service_common/\n", "")
    break_file(
        root / "orchestrator/__main__.py", "def main() -> None:\n", "def main() -> None:\n    import tensorflow\n"
    )
    errors = checks.image_errors(root, Path("deploy/orchestrator.Dockerfile"), tmp_path / "image")
    found = {(e.split(":")[0], e.split(": ", 1)[-1]) for e in errors}
    assert ("orchestrator/__main__.py", "imports service_common, which the image does not copy") in found
    assert ("orchestrator/__main__.py", "imports tensorflow, which no dependency of the image provides") in found
    assert any("ModuleNotFoundError: No module named 'service_common'" in e for e in errors), errors


MONITORED = "cpu+autoscale-embedding+monitoring"
AUTOSCALE = "k8s/components/autoscale-embedding"
MONITORING = "k8s/components/monitoring/objects"


def broken_renders(tmp_path: Path, *breaks: tuple[str, str, str]) -> list[Obj]:
    """As broken_render, with several (file, old, new) breaks at once: the MONITORED rendering built once."""
    for tree in checks.K8S_SOURCES:
        shutil.copytree(ROOT / tree, tmp_path / tree)
    for file, old, new in breaks:
        break_file(tmp_path / file, old, new)
    return checks.render(MONITORED, tmp_path)


def test_an_autoscaler_broken_four_ways(tmp_path: Path) -> None:
    """Its patch dropped (every kubectl apply would reset its count), down to the PDB, a query on every encoder's
    pods (the second encoder's queue would scale the first), a field KEDA's schema does not know."""
    objects = broken_renders(
        tmp_path,
        (f"{AUTOSCALE}/kustomization.yaml", "      - op: remove\n        path: /spec/replicas\n", "      []\n"),
        (f"{AUTOSCALE}/scaled-object.yaml", "minReplicaCount: 2", "minReplicaCount: 1"),
        (f"{AUTOSCALE}/scaled-object.yaml", ', deployment="embedding"})', "})"),
        (f"{AUTOSCALE}/scaled-object.yaml", "pollingInterval: 15", "pollingSeconds: 15"),
    )
    errors = checks.target_errors(objects)
    assert "Deployment embedding: sets replicas although ScaledObject embedding owns them" in errors
    down_to = "ScaledObject embedding: scales embedding down to 1, not above its PodDisruptionBudget's minAvailable 1"
    assert down_to in errors
    (query,) = monitoring_checks.scaling_errors(objects)
    assert query.startswith("ScaledObject embedding: embedding_admitted_texts{") and "selects other pods" in query
    assert checks.schema_errors(o for o in objects if o["kind"] == "ScaledObject") == [
        "keda.sh/v1alpha1 ScaledObject embedding: Additional properties are not allowed ('pollingSeconds' was "
        "unexpected) at spec"
    ]


def test_an_autoscaler_quick_to_scale_down_and_slow_to_scale_up(tmp_path: Path, rendered: dict[str, list[Obj]]) -> None:
    file = tmp_path / "scaled-object.yaml"
    shutil.copy(ROOT / AUTOSCALE / "scaled-object.yaml", file)
    break_file(file, "stabilizationWindowSeconds: 600", "stabilizationWindowSeconds: 60")
    break_file(file, "{type: Pods, value: 1, periodSeconds: 120}", "{type: Pods, value: 4, periodSeconds: 60}")
    break_file(file, "stabilizationWindowSeconds: 0", "stabilizationWindowSeconds: 300")
    break_file(file, "{type: Percent, value: 100, periodSeconds: 30}", "{type: Percent, value: 50, periodSeconds: 30}")
    break_file(file, "{type: Pods, value: 2, periodSeconds: 30}", "{type: Pods, value: 2, periodSeconds: 300}")
    scaled = yaml.safe_load(file.read_text())
    assert monitoring_checks.scaling_errors([*rendered["cpu"], scaled]) == [
        "ScaledObject embedding: scales up only after a stabilisation window",
        "ScaledObject embedding: scales up by less than doubling or 2 pods a minute",
        "ScaledObject embedding: scales down after less than 5 minutes of lower recommendations",
        "ScaledObject embedding: scales down by more than one pod a minute",
    ]


def test_scraping_broken_three_ways(tmp_path: Path) -> None:
    """The PodMonitor on a port the head lacks, its relabelling naming the encoder's job wrong, and the
    NetworkPolicy keeping Prometheus out of the `http` ports."""
    objects = broken_renders(
        tmp_path,
        (f"{MONITORING}/pod-monitor.yaml", "    - port: rest\n", "    - port: metrics\n"),
        (f"{MONITORING}/pod-monitor.yaml", "regex: encoder\n", "regex: encoders\n"),
        (f"{MONITORING}/network-policy.yaml", "        - {port: http, protocol: TCP}\n", ""),
    )
    assert monitoring_checks.scrape_errors(objects) == [
        "Deployment embedding: scraped as job 'split-embedding/split-embedding', deployment 'embedding'",
        "Deployment embedding: no NetworkPolicy lets Prometheus reach its metrics port 8081",
        "Deployment head: scraped by 0 PodMonitor endpoints, expected 1",
        "Deployment orchestrator: no NetworkPolicy lets Prometheus reach its metrics port 8080",
    ]


def test_prometheus_let_into_every_port(tmp_path: Path) -> None:
    old = "      ports:\n        - {port: http, protocol: TCP}\n        - {port: rest, protocol: TCP}\n"
    objects = broken_renders(tmp_path, (f"{MONITORING}/network-policy.yaml", old, ""))
    errors = monitoring_checks.scrape_errors(objects)
    assert "Deployment head: Prometheus may reach ports ['every port'] besides metrics" in errors
    assert checks.network_policy_errors(objects) == []  # the peer is the scrape check's
