"""The example ModelEngine YAMLs: each validates, and each goes through the real export
and verification with the outcome its comment promises (the traced signed gate is
refused with the diagnosis; everything else passes)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest

from modelengine.api import load_modelengine
from modelengine.export import export_onnx, load_model
from modelengine.verify import VerificationError, verify_export
from tests.export.helpers import COMBINEDNET, RESNET, gate_line, work_dir

YAMLS = sorted([*COMBINEDNET.glob("modelengine*.yaml"), *RESNET.glob("modelengine*.yaml")])

# file -> (verdicts of the branches, whether verification passes)
EXPECTED: dict[str, tuple[list[str], bool]] = {
    "combinednet/modelengine.yaml": (["frozen-constant"], True),
    "combinednet/modelengine-script-fixed.yaml": (["kept"], True),
    "combinednet/modelengine-cond.yaml": (["kept"], True),
    "combinednet/modelengine-mixed.yaml": (["kept"], True),
    "combinednet/modelengine-signed.yaml": (["frozen-flips"], False),
    "combinednet/modelengine-signed-mixed.yaml": (["kept"], True),
    "resnet/modelengine.yaml": ([], True),
    "resnet/modelengine-dynamo.yaml": ([], True),
}


def _key(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def test_every_example_yaml_is_covered() -> None:
    assert sorted(_key(p) for p in YAMLS) == sorted(EXPECTED)


@pytest.mark.parametrize("path", YAMLS, ids=_key)
def test_yaml_validates_with_the_cluster_settings(path: Path) -> None:
    me = load_modelengine(path)
    spec = me.spec
    assert spec.model.format.value == "python"
    assert urlparse(spec.model.source).path == str(path.parent)  # `source: .` resolved to the folder
    (tensor,) = spec.export.inputs
    assert (tensor.shape, tensor.min, tensor.opt, tensor.max) == (
        [-1, 3, 32, 32],
        [1, 3, 32, 32],
        [4, 3, 32, 32],
        [16, 3, 32, 32],
    )
    assert [t.to_wire() for t in spec.targets] == [{"cpu": True}, {"computeCapability": "8.9"}]
    assert spec.build.backend.value == "tensorrt-rtx"
    assert spec.storage.uri == "s3://modelengine-engines/prod"
    assert spec.storage.secret_ref is not None and spec.storage.secret_ref.name == "modelengine-s3"


@pytest.mark.parametrize("path", YAMLS, ids=_key)
def test_yaml_exports_and_verifies_as_documented(path: Path) -> None:
    spec = load_modelengine(path).spec
    verdicts, passes = EXPECTED[_key(path)]
    source = Path(urlparse(spec.model.source).path)
    loaded = load_model(spec.model, source_path=source)
    result = export_onnx(spec, loaded, out_dir=work_dir(f"example-{path.parent.name}-{path.stem}"))
    assert result.method == spec.export.method.value
    if passes:
        report = verify_export(spec, loaded, result)
        assert report.passed and [b.verdict for b in report.branches] == verdicts
        assert bool(report.warnings) == ("frozen-constant" in verdicts)
    else:
        with pytest.raises(VerificationError) as err:
            verify_export(spec, loaded, result)
        assert str(err.value).startswith(
            f"control flow frozen by tracing at combinednet.py:{gate_line('SignedGateNet')} `if x.mean() > 0:`"
        )
        assert err.value.report is not None
        assert [b.verdict for b in err.value.report.branches] == verdicts
