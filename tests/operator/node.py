"""The test "node": a kubelet plus the Job and Deployment controllers, over the fake API.

It polls the API (over TLS, like everything else) and runs, as local processes started by
tests/operator/container.py (fresh sandbox, only the pod spec's command, args, env,
envFrom and volumes):

- builder and resolve Jobs it can run (by default the CPU ones: TRT-RTX and ONNX Runtime;
  a Job asking for `nvidia.com/gpu` waits for a GPU node this machine is not). For each,
  as a 1.36 cluster would: a Pod owned by the Job (`<job>-<suffix>`, the template's
  labels), the Job's `startTime`/`active`, the Pod Running, then on exit the Pod's
  terminated state with the termination message from `terminationMessagePath`, and the
  Job's status in the order the Job controller writes it and the API server accepts it:
  `SuccessCriteriaMet` then `Complete`, or `FailureTarget` then `Failed`. One attempt per
  Job: a failure is reported as if the backoff limit were reached.
- serving Deployments: one Pod per Deployment (replicas beyond one are not run here),
  its container started, its `readinessProbe` (httpGet) polled on every round of the loop
  (faster than its periodSeconds, to keep tests short), and the Pod's `Ready` and
  the Deployment's ready/available replicas reported once it answers; a template change
  (new generation) replaces the Pod, a deleted Deployment stops it. `serving_port()` gives
  the loopback port a container port was mapped to.

`gate` holds Job pods back while cleared (tests of queueing); `finished` maps each Job to
its exit code. `images` says what an image holds besides the installed package (a custom
builder image's baked-in model): only pods of that image can read those paths.
"""

from __future__ import annotations

import datetime
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from tempfile import mkdtemp
from typing import Any

from kubernetes import client

from tests.operator import container as kubelet

NODE_NAME = "test-node"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def finished_job_statuses(*, succeeded: bool, started: str, backoff_limit: int = 0) -> list[dict[str, Any]]:
    """The status writes a 1.36 Job controller makes to finish a Job, in the order it makes them.

    The API server refuses `Complete=True` without `SuccessCriteriaMet=True` (and `Failed=True`
    without `FailureTarget=True`): the controller first records the criterion, then, once the
    pods are gone, the terminal condition with its time.
    """
    if succeeded:
        reason, message = "CompletionsReached", "Reached expected number of succeeded pods"
        met = {"type": "SuccessCriteriaMet", "status": "True", "reason": reason, "message": message}
        first = {"startTime": started, "succeeded": 1, "active": None, "ready": 0, "conditions": [met]}
        done = {"type": "Complete", "status": "True", "reason": reason, "message": message}
        return [first, {**first, "completionTime": _now(), "conditions": [met, done]}]
    reason, message = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
    target = {"type": "FailureTarget", "status": "True", "reason": reason, "message": message}
    first = {
        "startTime": started,
        "failed": backoff_limit + 1,
        "active": None,
        "ready": 0,
        "conditions": [target],
    }
    return [first, {**first, "conditions": [target, {**target, "type": "Failed"}]}]


def _stamp(status: dict[str, Any], probe_field: str = "lastProbeTime") -> dict[str, Any]:
    """Condition times (Deployments call the first one `lastUpdateTime`)."""
    for condition in status.get("conditions") or []:
        condition.setdefault(probe_field, _now())
        condition.setdefault("lastTransitionTime", _now())
    return status


def _consume(response: Any) -> bytes:
    """Read a raw response to the end, then hand its connection back (an unread one would corrupt it)."""
    try:
        return bytes(response.data or b"")
    finally:
        response.release_conn()


def runs_here(job: dict[str, Any]) -> bool:
    """CPU pods only: a Job asking for a GPU would wait for a GPU node."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    return "nvidia.com/gpu" not in (container.get("resources", {}).get("limits") or {})


@dataclass
class ServingPod:
    name: str
    generation: int
    started: kubelet.Started
    ready: bool = False


class TestNode:
    __test__ = False  # not a pytest class

    def __init__(
        self,
        api_client: Any,
        *,
        workers: int = 2,
        poll: float = 0.2,
        images: dict[str, list[Path]] | None = None,
    ) -> None:
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.gate = threading.Event()  # Job pods start only while the gate is open
        self.gate.set()
        self.seen: set[tuple[str, str]] = set()
        self.finished: dict[tuple[str, str], int] = {}  # job → exit code
        self.errors: list[str] = []  # the node's own failures (a test shows them when it times out)
        self.serving: dict[tuple[str, str], ServingPod] = {}  # deployment → its pod
        self._job_pods: dict[tuple[str, str], dict[str, Any]] = {}  # job → its pod (kept across retries)
        self.root = Path(mkdtemp(prefix="test-node-"))
        # image → what it holds besides the installed package (files baked into a custom image)
        self.images = {image: [str(p) for p in paths] for image, paths in (images or {}).items()}
        self._stop = threading.Event()
        self._poll = poll
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="test-node")
        self._thread = threading.Thread(target=self._loop, name="test-node", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self.gate.set()
        self._thread.join(10)
        for pod in self.serving.values():
            self._kill(pod)
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ---- what the test asks ----

    def serving_port(self, namespace: str, deployment: str, container_port: int = 8000) -> int:
        """The loopback port the serving pod's `container_port` is reachable on."""
        return self.serving[(namespace, deployment)].started.sandbox.ports[container_port]

    def proxy(self, namespace: str, pod: str, port: int, path: str) -> tuple[int, bytes]:
        """What the API server's pod proxy answers: the pod's own HTTP answer on `port`."""
        for (ns, _deployment), serving in list(self.serving.items()):
            if ns == namespace and serving.name == pod:
                url = f"http://127.0.0.1:{serving.started.sandbox.ports[port]}/{path.lstrip('/')}"
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        return int(response.status), bytes(response.read())
                except urllib.error.HTTPError as err:
                    return int(err.code), bytes(err.read())
        return 404, b'{"message": "pod not found"}'

    def serving_log(self, namespace: str, deployment: str) -> str:
        return self.serving[(namespace, deployment)].started.log_path.read_text(errors="replace")

    # ---- the loop ----

    def _list(self, call: Any) -> list[dict[str, Any]]:
        try:
            items: list[dict[str, Any]] = (
                json.loads(_consume(call(_preload_content=False))).get("items") or []
            )
            return items
        except Exception:  # the API may be answering 500s on purpose: try again
            return []

    def _loop(self) -> None:
        while not self._stop.is_set():
            for job in self._list(self.batch.list_job_for_all_namespaces):
                key = (job["metadata"]["namespace"], job["metadata"]["name"])
                if key in self.seen or not runs_here(job) or (job.get("status") or {}).get("conditions"):
                    continue
                self.seen.add(key)
                self._pool.submit(self._guarded, self._run_job, job)
            self._guarded(self._reconcile_serving, self._list(self.apps.list_deployment_for_all_namespaces))
            self._stop.wait(self._poll)

    def _guarded(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            import traceback

            self.errors.append(traceback.format_exc())

    def _read(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        call = self.core.read_namespaced_secret if kind == "Secret" else self.core.read_namespaced_config_map
        try:
            response = call(name, namespace, _preload_content=False)
        except client.exceptions.ApiException as err:
            if err.status == 404:
                return None
            raise
        data: dict[str, str] = json.loads(_consume(response)).get("data") or {}
        return data

    def _create_pod(self, owner: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
        meta = owner["metadata"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{meta['name'][:57]}-{uuid.uuid4().hex[:5]}",
                "namespace": meta["namespace"],
                "labels": dict(template["metadata"].get("labels") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": owner["apiVersion"],
                        "kind": owner["kind"],
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {**template["spec"], "nodeName": NODE_NAME},
        }
        _consume(self.core.create_namespaced_pod(meta["namespace"], pod, _preload_content=False))
        return pod

    def _pod_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        _consume(
            self.core.patch_namespaced_pod_status(
                meta["name"], meta["namespace"], {"status": _stamp(status)}, _preload_content=False
            )
        )

    # ---- Jobs ----

    def _run_job(self, job: dict[str, Any]) -> None:
        if not job["metadata"]["name"].startswith("me-resolve-"):
            self.gate.wait()  # the gate holds builds; a model's resolve step runs
        if self._stop.is_set():
            return
        job = {"apiVersion": "batch/v1", "kind": "Job", **job}
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        template = job["spec"]["template"]
        spec = template["spec"]
        container = spec["containers"][0]
        if (namespace, name) not in self._job_pods:
            self._job_pods[(namespace, name)] = self._create_pod(job, template)
            self._job_status(job, {"startTime": _now(), "active": 1, "ready": 0})
        pod = self._job_pods[(namespace, name)]
        started_at = _now()
        try:
            env = kubelet.resolve_env(
                container=container, pod_meta=pod["metadata"], namespace=namespace, read=self._read
            )
        except kubelet.ContainerConfigError as err:
            waiting = {"reason": "CreateContainerConfigError", "message": str(err)}
            self._pod_status(
                pod, {"phase": "Pending", "containerStatuses": [self._cs(container, waiting=waiting)]}
            )
            self.seen.discard((namespace, name))  # kubelet retries; the test may create the Secret
            return
        sandbox = kubelet.prepare(self.root / pod["metadata"]["name"], spec, container)
        holds = self.images.get(container.get("image", ""), [])
        started = kubelet.start(sandbox=sandbox, container=container, env=env, image_holds=holds)
        running = {"startedAt": started_at}
        self._pod_status(
            pod, {"phase": "Running", "containerStatuses": [self._cs(container, running=running)]}
        )
        code = started.process.wait(timeout=600)
        message = kubelet.termination_message(
            started, container.get("terminationMessagePolicy", "File"), code
        )
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "message": message,
            "startedAt": started_at,
            "finishedAt": _now(),
        }
        self._pod_status(
            pod,
            {
                "phase": "Succeeded" if code == 0 else "Failed",
                "containerStatuses": [self._cs(container, terminated=terminated)],
            },
        )
        for status in finished_job_statuses(
            succeeded=code == 0, started=started_at, backoff_limit=int(job["spec"].get("backoffLimit", 0))
        ):
            self._job_status(job, status)
        self.finished[(namespace, name)] = code

    def _job_status(self, job: dict[str, Any], status: dict[str, Any]) -> None:
        meta = job["metadata"]
        _consume(
            self.batch.patch_namespaced_job_status(
                meta["name"], meta["namespace"], {"status": _stamp(status)}, _preload_content=False
            )
        )

    @staticmethod
    def _cs(container: dict[str, Any], ready: bool = False, **state: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": container["name"],
            "image": container.get("image", ""),
            "ready": ready,
            "restartCount": 0,
            "started": "running" in state,
            "state": state,
        }

    # ---- serving Deployments ----

    def _reconcile_serving(self, deployments: list[dict[str, Any]]) -> None:
        live = set()
        for deployment in deployments:
            meta = deployment["metadata"]
            key = (meta["namespace"], meta["name"])
            live.add(key)
            generation = int(meta.get("generation") or 1)
            pod = self.serving.get(key)
            if pod is not None and pod.generation != generation:
                self._kill(pod)
                pod = None
            if pod is None:
                try:
                    self.serving[key] = self._start_serving(
                        {"apiVersion": "apps/v1", "kind": "Deployment", **deployment}
                    )
                except kubelet.ContainerConfigError:
                    continue  # kubelet retries next round (e.g. the Secret is not there yet)
            else:
                self._probe(deployment, pod)
        for key in set(self.serving) - live:
            self._kill(self.serving.pop(key))

    def _start_serving(self, deployment: dict[str, Any]) -> ServingPod:
        template = deployment["spec"]["template"]
        spec, container = template["spec"], template["spec"]["containers"][0]
        pod = self._create_pod(deployment, template)
        namespace = deployment["metadata"]["namespace"]
        env = kubelet.resolve_env(
            container=container, pod_meta=pod["metadata"], namespace=namespace, read=self._read
        )
        sandbox = kubelet.prepare(self.root / pod["metadata"]["name"], spec, container)
        holds = self.images.get(container.get("image", ""), [])
        started = kubelet.start(sandbox=sandbox, container=container, env=env, image_holds=holds)
        self._pod_status(
            pod,
            {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [self._cs(container, running={"startedAt": _now()})],
            },
        )
        return ServingPod(
            pod["metadata"]["name"], int(deployment["metadata"].get("generation") or 1), started
        )

    def _probe(self, deployment: dict[str, Any], pod: ServingPod) -> None:
        if pod.ready or pod.started.process.poll() is not None:
            return
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        probe = (container.get("readinessProbe") or {}).get("httpGet")
        if probe is not None:
            port = probe["port"]
            if isinstance(port, str):  # a named port
                port = next(p["containerPort"] for p in container.get("ports") or [] if p.get("name") == port)
            url = f"http://127.0.0.1:{pod.started.sandbox.ports[int(port)]}{probe.get('path', '/')}"
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if not 200 <= response.status < 400:
                        return
            except OSError:
                return
        pod.ready = True
        meta = deployment["metadata"]
        pod_doc = {"metadata": {"name": pod.name, "namespace": meta["namespace"]}}
        self._pod_status(
            pod_doc,
            {
                "phase": "Running",
                "conditions": [
                    {"type": "Ready", "status": "True"},
                    {"type": "ContainersReady", "status": "True"},
                ],
                "containerStatuses": [self._cs(container, ready=True, running={"startedAt": _now()})],
            },
        )
        status = {
            "observedGeneration": pod.generation,
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": 1,
            "availableReplicas": 1,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ],
        }
        _consume(
            self.apps.patch_namespaced_deployment_status(
                meta["name"],
                meta["namespace"],
                {"status": _stamp(status, "lastUpdateTime")},
                _preload_content=False,
            )
        )

    @staticmethod
    def _kill(pod: ServingPod) -> None:
        process = pod.started.process
        if process.poll() is None:
            process.terminate()
            deadline = time.monotonic() + 10
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if process.poll() is None:
                process.kill()
        process.wait()
