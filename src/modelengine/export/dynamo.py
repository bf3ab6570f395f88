"""The dynamo method: `torch.export.export` first, then `torch.onnx.export(program)`.

Exporting in two steps keeps torch.export's refusals in our hands. torch.export refuses a
data-dependent branch (GuardOnDataDependentSymNode), harmless or not, and cannot go
through a TorchScript sub-module either; both become an `ExportError` that names the
user's source line and the ways out, not a stack trace. Draft export is never used: it
picks a branch silently and leaves no assert in the ONNX.

Dynamic dimensions come from the spec as `Dim.DYNAMIC`, which lets torch.export work out
relations between inputs (a shared batch) itself; a dimension the code pins to a constant
is reported with the input and axis. torch's own logging of failed exports (graph dumps)
is muted while exporting: the diagnosis replaces it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelengine.api.models import TensorSpec
from modelengine.errors import first_line
from modelengine.export.branches import Site
from modelengine.export.errors import ExportError
from modelengine.export.scripting import script_modules_within, scripted_if_sites

_CALL = re.compile(r'The following call raised this error:\s*\n\s*File "([^"]+)", line (\d+)')
_TORCH_PARTS = ("site-packages", "dist-packages", "/torch/", "<eval_with_key>", "<frozen")


@contextlib.contextmanager
def quiet_torch(*, silence_warnings: bool = True) -> Iterator[None]:
    """Mute torch's loggers and stray prints (and warnings, unless the caller records
    them itself) for the duration of an export."""
    loggers = [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name == "torch" or name.startswith(("torch.", "onnxscript"))
    ]
    saved = [(lg, lg.disabled) for lg in loggers]
    for lg in loggers:
        lg.disabled = True
    # Loggers created during the export still reach torch's own handler: mute it too.
    handlers = [(h, h.level) for h in logging.getLogger("torch").handlers]
    for h, _ in handlers:
        h.setLevel(logging.CRITICAL + 1)
    sink = io.StringIO()
    try:
        with (
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
            warnings.catch_warnings(),
        ):
            # Exporter chatter (deprecations, "no signature found"); TracerWarnings are
            # recorded by the caller's own catch_warnings, outside this block.
            if silence_warnings:
                warnings.simplefilter("ignore")
            yield
    finally:
        for lg, was in saved:
            lg.disabled = was
        for h, level in handlers:
            h.setLevel(level)


def _user_site(err: BaseException) -> Site | None:
    match = _CALL.search(str(err))
    if match:
        return Site(match.group(1), int(match.group(2)))
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if not any(part in frame.filename for part in _TORCH_PARTS) and frame.lineno is not None:
            return Site(frame.filename, frame.lineno)
    return None


def _where(site: Site | None) -> str:
    if site is None:
        return ""
    code = site.code
    return f" at {site.location}" + (f" `{code}`" if code else "")


def refuse_scripted_parts(module: Any) -> None:
    scripted = script_modules_within(module)
    if not scripted:
        return
    name, sub = scripted[0]
    sites = scripted_if_sites(sub)
    where = _where(sites[0]) if sites else ""
    raise ExportError(
        f"dynamo (torch.export) cannot export the TorchScript sub-module `{name}`{where}: "
        "torch.export does not go through scripted code; fix: write the branch with torch.cond, "
        "or export with method mixed or trace (which keep a scripted gate as an ONNX If)"
    )


def export_program(module: Any, args: tuple[Any, ...], inputs: list[TensorSpec]) -> Any:
    import torch
    from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

    refuse_scripted_parts(module)
    dynamic = tuple(
        {d: torch.export.Dim.DYNAMIC for d, v in enumerate(t.shape) if v == -1} or None for t in inputs
    )
    try:
        with quiet_torch():
            return torch.export.export(module, args, dynamic_shapes=dynamic, strict=False)
    except GuardOnDataDependentSymNode as err:
        raise ExportError(
            f"control flow refused by dynamo (torch.export){_where(_user_site(err))}: a branch on tensor "
            f"values cannot be exported (GuardOnDataDependentSymNode); fix: {_DYNAMO_FIXES}"
        ) from None
    except Exception as err:
        text = str(err)
        if "specialized" in text or "Constraints violated" in text:
            raise ExportError(
                f"dynamo (torch.export) cannot keep the spec's dynamic dimensions{_where(_user_site(err))}: "
                f"{_constraint_line(text)}"
            ) from None
        raise ExportError(
            f"dynamo (torch.export) failed{_where(_user_site(err))}: {type(err).__name__}: {first_line(err)}"
        ) from None


_DYNAMO_FIXES = "write the branch with torch.cond, or export with method mixed (script the gate's sub-module)"


def _constraint_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if "specialized" in line or "marked" in line:
            return line[:300]
    return first_line(text)


def check_program_dims(program: Any, inputs: list[TensorSpec]) -> None:
    """An ExportedProgram's dynamic dims are fixed when it was saved: they must cover the spec's."""
    import torch

    placeholders = [
        node
        for node in program.graph.nodes
        if node.op == "placeholder" and node.name in _user_inputs(program)
    ]
    if len(placeholders) != len(inputs):
        raise ExportError(
            f"the exported program takes {len(placeholders)} input(s) but spec.export.inputs lists {len(inputs)}"
        )
    for i, (node, spec) in enumerate(zip(placeholders, inputs, strict=True)):
        shape = list(node.meta["val"].shape)
        if len(shape) != len(spec.shape):
            raise ExportError(
                f"spec.export.inputs[{i}] ({spec.name}): rank {len(spec.shape)} but the exported program's "
                f"input has rank {len(shape)} {[int(d) if isinstance(d, int) else -1 for d in shape]}"
            )
        for axis, (dim, want) in enumerate(zip(shape, spec.shape, strict=True)):
            static = isinstance(dim, int) and not isinstance(dim, torch.SymInt)
            if want == -1 and static:
                raise ExportError(
                    f"spec.export.inputs[{i}] ({spec.name}): dimension {axis} is dynamic in the spec but the "
                    f"exported program fixes it to {dim}; export it with dynamic_shapes"
                )
            if want != -1 and static and dim != want:
                raise ExportError(
                    f"spec.export.inputs[{i}] ({spec.name}): dimension {axis} is {want} in the spec but "
                    f"{dim} in the exported program"
                )


def _user_inputs(program: Any) -> set[str]:
    from torch.export.graph_signature import InputKind

    return {
        spec.arg.name for spec in program.graph_signature.input_specs if spec.kind == InputKind.USER_INPUT
    }


def program_to_onnx(
    program: Any, args: tuple[Any, ...], path: Path, *, inputs: list[str], outputs: list[str], opset: int
) -> None:
    import torch

    try:
        with quiet_torch():
            torch.onnx.export(
                program,
                args,
                str(path),
                dynamo=True,
                input_names=inputs,
                output_names=outputs,
                opset_version=opset,
                verbose=False,
                external_data=True,
            )
    except Exception as err:
        raise ExportError(
            f"ONNX conversion of the exported program failed{_where(_user_site(err))}: "
            f"{type(err).__name__}: {first_line(err)}"
        ) from None
