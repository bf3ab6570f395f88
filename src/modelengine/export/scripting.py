"""TorchScript scripting for the `script` and `mixed` methods, with errors a user can read.

`torch.jit.script` failures are pages long (every overload of the failing op, then the
call chain). `script_module` keeps the first cause, the user's file:line and code, and a
hint: un-annotated arguments are taken for `Tensor`, which is by far the most common
cause (`torch.cat(inputs, 1)` on an un-annotated tuple), so the hint names the
annotation to add.

`script_parts` implements `mixed`: the sub-modules the spec lists (dotted paths) are
scripted and put back into a copy of the model, which is then traced as a whole; the
scripted parts keep their control flow as ONNX `If` nodes.

`scripted_if_sites` finds the source line of each data-dependent `if` a scripted module
keeps (prim::If nodes whose condition is not a constant), for reports.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from modelengine.export.branches import Site
from modelengine.export.errors import ExportError

_FILE_LINE = re.compile(r'File "([^"]+)", line (\d+)')
_LIBRARY_PARTS = ("site-packages", "dist-packages", "/torch/")
_TYPE_HINT = (
    "hint: TorchScript takes un-annotated arguments for Tensor; annotate them, e.g. "
    "`inputs: Tuple[Tensor, Tensor]` or `List[Tensor]`"
)
_GENERIC_HINT = (
    "hint: make that code TorchScript-compatible, or export with method trace/mixed "
    "(script only the sub-modules with control flow) or dynamo"
)


def condense_script_error(err: BaseException, what: str) -> str:
    text = str(err)
    lines = [ln.rstrip() for ln in text.splitlines()]
    nonblank = [ln.strip() for ln in lines if ln.strip()]
    cause = nonblank[0] if nonblank else type(err).__name__
    specific = next((ln for ln in nonblank if ln.startswith("Expected a value of type")), None)
    if specific and specific not in cause:
        cause = f"{cause.rstrip('.')}: {specific}"
    where = ""
    match = _FILE_LINE.search(text)
    if match:
        file, line = match.group(1), int(match.group(2))
        code = ""
        for i, ln in enumerate(lines):
            if "<--- HERE" in ln and i > 0:
                code = lines[i - 1].strip()
                break
        where = f" at {Path(file).name}:{line}" + (f" `{code}`" if code else "")
    hint = _TYPE_HINT if ("inferred" in text or "annotated" in text) else _GENERIC_HINT
    return f"cannot script {what}: {cause}{where}; {hint}"


def script_module(module: Any, what: str = "the model") -> Any:
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        return module
    try:
        return torch.jit.script(module)
    except Exception as err:
        _forget_partial_classes()
        raise ExportError(condense_script_error(err, what)) from None


def _forget_partial_classes() -> None:
    # A failed compile leaves half-defined classes in TorchScript's registry; the next
    # attempt in this process would fail with "Can't redefine method" instead.
    try:
        import torch.jit._recursive as recursive
        from torch.jit._state import _clear_class_state

        _clear_class_state()
        recursive.concrete_type_store = recursive.ConcreteTypeStore()
    except Exception:  # private API: best effort
        pass


def script_parts(module: Any, paths: list[str]) -> Any:
    """A copy of `module` with the listed sub-modules scripted."""
    model = copy.deepcopy(module)
    names = [n for n, _ in model.named_modules() if n]
    for path in paths:
        parent_path, _, attr = path.rpartition(".")
        try:
            parent = model.get_submodule(parent_path) if parent_path else model
            target = getattr(parent, attr)
        except AttributeError:
            listed = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise ExportError(
                f"spec.export.scriptModules: the model has no sub-module `{path}` (it has: {listed})"
            ) from None
        import torch

        if not isinstance(target, torch.nn.Module):
            raise ExportError(
                f"spec.export.scriptModules: `{path}` is a {type(target).__name__}, not a module"
            )
        setattr(parent, attr, script_module(target, f"sub-module `{path}`"))
    return model


def scripted_if_sites(scripted: Any) -> list[Site]:
    """Source lines of data-dependent `if`s in a scripted module's graph (inlined)."""
    sites: list[Site] = []
    try:
        graph = scripted.inlined_graph
    except Exception:
        return sites
    for node in graph.findAllNodes("prim::If"):
        if node.input().node().kind() == "prim::Constant":
            continue
        match = _FILE_LINE.search(node.sourceRange())
        if match and not any(part in match.group(1) for part in _LIBRARY_PARTS):
            site = Site(match.group(1), int(match.group(2)))
            if site not in sites:
                sites.append(site)
    return sites


def script_modules_within(module: Any) -> list[tuple[str, Any]]:
    """TorchScript sub-modules of an eager module (dynamo cannot export through them)."""
    import torch

    return [
        (name or "<root>", sub)
        for name, sub in module.named_modules()
        if isinstance(sub, torch.jit.ScriptModule)
    ]
