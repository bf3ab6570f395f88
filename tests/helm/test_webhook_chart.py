"""The chart's injection webhook: rendered with the real `helm`, validated offline, and
checked to fit the operator it configures.

What must agree across files is checked across them: the MutatingWebhookConfiguration's
service and port reach the Service, whose target port is the operator container's
`--webhook-port`; the certificate's DNS names are the ones the operator (or cert-manager)
issues for that Service; the RBAC rules name the Secret and configuration the operator's
flags name. The `matchConditions` expression is evaluated with a CEL interpreter, as the
API server does, on pods with and without the annotation: unrelated pods never reach the
webhook, so its failure policy can never block them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import celpy
import pytest
from celpy.adapter import json_to_cel

from modelengine.operator.webhook import ANNOTATION, PATH
from modelengine.operator.webhook_certs import service_dns_names
from tests.helm.test_chart import (
    NAMESPACE,
    Doc,
    container,
    needs_helm,
    only,
    render,
    rule_set,
    validate_offline,
)

ENABLED = {"webhook": {"enabled": True}}
WITH_CERT_MANAGER = {"webhook": {"enabled": True, "certManager": {"enabled": True}}}


def operator_args(docs: list[Doc]) -> Any:
    """The operator's flags as `modelengine operator` parses them."""
    from modelengine.cli import build_parser

    return build_parser().parse_args(container(docs)["args"])


@needs_helm
def test_webhook_is_off_by_default(tmp_path: Path) -> None:
    docs = render(tmp_path)
    assert not [d for d in docs if d["kind"] in ("MutatingWebhookConfiguration", "Certificate", "Issuer")]
    assert "webhook" not in {p["name"] for p in container(docs)["ports"]}
    assert operator_args(docs).webhook_port == 0  # the operator serves nothing either


@needs_helm
@pytest.mark.parametrize("values", [ENABLED, WITH_CERT_MANAGER], ids=["operator-certs", "cert-manager"])
def test_webhook_objects_fit_the_operator(tmp_path: Path, values: Doc) -> None:
    docs = render(tmp_path, values)
    for doc in docs:
        if doc["kind"] not in ("Certificate", "Issuer", "CustomResourceDefinition"):
            validate_offline(doc)
    args = operator_args(docs)
    config = only(docs, "MutatingWebhookConfiguration")
    (hook,) = config["webhooks"]
    service = only(docs, "Service", args.webhook_service)

    # API server → Service → operator container.
    assert hook["clientConfig"]["service"] == {
        "name": service["metadata"]["name"],
        "namespace": NAMESPACE,
        "path": PATH,
        "port": 443,
    }
    (port,) = service["spec"]["ports"]
    assert port["port"] == 443
    ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    assert ports[port["targetPort"]] == args.webhook_port == 9443
    assert service["spec"]["selector"].items() <= (
        only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )
    assert args.webhook_configuration == config["metadata"]["name"]
    # What it may do: Pod creates only, no side effects, never blocking pod creation.
    assert hook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert hook["sideEffects"] == "None" and hook["admissionReviewVersions"] == ["v1"]
    assert hook["failurePolicy"] == "Ignore"
    (excluded,) = hook["namespaceSelector"]["matchExpressions"]  # all namespaces watched
    assert excluded["key"] == "kubernetes.io/metadata.name" and excluded["operator"] == "NotIn"
    assert {NAMESPACE, "kube-system"} <= set(excluded["values"])

    secret_rules = rule_set(only(docs, "Role", args.webhook_service))
    if args.webhook_cert_manager:
        certificate = only(docs, "Certificate")
        issuer = only(docs, "Issuer")
        assert certificate["spec"]["secretName"] == args.webhook_secret
        assert certificate["spec"]["dnsNames"] == service_dns_names(args.webhook_service, NAMESPACE)
        assert certificate["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"]
        assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
            f"{NAMESPACE}/{certificate['metadata']['name']}"
        )
        # The operator only reads the Secret cert-manager writes, and never the configuration.
        assert secret_rules == {("", "secrets", "get", (args.webhook_secret,))}
        assert not [d for d in docs if d["kind"] == "ClusterRole" and "webhook" in d["metadata"]["name"]]
    else:
        assert not [d for d in docs if d["kind"] in ("Certificate", "Issuer")]
        assert "annotations" not in config["metadata"]
        # Exactly what webhook_certs calls: create the Secret, read/patch it by name, read/patch
        # this release's configuration by name.
        assert secret_rules == {
            ("", "secrets", "get", (args.webhook_secret,)),
            ("", "secrets", "patch", (args.webhook_secret,)),
            ("", "secrets", "create", ()),
        }
        cluster_role = only(docs, "ClusterRole", args.webhook_service)
        assert rule_set(cluster_role) == {
            (
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
                verb,
                (config["metadata"]["name"],),
            )
            for verb in ("get", "patch")
        }
    for binding in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        if binding["metadata"]["name"] == args.webhook_service:
            assert binding["subjects"][0]["name"] == only(docs, "ServiceAccount")["metadata"]["name"]


def _evaluate(expression: str, pod: Doc) -> bool:
    env = celpy.Environment()
    result = env.program(env.compile(expression)).evaluate({"object": json_to_cel(pod)})
    return bool(result)


@needs_helm
def test_unannotated_pods_never_reach_the_webhook(tmp_path: Path) -> None:
    """matchConditions, evaluated as the API server does: only annotated pods are sent."""
    docs = render(tmp_path, ENABLED)
    (hook,) = only(docs, "MutatingWebhookConfiguration")["webhooks"]
    (condition,) = hook["matchConditions"]

    def pod(annotations: dict[str, str] | None) -> Doc:
        meta: Doc = {"generateName": "web-", "labels": {"app": "web"}}
        if annotations is not None:
            meta["annotations"] = annotations
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": []}}

    assert _evaluate(condition["expression"], pod({ANNOTATION: "resnet"})) is True
    assert _evaluate(condition["expression"], pod({ANNOTATION: ""})) is True  # refused with its line
    assert _evaluate(condition["expression"], pod({"prometheus.io/scrape": "true"})) is False
    assert _evaluate(condition["expression"], pod(None)) is False
    assert _evaluate(condition["expression"], pod({})) is False


@needs_helm
def test_failure_policy_and_issuer_are_values(tmp_path: Path) -> None:
    docs = render(
        tmp_path,
        {
            "webhook": {
                "enabled": True,
                "failurePolicy": "Fail",
                "excludeNamespaces": ["batch-jobs"],
                "certManager": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}},
            }
        },
    )
    (hook,) = only(docs, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["failurePolicy"] == "Fail"
    assert "batch-jobs" in hook["namespaceSelector"]["matchExpressions"][0]["values"]
    assert not [d for d in docs if d["kind"] == "Issuer"]
    assert only(docs, "Certificate")["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}


@needs_helm
def test_a_namespaced_operator_gets_only_its_namespaces_pods(tmp_path: Path) -> None:
    """Elsewhere it knows no ModelEngine: it would refuse every annotated pod there."""
    docs = render(tmp_path, {**ENABLED, "operator": {"watchNamespaces": ["ml", "vision"]}})
    (hook,) = only(docs, "MutatingWebhookConfiguration")["webhooks"]
    validate_offline(only(docs, "MutatingWebhookConfiguration"))
    excluded, included = hook["namespaceSelector"]["matchExpressions"]
    assert excluded["operator"] == "NotIn" and NAMESPACE in excluded["values"]
    assert included == {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["ml", "vision"]}
