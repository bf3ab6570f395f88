"""Operator at scale over TLS: N ModelEngines × 3 GPU kinds, beside a minimal kopf operator.

    python benchmarks/operator_scale.py              # N = 500 (1,500 Jobs), one run
    python benchmarks/operator_scale.py --quick      # N = 10 (a smoke run: ~9 requests/ME, start-up lists spread over 10)
    python benchmarks/operator_scale.py --sizes 100 500 --repeat 3
    BENCH_PROFILE=/tmp/op.prof python benchmarks/operator_scale.py --sizes 200   # + cProfile
    BENCH_TRACEMALLOC=/tmp/peak.txt python benchmarks/operator_scale.py   # restart's peak memory, by site

One API server per N (KMock + tests/operator's KubeEmulator, served over HTTPS with a
throwaway CA, in this process), holding N ModelEngines in namespace `bench-base` and N in
`bench-ours`. Against it, one after the other, each as its own process (so RSS and CPU are
its own) and each watching its own namespace:

1. the baseline: a minimal kopf operator (`on.create` → the same 3 Jobs, rendered by our
   own `build_jobs` so the server validates and stores Jobs of one shape for both, the same
   `kubernetes` client, responses released); then
2. ours: `modelengine operator`, run second, so it is the one facing a server that
   already holds the baseline's 3N Jobs (the fake server's cost grows with its objects).

Reported for both: jobs_s (start → all 3N Jobs exist), requests and TCP/TLS connections
opened (counted by the server: one handshake each), peak RSS (VmHWM) and CPU seconds.
For ours also: ready_s (all Jobs marked succeeded, manifests pre-published, no real builds
→ every ModelEngine Ready), writes/ME, restart_w (writes of a restarted operator with
everything Ready: design 0), reapply_s (a new ModelEngine whose engines are all cached).
Bounds: jobs_s ≤ 2× the baseline's, RSS ≤ 200 MB, API requests per ModelEngine ≤ 8.

Model sources: the ModelEngines name a model baked into a builder image
(`spec.build.image` + `file:///models/tiny`), whose source record (the model's digest) is
pre-published, as a resolve Job would have left it; the operator reads no model bytes.
Job statuses are written as a 1.36 Job controller writes them (SuccessCriteriaMet, then
Complete), which the server insists on.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.operator.harness import FakeCluster, gpu_node  # noqa: E402
from tests.operator.node import finished_job_statuses  # noqa: E402

KINDS = [("NVIDIA-A100-SXM4-80GB", "8.0"), ("NVIDIA-L4", "8.9"), ("NVIDIA-A10", "8.6")]
RTX_VERSION = "1.7.1.116"
OPERATOR_AGENT = "modelengine-operator"
BASELINE_AGENT = "baseline-operator"
KOPF_AGENT = "kopf/"
BASE_NS, OURS_NS = "bench-base", "bench-ours"
BUILDER_IMAGE = "registry.local/bench/builder:1"
MODEL_URI = "file:///models/tiny"
MODEL_DIGEST = hashlib.sha256(b"bench-model").hexdigest()
EXPORT_DIGEST = hashlib.sha256(b"bench-export").hexdigest()
ENGINE_BYTES = b"engine-bytes"

BASELINE_SOURCE = '''
"""Minimal kopf operator: on create, the three Jobs ours would create; nothing else."""
import copy, json, os, kopf, kubernetes

kubernetes.config.load_kube_config()
api = kubernetes.client.ApiClient()
api.user_agent = "baseline-operator"
batch = kubernetes.client.BatchV1Api(api)
with open(os.environ["BASELINE_JOBS"]) as f:
    TEMPLATES = json.load(f)


@kopf.on.startup()
def startup(settings, **_):
    settings.posting.level = 40


@kopf.on.create("modelengine.io", "v1alpha1", "modelengines")
def create(name, namespace, uid, **_):
    for i, template in enumerate(TEMPLATES):
        job = copy.deepcopy(template)
        job["metadata"].update(name=f"{name}-{i}", namespace=namespace)
        job["metadata"]["ownerReferences"][0].update(name=name, uid=uid)
        response = batch.create_namespaced_job(namespace, job, _preload_content=False)
        response.data
        response.release_conn()
'''


def baseline_jobs(store: Path) -> list[dict[str, Any]]:
    """The Jobs our operator creates for one ModelEngine, as the baseline's templates: both
    operators make the server validate and store Jobs of the same shape and size."""
    from modelengine.api.models import BackendName
    from modelengine.api.targets import GpuKind
    from modelengine.api.validation import parse_modelengine
    from modelengine.operator.build_jobs import build_job
    from modelengine.operator.config import OperatorConfig
    from modelengine.operator.plan import make_plan

    doc = modelengine(0, BASE_NS, store)
    me = parse_modelengine(doc, source="benchmark")
    config = OperatorConfig()
    plan = make_plan(
        me.spec,
        gpu_kinds=[GpuKind(product=p, compute_capability=cc) for p, cc in KINDS],
        products=dict(KINDS),
        model_digest=MODEL_DIGEST,
        versions={BackendName.TENSORRT_RTX: RTX_VERSION},
        previous_engines=[],
    )
    return [
        build_job(
            me=me,
            uid=doc["metadata"]["uid"],
            generation=1,
            target=planned.target,
            build_key=planned.build_key,
            config=config,
        )
        for planned in plan.targets
    ]


def modelengine(i: int, namespace: str, store: Path, name: str | None = None) -> dict[str, Any]:
    name = name or f"me-{i:04d}"
    return {
        "apiVersion": "modelengine.io/v1alpha1",
        "kind": "ModelEngine",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "generation": 1,
            "uid": hashlib.md5(f"{namespace}/{name}".encode()).hexdigest(),
        },
        "spec": {
            "model": {"source": MODEL_URI, "format": "python", "entrypoint": "tiny:make"},
            "export": {"inputs": [{"name": "x", "shape": [1, 8]}]},
            # One shared model, distinct build options: 3 distinct keys per ModelEngine.
            "build": {"backend": "tensorrt-rtx", "workspaceMiB": 1024 + i, "image": BUILDER_IMAGE},
            "targets": [{"auto": True}],
            "storage": {"uri": store.as_uri()},
        },
    }


def publish_source_record(store: Path, doc: dict[str, Any]) -> None:
    """The record a resolve Job leaves: the model's digest, keyed by the source's identity."""
    from modelengine.api.validation import parse_modelengine
    from modelengine.store.file import FileStore
    from modelengine.store.sources import make_source_record, source_identity, write_source_record

    me = parse_modelengine(doc, source="benchmark")
    identity = source_identity(me.spec, client=None)
    assert identity is not None, "an in-image file:// source has an identity without I/O"
    record = make_source_record(
        identity,
        model_digest=MODEL_DIGEST,
        export_digest=EXPORT_DIGEST,
        onnx_file="model.onnx",
        export_record="export.json",
    )
    write_source_record(FileStore(store), record)


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.cluster = FakeCluster(tmp, history_limit=5)
        self.env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig), "PYTHONPATH": str(ROOT / "src")}

    def run_loop(self, coro: Any, timeout: float = 600) -> Any:
        return self.cluster.runner.call(coro, timeout=timeout)

    def seed(self, n: int, store: Path) -> None:
        async def put() -> None:
            k = self.cluster.kmock
            for product, cc in KINDS:
                node = gpu_node(f"node-{cc}", product, cc)
                k.objects[k.resource("v1/nodes"), None, node["metadata"]["name"]] = node
            for namespace in (BASE_NS, OURS_NS):
                for i in range(n):
                    doc = modelengine(i, namespace, store)
                    doc["metadata"]["resourceVersion"] = k._next_rv()
                    key = (
                        k.resource("modelengine.io/v1alpha1/modelengines"),
                        namespace,
                        doc["metadata"]["name"],
                    )
                    k.objects[key] = doc

        self.run_loop(put())
        publish_source_record(store, modelengine(0, OURS_NS, store))

    def count(self, plural: str, namespace: str, pred: Any = None) -> int:
        async def c() -> int:
            total = 0
            for (resource, ns, _n), obj in list(self.cluster.kmock.objects.items()):
                if (
                    resource.plural == plural
                    and ns == namespace
                    and not obj.deleted
                    and (pred is None or pred(obj.raw))
                ):
                    total += 1
            return total

        return int(self.run_loop(c()))

    def phase(self, namespace: str, phase: str) -> int:
        return self.count("modelengines", namespace, lambda o: (o.get("status") or {}).get("phase") == phase)

    def requests_by(self, agents: tuple[str, ...], start: int = 0) -> list[Any]:
        return [
            r for r in self.cluster.requests()[start:] if r.headers.get("User-Agent", "").startswith(agents)
        ]

    def wait(self, predicate: Any, timeout: float, what: str) -> float:
        t0 = time.perf_counter()
        while not predicate():
            if time.perf_counter() - t0 > timeout:
                raise SystemExit(f"benchmark: timed out waiting for {what}; see {self.tmp}/operator.log")
            time.sleep(0.05)
        return time.perf_counter() - t0

    def start(self, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.tmp / "operator.log", "ab")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(argv, env=self.env, stdout=log, stderr=log)

    def publish_and_succeed(self, store: Path, namespace: str) -> None:
        """Pre-publish a manifest for every Job's key, then finish every Job as a 1.36 controller does."""
        from modelengine.store.file import FileStore
        from modelengine.store.layout import engine_key, manifest_key
        from modelengine.store.manifest import EngineManifest, EngineTarget, TensorInfo

        fs = FileStore(store)

        async def jobs() -> list[dict[str, Any]]:
            return [
                o.raw
                for (r, ns, _n), o in list(self.cluster.kmock.objects.items())
                if r.plural == "jobs" and ns == namespace and not o.deleted
            ]

        for job in self.run_loop(jobs()):
            key = job["metadata"]["labels"]["modelengine.io/build-key"]
            cc = job["metadata"]["labels"]["modelengine.io/target"].rsplit("cc", 1)[1].replace("-", ".")
            fs.put_bytes(engine_key(key, "engine.0.trtrtx"), ENGINE_BYTES)
            manifest = EngineManifest(
                build_key=key,
                model_digest=MODEL_DIGEST,
                onnx_digest=EXPORT_DIGEST,
                backend="tensorrt-rtx",
                backend_version=RTX_VERSION,
                target=EngineTarget(compute_capability=cc),
                precision="fp32",
                inputs=[TensorInfo(name="x", dtype="float32", shape=[1, 8])],
                outputs=[TensorInfo(name="output", dtype="float32", shape=[1, 4])],
                engine_file="engine.0.trtrtx",
                sha256=hashlib.sha256(ENGINE_BYTES).hexdigest(),
                size=len(ENGINE_BYTES),
                build_seconds=1.0,
                created="2026-01-01T00:00:00Z",
            )
            fs.put_bytes(manifest_key(key), manifest.model_dump_json().encode())

        async def mark() -> None:
            k = self.cluster.kmock
            gate = asyncio.Semaphore(32)
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

            async def one(name: str) -> None:
                async with gate:
                    for status in finished_job_statuses(succeeded=True, started=now):
                        async with k.patch(
                            f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}/status",
                            json={"status": status},
                            headers={"Content-Type": "application/merge-patch+json"},
                        ) as rsp:
                            assert rsp.status == 200, await rsp.text()

            names = [
                n
                for (r, ns, n), o in list(k.objects.items())
                if r.plural == "jobs" and ns == namespace and not o.deleted
            ]
            await asyncio.gather(*(one(n) for n in names))

        self.run_loop(mark())


def proc_figures(pid: int) -> tuple[float, float]:
    """(peak RSS in MB, CPU seconds) of a live process."""
    rss, cpu = float("nan"), float("nan")
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) / 1024
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        pass
    return rss, cpu


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def is_write(request: Any) -> bool:
    return str(request.method.value if hasattr(request.method, "value") else request.method).upper() != "GET"


def busy_until_idle(pid: int, seconds: float, timeout: float) -> None:
    """Wait until the process used (almost) no CPU for `seconds`."""
    t0 = time.perf_counter()
    last_cpu, last_change = proc_figures(pid)[1], time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        time.sleep(0.5)
        cpu = proc_figures(pid)[1]
        if cpu - last_cpu > 0.05 * 0.5:  # more than 5 % of a core over the last half second
            last_change = time.perf_counter()
        elif time.perf_counter() - last_change >= seconds:
            return
        last_cpu = cpu


def quiet_for(bench: Bench, agents: tuple[str, ...], seconds: float, timeout: float, start: int = 0) -> None:
    """Wait until the given clients made no request for `seconds` (watch streams stay open)."""
    t0 = time.perf_counter()
    last_count, last_change = -1, time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        count = len(bench.requests_by(agents, start))
        if count != last_count:
            last_count, last_change = count, time.perf_counter()
        elif time.perf_counter() - last_change >= seconds:
            return
        time.sleep(0.1)


def run_baseline(bench: Bench, n: int) -> dict[str, float]:
    script = bench.tmp / "baseline.py"
    script.write_text(BASELINE_SOURCE)
    templates = bench.tmp / "baseline-jobs.json"
    templates.write_text(json.dumps(baseline_jobs(bench.tmp / "store")))
    bench.env["BASELINE_JOBS"] = str(templates)
    agents = (BASELINE_AGENT, KOPF_AGENT)
    mark, conn_mark = len(bench.cluster.requests()), bench.cluster.connections.opened
    t0 = time.perf_counter()
    proc = bench.start(
        [sys.executable, "-m", "kopf", "run", "-n", BASE_NS, "--standalone", "-q", str(script)]
    )
    try:
        bench.wait(lambda: bench.count("jobs", BASE_NS) >= 3 * n, 600, "all baseline Jobs")
        jobs_s = time.perf_counter() - t0
        quiet_for(bench, agents, 1.0, 60, mark)
        rss, cpu = proc_figures(proc.pid)
        return {
            "jobs_s": jobs_s,
            "req_per_me": len(bench.requests_by(agents, mark)) / n,
            "connections": float(bench.cluster.connections.opened_by(agents, since=conn_mark)),
            "rss_mb": rss,
            "cpu_s": cpu,
        }
    finally:
        stop(proc)


def operator_argv(profile: str | None, trace: str | None = None) -> list[str]:
    return [
        sys.executable,
        *(["-m", "cProfile", "-o", profile] if profile else []),
        *([str(ROOT / "benchmarks" / "trace_peak.py"), trace] if trace else []),
        "-m",
        "modelengine.cli",
        "operator",
        "-n",
        OURS_NS,
        "--no-leader-election",
        "--metrics-port",
        "0",
        "--liveness-port",
        "0",
        "--max-builds",
        "100000",
        "--max-builds-per-kind",
        "100000",
        "--status-interval",
        "60",
    ]


def run_operator(bench: Bench, n: int, store: Path) -> dict[str, float]:
    profile = os.environ.get("BENCH_PROFILE")  # a path: the operator runs under cProfile (its event loop)
    argv = operator_argv(profile)
    agents = (OPERATOR_AGENT, KOPF_AGENT)
    mark, conn_mark = len(bench.cluster.requests()), bench.cluster.connections.opened
    t0 = time.perf_counter()
    proc = bench.start(argv)
    try:
        bench.wait(lambda: bench.count("jobs", OURS_NS) >= 3 * n, 600, "all Jobs")
        jobs_s = time.perf_counter() - t0
        bench.wait(lambda: bench.phase(OURS_NS, "Building") >= n, 600, "all Building")
        t1 = time.perf_counter()
        bench.publish_and_succeed(store, OURS_NS)
        bench.wait(lambda: bench.phase(OURS_NS, "Ready") >= n, 600, "all Ready")
        ready_s = time.perf_counter() - t1
        quiet_for(bench, agents, 1.0, 30, mark)
        requests = bench.requests_by(agents, mark)
        connections = bench.cluster.connections.opened_by(agents, since=conn_mark)
        if os.environ.get("BENCH_DEBUG"):
            from collections import Counter

            print(
                Counter((str(r.method), r.url.path.rsplit("/", 1)[-1][:12]) for r in requests),
                file=sys.stderr,
            )

        # Re-apply: a new ModelEngine with the spec of an existing one (all keys cached).
        reapply = []
        for j in range(3):
            doc = modelengine(j, OURS_NS, store, name=f"again-{j}")
            del doc["metadata"]["uid"]
            start = time.perf_counter()
            bench.run_loop(_create(bench, doc))
            bench.wait(
                lambda name=doc["metadata"]["name"]: (
                    (bench.cluster.get("modelengines", OURS_NS, name) or {}).get("status", {}).get("phase")
                    == "Ready"
                ),
                30,
                "re-applied Ready",
            )
            reapply.append(time.perf_counter() - start)
        jobs_after = bench.count("jobs", OURS_NS)
        rss, cpu = proc_figures(proc.pid)
    finally:
        stop(proc)

    # Restart with everything Ready: count writes until the new process is idle.
    mark = len(bench.cluster.requests())
    trace = os.environ.get("BENCH_TRACEMALLOC")  # a path: where the restart's peak memory was allocated
    proc = bench.start(operator_argv(f"{profile}.restart" if profile else None, trace))
    try:
        # Idle means idle after it started talking: a slow start-up is not "no writes".
        bench.wait(lambda: bench.requests_by(agents, mark), 300, "the restarted operator's first request")
        quiet_for(bench, agents, 3.0, 300, mark)
        busy_until_idle(proc.pid, 3.0, 300)  # events still being processed may yet lead to writes
        quiet_for(bench, agents, 3.0, 300, mark)
        restart_writes = [r for r in bench.requests_by(agents, mark) if is_write(r)]
        restart_rss, _ = proc_figures(proc.pid)
    finally:
        stop(proc)
    return {
        "jobs_s": jobs_s,
        "ready_s": ready_s,
        "req_per_me": len(requests) / n,
        "writes_per_me": len([r for r in requests if is_write(r)]) / n,
        "connections": float(connections),
        "restart_writes": float(len(restart_writes)),
        "reapply_s": max(reapply),
        "reapply_new_jobs": float(jobs_after - 3 * n),
        "rss_mb": rss,
        "restart_rss_mb": restart_rss,
        "cpu_s": cpu,
    }


async def _create(bench: Bench, doc: dict[str, Any]) -> None:
    namespace = doc["metadata"]["namespace"]
    async with bench.cluster.kmock.post(
        f"/apis/modelengine.io/v1alpha1/namespaces/{namespace}/modelengines", json=doc
    ) as rsp:
        assert rsp.status in (200, 201), await rsp.text()


def run_case(n: int, tmp: Path) -> tuple[dict[str, float], dict[str, float]]:
    bench = Bench(tmp)
    store = tmp / "store"
    store.mkdir()
    try:
        bench.seed(n, store)
        print(f"N={n}: baseline ...", file=sys.stderr, flush=True)
        base = run_baseline(bench, n)
        print(f"N={n}: operator ...", file=sys.stderr, flush=True)
        ours = run_operator(bench, n, store)
        return ours, base
    finally:
        bench.cluster.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 10 only")
    parser.add_argument("--sizes", type=int, nargs="*", help="override the N values (default: 500)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per N (every run is shown)")
    args = parser.parse_args()
    sizes = args.sizes or ([10] if args.quick else [500])
    header = (
        f"{'N':>5} {'jobs_s':>7} {'base_s':>7} {'ratio':>6} {'ready_s':>7} {'req/ME':>7} {'wr/ME':>6} "
        f"{'base_req':>8} {'conns':>6} {'base_c':>6} {'restart_w':>9} {'reapply_s':>9} {'rss_mb':>7} "
        f"{'rst_rss':>7} {'base_rss':>8} {'cpu_s':>6} {'base_cpu':>8}"
    )
    rows: list[str] = []
    ok = True
    for n in sizes:
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="opbench-") as tmp:
                ours, base = run_case(n, Path(tmp))
            ratio = ours["jobs_s"] / base["jobs_s"]
            rows.append(
                f"{n:>5} {ours['jobs_s']:>7.2f} {base['jobs_s']:>7.2f} {ratio:>6.2f} {ours['ready_s']:>7.2f} "
                f"{ours['req_per_me']:>7.2f} {ours['writes_per_me']:>6.2f} {base['req_per_me']:>8.2f} "
                f"{int(ours['connections']):>6d} {int(base['connections']):>6d} "
                f"{int(ours['restart_writes']):>9d} {ours['reapply_s']:>9.2f} {ours['rss_mb']:>7.0f} "
                f"{ours['restart_rss_mb']:>7.0f} {base['rss_mb']:>8.0f} {ours['cpu_s']:>6.1f} {base['cpu_s']:>8.1f}"
            )
            print(rows[-1], file=sys.stderr, flush=True)  # as it comes; the table follows at the end
            ok &= ratio <= 2.0 and ours["req_per_me"] <= 8 and ours["restart_writes"] == 0
            ok &= ours["reapply_s"] <= 1.0 and ours["reapply_new_jobs"] == 0
            ok &= ours["rss_mb"] <= 200 and ours["restart_rss_mb"] <= 200
    print(header)
    print("-" * len(header))
    print("\n".join(rows))
    print("design targets met" if ok else "some design targets missed (see docs/operator.md)")
    return 0 if ok else 1


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
