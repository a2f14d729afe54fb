"""The monitoring and autoscaling checks, as functions returning their findings (shared by the tests and the
broken-copy tests): scrape discovery and the NetworkPolicy that lets Prometheus in, the autoscaler's
behaviour and queries, and where the alert rules and the dashboard come from."""

import json
import re
from collections.abc import Mapping
from pathlib import Path

import yaml
from google.protobuf import text_format

from head_service.config_protos import MonitoringConfig
from tests.deploy import checks
from tests.deploy.checks import MONITORING, ROOT, TFSERVING_CONFIG, Obj
from tests.deploy.promql import selectors

RULES = MONITORING / "rules.yml"
DASHBOARD = MONITORING / "dashboard.json"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
PROMETHEUS_RULE = ROOT / "k8s" / "components" / "monitoring" / "objects" / "prometheus-rule.yaml"
SCALED_OBJECT = ROOT / "k8s" / "components" / "autoscale-embedding" / "scaled-object.yaml"
# The embedding service's and the orchestrator's metrics route (service_common/ops.py).
METRICS_PATH = "/metrics"
_MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def alerts(rules: Path = RULES) -> list[Obj]:
    return [rule for group in yaml.safe_load(rules.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


def panel_queries(dashboard: Path = DASHBOARD) -> list[tuple[str, str]]:
    """(panel title, query) of every target of every panel."""
    panels = json.loads(dashboard.read_text())["panels"]
    return [(panel["title"], target["expr"]) for panel in panels for target in panel.get("targets", [])]


def scaler_queries(scaled_object: Obj) -> list[str]:
    return [t["metadata"]["query"] for t in scaled_object["spec"]["triggers"] if t["type"] == "prometheus"]


def equal_matchers(selector: str) -> dict[str, str]:
    """A selector's `label="value"` matchers."""
    return {name: value for name, op, value in _MATCHER.findall(selector) if op == "="}


def metrics_paths(source: Path = TFSERVING_CONFIG) -> dict[str, str]:
    """Where each service serves its metrics: TF Serving where its monitoring config says."""
    config = text_format.Parse((source / "monitoring.config").read_text(), MonitoringConfig())
    head = str(getattr(config, "prometheus_config").path)  # noqa: B009 - a dynamic message class
    return {"embedding": METRICS_PATH, "orchestrator": METRICS_PATH, "head": head}


def prometheus_rule_text(rules: Path = RULES) -> str:
    """What follows `spec:` in the PrometheusRule: the rules file, each non-empty line indented by two."""
    return "".join(f"  {line}" if line.strip() else line for line in rules.read_text().splitlines(keepends=True))


# ---- scrape discovery -------------------------------------------------------------------------


def relabel(labels: Mapping[str, str], rules: list[Obj]) -> dict[str, str]:
    """Prometheus's `replace` relabelling, the one action used here, applied in order to `labels`."""
    result = dict(labels)
    for rule in rules:
        action = rule.get("action", "replace").lower()
        if action != "replace":
            raise ValueError(f"relabel action {action!r} is not simulated")
        value = rule.get("separator", ";").join(result.get(s, "") for s in rule.get("sourceLabels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        if match:
            replacement = re.sub(r"\$\{?(\w+)\}?", r"\\g<\1>", rule.get("replacement", "$1"))
            result[rule["targetLabel"]] = match.expand(replacement)
    return result


def discovered(monitor: Obj, pod_labels: Mapping[str, str]) -> dict[str, str]:
    """The labels Kubernetes discovery gives one of a PodMonitor's targets before its relabelings: the pod's
    labels as meta labels, and the job prometheus-operator names after the monitor (no jobLabel here)."""
    meta = {f"__meta_kubernetes_pod_label_{re.sub(r'[^A-Za-z0-9_]', '_', k)}": v for k, v in pod_labels.items()}
    return {**meta, "job": f"{monitor['metadata'].get('namespace', '')}/{monitor['metadata']['name']}"}


def named_ports(deployment: Obj) -> dict[str, int]:
    return {
        p["name"]: p["containerPort"] for c in checks.containers(deployment) for p in c.get("ports", []) if "name" in p
    }


def scraper_rules(objects: list[Obj], labels: Mapping[str, str]) -> list[Obj]:
    """The ingress rules that let Prometheus (a peer in the monitoring namespace) reach pods with `labels`."""
    return [
        rule
        for policy in checks.by_kind(objects, "NetworkPolicy").values()
        if checks.selects(policy["spec"]["podSelector"], labels)
        for rule in policy["spec"].get("ingress", [])
        if any(checks.scrapes(peer) for peer in rule.get("from", []))
    ]


def scrape_errors(objects: list[Obj]) -> list[str]:
    """With a PodMonitor rendered: each Deployment's pods are scraped by one endpoint, on a port they declare, at
    their service's metrics path, as the job named after the service with a `deployment` label naming the
    Deployment; a NetworkPolicy lets Prometheus reach that port, and no rule lets it reach any other. Without
    one, no rule lets Prometheus in at all."""
    monitors = checks.by_kind(objects, "PodMonitor")
    if not monitors:
        pods = [checks.pod_labels(d) for d in checks.by_kind(objects, "Deployment").values()]
        return ["Prometheus is let in, with no PodMonitor"] if any(scraper_rules(objects, p) for p in pods) else []
    paths = metrics_paths()
    errors = []
    for name, deployment in checks.by_kind(objects, "Deployment").items():
        labels, ports, service = checks.pod_labels(deployment), named_ports(deployment), checks.service_of(deployment)
        endpoints = [
            (monitor, endpoint)
            for monitor in monitors.values()
            if checks.selects(monitor["spec"]["selector"], labels)
            for endpoint in monitor["spec"]["podMetricsEndpoints"]
            if endpoint.get("port") in ports
        ]
        if len(endpoints) != 1:
            errors.append(f"Deployment {name}: scraped by {len(endpoints)} PodMonitor endpoints, expected 1")
            continue
        monitor, endpoint = endpoints[0]
        if service is not None and endpoint.get("path", METRICS_PATH) != paths[service]:
            errors.append(f"Deployment {name}: scraped at {endpoint.get('path')}, its metrics are at {paths[service]}")
        target = relabel(discovered(monitor, labels), endpoint.get("relabelings", []))
        if (target["job"], target.get("deployment")) != (service, name):
            errors.append(
                f"Deployment {name}: scraped as job {target['job']!r}, deployment {target.get('deployment')!r}"
            )
        rules = scraper_rules(objects, labels)
        allowed = {port for rule in rules for p in rule.get("ports", [{}]) for port in resolved(p, ports)}
        scraped = ports[endpoint["port"]]
        if scraped not in allowed:
            errors.append(f"Deployment {name}: no NetworkPolicy lets Prometheus reach its metrics port {scraped}")
        if allowed - {scraped}:
            errors.append(
                f"Deployment {name}: Prometheus may reach ports {sorted(map(str, allowed - {scraped}))} besides metrics"
            )
    return errors


def resolved(port: Obj, ports: Mapping[str, int]) -> set[int | str]:
    """The container ports a NetworkPolicy port means on a pod declaring `ports` (none given: all of them)."""
    if "port" not in port:
        return {"every port"}
    number = port["port"] if isinstance(port["port"], int) else ports.get(port["port"])
    return set() if number is None else {number}


# ---- autoscaling ------------------------------------------------------------------------------


def scaling_errors(objects: list[Obj]) -> list[str]:
    """Each ScaledObject scales up at once, by at least doubling or two pods a minute, and down only after 5
    minutes of lower recommendations, by at most one pod a minute; each of its Prometheus queries selects its
    own namespace, its target's service (job) and its target Deployment."""
    deployments = checks.by_kind(objects, "Deployment")
    errors = []
    for name, scaled in checks.by_kind(objects, "ScaledObject").items():
        behavior = scaled["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {})
        up, down = behavior.get("scaleUp", {}), behavior.get("scaleDown", {})
        if up.get("stabilizationWindowSeconds", 0):
            errors.append(f"ScaledObject {name}: scales up only after a stabilisation window")
        if not any(
            p["periodSeconds"] <= 60 and p["value"] >= {"Percent": 100, "Pods": 2}[p["type"]]
            for p in up.get("policies", [])
        ):
            errors.append(f"ScaledObject {name}: scales up by less than doubling or 2 pods a minute")
        if down.get("stabilizationWindowSeconds", 300) < 300:
            errors.append(f"ScaledObject {name}: scales down after less than 5 minutes of lower recommendations")
        removals = down.get("policies", [])  # none: the HPA's default, all of them at once
        if not removals or any(p["type"] != "Pods" or p["value"] * 60 > p["periodSeconds"] for p in removals):
            errors.append(f"ScaledObject {name}: scales down by more than one pod a minute")
        target = deployments.get(scaled["spec"]["scaleTargetRef"]["name"])
        wanted = {
            "namespace": scaled["metadata"].get("namespace"),
            "job": checks.service_of(target) if target else None,
            "deployment": scaled["spec"]["scaleTargetRef"]["name"],
        }
        for query in scaler_queries(scaled):
            for selector in selectors(query):
                found = equal_matchers(selector)
                if {k: found.get(k) for k in wanted} != wanted:
                    errors.append(f"ScaledObject {name}: {selector} selects other pods than {wanted}")
    return errors


def dashboard_config_map_errors(objects: list[Obj]) -> list[str]:
    """The dashboard's ConfigMap holds deploy/monitoring/dashboard.json byte for byte, for Grafana's sidecar."""
    maps = [
        m
        for m in checks.by_kind(objects, "ConfigMap").values()
        if "grafana_dashboard" in m["metadata"].get("labels", {})
    ]
    if len(maps) != 1 or list(maps[0].get("data", {}).values()) != [DASHBOARD.read_text()]:
        return [f"{len(maps)} ConfigMaps labelled grafana_dashboard, expected one holding {DASHBOARD.name}"]
    return []
