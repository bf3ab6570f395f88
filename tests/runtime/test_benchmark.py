"""The runtime benchmark's smoke run: it builds, serves and measures end to end (figures
are printed, never asserted: speed belongs to the benchmark, not to unit tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_runtime_overhead_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.runtime_overhead", "--quick", "--json", str(out)],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "HTTP binary" in proc.stdout and "batching off" in proc.stdout
    (result,) = json.loads(out.read_text())
    assert result["name"] == "combinednet"
    assert all(v > 0 for v in result["throughput"]["off"].values())
    assert all(v > 0 for v in result["throughput"]["on"].values())
    assert result["http_binary"][0] > 0 and result["direct"][0] > 0
    assert "KServe v2 gRPC" in proc.stdout
    assert sorted(result["grpc"]["modelengine"]) == ["1", "64", "8"]
    assert all(rps > 0 and p50 > 0 for rps, p50, _p99 in result["grpc"]["modelengine"].values())
