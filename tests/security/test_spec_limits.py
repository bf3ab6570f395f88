"""Issue 12, class 2: a spec cannot ask verification for more memory than the budget.

The reproduction: `max: [100000000, 8]` on a tiny model made verification allocate until the
kernel killed the build. Now validation refuses it with one line naming the field."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelengine.api.validation import VERIFY_INPUT_BYTES, SpecError, parse_modelengine

BASE: dict[str, Any] = {
    "apiVersion": "modelengine.io/v1alpha1",
    "kind": "ModelEngine",
    "metadata": {"name": "tiny", "namespace": "default"},
    "spec": {
        "model": {"source": "model.onnx", "format": "onnx"},
        "export": {
            "inputs": [
                {
                    "name": "x",
                    "dtype": "float32",
                    "shape": [-1, 8],
                    "min": [1, 8],
                    "opt": [4, 8],
                    "max": [16, 8],
                }
            ],
            "outputs": ["y"],
        },
        "build": {"backend": "onnxruntime"},
        "targets": [{"cpu": True}],
        "storage": {"uri": "file:///tmp/store"},
    },
}


def spec(
    *, max_shape: list[int] | None = None, samples: int | None = None, dtype: str = "float32"
) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    tensor = doc["spec"]["export"]["inputs"][0]
    tensor["dtype"] = dtype
    if max_shape is not None:
        tensor["max"] = max_shape
    if samples is not None:
        doc["spec"]["export"]["verify"] = {"samples": samples}
    return doc


def test_the_default_shapes_pass() -> None:
    parse_modelengine(spec())


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            spec(max_shape=[100_000_000, 8]),
            "spec.export.inputs[0].max: [100000000, 8] needs 2.98 GiB of float32",
        ),
        (spec(max_shape=[2**40, 8]), "spec.export.inputs[0].max: [1099511627776, 8] has a dimension over"),
        (spec(max_shape=[2**23, 8], samples=64), "spec.export.verify.samples: 64 samples"),
    ],
)
def test_over_the_budget_is_refused_naming_the_field(doc: dict[str, Any], expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_modelengine(doc)
    assert len(caught.value.problems) == 1 and caught.value.problems[0].startswith(expected), caught.value


def test_the_limit_is_the_budget_not_a_magic_shape() -> None:
    """Just under the per-sample budget passes with one sample; just over fails."""
    rows = VERIFY_INPUT_BYTES // (8 * 4)
    parse_modelengine(spec(max_shape=[rows, 8], samples=1))
    with pytest.raises(SpecError, match=r"inputs\[0\]\.max"):
        parse_modelengine(spec(max_shape=[rows + 1, 8], samples=1))
    # int8 holds four times the rows of float32
    parse_modelengine(spec(max_shape=[rows * 4, 8], samples=1, dtype="int8"))


def test_build_refuses_it_in_one_line_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "me.yaml"
    path.write_text(yaml.safe_dump(spec(max_shape=[100_000_000, 8])))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelengine.cli",
            "build",
            "-f",
            str(path),
            "--store",
            str(tmp_path / "store"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "spec.export.inputs[0].max: [100000000, 8] needs" in lines[0], proc.stderr
    assert not (tmp_path / "store").exists()
