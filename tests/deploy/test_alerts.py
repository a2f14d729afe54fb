"""deploy/monitoring/rules.yml: promtool accepts the rules and passes their unit tests (alerts_test.yml), in
which every alert fires once and stays silent once; each alert has its runbook entry in docs/monitoring.md;
the PrometheusRule of k8s/components/monitoring is the same file."""

import re
from pathlib import Path

import yaml

from tests.deploy import monitoring_checks
from tests.deploy.checks import ROOT
from tests.deploy.monitoring_checks import PROMETHEUS_RULE, RULES
from tests.deploy.prometheus import promtool

UNIT_TESTS = Path(__file__).with_name("alerts_test.yml")
RUNBOOK = ROOT / "docs" / "monitoring.md"


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(monitoring_checks.alerts())} rules found" in result.stdout


def test_the_alerts_pass_their_promtool_unit_tests() -> None:
    result = promtool("test", "rules", UNIT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_test_that_fires_it_and_one_that_keeps_it_silent() -> None:
    cases = [
        (case["alertname"], bool(case["exp_alerts"]))
        for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    for alert in monitoring_checks.alerts():
        assert (alert["alert"], True) in cases, f"no test fires {alert['alert']}"
        assert (alert["alert"], False) in cases, f"no test keeps {alert['alert']} silent"


def test_every_alert_has_a_severity_and_a_runbook_entry() -> None:
    headings = {
        re.sub(r"[^a-z0-9_ -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("#")
    }
    for alert in monitoring_checks.alerts():
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, alert["alert"]
        page, _, anchor = alert["annotations"]["runbook"].partition("#")
        assert (ROOT / page) == RUNBOOK and anchor == alert["alert"].lower(), alert["alert"]
        assert anchor in headings, f"{RUNBOOK.name} has no heading {alert['alert']}"


def test_the_prometheus_rule_is_the_rules_file() -> None:
    """Catches rules.yml edited without rewriting the PrometheusRule (the command is in its header)."""
    header, spec = PROMETHEUS_RULE.read_text().split("\nspec:\n")
    assert spec == monitoring_checks.prometheus_rule_text()
    assert yaml.safe_load(f"{header}\nspec:\n{spec}")["spec"] == yaml.safe_load(RULES.read_text())
