"""Bad input gets one clear line naming what and where: unreadable files, broken
factories, specs that do not fit the model, scripting without type hints, and dynamo's
refusal of data-dependent branches (turned into a diagnosis with the source line)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from modelengine.export import ExportError, export_onnx, load_model
from tests.export.helpers import COMBINEDNET, exported, gate_line, image_input, make_spec, work_dir

BAD_MODELS = """
import torch
from torch import nn


class Concat(nn.Module):
    def forward(self, inputs):  # no type hints: TorchScript takes `inputs` for a Tensor
        return torch.cat(inputs, 1)


class Unannotated(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.concat = Concat()

    def forward(self, x):
        y = self.conv(x)
        return self.concat((y, y))


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return y, y.mean(dim=1)


def unannotated():
    return Unannotated()


def two_outputs():
    return TwoOutputs()


def raising():
    raise ValueError("checkpoint folder not configured")


def not_a_module():
    return 42
"""


SCRIPTED_FUNCTION = """
import torch
from torch import nn


@torch.jit.script
def decision_gate(x):
    if x.mean() > 0:
        decision = x
    else:
        decision = -x
    return decision


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return decision_gate(self.conv(x))


def make():
    return Gated()
"""


def _one_line(err: pytest.ExceptionInfo[ExportError]) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    return text


@pytest.fixture(scope="module")
def bad_dir() -> Path:
    folder = work_dir("bad-models")
    (folder / "badmodels.py").write_text(textwrap.dedent(BAD_MODELS))
    (folder / "scripted_fn.py").write_text(textwrap.dedent(SCRIPTED_FUNCTION))
    (folder / "broken_import.py").write_text("import torch\nraise RuntimeError('needs a GPU')\n")
    return folder


def _load(source: Path, fmt: str, entrypoint: str | None = None) -> None:
    spec = make_spec(source=source, fmt=fmt, entrypoint=entrypoint)
    load_model(spec.model, source_path=source)


def test_truncated_torchscript(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 4, 3)), str(good))  # type: ignore[no-untyped-call]
    bad = tmp_path / "model.pt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ExportError) as err:
        _load(bad, "torchscript")
    assert _one_line(err).startswith(f"cannot read model {bad}: not a TorchScript file (")


def test_garbage_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf" * 10)
    with pytest.raises(ExportError) as err:
        _load(bad, "onnx")
    assert _one_line(err).startswith(f"cannot read model {bad}: not a valid ONNX file")


def test_garbage_exported_program(tmp_path: Path) -> None:
    bad = tmp_path / "model.pt2"
    bad.write_text("not a zip")
    with pytest.raises(ExportError) as err:
        spec = make_spec(source=bad, fmt="exported-program", method="dynamo")
        load_model(spec.model, source_path=bad)
    assert _one_line(err).startswith(f"cannot read model {bad}: not a torch.export program")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"no such file or directory$"):
        _load(tmp_path / "absent.pt", "torchscript")


@pytest.mark.parametrize(
    ("entrypoint", "expected"),
    [
        ("nosuchmodule:make", r"cannot import model module `nosuchmodule` from .*: no such module$"),
        ("badmodels:absent", r"model module `badmodels` \(.*badmodels.py\) has no callable `absent`$"),
        (
            "badmodels:raising",
            r"model factory badmodels:raising raised ValueError: checkpoint folder not configured at badmodels.py:\d+$",
        ),
        ("badmodels:not_a_module", r"returned int, not a torch.nn.Module$"),
        (
            "broken_import:make",
            r"cannot import model module `broken_import` .*RuntimeError: needs a GPU at broken_import.py:2$",
        ),
    ],
)
def test_broken_entrypoints(bad_dir: Path, entrypoint: str, expected: str) -> None:
    with pytest.raises(ExportError, match=expected) as err:
        _load(bad_dir, "python", entrypoint)
    _one_line(err)


def test_weights_that_do_not_fit(tmp_path: Path) -> None:
    weights = tmp_path / "other.pt"
    torch.save(torch.nn.Conv2d(3, 4, 3).state_dict(), str(weights))
    spec = make_spec(source=COMBINEDNET, entrypoint="combinednet:plain")
    with pytest.raises(ExportError, match=r"do not fit the model: missing net.conv1.weight") as err:
        load_model(spec.model, source_path=COMBINEDNET, weights_path=weights)
    _one_line(err)


def test_weights_file_with_code_is_refused(tmp_path: Path) -> None:
    weights = tmp_path / "pickled.pt"
    torch.save(
        {"state_dict": torch.nn.Conv2d(3, 4, 3)}, str(weights)
    )  # a whole module: needs unpickling code
    spec = make_spec(source=COMBINEDNET, entrypoint="combinednet:plain")
    with pytest.raises(ExportError, match=r"^cannot read weights .*pickled.pt: ") as err:
        load_model(spec.model, source_path=COMBINEDNET, weights_path=weights)
    _one_line(err)


def _export(spec_source: Path, entrypoint: str, method: str = "trace", **kw: object) -> None:
    spec = make_spec(source=spec_source, entrypoint=entrypoint, method=method, **kw)  # type: ignore[arg-type]
    loaded = load_model(spec.model, source_path=spec_source)
    export_onnx(spec, loaded, out_dir=work_dir(f"err-{entrypoint.replace(':', '-')}-{method}"))


def test_input_rank_mismatch() -> None:
    wrong = image_input() | {"shape": [-1, 3, 32], "min": [1, 3, 32], "opt": [4, 3, 32], "max": [16, 3, 32]}
    with pytest.raises(ExportError) as err:
        _export(COMBINEDNET, "combinednet:plain", inputs=[wrong])
    text = _one_line(err)
    assert text.startswith(
        "the model rejects inputs shaped as spec.export.inputs ([4, 3, 32]): RuntimeError:"
    )


def test_too_many_inputs() -> None:
    with pytest.raises(ExportError, match=r"rejects inputs shaped as spec.export.inputs .*TypeError") as err:
        _export(COMBINEDNET, "combinednet:plain", inputs=[image_input("a"), image_input("b")])
    _one_line(err)


def test_output_names_count_mismatch(bad_dir: Path) -> None:
    with pytest.raises(ExportError) as err:
        _export(bad_dir, "badmodels:two_outputs", outputs=["output"])
    assert _one_line(err) == "spec.export.outputs names 1 output(s) (output) but the model returns 2"
    with pytest.raises(ExportError, match=r"names 3 output\(s\) \(a, b, c\) but the model returns 2"):
        _export(bad_dir, "badmodels:two_outputs", outputs=["a", "b", "c"])


def test_two_outputs_named_by_the_spec(bad_dir: Path) -> None:
    spec = make_spec(source=bad_dir, entrypoint="badmodels:two_outputs", outputs=["features", "mean"])
    loaded = load_model(spec.model, source_path=bad_dir)
    result = export_onnx(spec, loaded, out_dir=work_dir("two-outputs"))
    assert [(o.name, o.shape) for o in result.outputs] == [
        ("features", [-1, 4, 30, 30]),
        ("mean", [-1, 30, 30]),
    ]


@pytest.mark.parametrize(("method", "scripts"), [("script", None), ("mixed", ["concat"])])
def test_scripting_without_type_hints(bad_dir: Path, method: str, scripts: list[str] | None) -> None:
    with pytest.raises(ExportError) as err:
        _export(bad_dir, "badmodels:unannotated", method=method, script_modules=scripts)
    text = _one_line(err)
    what = "the model" if method == "script" else "sub-module `concat`"
    assert text.startswith(
        f"cannot script {what}: Arguments for call are not valid: Expected a value of type 'List[Tensor]'"
    )
    assert "at badmodels.py:8 `return torch.cat(inputs, 1)`" in text
    assert text.endswith(
        "hint: TorchScript takes un-annotated arguments for Tensor; annotate them, e.g. `inputs: Tuple[Tensor, Tensor]` or `List[Tensor]`"
    )
    assert len(text) < 400


def test_mixed_with_an_unknown_sub_module() -> None:
    with pytest.raises(ExportError) as err:
        _export(COMBINEDNET, "combinednet:mixed", method="mixed", script_modules=["gait"])
    assert _one_line(err).startswith(
        "spec.export.scriptModules: the model has no sub-module `gait` (it has: net, net.conv1"
    )


def test_dynamo_refuses_the_seed_gate_with_a_diagnosis() -> None:
    with pytest.raises(ExportError) as err:
        _export(COMBINEDNET, "combinednet:plain", method="dynamo")
    text = _one_line(err)
    line = gate_line("CombinedNet")
    assert text.startswith(
        f"control flow refused by dynamo (torch.export) at combinednet.py:{line} `if x.mean() > 0:`"
    )
    assert "GuardOnDataDependentSymNode" in text and "torch.cond" in text and "method mixed" in text
    assert "draft_export" not in text


def test_dynamo_refuses_a_scripted_gate_with_a_diagnosis() -> None:
    with pytest.raises(ExportError) as err:
        _export(COMBINEDNET, "combinednet:script_fixed", method="dynamo")
    text = _one_line(err)
    assert text.startswith(
        f"dynamo (torch.export) cannot export the TorchScript sub-module `gate` at combinednet.py:{gate_line('Gate')} `if x.mean() > 0:`"
    )
    assert "torch.cond" in text


def test_dynamo_on_a_torchscript_file() -> None:
    ts = work_dir("ts-dynamo") / "model.pt"
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 4, 3)), str(ts))  # type: ignore[no-untyped-call]
    spec = make_spec(source=ts, fmt="torchscript", method="dynamo")
    loaded = load_model(spec.model, source_path=ts)
    with pytest.raises(
        ExportError, match=r"^spec.export.method: a TorchScript model cannot be exported with dynamo"
    ):
        export_onnx(spec, loaded, out_dir=work_dir("ts-dynamo-out"))


def test_onnx_input_spec_mismatch() -> None:
    source = exported("combinednet:plain", "trace").result.onnx_path
    for inputs, expected in [
        (
            [image_input("pixels")],
            r"spec.export.inputs\[0\]: the ONNX model has no input `pixels` \(it has: input\)",
        ),
        (
            [
                image_input()
                | {
                    "shape": [-1, 3, 64, 64],
                    "min": [1, 3, 64, 64],
                    "opt": [4, 3, 64, 64],
                    "max": [16, 3, 64, 64],
                }
            ],
            r"dimension 2 is 64 in the spec but 32 in the ONNX model",
        ),
    ]:
        spec = make_spec(source=source, fmt="onnx", inputs=inputs)
        loaded = load_model(spec.model, source_path=source)
        with pytest.raises(ExportError, match=expected):
            export_onnx(spec, loaded, out_dir=work_dir("onnx-mismatch"))


def test_seed_style_scripted_function_gate(bad_dir: Path) -> None:
    """The seed's `@torch.jit.script def decision_gate`: kept as an If by trace, refused by
    dynamo with the gate's line."""
    line = textwrap.dedent(SCRIPTED_FUNCTION).splitlines().index("    if x.mean() > 0:") + 1
    spec = make_spec(source=bad_dir, entrypoint="scripted_fn:make", method="trace")
    loaded = load_model(spec.model, source_path=bad_dir)
    result = export_onnx(spec, loaded, out_dir=work_dir("scripted-fn-trace"))
    assert [(b.verdict, b.location) for b in result.branches] == [("kept", f"scripted_fn.py:{line}")]
    with pytest.raises(ExportError) as err:
        _export(bad_dir, "scripted_fn:make", method="dynamo")
    assert _one_line(err).startswith(
        f"control flow refused by dynamo (torch.export) at scripted_fn.py:{line} `if x.mean() > 0:`"
    )
