"""Dashboards, alerts and scraping in the chart: their PromQL names only exported metrics.

Every PromQL expression in the Grafana dashboard (panels and template variables) and in
the rendered PrometheusRule is parsed with `promql-parser` (the Rust parser Prometheus'
grammar is ported to) and each metric it selects is looked up among the sample names the
operator's `Metrics()` and the runtime's `RuntimeMetrics()` registries expose: a renamed
metric, a missing `_total`, or a histogram read without `_bucket` fails here instead of
drawing an empty panel. The one outside metric, kube-state-metrics' Deployment condition
for stalled rollouts, is allowed only in the alert that needs it and only while
`monitoring.prometheusRule.kubeStateMetrics` is on. The PodMonitor is checked against a
serving Deployment the operator's own code renders.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import promql_parser as promql
import pytest
from prometheus_client import CollectorRegistry

from modelengine.api.models import BackendName
from modelengine.api.targets import GpuKind, ResolvedTarget
from modelengine.api.validation import parse_modelengine
from modelengine.operator import serving_objects
from modelengine.operator.config import OperatorConfig
from modelengine.operator.metrics import Metrics
from modelengine.operator.serving_groups import ServingGroup
from modelengine.runtime.metrics import RuntimeMetrics
from tests.helm.test_chart import CHART, KUBE_VERSIONS, helm, needs_helm, only, render

Doc = dict[str, Any]

DASHBOARD = CHART / "files" / "grafana-dashboard.json"
# Sample names per metric type, as the text exposition writes them (`_created` is not queried).
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
# Grafana's own interval variables; a dashboard variable stands for any value (".*").
GRAFANA_INTERVALS = ("__rate_interval", "__interval", "__range")
KUBE_STATE_METRICS = {"kube_deployment_status_condition"}
ALL_ON = {
    "monitoring": {
        "dashboards": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "podMonitor": {"enabled": True},
    }
}


def families(registry: CollectorRegistry) -> dict[str, str]:
    """Every sample name the registry can expose, mapped to its metric family."""
    out: dict[str, str] = {}
    for family in registry.collect():
        out |= {family.name + suffix: family.name for suffix in SUFFIXES[family.type]}
        seen = {s.name for s in family.samples if not s.name.endswith("_created")}
        assert seen <= out.keys(), f"{family.name}: exposes {seen - out.keys()} beyond {SUFFIXES}"
    return out


OPERATOR = families(Metrics().registry)
RUNTIME = families(RuntimeMetrics().registry)
EXPORTED = OPERATOR | RUNTIME


def walk(node: Any) -> list[Any]:
    """The expression and every sub-expression below it."""
    children: list[Any] = []
    for attr in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            children.append(child)
    children += list(getattr(node, "args", None) or [])
    return [node, *(n for child in children for n in walk(child))]


def metric_names(expr: str) -> set[str]:
    names = set()
    for node in walk(promql.parse(expr)):
        if isinstance(node, promql.VectorSelector):
            by_matcher = [m.value for m in node.matchers.matchers if m.name == "__name__"]
            assert node.name or by_matcher, f"a selector without a metric name in {expr}"
            names |= {node.name} if node.name else set(by_matcher)
    return names


def output_labels(node: Any) -> set[str] | None:
    """Labels an expression's result keeps, when an aggregation fixes them (None: not fixed)."""
    if isinstance(node, promql.BinaryExpr):
        return output_labels(node.lhs)
    if isinstance(node, promql.ParenExpr):
        return output_labels(node.expr)
    if isinstance(node, promql.AggregateExpr):
        if node.modifier is None:
            return set()
        return set(node.modifier.labels) if node.modifier.type == promql.AggModifierType.By else None
    if isinstance(node, promql.Call):
        if node.func.name == "histogram_quantile":
            inner = output_labels(node.args[1])
            return None if inner is None else inner - {"le"}
        return output_labels(node.args[0]) if node.args else set()
    return None


def dashboard_queries(dashboard: Doc) -> list[str]:
    variables = [v["name"] for v in dashboard["templating"]["list"]]
    raw = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            found = re.fullmatch(r"label_values\((.+), *(\w+)\)", var["query"]["query"])
            assert found, f"variable {var['name']}: not label_values(selector, label)"
            raw.append(found.group(1))

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in GRAFANA_INTERVALS or name in variables, f"${name} is not a dashboard variable"
        return "5m" if name in GRAFANA_INTERVALS else ".*"

    return [re.sub(r"\$\{?(\w+)\}?", substitute, q) for q in raw]


def rules(docs: list[Doc]) -> list[Doc]:
    return [r for g in only(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]


# --- the registries and the parser (no helm needed) ------------------------------------


def test_registries_list_the_suffixed_sample_names() -> None:
    assert "modelengine_builds_failed_total" in OPERATOR
    assert "modelengine_build_duration_seconds_bucket" in OPERATOR
    assert "modelengine_runtime_request_seconds_bucket" in RUNTIME
    assert "modelengine_builds_failed" not in EXPORTED  # a counter is only queried with `_total`
    assert not OPERATOR.keys() & RUNTIME.keys()


def test_the_extractor_finds_every_selector() -> None:
    expr = 'sum(rate(a_total[5m])) / on() group_left max by (x) (histogram_quantile(0.9, rate(b_bucket[1m]))) or {__name__="c"}'
    assert metric_names(expr) == {"a_total", "b_bucket", "c"}
    assert output_labels(
        promql.parse("histogram_quantile(0.99, sum by (ns, le) (rate(b_bucket[5m]))) > 1")
    ) == {"ns"}


# --- the dashboard ---------------------------------------------------------------------


def test_dashboard_queries_name_only_exported_metrics() -> None:
    queries = dashboard_queries(json.loads(DASHBOARD.read_text()))
    assert len(queries) > 20
    for query in queries:
        unknown = metric_names(query) - EXPORTED.keys()
        assert not unknown, f"{query}: {sorted(unknown)} not exported by the operator or runtime"


def test_dashboard_shows_every_exported_metric() -> None:
    used = {
        EXPORTED[n] for q in dashboard_queries(json.loads(DASHBOARD.read_text())) for n in metric_names(q)
    }
    assert used == set(EXPORTED.values())


def test_dashboard_panels_use_the_datasource_variable_and_unique_ids() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


@needs_helm
def test_dashboard_configmap_for_the_grafana_sidecar(tmp_path: Path) -> None:
    docs = render(
        tmp_path, {"monitoring": {"dashboards": {"enabled": True, "annotations": {"grafana_folder": "ML"}}}}
    )
    cm = only(docs, "ConfigMap", "me-modelengine-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "ML"}
    assert json.loads(cm["data"]["modelengine.json"]) == json.loads(DASHBOARD.read_text())
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(cm, version, strict=True)


def test_observability_doc_lists_every_exported_metric() -> None:
    text = (CHART.parents[1] / "docs" / "observability.md").read_text()
    listed = set(re.findall(r"^\| `(modelengine_\w+)`", text, flags=re.M))
    assert listed <= EXPORTED.keys(), f"docs/observability.md names {sorted(listed - EXPORTED.keys())}"
    assert {EXPORTED[n] for n in listed} == set(EXPORTED.values())


# --- the PrometheusRule --------------------------------------------------------------------


@needs_helm
def test_alert_expressions_name_only_exported_metrics(tmp_path: Path) -> None:
    for rule in rules(render(tmp_path, ALL_ON)):
        names = metric_names(rule["expr"])
        outside = names - EXPORTED.keys()
        if rule["alert"] == "ModelEngineRolloutStalled":
            assert outside == KUBE_STATE_METRICS
        else:
            assert not outside, f"{rule['alert']}: {sorted(outside)} not exported"


@needs_helm
def test_without_kube_state_metrics_only_our_metrics_are_used(tmp_path: Path) -> None:
    values = {"monitoring": {"prometheusRule": {"enabled": True, "kubeStateMetrics": False}}}
    alerts = rules(render(tmp_path, values))
    assert "ModelEngineRolloutStalled" not in {r["alert"] for r in alerts}
    assert all(metric_names(r["expr"]) <= EXPORTED.keys() for r in alerts)


@needs_helm
def test_alerts_cover_failures_rollouts_missing_engines_and_latency(tmp_path: Path) -> None:
    by_alert = {r["alert"]: metric_names(r["expr"]) for r in rules(render(tmp_path, ALL_ON))}
    assert by_alert["ModelEngineBuildFailed"] == {"modelengine_builds_failed_total"}
    assert by_alert["ModelEngineRolloutStalled"] == KUBE_STATE_METRICS
    assert by_alert["ModelEngineGPUKindWithoutEngine"] == {"modelengine_gpu_kinds_without_engine"}
    assert by_alert["ModelEngineRuntimeLatencyHigh"] == {"modelengine_runtime_request_seconds_bucket"}


@needs_helm
def test_annotations_name_only_labels_the_expression_keeps(tmp_path: Path) -> None:
    for rule in rules(render(tmp_path, ALL_ON)):
        assert rule["labels"]["severity"] in {"warning", "critical"}
        kept = output_labels(promql.parse(rule["expr"]))
        for text in rule["annotations"].values():
            referenced = set(re.findall(r"\$labels\.(\w+)", text))
            assert kept is not None or not referenced, rule["alert"]
            assert referenced <= (kept or set()), (
                f"{rule['alert']}: {referenced - (kept or set())} aggregated away"
            )


@needs_helm
def test_p99_threshold_and_duration_come_from_values(tmp_path: Path) -> None:
    values = {
        "monitoring": {"prometheusRule": {"enabled": True, "runtimeP99Seconds": 0.25, "runtimeP99For": "3m"}}
    }
    (rule,) = [r for r in rules(render(tmp_path, values)) if r["alert"] == "ModelEngineRuntimeLatencyHigh"]
    parsed = promql.parse(rule["expr"])
    assert isinstance(parsed, promql.BinaryExpr) and str(parsed.op) == ">"
    assert isinstance(parsed.rhs, promql.NumberLiteral) and parsed.rhs.val == 0.25
    quantile = parsed.lhs
    assert isinstance(quantile, promql.Call) and quantile.func.name == "histogram_quantile"
    assert isinstance(quantile.args[0], promql.NumberLiteral) and quantile.args[0].val == 0.99
    assert rule["for"] == "3m"
    assert "0.25s" in rule["annotations"]["summary"]


@needs_helm
def test_rule_and_monitors_have_the_prometheus_operator_shape(tmp_path: Path) -> None:
    docs = render(
        tmp_path,
        {
            **ALL_ON,
            "monitoring": {
                **ALL_ON["monitoring"],
                "prometheusRule": {"enabled": True, "labels": {"release": "kps"}},
            },
        },
    )
    rule = only(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["metadata"]["labels"]["release"] == "kps"
    assert set(rule["spec"]) == {"groups"}
    for r in rules(docs):
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}
        assert re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", r.get("for", "0s"))
        assert r["annotations"]["summary"]


@needs_helm
def test_flags_are_off_by_default(tmp_path: Path) -> None:
    docs = render(tmp_path)
    assert not {d["kind"] for d in docs} & {"PrometheusRule", "PodMonitor"}
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    assert not names & {"me-modelengine-dashboard", "me-modelengine-argocd-health"}


@needs_helm
def test_a_misspelt_monitoring_value_is_refused() -> None:
    proc = helm("template", "me", str(CHART), "--set", "monitoring.podMonitor.intervall=5s")
    assert proc.returncode != 0 and "intervall" in proc.stderr


# --- the PodMonitor --------------------------------------------------------------------


def serving_deployment() -> Doc:
    me = parse_modelengine(
        {
            "apiVersion": "modelengine.io/v1alpha1",
            "kind": "ModelEngine",
            "metadata": {"name": "resnet", "namespace": "ml"},
            "spec": {
                "model": {"source": "s3://models/resnet.pt", "format": "torchscript"},
                "export": {"inputs": [{"name": "x", "shape": [1, 3, 224, 224]}]},
                "targets": [{"auto": True}],
                "storage": {"uri": "s3://models/store"},
                "serving": {"minReplicas": 1},
            },
        }
    )
    group = ServingGroup(
        "nvidia-l4",
        GpuKind("NVIDIA-L4", "8.9"),
        ResolvedTarget(BackendName.TENSORRT_RTX, "8.9"),
        "1.7.1.116",
        None,
    )
    return serving_objects.deployment(me=me, uid=None, config=OperatorConfig(), group=group)


@needs_helm
def test_pod_monitor_selects_the_serving_pods_metrics_port(tmp_path: Path) -> None:
    monitor = only(render(tmp_path, ALL_ON), "PodMonitor")
    pod = serving_deployment()["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert ports[endpoint["port"]] == serving_objects.METRICS_PORT
    assert monitor["spec"]["namespaceSelector"] == {"any": True}


@needs_helm
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"operator": {"watchNamespaces": ["ml", "vision"]}}, ["ml", "vision"]),
        (
            {
                "operator": {"watchNamespaces": ["ml"]},
                "monitoring": {"podMonitor": {"namespaces": ["serving"]}},
            },
            ["serving"],
        ),
    ],
)
def test_pod_monitor_namespaces_follow_the_watched_ones(
    tmp_path: Path, values: Doc, expected: list[str]
) -> None:
    pod_monitor = {"enabled": True, **values.get("monitoring", {}).get("podMonitor", {})}
    monitor = only(render(tmp_path, {**values, "monitoring": {"podMonitor": pod_monitor}}), "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": expected}


@needs_helm
def test_argocd_health_configmap_carries_the_lua_file(tmp_path: Path) -> None:
    cm = only(render(tmp_path, {"argocd": {"healthCheck": {"enabled": True}}}), "ConfigMap")
    script = (CHART / "files" / "argocd-health.lua").read_text()
    assert cm["data"] == {"resource.customizations.health.modelengine.io_ModelEngine": script}
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(cm, version, strict=True)
