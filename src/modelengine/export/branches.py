"""Finding data-dependent branches and which way a run takes them.

Two tools, used by the exporter and the verifier alike:

- `capture_tracer_warnings` records the TracerWarnings a trace emits. Each one carries the
  user's file and line (torch attributes it to the frame that converted the tensor), so a
  "Converting a tensor to a Python boolean" warning names the frozen `if` exactly.
- `BranchRecorder` runs the eager model under `sys.settrace`, watching only the files that
  hold such lines, and notes the line executed right after the condition: inside the
  `if` body means "then", anything else "else". Running eager on the trace's own example
  tells which branch the trace kept; running it on a probe tells whether the probe takes
  the other one. The tracer is only installed for that one forward pass and chains to
  whatever tracer (a coverage tool) was active before.
"""

from __future__ import annotations

import ast
import contextlib
import linecache
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

BOOL_WARNING = "Converting a tensor to a Python boolean"


@dataclass(frozen=True)
class Site:
    file: str
    line: int

    @property
    def location(self) -> str:
        return f"{Path(self.file).name}:{self.line}"

    @property
    def code(self) -> str:
        return linecache.getline(self.file, self.line).strip()


@dataclass
class TracerNotes:
    """What a trace said: bool conversions (frozen branches) and other tracer warnings."""

    bool_sites: list[Site] = field(default_factory=list)
    other: list[str] = field(default_factory=list)


@contextlib.contextmanager
def capture_tracer_warnings() -> Iterator[TracerNotes]:
    from torch.jit._trace import TracerWarning

    notes = TracerNotes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", TracerWarning)
        yield notes
    for w in caught:
        if not issubclass(w.category, TracerWarning):
            continue
        # Keep the name as the frame had it: BranchRecorder matches frames by co_filename.
        site = Site(w.filename, w.lineno)
        if str(w.message).startswith(BOOL_WARNING):
            if site not in notes.bool_sites:
                notes.bool_sites.append(site)
        else:
            text = f"{site.location} `{site.code}`: {str(w.message).splitlines()[0]}"
            if text not in notes.other:
                notes.other.append(text)


@dataclass(frozen=True)
class _Span:
    test: tuple[int, int]  # lines of the condition
    body: tuple[int, int]  # lines of the `then` block


def _spans(file: str) -> list[_Span]:
    try:
        tree = ast.parse(Path(file).read_text())
    except (OSError, SyntaxError, ValueError):
        return []
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If | ast.While):
            end = node.test.end_lineno or node.test.lineno
            body_end = node.body[-1].end_lineno or node.body[-1].lineno
            spans.append(_Span((node.test.lineno, end), (node.body[0].lineno, body_end)))
    return spans


def statement_span(site: Site) -> _Span | None:
    """The innermost `if`/`while` whose condition covers the site's line."""
    best = None
    for span in _spans(site.file):
        lo, hi = span.test
        if lo <= site.line <= hi and (best is None or lo >= best.test[0]):
            best = span
    return best


class BranchRecorder:
    """Which branch each site takes during one eager call (first occurrence per site)."""

    def __init__(self, sites: list[Site]) -> None:
        self._spans = {s: statement_span(s) for s in sites}
        self._files = {s.file for s in sites}

    def run(self, fn: Callable[..., Any], *args: Any) -> tuple[Any, dict[Site, str]]:
        taken: dict[Site, str] = {}
        by_file: dict[str, list[tuple[Site, _Span]]] = {}
        for site, span in self._spans.items():
            if span is not None:
                by_file.setdefault(site.file, []).append((site, span))

        def local(frame: FrameType, event: str, arg: Any) -> Any:
            if event != "line":
                return local
            prev = _prev.get(frame)
            now = frame.f_lineno
            _prev[frame] = now
            if prev is None:
                return local
            for site, span in by_file.get(frame.f_code.co_filename, []):
                lo, hi = span.test
                if site in taken or not (lo <= prev <= hi) or lo <= now <= hi:
                    continue
                taken[site] = "then" if span.body[0] <= now <= span.body[1] else "else"
            return local

        _prev: dict[FrameType, int] = {}
        outer = sys.gettrace()

        def global_trace(frame: FrameType, event: str, arg: Any) -> Any:
            chained = outer(frame, event, arg) if outer is not None else None  # type: ignore[arg-type]
            if frame.f_code.co_filename in self._files:
                return local
            return chained

        sys.settrace(global_trace)
        try:
            result = fn(*args)
        finally:
            sys.settrace(outer)
            _prev.clear()
        for site, span in self._spans.items():
            if span is None:
                taken.setdefault(site, "unknown")
        return result, taken
