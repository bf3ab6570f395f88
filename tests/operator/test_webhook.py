"""The sidecar-injection webhook over real HTTPS, with AdmissionReview v1 requests as the
API server sends them, and its certificates against the fake API (KMock over TLS).

The serving certificate comes from the operator's own certificate code (`webhook_certs`,
writing its Secret through the fake API); the client trusts only the CA bundle that code
put into the MutatingWebhookConfiguration, and asks for the Service's DNS name, as the
API server does. ModelEngines reach the webhook through the operator's informer cache
(`Informers.observe_modelengine`, the call kopf's watch handler makes). Patches are applied
with a real RFC 6902 implementation (`jsonpatch`) and the patched Pod is validated against
Kubernetes' own Pod schema.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import json
import ssl
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import jsonpatch
import kubernetes_validate
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from modelengine.api.models import BackendName
from modelengine.api.targets import GpuKind, ResolvedTarget
from modelengine.api.validation import parse_modelengine
from modelengine.operator.config import OperatorConfig
from modelengine.operator.informers import Informers
from modelengine.operator.serving_groups import ServingGroup
from modelengine.operator.serving_objects import deployment
from modelengine.operator.webhook import ANNOTATION, CONTAINER, PATH, WebhookServer, WebhookService
from modelengine.operator.webhook_certs import (
    CA_LIFETIME,
    CERT_LIFETIME,
    ClientCertApi,
    ServingCert,
    WebhookCerts,
    issue,
    make_ca,
    service_dns_names,
)
from tests.operator.harness import FakeCluster, LoopThread, OperatorThread, kube_client, wait_for

OPERATOR_NAMESPACE = "modelengine-system"
SERVICE = "modelengine-webhook"
HOSTNAME = f"{SERVICE}.{OPERATOR_NAMESPACE}.svc"  # the name the API server connects to
CONFIG = OperatorConfig(runtime_image="registry.test/modelengine-runtime:1", runtime_cpu="500m")


# ---- the fake cluster and the operator's certificate code against it ----


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeCluster]:
    fake = FakeCluster(tmp_path_factory.mktemp("webhook"))
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture(scope="module")
def cert_api(cluster: FakeCluster) -> Iterator[ClientCertApi]:
    api = ClientCertApi(kube_client(cluster.kubeconfig).configuration)
    try:
        yield api
    finally:
        api.close()


def webhook_configuration(name: str) -> dict[str, Any]:
    """A MutatingWebhookConfiguration as the chart renders it (caBundle not yet set)."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "inject.modelengine.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Ignore",
                "clientConfig": {
                    "service": {"name": SERVICE, "namespace": OPERATOR_NAMESPACE, "path": PATH, "port": 443}
                },
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }
                ],
            }
        ],
    }


def create_configuration(cluster: FakeCluster) -> str:
    from kubernetes import client

    name = f"modelengine-{uuid.uuid4().hex[:6]}"
    api = client.AdmissionregistrationV1Api(kube_client(cluster.kubeconfig))
    api.create_mutating_webhook_configuration(webhook_configuration(name))
    return name


def certs_for(
    cert_api: ClientCertApi, configuration: str | None, *, managed: bool = True, secret: str | None = None
) -> WebhookCerts:
    return WebhookCerts(
        api=cert_api,
        namespace=OPERATOR_NAMESPACE,
        secret=secret or f"webhook-tls-{uuid.uuid4().hex[:6]}",
        dns_names=service_dns_names(SERVICE, OPERATOR_NAMESPACE),
        webhook_configuration=configuration,
        managed=managed,
    )


def ca_bundle(cluster: FakeCluster, configuration: str) -> bytes:
    doc = cluster.get("mutatingwebhookconfigurations", None, configuration)
    assert doc is not None
    (webhook,) = doc["webhooks"]
    return base64.b64decode(webhook["clientConfig"].get("caBundle", ""))


# ---- ModelEngines in the informer cache, AdmissionReviews, the HTTPS client ----


def modelengine(name: str, *, engines: list[dict[str, Any]], namespace: str = "default") -> dict[str, Any]:
    """A ModelEngine as the operator's watch delivers it (metadata filled by the server)."""
    return {
        "apiVersion": "modelengine.io/v1alpha1",
        "kind": "ModelEngine",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "resourceVersion": "7",
            "generation": 1,
        },
        "spec": {
            "model": {"source": "s3://models/resnet/", "format": "python", "entrypoint": "resnet:make"},
            "export": {
                "inputs": [{"name": "x", "shape": [-1, 8], "min": [1, 8], "opt": [4, 8], "max": [16, 8]}]
            },
            "build": {"backend": "tensorrt-rtx"},
            "targets": [{"computeCapability": "8.9"}],
            "storage": {
                "uri": "s3://engines/prod",
                "endpointUrl": "http://minio.storage:9000",
                "region": "eu-west-1",
                "secretRef": {"name": "store-credentials"},
            },
        },
        "status": {
            "phase": "Ready" if any(e["phase"] == "Ready" for e in engines) else "Building",
            "engines": engines,
        },
    }


READY_GPU_ENGINE = {
    "target": "8.9",
    "buildKey": "k" * 16,
    "phase": "Ready",
    "backend": "tensorrt-rtx",
    "backendVersion": "1.7.1.116",
    "computeCapability": "8.9",
    "uri": "s3://engines/prod/engines/kkkk/engine.plan",
}
BUILDING_ENGINE = {**READY_GPU_ENGINE, "phase": "Building", "uri": None}


def user_pod(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """A pod as a ReplicaSet controller creates it: generateName, template labels, no name."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "classifier-7d9f8b-",
            "labels": {"app": "classifier", "pod-template-hash": "7d9f8b"},
            "annotations": {"team": "vision", **(annotations or {})},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "classifier-7d9f8b",
                    "uid": str(uuid.uuid4()),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "registry.test/classifier-frontend:3",
                    "args": ["--model-url", "http://localhost:8000/v2/models/resnet/infer"],
                    "ports": [{"name": "web", "containerPort": 8080, "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}},
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/classifier"}],
                }
            ],
            "volumes": [{"name": "config", "configMap": {"name": "classifier"}}],
            "restartPolicy": "Always",
            **spec,
        },
    }


def review(pod: dict[str, Any], *, namespace: str = "default", operation: str = "CREATE") -> dict[str, Any]:
    """An AdmissionReview v1 request as kube-apiserver sends it for a Pod create."""
    resource = {"group": "", "version": "v1", "resource": "pods"}
    kind = {"group": "", "version": "v1", "kind": "Pod"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": kind,
            "resource": resource,
            "requestKind": kind,
            "requestResource": resource,
            "namespace": namespace,
            "operation": operation,
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": str(uuid.uuid4()),
                "groups": [
                    "system:serviceaccounts",
                    "system:serviceaccounts:kube-system",
                    "system:authenticated",
                ],
            },
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


class Client:
    """The API server's side: HTTPS to the Service name, trusting only the caBundle."""

    def __init__(self, port: int, ca_pem: bytes) -> None:
        self.port = port
        self.url = f"https://127.0.0.1:{port}{PATH}"
        self.context = ssl.create_default_context(cadata=ca_pem.decode())

    async def post(self, body: bytes) -> tuple[int, Any]:
        """(status, decoded JSON or the text)."""
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.url,
                data=body,
                headers={"Content-Type": "application/json"},
                ssl=self.context,
                server_hostname=HOSTNAME,
            ) as response,
        ):
            text = await response.text()
            try:
                decoded: Any = json.loads(text)
            except ValueError:
                decoded = text
            return response.status, decoded

    async def presented(self) -> bytes:
        """DER of the certificate a new TLS handshake gets (verified against the CA bundle)."""
        _, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.context, server_hostname=HOSTNAME
        )
        try:
            der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            return der
        finally:
            writer.close()
            await writer.wait_closed()

    async def admit(self, request: dict[str, Any]) -> dict[str, Any]:
        status, answer = await self.post(json.dumps(request).encode())
        assert status == 200, answer
        assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
        assert answer["response"]["uid"] == request["request"]["uid"]
        response: dict[str, Any] = answer["response"]
        return response


def patched(pod: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    result: dict[str, Any] = jsonpatch.apply_patch(pod, patch)
    return result


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


@pytest.fixture(scope="module")
def served(cluster: FakeCluster, cert_api: ClientCertApi) -> Iterator[tuple[Client, Informers]]:
    """The webhook served over HTTPS on a background loop, its cache fed with ModelEngines."""
    cache = Informers()
    for doc in (
        modelengine("resnet", engines=[READY_GPU_ENGINE]),
        modelengine("resnet-building", engines=[BUILDING_ENGINE]),
    ):
        cache.observe_modelengine("ADDED", doc)
    configuration = create_configuration(cluster)
    loop = LoopThread("webhook")
    server = WebhookServer(cache=cache, config=CONFIG, port=0, host="127.0.0.1")
    loop.call(WebhookService(server=server, certs=certs_for(cert_api, configuration)).refresh())
    try:
        yield Client(server.port, ca_bundle(cluster, configuration)), cache
    finally:
        loop.call(server.stop())
        loop.close()


# ---- admission ----


def test_annotated_pod_of_a_ready_modelengine_gets_exactly_the_runtime(
    served: tuple[Client, Informers],
) -> None:
    client, _ = served
    pod = user_pod({ANNOTATION: "resnet"})
    original = copy.deepcopy(pod)
    response = asyncio.run(client.admit(review(pod)))
    result = patched(pod, response)

    # The user's containers and volumes: byte-identical, same positions.
    assert [canonical(c) for c in result["spec"]["containers"][:1]] == [
        canonical(c) for c in original["spec"]["containers"]
    ]
    assert canonical(result["spec"]["volumes"][:1]) == canonical(original["spec"]["volumes"])
    assert canonical({k: v for k, v in result.items() if k != "spec"}) == canonical(
        {k: v for k, v in original.items() if k != "spec"}
    )
    # Exactly one container and one volume more.
    assert len(result["spec"]["containers"]) == 2 and len(result["spec"]["volumes"]) == 2
    runtime, volume = result["spec"]["containers"][1], result["spec"]["volumes"][1]
    assert runtime["name"] == CONTAINER
    assert volume == {"name": runtime["volumeMounts"][0]["name"], "emptyDir": {}}
    assert runtime["volumeMounts"] == [{"name": volume["name"], "mountPath": "/tmp"}]
    # The same runtime the operator's serving pods run for this ModelEngine: command,
    # ports, probes, env, credentials, security.
    served_doc = modelengine("resnet", engines=[READY_GPU_ENGINE])
    served_doc["spec"]["serving"] = {}
    (serving_container,) = deployment(
        me=parse_modelengine({k: v for k, v in served_doc.items() if k != "status"}),
        uid=None,
        config=CONFIG,
        group=ServingGroup(
            slug="nvidia-l4",
            kind=GpuKind(compute_capability="8.9", product="NVIDIA-L4"),
            target=ResolvedTarget(BackendName.TENSORRT_RTX, "8.9"),
            backend_version="1.7.1.116",
            overrides=None,
        ),
    )["spec"]["template"]["spec"]["containers"]
    for field in (
        "image",
        "command",
        "env",
        "ports",
        "readinessProbe",
        "livenessProbe",
        "envFrom",
        "securityContext",
    ):
        assert runtime[field] == serving_container[field], field
    assert runtime["command"][:8] == [
        "modelengine",
        "serve",
        "--store",
        "s3://engines/prod",
        "--namespace",
        "default",
        "--name",
        "resnet",
    ]
    assert runtime["envFrom"] == [{"secretRef": {"name": "store-credentials"}}]
    assert {p["containerPort"] for p in runtime["ports"]} == {8000, 8001, 8002}
    # A GPU engine is Ready: the runtime holds the GPU.
    assert runtime["resources"] == {
        "requests": {"cpu": "500m", "memory": CONFIG.runtime_memory},
        "limits": {"memory": CONFIG.runtime_memory, "nvidia.com/gpu": "1"},
    }
    # What the API server would store is a valid Pod (strict schema: unknown fields are errors).
    stored = copy.deepcopy(result)
    stored["metadata"]["name"] = "classifier-7d9f8b-x2x9q"
    kubernetes_validate.validate(stored, kubernetes_validate.latest_version(), strict=True)


def test_a_pod_without_volumes_gets_the_volume_list(served: tuple[Client, Informers]) -> None:
    client, _ = served
    pod = user_pod({ANNOTATION: "resnet"})
    del pod["spec"]["volumes"]
    pod["spec"]["containers"][0].pop("volumeMounts")
    result = patched(pod, asyncio.run(client.admit(review(pod))))
    assert [v["name"] for v in result["spec"]["volumes"]] == [
        result["spec"]["containers"][1]["volumeMounts"][0]["name"]
    ]


def refusal(response: dict[str, Any]) -> str:
    assert response["allowed"] is False
    assert "patch" not in response and "patchType" not in response
    status = response["status"]
    assert status["code"] == 403
    message: str = status["message"]
    assert message and "\n" not in message
    return message


def test_unknown_modelengine_is_refused_with_one_line(served: tuple[Client, Informers]) -> None:
    client, _ = served
    message = refusal(asyncio.run(client.admit(review(user_pod({ANNOTATION: "resnet-typo"})))))
    assert message.startswith("ModelEngine default/resnet-typo")
    assert "not found" in message
    # The same name in another namespace is another ModelEngine: not found either.
    message = refusal(asyncio.run(client.admit(review(user_pod({ANNOTATION: "resnet"}), namespace="ml"))))
    assert message.startswith("ModelEngine ml/resnet") and "not found" in message


def test_modelengine_without_a_ready_engine_is_refused(served: tuple[Client, Informers]) -> None:
    client, _ = served
    message = refusal(asyncio.run(client.admit(review(user_pod({ANNOTATION: "resnet-building"})))))
    assert message.startswith("ModelEngine default/resnet-building has no Ready engine")
    assert "Building" in message


def test_a_port_the_runtime_needs_is_refused(served: tuple[Client, Informers]) -> None:
    client, _ = served
    pod = user_pod({ANNOTATION: "resnet"})
    pod["spec"]["containers"][0]["ports"] = [{"containerPort": 8000}]
    message = refusal(asyncio.run(client.admit(review(pod))))
    assert "'app'" in message and "8000" in message


def test_pods_without_the_annotation_and_reinvocations_pass_unchanged(
    served: tuple[Client, Informers],
) -> None:
    client, _ = served
    bare = user_pod()
    del bare["metadata"]["annotations"]
    for pod in (user_pod(), bare):
        response = asyncio.run(client.admit(review(pod)))
        assert response == {"uid": response["uid"], "allowed": True}
    # Already injected (a reinvocation, or a pod copied from an injected one): no second sidecar.
    pod = user_pod({ANNOTATION: "resnet"})
    once = patched(pod, asyncio.run(client.admit(review(pod))))
    response = asyncio.run(client.admit(review(once)))
    assert response == {"uid": response["uid"], "allowed": True}
    # Updates are not ours to mutate.
    response = asyncio.run(client.admit(review(user_pod({ANNOTATION: "resnet-typo"}), operation="UPDATE")))
    assert response["allowed"] is True and "patch" not in response


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        json.dumps(
            {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}
        ).encode(),
        json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
        json.dumps(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {"uid": "u", "object": 3},
            }
        ).encode(),
        b"\xff\xfe",
    ],
)
def test_a_malformed_review_is_a_400_with_one_line(served: tuple[Client, Informers], body: bytes) -> None:
    client, _ = served
    status, answer = asyncio.run(client.post(body))
    assert status == 400
    assert isinstance(answer, str) and answer.strip() and "\n" not in answer.strip()


# ---- certificates: issue, caBundle sync, rotation, cert-manager ----


def test_certificate_is_issued_stored_and_the_ca_bundle_synced(
    cluster: FakeCluster, cert_api: ClientCertApi
) -> None:
    configuration = create_configuration(cluster)
    certs = certs_for(cert_api, configuration)
    cert = asyncio.run(certs.ensure())

    secret = cluster.get("secrets", OPERATOR_NAMESPACE, certs.secret)
    assert secret is not None and secret["type"] == "kubernetes.io/tls"
    assert ServingCert.from_secret(secret) == cert
    assert ca_bundle(cluster, configuration) == cert.ca_pem
    assert set(service_dns_names(SERVICE, OPERATOR_NAMESPACE)) <= cert.dns_names()
    assert datetime.timedelta(days=89) < cert.not_after - datetime.datetime.now(datetime.UTC) <= CERT_LIFETIME

    # A second replica (or the next refresh) finds it valid: same certificate, no writes.
    start = len(cluster.requests())
    assert asyncio.run(certs_for(cert_api, configuration, secret=certs.secret).ensure()) == cert
    writes = [
        r for r in cluster.requests()[start:] if str(r.method).upper().endswith(("POST", "PATCH", "PUT"))
    ]
    assert writes == []

    # Someone resets the caBundle (e.g. `helm upgrade` renders it empty): the next refresh restores it.
    from kubernetes import client

    admission = client.AdmissionregistrationV1Api(kube_client(cluster.kubeconfig))
    admission.patch_mutating_webhook_configuration(configuration, webhook_configuration(configuration))
    assert ca_bundle(cluster, configuration) == b""
    asyncio.run(certs.ensure())
    assert ca_bundle(cluster, configuration) == cert.ca_pem


def test_a_ca_bundle_that_cannot_be_written_does_not_stop_serving(
    cluster: FakeCluster, cert_api: ClientCertApi, caplog: pytest.LogCaptureFixture
) -> None:
    configuration = create_configuration(cluster)
    path = f"patch /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{configuration}"
    cluster.inject(lambda kmock: kmock[path] << 403)
    certs = certs_for(cert_api, configuration)
    cert = asyncio.run(certs.ensure())
    assert ServingCert.from_secret(cluster.get("secrets", OPERATOR_NAMESPACE, certs.secret) or {}) == cert
    # (KMock stores a patch even when an injected reaction answers 403: the stored
    # caBundle says nothing here; the answer the operator got is what matters.)
    assert f"caBundle of MutatingWebhookConfiguration {configuration} not updated: HTTP 403" in caplog.text


def _plant(cluster: FakeCluster, certs: WebhookCerts, *, ca_days: float, cert_days: float) -> ServingCert:
    """Write a Secret as an earlier operator would have, with the given days left."""
    now = datetime.datetime.now(datetime.UTC)
    ca_cert, ca_key = make_ca(now - CA_LIFETIME + datetime.timedelta(days=ca_days))
    cert_pem, key_pem = issue(
        ca_cert_pem=ca_cert,
        ca_key_pem=ca_key,
        dns_names=certs.dns_names,
        now=now - CERT_LIFETIME + datetime.timedelta(days=cert_days),
    )
    old = ServingCert(ca_pem=ca_cert, cert_pem=cert_pem, key_pem=key_pem)
    from kubernetes import client

    core = client.CoreV1Api(kube_client(cluster.kubeconfig))
    core.create_namespaced_secret(
        OPERATOR_NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": certs.secret, "namespace": OPERATOR_NAMESPACE},
            "data": {**old.secret_data(), WebhookCerts.CA_KEY: base64.b64encode(ca_key).decode()},
        },
    )
    return old


def test_a_certificate_near_expiry_is_replaced_and_served_without_restart(
    cluster: FakeCluster, cert_api: ClientCertApi
) -> None:
    configuration = create_configuration(cluster)
    certs = certs_for(cert_api, configuration)
    old = _plant(cluster, certs, ca_days=1000, cert_days=10)  # 10 of 90 days left

    async def scenario() -> tuple[bytes, bytes, ServingCert]:
        cache = Informers()
        server = WebhookServer(cache=cache, config=CONFIG, port=0, host="127.0.0.1")
        await server.start(old)
        try:
            before = await Client(server.port, old.ca_pem).presented()
            service = WebhookService(server=server, certs=certs)
            await service.refresh()  # what the refresh loop does every REFRESH_SECONDS
            fresh = await certs.ensure()
            # A new handshake, verified against the caBundle now in the configuration.
            after = await Client(server.port, ca_bundle(cluster, configuration)).presented()
            return before, after, fresh
        finally:
            await server.stop()

    before, after, fresh = asyncio.run(scenario())
    assert x509.load_der_x509_certificate(before) == x509.load_pem_x509_certificate(old.cert_pem)
    assert x509.load_der_x509_certificate(after) == x509.load_pem_x509_certificate(fresh.cert_pem)
    assert fresh.cert_pem != old.cert_pem
    assert fresh.not_after - old.not_after > datetime.timedelta(days=70)
    # Same CA (it has years left): the caBundle is the one replicas already trust.
    assert fresh.ca_pem == old.ca_pem == ca_bundle(cluster, configuration)


def test_an_ageing_ca_is_replaced_and_the_old_one_stays_trusted(
    cluster: FakeCluster, cert_api: ClientCertApi
) -> None:
    configuration = create_configuration(cluster)
    certs = certs_for(cert_api, configuration)
    old = _plant(cluster, certs, ca_days=100, cert_days=80)  # CA under a year from expiry
    fresh = asyncio.run(certs.ensure())
    cas = x509.load_pem_x509_certificates(ca_bundle(cluster, configuration))
    assert len(cas) == 2 and cas[1] == x509.load_pem_x509_certificate(old.ca_pem)
    assert cas[0].not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(days=4 * 365)

    async def presented(cert: ServingCert) -> bytes:
        server = WebhookServer(cache=Informers(), config=CONFIG, port=0, host="127.0.0.1")
        await server.start(cert)
        try:
            return await Client(server.port, ca_bundle(cluster, configuration)).presented()
        finally:
            await server.stop()

    # Both a replica still serving the old certificate and one serving the new are trusted.
    for cert in (old, fresh):
        der = x509.load_pem_x509_certificate(cert.cert_pem).public_bytes(serialization.Encoding.DER)
        assert asyncio.run(presented(cert)) == der


def test_with_cert_manager_the_operator_only_reads_the_secret(
    cluster: FakeCluster, cert_api: ClientCertApi
) -> None:
    from modelengine.errors import InfrastructureError

    certs = certs_for(cert_api, None, managed=False)
    with pytest.raises(
        InfrastructureError, match=f"webhook Secret {OPERATOR_NAMESPACE}/{certs.secret} holds no certificate"
    ):
        asyncio.run(certs.ensure())
    assert cluster.get("secrets", OPERATOR_NAMESPACE, certs.secret) is None  # nothing written
    # cert-manager's Secret (tls.crt, tls.key, ca.crt; no CA key): served as it is, even near expiry.
    planted = _plant(cluster, certs_for(cert_api, None, secret=certs.secret), ca_days=1000, cert_days=5)
    start = len(cluster.requests())
    assert asyncio.run(certs.ensure()) == planted
    writes = [
        r for r in cluster.requests()[start:] if str(r.method).upper().endswith(("POST", "PATCH", "PUT"))
    ]
    assert writes == []


# ---- wiring: served by `operate` beside kopf ----


def test_operator_serves_the_webhook_and_reads_its_informer_cache(
    cluster: FakeCluster, cert_api: ClientCertApi
) -> None:
    configuration = create_configuration(cluster)
    certs = certs_for(cert_api, configuration)
    services: list[WebhookService] = []

    def make(controller: Any) -> WebhookService:
        server = WebhookServer(cache=controller.cache, config=controller.config, port=0, host="127.0.0.1")
        services.append(WebhookService(server=server, certs=certs))
        return services[0]

    operator = OperatorThread(cluster.kubeconfig, OperatorConfig(identity="webhook-test"), webhook=make)
    try:
        wait_for(lambda: services and services[0].started.is_set(), timeout=30, what="the webhook to start")
        server = services[0].server
        client = Client(server.port, ca_bundle(cluster, configuration))
        message = refusal(
            asyncio.run(client.admit(review(user_pod({ANNOTATION: "resnet"}), namespace="webhook-ns")))
        )
        assert message.startswith("ModelEngine webhook-ns/resnet") and "not found" in message
        # The controller's cache is what the webhook reads: a ModelEngine observed there is found.
        operator.controller.cache.observe_modelengine(
            "ADDED", modelengine("resnet", engines=[READY_GPU_ENGINE], namespace="webhook-ns")
        )
        response = asyncio.run(client.admit(review(user_pod({ANNOTATION: "resnet"}), namespace="webhook-ns")))
        assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    finally:
        operator.stop()
    assert operator.error is None
    with pytest.raises(aiohttp.ClientConnectorError):
        asyncio.run(Client(server.port, ca_bundle(cluster, configuration)).post(b"{}"))
