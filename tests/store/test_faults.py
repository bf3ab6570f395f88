"""Store faults (issue 12): a read-only store, a full disk, a connection dropped mid-upload.

Each fault is real: a store directory the process may not write (root's CAP_DAC_OVERRIDE
dropped from the child's capability bounding set, so permissions apply to root too), a
file-size limit (RLIMIT_FSIZE: writes past it fail with EFBIG, as on a full disk), and a
TCP proxy in front of moto's S3 server that resets any connection once it has carried
more than a few KiB upstream (boto3's retries meet the same fate). Each must end as one
line and the infrastructure exit code (3), leave no manifest (nothing a reader trusts),
and a clean re-run must then publish.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelengine.store.base import StoreError
from modelengine.store.layout import manifest_key
from modelengine.store.open import open_store
from modelengine.store.publish import read_manifest

from .test_publish import K1, engine, manifest

ROOT = Path(__file__).resolve().parents[2]
PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE = 1


def _without_dac_override() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if os.geteuid() == 0 and libc.prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _tiny_onnx_spec(tmp_path: Path, store: Path) -> Path:
    import torch

    onnx = tmp_path / "mlp.onnx"
    model = torch.nn.Sequential(torch.nn.Linear(64, 64)).eval()
    torch.onnx.export(
        model, (torch.zeros(1, 64),), str(onnx), input_names=["x"], output_names=["y"],
        dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, dynamo=False,
    )  # fmt: skip
    doc = {
        "apiVersion": "modelengine.io/v1alpha1", "kind": "ModelEngine",
        "metadata": {"name": "mlp", "namespace": "default"},
        "spec": {
            "model": {"source": str(onnx), "format": "onnx"},
            "export": {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 64], "min": [1, 64],
                                   "opt": [2, 64], "max": [4, 64]}], "outputs": ["y"]},
            "build": {"backend": "onnxruntime"}, "targets": [{"cpu": True}],
            "storage": {"uri": store.as_uri()},
        },
    }  # fmt: skip
    path = tmp_path / "me.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _manifests(store: Path) -> list[Path]:
    return sorted(store.rglob("manifest.json")) if store.exists() else []


def test_read_only_store_fails_in_one_line_then_a_clean_rerun_publishes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    spec = _tiny_onnx_spec(tmp_path, store)
    store.chmod(0o555)
    command = [sys.executable, "-m", "modelengine.cli", "build", "-f", str(spec)]
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=tmp_path, preexec_fn=_without_dac_override
    )
    store.chmod(0o755)
    assert proc.returncode == 3, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("modelengine build")]
    assert len(errors) == 1 and "Permission denied" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert _manifests(store) == [] and not list(store.rglob("*"))
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(_manifests(store)) == 1 and (store / "releases" / "default" / "mlp.json").is_file()


def _publish(
    store_uri: str, engine_path: Path, *, max_file_bytes: int | None
) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        if max_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run(
        [sys.executable, "-m", "tests.store.publish_driver", store_uri, str(engine_path), K1],
        capture_output=True, text=True, timeout=120, cwd=ROOT, preexec_fn=limit,
    )  # fmt: skip


def test_full_disk_mid_engine_write_leaves_nothing_then_a_clean_rerun_publishes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    blob = engine(tmp_path, os.urandom(1 << 20), "engine.bin")
    proc = _publish(store.as_uri(), blob, max_file_bytes=256 * 1024)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"publish: error: cannot write {store.resolve().as_uri()}/engines/{K1}/model.ort.{_sha12(blob)}.onnx: "
        "File too large"
    ]
    assert _manifests(store) == [] and [p for p in store.rglob("*") if p.is_file()] == []  # no temp file left
    again = _publish(store.as_uri(), blob, max_file_bytes=None)
    assert again.returncode == 0, again.stderr
    published = read_manifest(open_store(store.as_uri()), K1)
    assert published is not None and published.size == 1 << 20


def _sha12(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


class DroppingProxy:
    """A TCP proxy to `upstream` that resets a connection once it carried `limit` bytes up."""

    def __init__(self, upstream: tuple[str, int], limit: int) -> None:
        self.upstream = upstream
        self.limit = limit
        self.dropped = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.upstream)
        threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()
        self._pump(client, upstream, self.limit)

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if limit is not None and sent + len(data) > limit:
                    dst.sendall(data[: limit - sent])
                    self.dropped += 1
                    for sock in (src, dst):  # RST, as a dropped network path looks to both ends
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        sock.close()
                    return
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._server.close()


@pytest.fixture
def proxy(s3_env: dict[str, Any]) -> Iterator[DroppingProxy]:
    host, port = s3_env["endpoint_url"].removeprefix("http://").split(":")
    p = DroppingProxy((host, int(port)), limit=64 * 1024)
    yield p
    p.close()


def test_connection_dropped_mid_upload_publishes_no_manifest_then_a_rerun_does(
    s3_env: dict[str, Any], proxy: DroppingProxy, tmp_path: Path
) -> None:
    from modelengine.store.publish import publish_engine

    through_proxy = open_store(s3_env["uri"], endpoint_url=f"http://127.0.0.1:{proxy.port}")
    direct = open_store(s3_env["uri"], endpoint_url=s3_env["endpoint_url"])
    blob = engine(tmp_path, os.urandom(1 << 20), "engine.bin")
    with pytest.raises(StoreError) as caught:
        publish_engine(through_proxy, engine_path=blob, base_name="engine.plan", manifest=manifest())
    assert str(caught.value).startswith(
        f"upload to {s3_env['uri']}/engines/{K1}/engine."
    ) and "\n" not in str(caught.value)
    assert proxy.dropped >= 1
    assert not direct.exists(manifest_key(K1)) and read_manifest(direct, K1) is None
    final, ours = publish_engine(direct, engine_path=blob, base_name="engine.plan", manifest=manifest())
    assert ours and read_manifest(direct, K1) == final and final.size == 1 << 20
