"""The README's main command does what it says: build, store, serve, answer — twice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def demo(store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelengine.cli", "demo", "--store", str(store)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=600,
    )


def test_demo_builds_serves_and_answers_then_hits_the_cache(tmp_path: Path) -> None:
    first = demo(tmp_path / "store")
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    assert "onnxruntime-cpu" in out and "tensorrt-rtx-cc8.9" in out
    assert out.count(" built ") >= 2
    assert "release record:" in out
    assert "POST /v2/models/combinednet/infer → HTTP 200" in out
    assert float(out.split("max |server - ONNX reference| = ")[1].split()[0]) < 1e-4
    assert "validation  not run here" in out  # the RTX engine: build-only check, said plainly
    assert "frozen by tracing" in first.stderr  # the seed's gate, reported with its line
    assert (tmp_path / "store" / "releases" / "default" / "combinednet.json").is_file()

    second = demo(tmp_path / "store")
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count(" cached ") >= 2 and " built " not in second.stdout
    # A cache hit does no export, verification or build work at all.
    for stage in ("export", "verify", "build"):
        assert f"] {stage} " not in second.stderr, second.stderr
