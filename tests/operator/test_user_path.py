"""The README's cluster walkthrough, end to end, on the faithful harness.

What a platform engineer does, in order: install the chart (its rendered operator
arguments configure the operator here, and it runs as the chart's ServiceAccount with the
chart's RBAC, enforced by the fake API as a real server would), `modelengine push` an example to the store (moto's
S3 over HTTP), `kubectl apply` the YAML it prints, wait for `kubectl get me` to say Ready,
and send a KServe v2 request to the serving pod. Every step runs the real thing: the
resolve and build Jobs and the serving pod are processes the test node starts in fresh,
empty sandboxes with only their pod spec's command, env and `envFrom` Secret (no access to
this repository's files), and the request is answered by `modelengine serve` through
the pod's port with tritonclient.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.helm.test_chart import NAMESPACE as RELEASE_NAMESPACE
from tests.helm.test_chart import ROOT, container, needs_helm, render
from tests.operator.conftest import CREDENTIALS, NAMESPACE, World
from tests.operator.harness import OperatorThread, wait_for

EXAMPLE = ROOT / "examples" / "combinednet" / "modelengine.yaml"


def _push(world: World, tmp_path: Path) -> dict[str, Any]:
    """`modelengine push -f EXAMPLE --store s3://...`, as the README runs it (its stdout is the YAML)."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **CREDENTIALS}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelengine.cli",
            "push",
            "-f",
            str(EXAMPLE),
            "--store",
            f"s3://{world.bucket}/store",
            "--endpoint-url",
            world.endpoint,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = yaml.safe_load(proc.stdout)
    return doc


def _record_operator_s3_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every (operation, key) the operator's S3 clients send: the operator runs in this process."""
    from modelengine.operator import storage
    from modelengine.store.s3 import s3_client

    calls: list[tuple[str, str]] = []

    def recording_client(**kwargs: Any) -> Any:
        client = s3_client(**kwargs)

        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            calls.append((model.name, str(params.get("Key") or params.get("Prefix") or "")))

        client.meta.events.register("provide-client-params.s3.*", record)
        return client

    monkeypatch.setattr(storage, "s3_client", recording_client)
    return calls


@needs_helm
def test_push_apply_build_serve_and_answer_as_the_readme_says(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tritonclient import http as triton

    from modelengine.cli import build_parser
    from modelengine.operator.command import config_from_args

    # 1. The operator as the chart configures it (defaults: no backend versions given; the
    # store Secret readable by name, as the README's install says), running as the chart's
    # ServiceAccount: the fake API allows only what the chart's RBAC grants (403 otherwise),
    # leader election included (its Lease in the release namespace, as $POD_NAMESPACE says).
    docs = render(tmp_path, {"rbac": {"secretNames": ["store-credentials"]}})
    args = container(docs)["args"]
    parsed = build_parser().parse_args(args)
    assert parsed.leader_election
    config = config_from_args(parsed)
    config = replace(config, identity="test-operator-user-path", retry_seconds=0.5, max_retry_seconds=2.0)
    kubeconfig = world.cluster.chart_kubeconfig(docs)

    # 2. Push the example; the printed YAML names s3:// sources instead of `source: .`.
    doc = _push(world, tmp_path)
    source = doc["spec"]["model"]["source"]
    assert source.startswith(f"s3://{world.bucket}/store/") and source.endswith("/")
    # The cluster's store and Secret (the README's `modelengine-s3`, here the harness's).
    doc["metadata"]["name"] = "walkthrough"
    doc["spec"]["storage"] = {
        "uri": f"s3://{world.bucket}/store",
        "endpointUrl": world.endpoint,
        "secretRef": {"name": "store-credentials"},
    }
    doc["spec"]["serving"] = {"cpu": True, "minReplicas": 1, "maxReplicas": 1}

    operator_s3 = _record_operator_s3_reads(monkeypatch)
    operator = OperatorThread(
        kubeconfig,
        config,
        lease_identity=config.identity,
        lease_namespace=RELEASE_NAMESPACE,
        lease_name=parsed.lease_name,
    )
    try:
        # 3. kubectl apply -f -
        world.custom.create_namespaced_custom_object(
            "modelengine.io", "v1alpha1", NAMESPACE, "modelengines", doc
        )
        # 4. kubectl get me: resolve Job, then one build Job per target, then Ready.
        status = wait_for(
            lambda: world.status("walkthrough").get("phase") == "Ready" and world.status("walkthrough"),
            timeout=600,
            what="Ready",
            show=lambda: world.status("walkthrough"),
        )
        assert status["targetsReady"] == "2/2"
        assert len(world.jobs("walkthrough", resolve=True)) == 1
        # The operator never read the model: metadata of the pushed folder (a listing) and
        # small documents (the source record, manifests, the release record), no model bytes.
        model_prefix = source.split(f"s3://{world.bucket}/", 1)[1]
        assert any(op == "ListObjectsV2" and key == model_prefix for op, key in operator_s3)
        assert not [
            (op, key) for op, key in operator_s3 if op == "GetObject" and key.startswith(model_prefix)
        ]
        assert not [(op, key) for op, key in operator_s3 if op == "GetObject" and key.endswith(".onnx")]
        # 5. The CPU serving group's pod, started by the test node, turns ready.
        deployment = "walkthrough-cpu-runtime"
        wait_for(
            lambda: (
                ((world.cluster.get("deployments", NAMESPACE, deployment) or {}).get("status") or {}).get(
                    "readyReplicas", 0
                )
                >= 1
            ),
            timeout=300,
            what="the serving pod ready",
            show=lambda: world.node.serving_log(NAMESPACE, deployment)[-2000:],
        )
        group = wait_for(
            lambda: next(
                (
                    g
                    for g in world.status("walkthrough").get("serving") or []
                    if g["group"] == "cpu" and g["phase"] == "RolledOut"
                ),
                None,
            ),
            what="the cpu group rolled out",
        )
        assert group["engine"] == "onnxruntime-cpu"
        # 6. A standard KServe v2 client through the pod's port.
        port = world.node.serving_port(NAMESPACE, deployment, 8000)
        rng = np.random.default_rng(7)
        batch = rng.standard_normal((3, 3, 32, 32), dtype=np.float32)
        with triton.InferenceServerClient(f"127.0.0.1:{port}") as tc:
            assert tc.is_model_ready("walkthrough")
            request = triton.InferInput("input", list(batch.shape), "FP32")
            request.set_data_from_numpy(batch, binary_data=True)
            answer = tc.infer("walkthrough", [request]).as_numpy("output")
        assert answer is not None and answer.shape[0] == 3
        np.testing.assert_allclose(answer, _reference(world, status, batch), rtol=1e-4, atol=1e-5)
        # Every call the operator (and kopf for it) made was one the chart grants.
        assert world.cluster.kmock.denied == []
        lease = world.cluster.get("leases", RELEASE_NAMESPACE, parsed.lease_name)
        assert lease is not None and lease["spec"]["holderIdentity"] == config.identity
    finally:
        operator.stop()


def _reference(world: World, status: dict[str, Any], batch: np.ndarray) -> np.ndarray:
    """The exported ONNX in the store, run directly with ONNX Runtime."""
    import boto3
    import onnxruntime as ort

    s3 = boto3.client(
        "s3",
        endpoint_url=world.endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_REGION"],
    )
    listed = s3.list_objects_v2(Bucket=world.bucket, Prefix="store/models/")
    onnx_keys = [o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith("/model.onnx")]
    digest = status["modelDigest"]
    assert onnx_keys, "no exported ONNX in the store"
    body = None
    for key in onnx_keys:  # the export of this model (its record names its digest)
        record = s3.get_object(Bucket=world.bucket, Key=key.rsplit("/", 1)[0] + "/export.json")["Body"].read()
        if digest.encode() in record:
            body = s3.get_object(Bucket=world.bucket, Key=key)["Body"].read()
    if body is None:
        pytest.fail(f"no exported ONNX of model {digest} in the store")
    session = ort.InferenceSession(body, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": batch})
    return np.asarray(out)
