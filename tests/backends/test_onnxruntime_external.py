"""ONNX Runtime engines from an ONNX whose weights live in an external data file.

The engine is published as one file, so the optimized model must carry its weights
inline: these tests build from a model saved with every initializer external, move the
engine alone to another folder (as the store does) and run it against the inline model;
a model over protobuf's 2 GiB limit is refused with one line.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

from modelengine.api.models import BackendName
from modelengine.api.targets import ResolvedTarget
from modelengine.backends import onnxruntime as ort_backend
from modelengine.backends.base import BuildOptions, UnsupportedModel
from modelengine.backends.onnxruntime import OnnxRuntimeBackend
from tests.backends.conftest import CONV_INPUT

CPU = ResolvedTarget(BackendName.ONNXRUNTIME, None)


@pytest.fixture
def external_onnx(conv_onnx: Path, tmp_path: Path) -> Path:
    model = onnx.load(str(conv_onnx))
    out = tmp_path / "onnx" / "model.onnx"
    out.parent.mkdir()
    onnx.save_model(model, str(out), save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    stored = onnx.load(str(out), load_external_data=False)
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in stored.graph.initializer)
    return out


def test_engine_from_external_data_is_one_runnable_file(
    external_onnx: Path, conv_onnx: Path, tmp_path: Path
) -> None:
    backend = OnnxRuntimeBackend(intra_op_threads=1)
    result = backend.build(
        external_onnx, target=CPU, options=BuildOptions(inputs=(CONV_INPUT,)), out_dir=tmp_path / "build"
    )
    assert sorted(p.name for p in result.engine_path.parent.iterdir()) == [backend.engine_file]
    engine_model = onnx.load(str(result.engine_path), load_external_data=False)
    assert engine_model.graph.initializer
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in engine_model.graph.initializer)

    # Alone in another folder, as the store hands it to the runtime.
    published = tmp_path / "published" / backend.engine_file
    published.parent.mkdir()
    shutil.copyfile(result.engine_path, published)
    engine = backend.load(published, inputs=result.inputs, outputs=result.outputs)
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    got = engine.infer({"input": x})["output"]
    want = onnxruntime.InferenceSession(str(conv_onnx), providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )[0]
    assert got.shape == (3, 10)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert [t.name for t in result.inputs] == ["input"] and result.inputs[0].max == CONV_INPUT.max


def test_external_data_over_the_single_file_limit_is_refused(
    external_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ort_backend, "SINGLE_FILE_LIMIT", 1000)  # the conv net's weights are larger
    with pytest.raises(UnsupportedModel) as err:
        OnnxRuntimeBackend(intra_op_threads=1).build(
            external_onnx, target=CPU, options=BuildOptions(inputs=(CONV_INPUT,)), out_dir=tmp_path / "build"
        )
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("the ONNX model model.onnx with its external data is ")
    assert text.endswith("over the 2 GiB protobuf limit of one file; onnxruntime engines are single files")


def test_missing_external_data_file_is_named(external_onnx: Path, tmp_path: Path) -> None:
    (external_onnx.parent / "model.onnx.data").rename(external_onnx.parent / "elsewhere.bin")
    with pytest.raises(
        UnsupportedModel,
        match=r"^the ONNX model model.onnx names external data file\(s\) "
        r"that do not exist: model.onnx.data$",
    ):
        OnnxRuntimeBackend(intra_op_threads=1).build(
            external_onnx, target=CPU, options=BuildOptions(inputs=(CONV_INPUT,)), out_dir=tmp_path / "build"
        )
