"""deploy/: Dockerfiles lint clean and keep their promises; the compose file resolves for every profile, and its
monitoring profile runs Prometheus and Grafana on deploy/monitoring/'s files."""

import re
from pathlib import Path

import pytest
import yaml

from embedding_service.settings import EmbeddingSettings
from orchestrator.settings import OrchestratorSettings
from service_common.settings import ServiceSettings
from tests.deploy import checks, monitoring_checks
from tests.deploy.prometheus import promtool

DEPLOY = checks.ROOT / "deploy"
DOCKERFILES = sorted(DEPLOY.glob("*.Dockerfile"))
COMPOSE = DEPLOY / "docker-compose.yml"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_one_dockerfile_per_image() -> None:
    assert [d.name for d in DOCKERFILES] == [
        "embedding.Dockerfile",
        "head.Dockerfile",
        "models.Dockerfile",
        "orchestrator.Dockerfile",
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    assert checks.hadolint_findings(dockerfile) == []


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_multi_stage_pinned_non_root_and_health_checked(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    bases = [args.split()[0] for kind, args in steps if kind == "FROM"]
    assert len(bases) >= 2, "multi-stage"
    for base in bases:
        tag = base.rsplit("/", 1)[-1].partition(":")[2]
        assert "@sha256:" in base or (tag and tag != "latest" and "$" not in base), base
    users = [args for kind, args in steps if kind == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the last USER is not root"
    assert any(kind == "HEALTHCHECK" for kind, _ in steps)


def test_embedding_image_is_cuda_capable_and_orchestrator_image_has_no_tensorflow() -> None:
    embedding = (DEPLOY / "embedding.Dockerfile").read_text()
    assert "ARG EXTRAS=ml,gpu" in embedding  # tensorflow[and-cuda]: CUDA and cuDNN from NVIDIA's wheels
    runs = [args for kind, args in instructions(DEPLOY / "orchestrator.Dockerfile") if kind == "RUN"]
    installs = [args for args in runs if "pip install" in args]
    assert installs == ["/opt/venv/bin/pip install ."], "the base dependencies only: no extras"
    assert not any("tensorflow" in args.lower() for args in runs)


def test_head_image_is_the_official_tf_serving_with_the_head_services_config() -> None:
    steps = instructions(DEPLOY / "head.Dockerfile")
    assert any(kind == "FROM" and args.startswith("tensorflow/serving:") for kind, args in steps)
    copied = " ".join(args for kind, args in steps if kind == "COPY")
    for file in checks.TFSERVING_FILES:
        assert f"head_service/tfserving/{file}" in copied


def test_compose_and_the_head_image_serve_every_head_of_models_config() -> None:
    assert checks.model_config_errors() == []
    assert checks.compose_head_errors(COMPOSE) == []
    assert checks.head_dockerfile_errors(DEPLOY / "head.Dockerfile") == []


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (checks.ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines, "allow-list: everything is excluded first"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed.isdisjoint({".venv", "build", "tests", ".git", "deploy"})
    sources = {
        source.split("/")[0]
        for d in DOCKERFILES
        for kind, args in instructions(d)
        if kind == "COPY" and "--from" not in args
        for source in [a for a in args.split() if not a.startswith("--")][:-1]
    }
    assert sources and sources <= allowed, sources - allowed


@pytest.mark.parametrize("profile", ["gpu", "cpu", "tracing", "monitoring"])
def test_compose_config_resolves(profile: str) -> None:
    assert checks.compose_errors(COMPOSE, profile) == []


def test_compose_services_have_health_checks_ordered_start_and_the_gpu_reservation() -> None:
    services = dict(checks.compose_services(COMPOSE))
    assert set(services) == {
        *("models", "embedding-gpu", "embedding-cpu", "head", "orchestrator"),
        *("otel-collector", "prometheus", "grafana"),
    }
    for name, service in services.items():
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        # models: a one-shot copy, waited for with service_completed_successfully; the collector: a distroless
        # image nothing waits for (exporters retry in the background).
        if name not in ("models", "otel-collector"):
            assert "test" in service["healthcheck"], name
        for dependency in service.get("depends_on", {}).values():
            assert dependency["condition"] in {"service_healthy", "service_completed_successfully"}, name
    assert services["embedding-gpu"]["profiles"] == ["gpu"] and services["embedding-cpu"]["profiles"] == ["cpu"]
    devices = services["embedding-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "deploy" not in services["embedding-cpu"]
    orchestrator_needs = services["orchestrator"]["depends_on"]
    assert {k: v["condition"] for k, v in orchestrator_needs.items()} == {
        "embedding-gpu": "service_healthy",
        "embedding-cpu": "service_healthy",
        "head": "service_healthy",
    }
    assert "../head_service/tfserving:/config:ro" in services["head"]["volumes"]


def test_compose_environment_names_real_settings_with_valid_values() -> None:
    classes: dict[str, type[ServiceSettings]] = {"EMBEDDING_": EmbeddingSettings, "ORCHESTRATOR_": OrchestratorSettings}
    errors = []
    for name, service in checks.compose_services(COMPOSE):
        errors += checks.env_errors(f"compose {name}", checks.compose_env(COMPOSE, service), classes)
    assert errors == []


def test_compose_gives_the_orchestrator_a_lane_key_from_one_file_secret() -> None:
    assert checks.compose_lane_key_errors(COMPOSE) == []
    services = dict(checks.compose_services(COMPOSE))
    for name in ("embedding-gpu", "embedding-cpu", "orchestrator"):
        assert services[name]["secrets"] == ["orchestrator-lane-key"], name
    secret = yaml.safe_load(COMPOSE.read_text())["secrets"]["orchestrator-lane-key"]
    assert secret == {"file": "${ORCHESTRATOR_LANE_KEY_FILE:-./orchestrator-lane-key}"}  # a file: read_only holds


def test_tracing_is_off_in_compose_unless_an_endpoint_is_given_and_the_collector_listens_there() -> None:
    services = dict(checks.compose_services(COMPOSE))
    for name in ("embedding-gpu", "embedding-cpu", "orchestrator"):
        assert services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "${OTEL_EXPORTER_OTLP_ENDPOINT:-}", name
    collector = services["otel-collector"]
    assert collector["profiles"] == ["tracing"] and "4318" in collector["expose"]
    config = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    assert config["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]


def mounts(service: checks.Obj) -> dict[str, Path]:
    """A compose service's bind mounts: path in the container -> file here."""
    pairs = [str(v).split(":") for v in service.get("volumes", [])]
    return {target: (DEPLOY / source).resolve() for source, target, *_ in pairs if source.startswith(".")}


def test_compose_monitoring_runs_the_official_images_on_deploy_monitorings_files(tmp_path: Path) -> None:
    services = dict(checks.compose_services(COMPOSE))
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert prometheus["profiles"] == grafana["profiles"] == ["monitoring"]
    assert prometheus["image"].startswith("prom/prometheus:v") and grafana["image"].startswith("grafana/grafana:")
    # The Prometheus that compose runs is the version the tests evaluate every rule and panel with.
    tested = promtool("--version").stdout.split()[2].split("+")[0]  # "promtool, version 2.42.0+ds (...)"
    assert prometheus["image"] == f"prom/prometheus:v{tested}"
    files = mounts(prometheus)
    config_file = next(a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--config.file="))
    assert files[config_file] == monitoring_checks.PROMETHEUS_CONFIG
    config = yaml.safe_load(monitoring_checks.PROMETHEUS_CONFIG.read_text())
    assert [files[rule_file] for rule_file in config["rule_files"]] == [monitoring_checks.RULES]
    # Scraping the services by their compose names, on their ports, as the jobs the rules name.
    scraped = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert scraped == {"embedding": ["embedding:8081"], "orchestrator": ["orchestrator:8080"], "head": ["head:8501"]}
    # The same config with its rule file where it is here: what promtool checks.
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump({**config, "rule_files": [str(monitoring_checks.RULES)]}))
    result = promtool("check", "config", local)
    assert result.returncode == 0, result.stdout + result.stderr
    provisioned = mounts(grafana)
    providers = yaml.safe_load(provisioned["/etc/grafana/provisioning/dashboards/split-embedding.yml"].read_text())
    (path,) = [p["options"]["path"] for p in providers["providers"]]
    assert provisioned[f"{path}/split-embedding.json"] == monitoring_checks.DASHBOARD
    sources = yaml.safe_load(provisioned["/etc/grafana/provisioning/datasources/split-embedding.yml"].read_text())
    assert [s["url"] for s in sources["datasources"]] == ["http://prometheus:9090"]
