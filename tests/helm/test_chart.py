"""The Helm chart: rendered with the real `helm`, every manifest validated offline.

helm comes from `MODELENGINE_HELM`, `.tools/helm` (put there by scripts/get-helm.sh) or
PATH; without one the rendering tests skip and say how to get it. Rendered manifests are
checked with kubernetes-validate's strict schemas (unknown fields are errors); the kinds
it has no schema for (the ServiceMonitor) are checked field by field. The RBAC tests pin the exact rules (tables below), and
docs/operator-install.md must list the same resources and verbs.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelengine.api.crd import crd_yaml, generate_crd

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "modelengine"
NAMESPACE = "modelengine-system"
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())

Doc = dict[str, Any]


def find_helm() -> str | None:
    configured = os.environ.get("MODELENGINE_HELM")
    if configured:
        if not os.access(configured, os.X_OK):
            pytest.fail(f"MODELENGINE_HELM={configured} is not an executable")
        return configured
    local = ROOT / ".tools" / "helm"
    if os.access(local, os.X_OK):
        return str(local)
    return shutil.which("helm")


HELM = find_helm()
needs_helm = pytest.mark.skipif(
    HELM is None,
    reason="no helm binary: run scripts/get-helm.sh (puts it in .tools/), or set MODELENGINE_HELM",
)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120)


def render(tmp_path: Path, values: Doc | None = None, *extra: str) -> list[Doc]:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values or {}))
    proc = helm("template", "me", str(CHART), "-n", NAMESPACE, "-f", str(values_file), *extra)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def only(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} rendered"
    return found[0]


def container(docs: list[Doc]) -> Doc:
    (c,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(c)


def validate_offline(doc: Doc) -> None:
    """kubernetes-validate for built-in kinds; our CRDs' schemas for custom ones."""
    kind = doc["kind"]
    if kind == "ServiceMonitor":
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(doc["spec"]) == {"selector", "namespaceSelector", "endpoints"}
        return
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def rule_set(role: Doc) -> set[tuple[str, str, str, tuple[str, ...]]]:
    out = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb, tuple(rule.get("resourceNames", ()))))
    return out


def expand(
    table: dict[tuple[str, str], str], names: tuple[str, ...] = ()
) -> set[tuple[str, str, str, tuple[str, ...]]]:
    return {
        (group, resource, verb, names if resource == "secrets" else ())
        for (group, resource), verbs in table.items()
        for verb in verbs.split()
    }


READ = "get list watch"
MANAGE = "create get list watch patch delete"
CLUSTER_RULES = {
    ("", "nodes"): READ,
    ("", "namespaces"): "list watch",
    ("apiextensions.k8s.io", "customresourcedefinitions"): "list watch",
}
WORKLOAD_RULES = {
    ("modelengine.io", "modelengines"): "get list watch patch update",
    ("modelengine.io", "modelengines/status"): "get list watch patch update",
    ("modelengine.io", "modelengines/finalizers"): "get list watch patch update",
    ("batch", "jobs"): "create get list watch delete patch",
    ("", "pods"): READ,
    ("", "pods/log"): READ,
    ("", "pods/proxy"): "get",
    ("", "events"): "create patch",
    ("apps", "deployments"): MANAGE,
    ("", "services"): MANAGE,
    ("autoscaling", "horizontalpodautoscalers"): MANAGE,
    ("policy", "poddisruptionbudgets"): MANAGE,
}
LEASE_RULES = {("coordination.k8s.io", "leases"): "get create update patch"}
SECRET_RULES = {("", "secrets"): "get"}


# --- files (no helm needed) ------------------------------------------------------------


def test_chart_crd_is_the_generated_crd() -> None:
    chart_copy = CHART / "crds" / "modelengine.io_modelengines.yaml"
    assert chart_copy.read_text() == crd_yaml(), (
        "helm/modelengine/crds/ drifted: cp crds/modelengine.io_modelengines.yaml helm/modelengine/crds/"
    )
    assert chart_copy.read_text() == (ROOT / "crds" / "modelengine.io_modelengines.yaml").read_text()


def test_one_ha_mechanism_no_kopf_peering_anywhere() -> None:
    """The Lease is the only HA mechanism: no peering CRDs, objects, RBAC or flags in the chart."""
    for path in CHART.rglob("*"):
        if path.is_file():
            assert "peering" not in path.read_text().lower(), f"{path.relative_to(ROOT)} mentions peering"


# --- rendering ---------------------------------------------------------------------------


@needs_helm
def test_helm_lint_strict() -> None:
    proc = helm("lint", str(CHART), "--strict")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_helm
def test_default_render_is_valid_kubernetes(tmp_path: Path) -> None:
    docs = render(tmp_path)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
        ]
    )
    for doc in docs:
        validate_offline(doc)


@needs_helm
def test_a_broken_manifest_is_caught(tmp_path: Path) -> None:
    deployment = only(render(tmp_path), "Deployment")
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_offline(deployment)


@needs_helm
def test_rbac_is_exactly_what_the_operator_needs(tmp_path: Path) -> None:
    docs = render(tmp_path)
    cluster = only(docs, "ClusterRole", "me-modelengine-cluster")
    assert rule_set(cluster) == expand(CLUSTER_RULES)
    workloads = only(docs, "ClusterRole", "me-modelengine-workloads")
    assert rule_set(workloads) == expand(WORKLOAD_RULES)
    assert not [
        d for d in docs if d["metadata"]["name"] == "me-modelengine-secrets"
    ]  # told nothing: no Secrets
    lease = only(docs, "Role")
    assert lease["metadata"]["namespace"] == NAMESPACE
    assert rule_set(lease) == expand(LEASE_RULES)
    for binding in (d for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "me-modelengine", "namespace": NAMESPACE}
        ]
    bound = {(b["kind"], b["roleRef"]["name"]) for b in docs if b["kind"].endswith("Binding")}
    assert bound == {
        ("ClusterRoleBinding", "me-modelengine-cluster"),
        ("ClusterRoleBinding", "me-modelengine-workloads"),
        ("RoleBinding", "me-modelengine-leader-election"),
    }
    assert only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "me-modelengine"


@needs_helm
def test_watch_namespaces_scope_the_permissions(tmp_path: Path) -> None:
    docs = render(tmp_path, {"operator": {"watchNamespaces": ["ml", "vision"]}})
    for doc in docs:
        validate_offline(doc)
    args = container(docs)["args"]
    assert "--all-namespaces" not in args
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=ml", "--namespace=vision"]
    workload_bindings = [
        d
        for d in docs
        if d["kind"].endswith("Binding") and d["roleRef"]["name"] == "me-modelengine-workloads"
    ]
    assert {(b["kind"], b["metadata"]["namespace"]) for b in workload_bindings} == {
        ("RoleBinding", "ml"),
        ("RoleBinding", "vision"),
    }
    workloads = only(docs, "ClusterRole", "me-modelengine-workloads")
    assert rule_set(workloads) == expand(WORKLOAD_RULES)
    assert rule_set(only(docs, "ClusterRole", "me-modelengine-cluster")) == expand(CLUSTER_RULES)
    # Secrets: readable in the watched namespaces only, through one RoleBinding each.
    assert rule_set(only(docs, "ClusterRole", "me-modelengine-secrets")) == expand(SECRET_RULES)
    assert secret_bindings(docs) == {("RoleBinding", "ml"), ("RoleBinding", "vision")}


def secret_bindings(docs: list[Doc]) -> set[tuple[str, str | None]]:
    return {
        (d["kind"], d["metadata"].get("namespace"))
        for d in docs
        if d["kind"].endswith("Binding") and d["roleRef"]["name"] == "me-modelengine-secrets"
    }


@needs_helm
@pytest.mark.parametrize(
    ("rbac", "names", "bindings"),
    [
        ({}, None, set()),
        (
            {"secretNames": ["engine-store", "minio"]},
            ("engine-store", "minio"),
            {("ClusterRoleBinding", None)},
        ),
        ({"secretNamespaces": ["ml"]}, (), {("RoleBinding", "ml")}),
        ({"secretNamespaces": ["ml"], "secretNames": ["minio"]}, ("minio",), {("RoleBinding", "ml")}),
        ({"allSecrets": True}, (), {("ClusterRoleBinding", None)}),
    ],
)
def test_secrets_are_readable_only_where_the_chart_is_told(
    tmp_path: Path, rbac: Doc, names: tuple[str, ...] | None, bindings: set[tuple[str, str | None]]
) -> None:
    docs = render(tmp_path, {"rbac": rbac})
    for doc in docs:
        validate_offline(doc)
    granted = [
        d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "me-modelengine-secrets"
    ]
    if names is None:
        assert not granted and not secret_bindings(docs)
    else:
        assert rule_set(granted[0]) == expand(SECRET_RULES, names)
    assert secret_bindings(docs) == bindings
    for role in (d for d in docs if d["kind"] in ("ClusterRole", "Role")):
        if role["metadata"]["name"] != "me-modelengine-secrets":
            assert not [r for r in rule_set(role) if r[1] == "secrets"], role["metadata"]["name"]


@needs_helm
def test_values_map_onto_operator_flags(tmp_path: Path) -> None:
    values = {
        "image": {
            "operator": {"repository": "registry.local/me/operator", "tag": "1.2.3"},
            "builder": {"repository": "registry.local/me/builder", "tag": "b7"},
            "runtime": {"repository": "registry.local/me/runtime", "tag": "r9"},
        },
        "operator": {
            "maxBuilds": 5,
            "maxBuildsPerKind": 2,
            "backendVersions": {"tensorrt-rtx": "1.7.1.116", "onnxruntime": "1.22.0"},
            "metricsPort": 9090,
            "livenessPort": 9091,
            "builder": {"cpu": "4", "memory": "16Gi"},
            "jobDeadlineSeconds": 7200,
            "jobBackoffLimit": 3,
            "jobTtlSecondsAfterFinished": 600,
            "runtime": {"cpu": "500m", "memory": "3Gi"},
            "verbosity": 2,
            "logFormat": "text",
        },
    }
    docs = render(tmp_path, values)
    c = container(docs)
    assert c["image"] == "registry.local/me/operator:1.2.3"
    assert c["command"] == ["modelengine"]
    assert c["args"] == [
        "--log-format=text",
        "-vv",
        "operator",
        "--all-namespaces",
        "--builder-image=registry.local/me/builder:b7",
        "--runtime-image=registry.local/me/runtime:r9",
        "--max-builds=5",
        "--max-builds-per-kind=2",
        "--backend-version=onnxruntime=1.22.0",
        "--backend-version=tensorrt-rtx=1.7.1.116",
        "--builder-cpu=4",
        "--builder-memory=16Gi",
        "--job-deadline-seconds=7200",
        "--job-backoff-limit=3",
        "--job-ttl-seconds=600",
        "--runtime-cpu=500m",
        "--runtime-memory=3Gi",
        "--metrics-port=9090",
        "--liveness-port=9091",
        "--leader-election",
        "--lease-name=me-modelengine",
        "--webhook-port=0",  # webhook.enabled is off by default
    ]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 9090, "liveness": 9091}


@needs_helm
def test_default_args_parse_with_the_real_cli(tmp_path: Path) -> None:
    """Every flag the chart passes is one `modelengine operator` accepts."""
    from modelengine.cli import build_parser

    try:
        importlib.import_module("modelengine.operator.command")
    except ImportError as err:
        pytest.skip(f"`modelengine operator` is not importable here: {err}")
    from modelengine.operator.command import config_from_args
    from modelengine.operator.config import BUILDER_IMAGE_BACKEND_VERSIONS

    for values in ({}, {"operator": {"watchNamespaces": ["ml"], "verbosity": 1}}):
        args = container(render(tmp_path, values))["args"]
        parsed = build_parser().parse_args(args)
        assert parsed.command == "operator"
        assert parsed.log_format == "json"
        assert parsed.leader_election is True
        config = config_from_args(parsed)
        # A default install knows the builder image's exact versions: CPU and TRT-RTX targets build.
        assert dict(config.backend_versions) == dict(BUILDER_IMAGE_BACKEND_VERSIONS)
        assert (config.builder_cpu, config.builder_memory, config.runtime_cpu, config.runtime_memory) == (
            "2",
            "8Gi",
            "1",
            "2Gi",
        )
        assert (config.job_deadline_seconds, config.job_backoff_limit, config.job_ttl_seconds) == (
            3600,
            1,
            86400,
        )


@needs_helm
def test_pod_is_probed_non_root_and_bounded(tmp_path: Path) -> None:
    docs = render(tmp_path)
    deployment = only(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    c = container(docs)
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 8080, "liveness": 8081}
    assert "--liveness-port=8081" in c["args"] and "--metrics-port=8080" in c["args"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    assert {e["name"] for e in c["env"]} >= {"POD_NAME", "POD_NAMESPACE"}
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert (
        anti["podAffinityTerm"]["labelSelector"]["matchLabels"]
        == deployment["spec"]["selector"]["matchLabels"]
    )


@needs_helm
def test_metrics_service_and_optional_service_monitor(tmp_path: Path) -> None:
    docs = render(tmp_path)
    assert not [d for d in docs if d["kind"] == "ServiceMonitor"]
    service = only(docs, "Service")
    pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]

    docs = render(tmp_path, {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}})
    monitor = only(docs, "ServiceMonitor")
    validate_offline(monitor)
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == only(docs, "Service")["spec"]["ports"][0]["name"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items()
        <= only(docs, "Service")["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


@needs_helm
def test_service_monitor_without_service_is_refused(tmp_path: Path) -> None:
    values_file = tmp_path / "v.yaml"
    values_file.write_text(
        yaml.safe_dump({"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}})
    )
    proc = helm("template", "me", str(CHART), "-f", str(values_file))
    assert proc.returncode != 0
    assert "metrics.serviceMonitor.enabled needs metrics.service.enabled" in proc.stderr


@needs_helm
def test_single_replica_has_no_disruption_budget(tmp_path: Path) -> None:
    docs = render(tmp_path, {"replicaCount": 1})
    assert not [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert "--leader-election" in container(docs)["args"]


@needs_helm
def test_include_crds_installs_the_generated_crd(tmp_path: Path) -> None:
    docs = render(tmp_path, None, "--include-crds")
    crds = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert set(crds) == {"modelengines.modelengine.io"}
    assert crds["modelengines.modelengine.io"] == generate_crd()
    for crd in crds.values():
        validate_offline(crd)


def test_chart_app_version_is_the_package_version() -> None:
    from modelengine import __version__

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__


@needs_helm
def test_install_doc_lists_exactly_the_rendered_rbac(tmp_path: Path) -> None:
    """docs/operator-install.md's RBAC tables name every (resource, verb) the ClusterRoles and
    the webhook's Role grant (the leader-election Role is the sentence checked last)."""
    text = (ROOT / "docs" / "operator-install.md").read_text().split("## RBAC", 1)[1].split("\n## ", 1)[0]
    documented = set()
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        for resource in re.findall(r"`([^`]+)`", cells[0]):
            for verb in cells[1].split(", "):
                documented.add((resource.split(".")[0], verb))
    rendered = set()
    for values in (
        {},
        {"operator": {"watchNamespaces": ["ml"]}},
        {"rbac": {"allSecrets": True}},
        {"webhook": {"enabled": True}},
    ):
        for role in render(tmp_path, values):
            if role["kind"] == "ClusterRole" or (
                role["kind"] == "Role" and role["metadata"]["name"].endswith("-webhook")
            ):
                rendered |= {(resource, verb) for _, resource, verb, _ in rule_set(role)}
    assert documented == rendered
    assert "`leases` (coordination.k8s.io)\nget, create, update and patch" in text


@needs_helm
@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"operator": {"maxbuilds": 3}}, "'maxbuilds' not allowed"),
        ({"operator": {"maxBuilds": 0}}, "/operator/maxBuilds"),
        ({"operator": {"logFormat": "xml"}}, "/operator/logFormat"),
        ({"replicas": 3}, "'replicas' not allowed"),
        ({"image": {"builder": {"repository": ""}}}, "/image/builder/repository"),
    ],
)
def test_values_schema_refuses_typos_and_bad_values(tmp_path: Path, values: Doc, says: str) -> None:
    values_file = tmp_path / "v.yaml"
    values_file.write_text(yaml.safe_dump(values))
    proc = helm("template", "me", str(CHART), "-f", str(values_file))
    assert proc.returncode != 0
    assert says in proc.stderr
