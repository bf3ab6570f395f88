"""Issue 12, class 1: a store document must never decide where a reader writes.

The reproduction: a release record whose `build_key` climbs out of the runtime's cache
(`../../../../<victim>/.ssh`) and whose engine URI ends in `authorized_keys`, with that
file's real sha256 and a manifest to match. Before the trust boundary, `modelengine serve`
wrote the file outside its cache on every poll.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnxruntime
import pytest

from modelengine.runtime.loader import EngineLoadError, load_release_engine
from modelengine.runtime.ort_serving import ServingOnnxRuntimeBackend
from modelengine.store.manifest import ReleaseEngine
from modelengine.store.open import open_store
from modelengine.store.trust import UnsafePath, confine

from .process import ServeProcess

KEY_LINE = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAttackerKeyAttackerKeyAttackerKey attacker\n"
EVIL = "e" * 32  # where the attacker's objects sit in the store


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _plant(store_dir: Path, victim: Path, cache_dir: Path) -> dict[str, object]:
    """The attacker's objects and release record; returns the engine entry it names."""
    engine_dir = store_dir / "engines" / EVIL
    engine_dir.mkdir(parents=True)
    (engine_dir / "authorized_keys").write_bytes(KEY_LINE)
    sha = hashlib.sha256(KEY_LINE).hexdigest()
    version = str(onnxruntime.__version__)
    io = [{"name": "x", "dtype": "float32", "shape": [-1, 8], "min": [1, 8], "opt": [1, 8], "max": [1, 8]}]
    manifest = {
        "build_key": EVIL, "model_digest": "a" * 64, "onnx_digest": "b" * 64, "backend": "onnxruntime",
        "backend_version": version, "target": {}, "precision": "fp32", "inputs": io,
        "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 4]}], "engine_file": "authorized_keys",
        "sha256": sha, "size": len(KEY_LINE), "build_seconds": 0.1, "created": "2026-12-02T00:00:00Z",
    }  # fmt: skip
    (engine_dir / "manifest.json").write_text(json.dumps(manifest))
    climb = "../" * len(cache_dir.resolve().parts) + str(victim.resolve()).lstrip("/") + "/.ssh"
    entry = {
        "target": "onnxruntime-cpu", "build_key": climb, "backend": "onnxruntime", "backend_version": version,
        "uri": (engine_dir / "authorized_keys").as_uri(), "manifest_uri": (engine_dir / "manifest.json").as_uri(),
        "sha256": sha, "size": len(KEY_LINE),
    }  # fmt: skip
    record = {
        "namespace": "default", "name": "mlp", "generation": 1, "model_digest": "a" * 64, "inputs": io,
        "outputs": manifest["outputs"], "engines": [entry], "updated": "2026-12-02T00:00:00Z",
    }  # fmt: skip
    (store_dir / "releases" / "default").mkdir(parents=True)
    (store_dir / "releases" / "default" / "mlp.json").write_text(json.dumps(record))
    return entry


def test_serve_refuses_a_release_record_that_climbs_out_of_the_cache(tmp_path: Path) -> None:
    store_dir, cache_dir, victim = tmp_path / "store", tmp_path / "cache", tmp_path / "victim"
    _plant(store_dir, victim, cache_dir)
    before = _files(tmp_path)
    serve = ServeProcess(
        "--store", store_dir.as_uri(), "--namespace", "default", "--name", "mlp",
        "--cache-dir", str(cache_dir), "--poll-seconds", "0.2", cwd=tmp_path,
    )  # fmt: skip
    try:
        doc = serve.wait_for("/v2/health/ready", lambda status, d: status == 503 and "refused" in str(d))
        reason = str(doc["reason"])
        # a few polls: the old runtime re-wrote the file on every one
        serve.wait_for("/v2/health/live", lambda status, _d: status == 200)
    finally:
        code = serve.stop()
    assert code == 0, serve.output()
    assert "\n" not in reason and "engines[0].build_key: not a build key" in reason, reason
    assert not (victim / ".ssh" / "authorized_keys").exists()
    written = _files(tmp_path) - before - {serve.stdout_path, serve.stderr_path}
    assert all(p.is_relative_to(cache_dir) for p in written), written
    stderr = serve.stderr_path.read_text()
    assert "Traceback" not in stderr
    refusals = [line for line in stderr.splitlines() if "engines[0].build_key: not a build key" in line]
    assert len(refusals) == 1 and not any(line.startswith("error") for line in stderr.splitlines()), stderr


def test_loader_refuses_the_entry_even_when_built_in_process(tmp_path: Path) -> None:
    """The same entry handed to the loader directly (no record parsing): still refused."""
    store_dir, cache_dir, victim = tmp_path / "store", tmp_path / "cache", tmp_path / "victim"
    entry = ReleaseEngine.model_validate(_plant(store_dir, victim, cache_dir))
    with pytest.raises(EngineLoadError, match=r"^release entry onnxruntime-cpu is refused: .*build key"):
        load_release_engine(
            open_store(store_dir.as_uri()),
            entry,
            cache_dir=cache_dir,
            backend_factory=lambda _name: ServingOnnxRuntimeBackend(),
        )
    assert not victim.exists() and not cache_dir.exists()


@pytest.mark.parametrize(
    "parts",
    [("..", "x"), ("/etc", "passwd"), ("a/../../x",), ("",), (".",), ("link", "authorized_keys")],
)
def test_confine_refuses_every_way_out(tmp_path: Path, parts: tuple[str, ...]) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)  # a symlink planted inside the root points out
    with pytest.raises(UnsafePath, match="from a store document leaves"):
        confine(root, *parts)


def test_confine_keeps_a_path_inside(tmp_path: Path) -> None:
    assert confine(tmp_path, "0" * 32, "model.ort.onnx") == tmp_path.resolve() / ("0" * 32) / "model.ort.onnx"


def test_build_refuses_an_export_record_naming_files_outside_its_work_dir(tmp_path: Path) -> None:
    """The builder downloads an export record's files by name: a tampered name is refused."""
    import shutil
    import subprocess
    import sys

    from tests.store.test_faults import _tiny_onnx_spec

    store = tmp_path / "store"
    spec = _tiny_onnx_spec(tmp_path, store)
    command = [sys.executable, "-m", "modelengine.cli", "build", "-f", str(spec)]
    assert subprocess.run(command, capture_output=True, timeout=300, cwd=tmp_path).returncode == 0
    (record,) = store.rglob("export.json")
    doc = json.loads(record.read_text())
    doc["files"] = ["../../../../../../../../tmp/planted-by-export-record"]
    record.write_text(json.dumps(doc))
    shutil.rmtree(store / "engines")  # an engine cache miss: the builder reuses the stored ONNX
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "is refused: files: not a single file name" in last, proc.stderr[-2000:]
    assert not Path("/tmp/planted-by-export-record").exists()
