"""Reading a model in any of the spec's formats into something the exporter can run.

One function, `load_model`, dispatches on `spec.model.format`:

- `torchscript`: `torch.jit.load` (a traced or scripted `.pt`);
- `exported-program`: `torch.export.load` (a `.pt2`), keeping the program for dynamo and
  its `.module()` as the PyTorch reference;
- `python`: the source folder (or `.py` file) goes on `sys.path`, `module:factory` is
  imported and called, and optional weights are applied: safetensors, or a state_dict read
  with `torch.load(weights_only=True)` so a weights file can never run code;
- `onnx`: only parsed here (proto without external data) to reject a corrupt file early.

Every failure becomes one `ExportError` line naming the file and the first cause.
"""

from __future__ import annotations

import importlib
import pickle
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from modelengine.api.models import ModelFormat, ModelSource
from modelengine.export.errors import ExportError, LoadedModel, ModelInputError, first_line


def load_model(model: ModelSource, *, source_path: Path, weights_path: Path | None = None) -> LoadedModel:
    try:
        return _load(model, Path(source_path), weights_path)
    except ExportError:
        raise
    except Exception as err:  # anything unforeseen still reaches the user as one line
        raise ModelInputError(
            f"cannot read model {source_path}: {type(err).__name__}: {first_line(err)}"
        ) from err


def _load(model: ModelSource, source_path: Path, weights_path: Path | None) -> LoadedModel:
    if not source_path.exists():
        raise ModelInputError(f"cannot read model {source_path}: no such file or directory")
    fmt = model.format
    if fmt is ModelFormat.ONNX:
        return LoadedModel(fmt, None, None, _load_onnx(source_path), source_path)
    if fmt is ModelFormat.TORCHSCRIPT:
        return LoadedModel(fmt, _load_torchscript(_single_file(source_path, ".pt")), None, None, source_path)
    if fmt is ModelFormat.EXPORTED_PROGRAM:
        program = _load_exported_program(_single_file(source_path, ".pt2"))
        return LoadedModel(fmt, program.module(), program, None, source_path)
    if not model.entrypoint:
        raise ModelInputError("spec.model.entrypoint: required when format is python (module:factory)")
    module = _load_python(source_path, model.entrypoint)
    if weights_path is not None:
        _apply_weights(module, Path(weights_path))
    return LoadedModel(fmt, module, None, None, source_path)


def _single_file(path: Path, suffix: str) -> Path:
    """A directory holding exactly one `*suffix` file stands for that file."""
    if path.is_file():
        return path
    found = sorted(path.glob(f"*{suffix}"))
    if len(found) != 1:
        raise ModelInputError(
            f"cannot read model {path}: expected one {suffix} file in the folder, found {len(found)}"
        )
    return found[0]


def _load_onnx(path: Path) -> Path:
    import onnx

    path = _single_file(path, ".onnx")
    try:
        onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise ModelInputError(f"cannot read model {path}: not a valid ONNX file ({first_line(err)})") from None
    return path


def _load_torchscript(path: Path) -> Any:
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    except Exception as err:
        raise ModelInputError(f"cannot read model {path}: not a TorchScript file ({first_line(err)})") from None
    return module.eval()


def _load_exported_program(path: Path) -> Any:
    import torch

    try:
        return torch.export.load(str(path))  # type: ignore[no-untyped-call]
    except Exception as err:
        raise ModelInputError(
            f"cannot read model {path}: not a torch.export program ({first_line(err)})"
        ) from None


def _user_frame(err: BaseException, root: Path) -> str:
    """`file:line` of the innermost traceback frame inside the user's source folder."""
    where = ""
    for frame in traceback.extract_tb(err.__traceback__):
        if Path(frame.filename).resolve().is_relative_to(root):
            where = f" at {Path(frame.filename).name}:{frame.lineno}"
    return where


def _load_python(source: Path, entrypoint: str) -> Any:
    import torch

    root = source if source.is_dir() else source.parent
    root = root.resolve()
    module_name, _, factory_name = entrypoint.partition(":")
    if not module_name or not factory_name:
        raise ModelInputError(f"spec.model.entrypoint: expected module:factory, got {entrypoint!r}")
    _forget_foreign(module_name, root)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        mod = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise ModelInputError(
                f"cannot import model module `{module_name}` from {root}: no such module"
            ) from None
        raise ModelInputError(
            f"cannot import model module `{module_name}` from {root}: {first_line(err)}{_user_frame(err, root)}"
        ) from None
    except Exception as err:
        raise ModelInputError(
            f"cannot import model module `{module_name}` from {root}: "
            f"{type(err).__name__}: {first_line(err)}{_user_frame(err, root)}"
        ) from None
    factory = getattr(mod, factory_name, None)
    if factory is None or not callable(factory):
        raise ModelInputError(f"model module `{module_name}` ({mod.__file__}) has no callable `{factory_name}`")
    try:
        made = factory()
    except Exception as err:
        raise ModelInputError(
            f"model factory {entrypoint} raised {type(err).__name__}: {first_line(err)}{_user_frame(err, root)}"
        ) from None
    if not isinstance(made, torch.nn.Module):
        raise ModelInputError(f"model factory {entrypoint} returned {type(made).__name__}, not a torch.nn.Module")
    return made.eval()


def _forget_foreign(module_name: str, root: Path) -> None:
    """Drop a cached module of the same name imported from another folder (two examples
    may both ship `model.py`); the one under `root` must be the one imported."""
    top = module_name.split(".")[0]
    cached = sys.modules.get(top)
    if cached is None:
        return
    file = getattr(cached, "__file__", None)
    if file is not None and Path(file).resolve().is_relative_to(root):
        return
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
# PyTorch's wrapping of a weights-only refusal: advice to disable the check, and boilerplate.
_TORCH_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation", "Re-running")


def weights_only_refusal(err: BaseException) -> str:
    """The root cause of a weights-only refusal, without PyTorch's advice to turn it off."""
    text = str(err)
    found = _GLOBAL.search(text)
    if found:
        return (
            f"it references the Python global `{found.group(1)}`, which weights-only loading refuses: "
            "loading it would run code from the file; save a state_dict of tensors or use safetensors"
        )
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(_TORCH_ADVICE)
    ]
    cause = lines[0].removeprefix("WeightsUnpickler error:").strip() if lines else first_line(err)
    return f"not loadable weights-only ({cause}); save a state_dict of tensors or use safetensors"


def _apply_weights(module: Any, path: Path) -> None:
    import torch

    if not path.is_file():
        raise ModelInputError(f"cannot read weights {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelInputError(f"cannot read weights {path}: {weights_only_refusal(err)}") from None
    except Exception as err:
        raise ModelInputError(f"cannot read weights {path}: {first_line(err)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelInputError(f"cannot read weights {path}: expected a state_dict (names to tensors)")
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        cause = lines[1] if len(lines) > 1 else first_line(err)
        raise ModelInputError(f"weights {path} do not fit the model: {cause}") from None
    problems = []
    if result.missing_keys:
        problems.append(f"missing {', '.join(result.missing_keys[:5])}")
    if result.unexpected_keys:
        problems.append(f"unexpected {', '.join(result.unexpected_keys[:5])}")
    if problems:
        raise ModelInputError(f"weights {path} do not fit the model: {'; '.join(problems)}")
