"""The test node runs pods as a kubelet would: nothing of the test's own, statuses a 1.36 server accepts."""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.operator.harness import FakeCluster, kube_client, secret, wait_for
from tests.operator.image_guard import BOOTSTRAP, MESSAGE, guarded_argv, split_python_args
from tests.operator.node import TestNode

REPO = Path(__file__).resolve().parents[2]

# What the container reports about its world: cwd contents, environment, mounts.
PROBE = """
import json, os, sys, tempfile
tmp = tempfile.mkdtemp()
report = {
    "cwd": os.getcwd(),
    "cwd_entries": sorted(os.listdir(".")),
    "env": dict(os.environ),
    "argv": sys.argv[1:],
    "tmp_under_volume": tmp.startswith(os.environ["TMPDIR"]),
}
open(os.environ["MESSAGE_PATH"], "w").write(json.dumps(report))
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[FakeCluster, Any, TestNode]]:
    cluster = FakeCluster(tmp_path)
    api = kube_client(cluster.kubeconfig)
    node = TestNode(api, poll=0.1)
    try:
        yield cluster, api, node
    finally:
        node.close()
        cluster.close()


def _job(
    name: str, env: list[dict[str, Any]], env_from: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app": "probe"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app": "probe"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": "builder:1",
                            "command": ["python3", "-c", PROBE],
                            "args": ["$(GREETING)", "/tmp/out"],
                            "env": [
                                *env,
                                {"name": "MESSAGE_PATH", "value": "/dev/termination-log"},
                                {"name": "HOME", "value": "/tmp"},
                            ],
                            **({"envFrom": env_from} if env_from else {}),
                            "terminationMessagePath": "/dev/termination-log",
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


# What the container can reach: each attempt's outcome, [kind of result or error, value or message].
REACH_PROBE = """
import json, os, sys

def attempt(fn):
    try:
        return ["ok", fn()]
    except Exception as err:
        return [type(err).__name__, str(err)]

def write_read(path):
    with open(path, "w") as f:
        f.write("mine")
    with open(path) as f:
        return f.read()

def imports():
    import torch, modelengine
    return [float(torch.ones(3).sum()), os.path.basename(os.path.dirname(modelengine.__file__))]

def the_tests_module():
    sys.path.insert(0, os.environ["TEST_DIR"])
    import only_on_the_test_machine
    return only_on_the_test_machine.VALUE

def through_a_symlink():
    link = os.path.join(os.environ["DATA"], "link")
    os.symlink(os.environ["SECRET"], link)
    return open(link).read()

report = {
    "volume": attempt(lambda: write_read(os.path.join(os.environ["DATA"], "f.txt"))),
    "workdir": attempt(lambda: [write_read("w.txt"), sorted(os.listdir("."))]),
    "imports": attempt(imports),
    "secret": attempt(lambda: open(os.environ["SECRET"]).read()),
    "os_open": attempt(lambda: os.open(os.environ["SECRET"], os.O_RDONLY)),
    "test_dir": attempt(lambda: os.listdir(os.environ["TEST_DIR"])),
    "test_module": attempt(the_tests_module),
    "symlink": attempt(through_a_symlink),
    "chdir": attempt(lambda: os.chdir(os.environ["TEST_DIR"])),
    "write_outside": attempt(lambda: os.mkdir(os.path.join(os.environ["TEST_DIR"], "made"))),
    "repo_tests": attempt(lambda: open(os.environ["REPO"] + "/tests/operator/conftest.py").read()),
    "examples": attempt(lambda: os.listdir(os.environ["REPO"] + "/examples")),
    "repo": attempt(lambda: os.listdir(os.environ["REPO"])),
    "exists": attempt(lambda: os.path.exists(os.environ["SECRET"])),
}
open(os.environ["MESSAGE_PATH"], "w").write(json.dumps(report))
"""


def _python_job(name: str, command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """A Job running `command` with an emptyDir at /data, its log as its message on error.

    No volume at /tmp: the test's paths (under the host's /tmp) reach the process unrewritten.
    """
    job = _job(name, [])
    spec = job["spec"]["template"]["spec"]
    spec["containers"][0].update(
        command=command,
        args=[],
        env=[
            *({"name": k, "value": v} for k, v in env.items()),
            {"name": "MESSAGE_PATH", "value": "/dev/termination-log"},
            {"name": "HOME", "value": "/data"},
        ],
        terminationMessagePolicy="FallbackToLogsOnError",
        volumeMounts=[{"name": "data", "mountPath": "/data"}],
    )
    spec["volumes"] = [{"name": "data", "emptyDir": {}}]
    return job


def _pods(cluster: FakeCluster, job: str) -> list[dict[str, Any]]:
    return [p for p in cluster.objects("pods", "default") if p["metadata"]["labels"].get("job-name") == job]


def _finished(cluster: FakeCluster, name: str, node: TestNode) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = cluster.get("jobs", "default", name) or {}
        types = [c["type"] for c in (job.get("status") or {}).get("conditions") or []]
        return job if ("Complete" in types or "Failed" in types) else None

    job: dict[str, Any] = wait_for(done, 60, what=f"Job {name} finished", show=lambda: node.errors)
    return job


def test_a_job_pod_gets_only_its_spec(
    world: tuple[FakeCluster, Any, TestNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, api, _node = world
    monkeypatch.setenv("TEST_PROCESS_CANARY", "leaked")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-tests-own-credentials")
    core = client.CoreV1Api(api)
    core.create_namespaced_secret("default", secret("store", "default", {"AWS_ACCESS_KEY_ID": "from-secret"}))
    client.BatchV1Api(api).create_namespaced_job(
        "default",
        _job(
            "probe",
            [{"name": "GREETING", "value": "hello"}],
            [{"secretRef": {"name": "store"}, "prefix": "S_"}],
        ),
    )
    job = _finished(cluster, "probe", _node)
    assert [c["type"] for c in job["status"]["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    assert (
        job["status"]["succeeded"] == 1 and job["status"]["completionTime"] and "active" not in job["status"]
    )
    (pod,) = _pods(cluster, "probe")
    assert pod["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert pod["status"]["phase"] == "Succeeded" and terminated["exitCode"] == 0
    report = json.loads(terminated["message"])  # the termination message, from terminationMessagePath
    assert report["cwd_entries"] == []  # a fresh, empty working directory
    assert set(report["env"]) == {"PATH", "LANG", "HOME", "TMPDIR", "GREETING", "MESSAGE_PATH", "S_AWS_ACCESS_KEY_ID"}
    assert report["env"]["S_AWS_ACCESS_KEY_ID"] == "from-secret"  # envFrom, base64-decoded, prefixed
    assert report["env"]["HOME"] == report["env"]["TMPDIR"] != "/tmp"  # /tmp is the emptyDir, rewritten
    assert report["tmp_under_volume"] is True
    assert report["argv"] == ["hello", report["env"]["TMPDIR"] + "/out"]  # $(VAR) expansion, path rewrite
    assert not report["cwd"].startswith(os.getcwd())


def test_a_failing_job_reports_its_message_and_fails_in_order(
    world: tuple[FakeCluster, Any, TestNode],
) -> None:
    cluster, api, node = world
    client.BatchV1Api(api).create_namespaced_job(
        "default", _job("fails", [{"name": "GREETING", "value": "x"}, {"name": "EXIT_CODE", "value": "3"}])
    )
    job = _finished(cluster, "fails", node)
    assert [c["type"] for c in job["status"]["conditions"]] == ["FailureTarget", "Failed"]
    assert job["status"]["failed"] == 1 and node.finished[("default", "fails")] == 3
    (pod,) = _pods(cluster, "fails")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"
    assert json.loads(terminated["message"])["env"]["EXIT_CODE"] == "3"


def test_a_missing_secret_keeps_the_pod_waiting_until_it_exists(
    world: tuple[FakeCluster, Any, TestNode],
) -> None:
    cluster, api, _node = world
    client.BatchV1Api(api).create_namespaced_job(
        "default", _job("waits", [{"name": "GREETING", "value": "x"}], [{"secretRef": {"name": "later"}}])
    )

    def waiting() -> Any:
        pods = _pods(cluster, "waits")
        statuses = (pods[0].get("status") or {}).get("containerStatuses") if pods else None
        return statuses and statuses[0]["state"].get("waiting")

    state = wait_for(waiting, 30, what="CreateContainerConfigError")
    assert state == {"reason": "CreateContainerConfigError", "message": 'secret "later" not found'}
    client.CoreV1Api(api).create_namespaced_secret("default", secret("later", "default", {"K": "v"}))
    job = _finished(cluster, "waits", _node)
    assert job["status"]["conditions"][-1]["type"] == "Complete"
    assert len(_pods(cluster, "waits")) == 1  # the same pod, retried


def test_a_serving_pod_is_started_probed_and_reachable(world: tuple[FakeCluster, Any, TestNode]) -> None:
    cluster, api, node = world
    labels = {"app": "web"}
    container = {
        "name": "web",
        "image": "runtime:1",
        "command": ["python3", "-m", "http.server", "8000", "--bind", "127.0.0.1"],
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5},
    }
    client.AppsV1Api(api).create_namespaced_deployment(
        "default",
        {
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        },
    )

    def ready() -> bool:
        status = (cluster.get("deployments", "default", "web") or {}).get("status") or {}
        return status.get("readyReplicas") == 1

    wait_for(ready, 30, what="Deployment ready", show=lambda: node.serving_log("default", "web"))
    port = node.serving_port("default", "web", 8000)
    assert port != 8000
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        assert response.status == 200
    (pod,) = [p for p in cluster.objects("pods", "default") if p["metadata"]["labels"].get("app") == "web"]
    assert {"type": "Ready", "status": "True"} in [
        {k: c[k] for k in ("type", "status")} for c in pod["status"]["conditions"]
    ]
    process = node.serving[("default", "web")].started.process
    client.AppsV1Api(api).delete_namespaced_deployment("web", "default")
    wait_for(lambda: ("default", "web") not in node.serving, 30, what="serving pod stopped")
    # The guard adds no process of its own: SIGTERM stops the server itself, as before.
    assert process.wait(10) == -signal.SIGTERM


def _refused(event: str, path: Path | str) -> str:
    return f"[Errno 13] {event}: {MESSAGE}: '{path}'"


def _terminated(cluster: FakeCluster, name: str, node: TestNode) -> dict[str, Any]:
    _finished(cluster, name, node)
    (pod,) = _pods(cluster, name)
    terminated: dict[str, Any] = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    return terminated


def test_a_container_reading_the_tests_own_file_fails_with_the_guards_message(
    world: tuple[FakeCluster, Any, TestNode], tmp_path: Path
) -> None:
    cluster, api, node = world
    secret_file = tmp_path / "secret.txt"  # the test's file, outside every sandbox
    secret_file.write_text("only-on-the-test-machine")
    code = "import os; print(open(os.environ['SECRET']).read())"
    client.BatchV1Api(api).create_namespaced_job(
        "default", _python_job("reads-host", ["python3", "-c", code], {"SECRET": str(secret_file)})
    )
    terminated = _terminated(cluster, "reads-host", node)
    assert terminated["exitCode"] == 1 and terminated["reason"] == "Error"
    assert node.finished[("default", "reads-host")] == 1
    # FallbackToLogsOnError: the log's tail, ending with the one-line refusal naming the path
    assert terminated["message"].splitlines()[-1] == "PermissionError: " + _refused("open", secret_file)
    assert "only-on-the-test-machine" not in terminated["message"]


def test_a_container_reaches_its_volumes_workdir_and_image_and_nothing_of_the_test(
    world: tuple[FakeCluster, Any, TestNode], tmp_path: Path
) -> None:
    cluster, api, node = world
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("only-on-the-test-machine")
    (tmp_path / "only_on_the_test_machine.py").write_text("VALUE = 'leaked'\n")
    env = {"SECRET": str(secret_file), "TEST_DIR": str(tmp_path), "REPO": str(REPO), "DATA": "/data"}
    client.BatchV1Api(api).create_namespaced_job(
        "default", _python_job("reach", ["python3", "-c", REACH_PROBE], env)
    )
    terminated = _terminated(cluster, "reach", node)
    assert terminated["exitCode"] == 0, terminated["message"]
    report = json.loads(terminated["message"])
    # What the pod has: its emptyDir (/data, rewritten), its working directory, the image's packages.
    assert report["volume"] == ["ok", "mine"]
    assert report["workdir"] == ["ok", ["mine", ["w.txt"]]]
    assert report["imports"] == ["ok", [3.0, "modelengine"]]
    # What only the test machine has: refused by path, whichever call asks.
    assert report["secret"] == ["PermissionError", _refused("open", secret_file)]
    assert report["os_open"] == ["PermissionError", _refused("open", secret_file)]
    assert report["test_dir"] == ["PermissionError", _refused("os.listdir", tmp_path)]
    assert report["chdir"] == ["PermissionError", _refused("os.chdir", tmp_path)]
    assert report["write_outside"] == ["PermissionError", _refused("os.mkdir", tmp_path / "made")]
    assert not (tmp_path / "made").exists()
    assert report["test_module"] == ["ModuleNotFoundError", "No module named 'only_on_the_test_machine'"]
    kind, message = report["symlink"]  # a link in the volume resolves to the test's file
    assert kind == "PermissionError" and message.endswith(f" (resolved {secret_file})'")
    # This repository is not the image: only the installed package's own directory is.
    assert report["repo_tests"] == ["PermissionError", _refused("open", REPO / "tests/operator/conftest.py")]
    assert report["examples"] == ["PermissionError", _refused("os.listdir", REPO / "examples")]
    assert report["repo"] == ["PermissionError", _refused("os.listdir", REPO)]
    # Not enforced (no audit event for stat): existence can still be learned.
    assert report["exists"] == ["ok", True]


@pytest.mark.parametrize(
    ("command", "expected_code", "expected"),
    [
        # a module run with -m
        (["python3", "-m", "json.tool", "$(EXAMPLE)"], 2, "[Errno 13] open: " + MESSAGE),
        # the installed console script (the venv's bin/modelengine, a Python script)
        (["modelengine", "check", "-q", "-f", "$(EXAMPLE)"], 1, "cannot read file: open: " + MESSAGE),
    ],
    ids=["module", "console-script"],
)
def test_every_python_entry_point_runs_guarded(
    world: tuple[FakeCluster, Any, TestNode], command: list[str], expected_code: int, expected: str
) -> None:
    cluster, api, node = world
    name = f"entry-{expected_code}"
    example = REPO / "examples" / "combinednet" / "modelengine.yaml"  # the user's file, not the image's
    client.BatchV1Api(api).create_namespaced_job(
        "default", _python_job(name, command, {"EXAMPLE": str(example)})
    )
    terminated = _terminated(cluster, name, node)
    assert terminated["exitCode"] == expected_code
    assert expected in terminated["message"] and str(example) in terminated["message"]


def test_the_guard_runs_the_program_the_interpreter_would_have() -> None:
    assert split_python_args(["-u", "-X", "dev", "-Wignore", "-c", "print(1)", "a"]) == (
        ["-u", "-X", "dev", "-Wignore"],
        "-c",
        "print(1)",
        ["a"],
    )
    assert split_python_args(["-Bm", "http.server", "8000"]) == (["-B"], "-m", "http.server", ["8000"])
    assert split_python_args(["-mjson.tool", "f"]) == ([], "-m", "json.tool", ["f"])
    assert split_python_args(["-O", "script.py", "-c", "x"]) == (["-O"], "script", "script.py", ["-c", "x"])
    assert split_python_args(["-"]) is None and split_python_args(["--version"]) is None
    assert split_python_args(["-i"]) is None  # no program: the REPL, not guarded
    roots = ["/sandbox/work"]
    venv_bin = str(Path(sys.executable).parent)
    argv = guarded_argv(["python3", "-u", "-c", "print(1)", "a"], roots=roots, search_path=venv_bin, cwd="/")
    assert argv[:3] == ["python3", "-u", "-c"] and argv[3] == BOOTSTRAP
    assert argv[5:] == ['{"roots": ["/sandbox/work"]}', "-c", "print(1)", "a"]
    argv = guarded_argv(["modelengine", "serve"], roots=roots, search_path=venv_bin, cwd="/")
    assert argv[2] == BOOTSTRAP and argv[-3:] == ["script", f"{venv_bin}/modelengine", "serve"]
    assert argv[0] == Path(f"{venv_bin}/modelengine").read_text().splitlines()[0].removeprefix("#!")
    # Not Python: started as given (and not guarded).
    assert guarded_argv(["true"], roots=roots, search_path="/usr/bin:/bin", cwd="/") == ["true"]
