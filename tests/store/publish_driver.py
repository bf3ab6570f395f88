"""`python -m tests.store.publish_driver STORE_URI ENGINE BUILD_KEY`: publish one engine
file with its manifest through the real store code, as a builder's last step does, and
exit as the CLI would (one line on stderr, `modelengine.cli.exit_code_of`). The fault
tests run it in a subprocess under limits a test cannot impose on itself."""

from __future__ import annotations

import sys
from pathlib import Path

from modelengine.cli import exit_code_of
from modelengine.errors import first_line, utc_now
from modelengine.store.manifest import EngineManifest, EngineTarget, TensorInfo
from modelengine.store.open import open_store
from modelengine.store.publish import publish_engine


def main(store_uri: str, engine: str, build_key: str) -> int:
    io = [TensorInfo(name="x", dtype="float32", shape=[-1, 4], min=[1, 4], opt=[2, 4], max=[4, 4])]
    manifest = EngineManifest(
        build_key=build_key, model_digest="a" * 64, onnx_digest="b" * 64, backend="onnxruntime",
        backend_version="1.0", target=EngineTarget(), precision="fp32", inputs=io, outputs=io,
        engine_file="model.ort.onnx", sha256="", size=0, build_seconds=0.1, created=utc_now(),
    )  # fmt: skip
    try:
        publish_engine(
            open_store(store_uri), engine_path=Path(engine), base_name="model.ort.onnx", manifest=manifest
        )
    except Exception as err:
        print(f"publish: error: {first_line(err)}", file=sys.stderr)
        return exit_code_of(err)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
