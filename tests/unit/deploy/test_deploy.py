"""Deployment artefacts: Dockerfile, compose, Kubernetes, Prometheus alerts, Grafana dashboard.

No container engine or cluster is needed: the files are checked structurally (PyYAML, json), and
every metric name they query is checked against `proxy.metrics.Metrics`. promtool (Debian's
`prometheus` package, found or installed by scripts/ensure-promtool) checks and unit-tests the
alert rules; when it cannot be had those tests fail and say why.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config import ENV_NAMES, Settings
from proxy.metrics import Metrics
from proxy.rules.loader import load_rules

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
ENSURE_PROMTOOL = ROOT / "scripts" / "ensure-promtool"
PROMTOOL_MISSING = "promtool not available: install Debian's prometheus package"

CONTAINER_PORT = 8080
RULES_IN_IMAGE = "/etc/hubspot-proxy/rules.yaml"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# --- metric names -------------------------------------------------------------------------------

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}


@cache
def known_metrics() -> frozenset[str]:
    """Every series name the gateway exposes, as Prometheus stores it, plus `up`."""
    names = {"up"}
    for family in Metrics().registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return frozenset(names)


_PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "inf", "nan"}
)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers that are not functions or keywords."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (Grafana variables live here)
    expr = re.sub(r"\{[^{}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$:])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        word, is_call = match.group(1), match.group(2)
        if not is_call and word not in _PROMQL_KEYWORDS:
            names.add(word)
    return names


def test_metric_names_finds_selectors_not_functions_labels_or_variables() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (bucket, le) (rate(x_bucket{instance=~"$instance"}'
        "[$__rate_interval]))) > 10 or time() - max without (job) (y offset 5m) / on (a) z"
    )
    assert metric_names(expr) == {"x_bucket", "y", "z"}
    assert "hubspot_proxy_requests_total" in known_metrics()
    assert "hubspot_proxy_requests" not in known_metrics()
    assert "hubspot_proxy_queue_wait_seconds_bucket" in known_metrics()
    assert "hubspot_proxy_budget_used" in known_metrics()


# --- Dockerfile ---------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    return instructions[starts[-1] :]


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    instructions = dockerfile_instructions()
    args = dict(
        rest.split("=", 1) for keyword, rest in instructions if keyword == "ARG" and "=" in rest
    )
    images = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
        for keyword, rest in instructions
        if keyword == "FROM"
    ]
    assert len(images) >= 2, "builder and runtime stages"
    assert images[-1] == "python:3.11-slim"
    runtime = final_stage(instructions)
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    assert any(c.startswith("--from=") for c in copies), "runtime copies the build from a stage"
    assert f"rules/default.yaml {RULES_IN_IMAGE}" in copies


def test_dockerfile_runs_as_non_root_with_healthcheck_and_entrypoint() -> None:
    runtime = final_stage(dockerfile_instructions())
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users, "the runtime stage sets USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    health = [rest for keyword, rest in runtime if keyword == "HEALTHCHECK"]
    assert len(health) == 1 and "/healthz" in health[0]
    assert "curl" not in health[0] and "python" in health[0], "slim has no curl"
    entrypoint = [json.loads(rest) for keyword, rest in runtime if keyword == "ENTRYPOINT"]
    command = [json.loads(rest) for keyword, rest in runtime if keyword == "CMD"]
    assert entrypoint == [["hubspot-proxy"]] and command == [["run"]]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "hubspot-proxy" in scripts


def test_dockerfile_configures_the_gateway_by_environment() -> None:
    env: dict[str, str] = {}
    for keyword, rest in final_stage(dockerfile_instructions()):
        if keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    assert env["HUBSPOT_PROXY_HOST"] == "0.0.0.0"
    assert env["HUBSPOT_PROXY_PORT"] == str(CONTAINER_PORT)
    assert env["HUBSPOT_PROXY_RULES"] == RULES_IN_IMAGE
    settings_env = {k for k in env if k.startswith("HUBSPOT_PROXY_") or k == "REDIS_URL"}
    assert settings_env <= set(ENV_NAMES.values())


def test_dockerignore_keeps_the_build_inputs_and_drops_the_rest() -> None:
    lines = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests", ".env"} <= lines
    assert not lines & {"proxy", "hubspot_sim", "rules", "pyproject.toml", "README.md", "*.md"}


def test_default_rules_shipped_to_the_image_and_configmap_are_valid() -> None:
    rules = load_rules(ROOT / "rules" / "default.yaml")  # RulesError names file:line when broken
    assert rules.rules, "the shipped rules configure the runtime"


# --- docker compose -----------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(DEPLOY / "docker-compose.yml")
    return data


GATEWAYS = ("gateway-1", "gateway-2")


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_compose_runs_two_gateways_of_the_repo_image_on_shared_redis() -> None:
    services = compose()["services"]
    builds = []
    for name in GATEWAYS:
        gateway = services[name]
        builds.append((gateway["build"]["context"], gateway["image"]))
        assert (DEPLOY / gateway["build"]["context"]).resolve() == ROOT
        env = environment(gateway)
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["HUBSPOT_PROXY_ADMIN_TOKEN"].startswith("${HUBSPOT_PROXY_ADMIN_TOKEN:?")
        assert env["HUBSPOT_PROXY_PORT"] == str(CONTAINER_PORT)
        assert {k for k in env if k.startswith("HUBSPOT_PROXY_")} <= set(ENV_NAMES.values())
        assert not [k for k in env if re.search("ACCESS_TOKEN|PRIVATE_APP|HUBSPOT_TOKEN", k)], (
            "clients send their HubSpot token; the gateway holds none"
        )
        assert f"../rules/default.yaml:{RULES_IN_IMAGE}:ro" in gateway["volumes"]
        assert "/healthz" in " ".join(gateway["healthcheck"]["test"])
        assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    assert len(set(builds)) == 1, "both replicas run the same image"


def test_compose_redis_persists_accepted_writes() -> None:
    redis = compose()["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    volume = next(v.split(":")[0] for v in redis["volumes"] if v.endswith(":/data"))
    assert volume in compose()["volumes"], "a named volume, so data outlives the container"
    assert redis["healthcheck"]["test"]


def test_compose_monitoring_services_are_wired() -> None:
    services = compose()["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in grafana["volumes"] if v.startswith("./"))
    dashboard_target = mounts["./grafana/dashboard.json"]
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "hubspot-proxy.yml")
    assert str(Path(dashboard_target).parent) == provider["providers"][0]["options"]["path"]
    datasource = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has a healthcheck"


def test_prometheus_scrapes_both_replicas_and_loads_alerts() -> None:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    assert "alerts.yml" in config["rule_files"]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "hubspot-proxy")
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    assert {f"{name}:{CONTAINER_PORT}" for name in GATEWAYS} <= targets
    assert job.get("metrics_path", "/metrics") == "/metrics"


# --- Kubernetes ---------------------------------------------------------------------------------


@cache
def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(K8S / "kustomization.yaml")
    return data


@cache
def manifests() -> dict[str, dict[str, Any]]:
    docs = [doc for res in kustomization()["resources"] for doc in load_yaml_all(K8S / res)]
    by_kind = {doc["kind"]: doc for doc in docs}
    assert len(by_kind) == len(docs), "one object of each kind"
    return by_kind


def gateway_container() -> dict[str, Any]:
    containers = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def container_port(ref: int | str) -> int:
    ports = gateway_container()["ports"]
    if isinstance(ref, int):
        assert ref in [p["containerPort"] for p in ports]
        return ref
    return int(next(p["containerPort"] for p in ports if p["name"] == ref))


def test_k8s_has_every_kind_and_generated_config() -> None:
    kinds = set(manifests())
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds
    generated = {g["name"]: g for g in kustomization()["configMapGenerator"]}
    files = generated["hubspot-proxy-rules"]["files"]
    assert files == ["rules.yaml=../../rules/default.yaml"], "rules come from a ConfigMap"
    secrets = {g["name"]: g for g in kustomization()["secretGenerator"]}
    assert secrets["hubspot-proxy"]["envs"] == ["secret.env"], "the admin token is a Secret"


def test_k8s_secret_template_holds_placeholders_only() -> None:
    template = K8S / "secret.env.example"
    values = dict(
        line.split("=", 1)
        for line in template.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert values and all("REPLACE_ME" in v for v in values.values())
    generator = kustomization()["secretGenerator"][0]
    assert generator["envs"] == ["secret.env"], "the real file is filled in from the template"
    gitignore = (DEPLOY / ".gitignore").read_text().split()
    assert "k8s/secret.env" in gitignore and ".env" in gitignore
    refs = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in gateway_container()["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs == set(values), "the Deployment reads exactly the template's keys"
    for doc in manifests().values():
        assert doc["kind"] != "Secret" or all(
            "REPLACE_ME" in str(v) for v in doc.get("stringData", {}).values()
        )


def test_k8s_deployment_probes_match_the_container_port() -> None:
    deployment = manifests()["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    container = gateway_container()
    ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert ready["path"] == "/readyz" and live["path"] == "/healthz"
    env = {e["name"]: e for e in container["env"]}
    port = int(env["HUBSPOT_PROXY_PORT"]["value"])
    assert port == CONTAINER_PORT
    assert container_port(ready["port"]) == container_port(live["port"]) == port
    service = manifests()["Service"]["spec"]
    assert container_port(service["ports"][0]["targetPort"]) == port
    assert set(env) <= set(ENV_NAMES.values())
    assert env["HUBSPOT_PROXY_HOST"]["value"] == "0.0.0.0"
    assert "secretKeyRef" in env["HUBSPOT_PROXY_ADMIN_TOKEN"]["valueFrom"]
    assert "REDIS_URL" in env


def test_k8s_deployment_is_locked_down_and_drains() -> None:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    container = gateway_container()
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = Settings().shutdown_timeout_s
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + drain


def test_k8s_rules_are_mounted_where_the_gateway_reads_them() -> None:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in gateway_container()["env"]}
    rules_path = Path(env["HUBSPOT_PROXY_RULES"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = next(
        m
        for m in gateway_container()["volumeMounts"]
        if "configMap" in volumes[m["name"]] and m["mountPath"] == str(rules_path.parent)
    )
    config_map = volumes[mount["name"]]["configMap"]["name"]
    generated = kustomization()["configMapGenerator"][0]
    assert config_map == generated["name"]
    assert generated["files"][0].split("=")[0] == rules_path.name


def test_k8s_pdb_and_hpa_select_the_deployment() -> None:
    deployment = manifests()["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    pdb = manifests()["PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["minAvailable"] == 1
    for selector in (pdb["spec"]["selector"]["matchLabels"], manifests()["Service"]["spec"]):
        labels = selector.get("selector", selector)
        assert labels.items() <= pod_labels.items()
    hpa = manifests()["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]


# --- alerts -------------------------------------------------------------------------------------


@cache
def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(PROMETHEUS / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_names() -> list[str]:
    return [rule["alert"] for rule in alert_rules()]


def test_every_alert_has_severity_summary_and_runbook() -> None:
    assert len(set(alert_names())) == len(alert_names())
    for rule in alert_rules():
        name = rule["alert"]
        assert name.startswith("HubSpotProxy")
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert annotations["runbook"] == f"README.md#alert-{name.lower()}", name


def test_alerts_query_only_metrics_the_gateway_exposes() -> None:
    used: set[str] = set()
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= known_metrics(), f"{rule['alert']}: {names - known_metrics()}"
        used |= names
    assert {
        "hubspot_proxy_budget_used",
        "hubspot_proxy_budget_limit",
        "hubspot_proxy_upstream_429_total",
        "hubspot_proxy_upstream_calls_total",
        "hubspot_proxy_ratelimit_header",
        "hubspot_proxy_queue_waiters",
        "hubspot_proxy_queue_wait_seconds_bucket",
        "hubspot_proxy_dead_letters",
        "hubspot_proxy_job_runs_total",
        "hubspot_proxy_job_last_success_timestamp_seconds",
        "hubspot_proxy_redis_fallback",
        "up",
    } <= used


def test_alert_unit_tests_fire_and_stay_quiet_for_every_alert() -> None:
    tests = load_yaml(PROMETHEUS / "alerts_test.yml")
    assert tests["rule_files"] == ["alerts.yml"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert set(alert_names()) <= fired, "every alert has a test where it fires"
    assert set(alert_names()) - {"HubSpotProxyAllGatewaysDown"} <= quiet
    assert "HubSpotProxyAllGatewaysDown" in quiet, "and one where it does not"


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_runbook_anchors_exist_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    headings = re.findall(r"^#+\s+(.+?)\s*$", readme, flags=re.MULTILINE)
    anchors = {github_anchor(h) for h in headings}
    missing = [
        rule["annotations"]["runbook"]
        for rule in alert_rules()
        if rule["annotations"]["runbook"].partition("#")[2] not in anchors
    ]
    assert not missing, "README.md needs an 'Alert: <name>' heading for each alert"


# --- dashboard ----------------------------------------------------------------------------------


@cache
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GRAFANA / "dashboard.json").read_text())
    return data


def dashboard_panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield from panel.get("panels", [])
        if panel["type"] != "row":
            yield panel


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p["targets"]]


def test_dashboard_uses_the_datasource_variable() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard_panels():
        sources = [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]
        assert all(s == {"type": "prometheus", "uid": "${datasource}"} for s in sources), panel
    assert dashboard()["uid"] and dashboard()["title"]


def test_dashboard_queries_only_metrics_the_gateway_exposes() -> None:
    used: set[str] = set()
    for expr in dashboard_exprs():
        names = metric_names(expr)
        assert names and names <= known_metrics(), f"{expr}: {names - known_metrics()}"
        used |= names
    assert {
        "hubspot_proxy_budget_used",
        "hubspot_proxy_budget_limit",
        "hubspot_proxy_upstream_calls_total",
        "hubspot_proxy_upstream_429_total",
        "hubspot_proxy_queue_waiters",
        "hubspot_proxy_queue_wait_seconds_bucket",
        "hubspot_proxy_cache_events_total",
        "hubspot_proxy_write_lag_seconds",
        "hubspot_proxy_write_pending",
        "hubspot_proxy_dead_letters",
        "hubspot_proxy_job_last_success_timestamp_seconds",
        "hubspot_proxy_job_runs_total",
        "hubspot_proxy_job_drift_total",
    } <= used


def test_dashboard_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        for y in range(pos["y"], pos["y"] + pos["h"]):
            for x in range(pos["x"], pos["x"] + pos["w"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


# --- promtool -----------------------------------------------------------------------------------

PROMTOOL_TIMEOUT = 660  # ensure-promtool bounds apt-get update and install at 300 s each


@pytest.fixture(scope="session")
def promtool() -> str:
    try:
        found = subprocess.run(
            [str(ENSURE_PROMTOOL)],
            capture_output=True,
            text=True,
            timeout=PROMTOOL_TIMEOUT,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        found = ""
    if not found:
        pytest.fail(PROMTOOL_MISSING)
    return found


def run_promtool(promtool: str, *args: str) -> None:
    result = subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(PROMTOOL_TIMEOUT + 60)
def test_promtool_checks_rules_and_config(promtool: str) -> None:
    run_promtool(promtool, "check", "rules", str(PROMETHEUS / "alerts.yml"))
    run_promtool(promtool, "check", "config", str(PROMETHEUS / "prometheus.yml"))


@pytest.mark.timeout(PROMTOOL_TIMEOUT + 60)
def test_promtool_alert_unit_tests_pass(promtool: str) -> None:
    run_promtool(promtool, "test", "rules", str(PROMETHEUS / "alerts_test.yml"))


@pytest.mark.timeout(PROMTOOL_TIMEOUT + 60)
def test_promtool_parses_every_dashboard_query(promtool: str, tmp_path: Path) -> None:
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        expr = expr.replace("$__rate_interval", "5m")
        expr = re.sub(r"\$\{?\w+\}?", ".*", expr)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool(promtool, "check", "rules", str(path))
