"""The test "node": runs builder Jobs created in KMock as local subprocesses, like a kubelet.

It polls the API for Jobs, and for each new one it can run (by default: the CPU builds,
TRT-RTX and ONNX Runtime; full TensorRT needs a GPU node this machine is not), it resolves
the container's env the way kubelet does (plain `env` + `envFrom` Secrets read from the API),
points the termination log at a temporary file, runs the container command with this
Python (`modelengine builder` → `python -m modelengine.cli builder`: the real builder,
real artifacts) and writes back what kubelet and the Job controller would: a Pod with
the container's terminated state and termination message, then the Job's status
(succeeded or failed with conditions). One attempt per Job: the Job is marked failed
as if its backoff limit were reached.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client

PASSTHROUGH_ENV = (
    "PATH",
    "PYTHONPATH",
    "HOME",
    "OMP_NUM_THREADS",
    "LD_LIBRARY_PATH",
    "VIRTUAL_ENV",
    "TMPDIR",
)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def finished_job_statuses(*, succeeded: bool, started: str, backoff_limit: int = 0) -> list[dict[str, Any]]:
    """The status writes a 1.36 Job controller makes to finish a Job, in the order it makes them.

    The API server refuses `Complete=True` without `SuccessCriteriaMet=True` (and `Failed=True`
    without `FailureTarget=True`): the controller first records the criterion, then, once the
    pods are gone, the terminal condition with its time.
    """
    if succeeded:
        met = {
            "type": "SuccessCriteriaMet",
            "status": "True",
            "reason": "CompletionsReached",
            "message": "Reached expected number of succeeded pods",
            "lastTransitionTime": _now(),
        }
        first = {"startTime": started, "succeeded": 1, "conditions": [met]}
        done = {
            "type": "Complete",
            "status": "True",
            "reason": "CompletionsReached",
            "message": "Reached expected number of succeeded pods",
            "lastTransitionTime": _now(),
        }
        return [first, {**first, "completionTime": _now(), "conditions": [met, done]}]
    target = {
        "type": "FailureTarget",
        "status": "True",
        "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit",
        "lastTransitionTime": _now(),
    }
    first = {"startTime": started, "failed": backoff_limit + 1, "conditions": [target]}
    failed = {**target, "type": "Failed", "lastTransitionTime": _now()}
    return [first, {**first, "conditions": [target, failed]}]


def runs_here(job: dict[str, Any]) -> bool:
    """CPU builds only: a Job asking for a GPU would wait for a GPU node."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    return "nvidia.com/gpu" not in (container.get("resources", {}).get("limits") or {})


class TestNode:
    def __init__(self, api_client: Any, *, workers: int = 2, poll: float = 0.2) -> None:
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.gate = threading.Event()  # builds start only while the gate is open
        self.gate.set()
        self.seen: set[tuple[str, str]] = set()
        self.finished: dict[tuple[str, str], int] = {}  # job → exit code
        self._stop = threading.Event()
        self._poll = poll
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="test-node")
        self._thread = threading.Thread(target=self._loop, name="test-node", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self.gate.set()
        self._thread.join(10)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                raw = self.batch.list_job_for_all_namespaces(_preload_content=False)
                jobs = json.loads(raw.data).get("items") or []
            except Exception:  # the API may be answering 500s on purpose: try again
                jobs = []
            for job in jobs:
                key = (job["metadata"]["namespace"], job["metadata"]["name"])
                if key in self.seen or not runs_here(job) or (job.get("status") or {}).get("conditions"):
                    continue
                self.seen.add(key)
                self._pool.submit(self._run, job)
            self._stop.wait(self._poll)

    def _env(self, namespace: str, container: dict[str, Any], termination_log: Path) -> dict[str, str]:
        env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
        for source in container.get("envFrom") or []:
            ref = source.get("secretRef")
            if ref:
                secret = self.core.read_namespaced_secret(ref["name"], namespace)
                for k, v in (secret.data or {}).items():
                    env[k] = base64.b64decode(v).decode()
        for item in container.get("env") or []:
            env[item["name"]] = item.get("value", "")
        env["MODELENGINE_TERMINATION_LOG"] = str(termination_log)
        env["HOME"] = str(termination_log.parent)
        return env

    def _run(self, job: dict[str, Any]) -> None:
        self.gate.wait()
        if self._stop.is_set():
            return
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        container = job["spec"]["template"]["spec"]["containers"][0]
        with tempfile.TemporaryDirectory(prefix="test-node-") as tmp:
            log = Path(tmp) / "termination-log"
            command = list(container["command"])
            if command[0] == "modelengine":
                command = [sys.executable, "-m", "modelengine.cli", *command[1:]]
            started = _now()
            proc = subprocess.run(
                command,
                env=self._env(namespace, container, log),
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=600,
            )
            message = log.read_text()[:4096] if log.exists() else proc.stderr[-4096:]
        self._report(namespace, name, job, proc.returncode, message, started)
        self.finished[(namespace, name)] = proc.returncode

    def _report(
        self, namespace: str, name: str, job: dict[str, Any], code: int, message: str, started: str
    ) -> None:
        labels = dict(job["spec"]["template"]["metadata"].get("labels") or {})
        labels["job-name"] = name
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{name}-run", "namespace": namespace, "labels": labels},
            "spec": job["spec"]["template"]["spec"],
        }
        self.core.create_namespaced_pod(namespace, pod, _preload_content=False)
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "message": message,
            "startedAt": started,
            "finishedAt": _now(),
        }
        pod_status = {
            "status": {
                "phase": "Succeeded" if code == 0 else "Failed",
                "containerStatuses": [{"name": "builder", "state": {"terminated": terminated}}],
            }
        }
        self.core.patch_namespaced_pod_status(f"{name}-run", namespace, pod_status, _preload_content=False)
        for status in finished_job_statuses(
            succeeded=code == 0, started=started, backoff_limit=int(job["spec"].get("backoffLimit", 0))
        ):
            self.batch.patch_namespaced_job_status(
                name, namespace, {"status": status}, _preload_content=False
            )
