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
- A conditional expression (`x if x.mean() > 0 else -x`) usually holds its condition and
  both branches on one line, and so does a one-line `if c: x = -x`: the line tells
  nothing there. For those the frame also gets opcode events, and the branch is the one
  whose source columns hold the first instruction that runs inside either branch
  (`co_positions`, Python 3.11+); a one-line `if` without `else` went the other way when,
  after its condition, an instruction outside the whole statement runs.
- `capture_tracer_warnings(watch_branches=True)` does the same during the trace itself,
  saving the extra eager pass: when a bool-conversion warning arrives (from inside the
  conversion, before the user's frame goes on) it arms a line tracer on just that frame,
  the way a debugger's `set_trace` does, and notes the next line the frame runs. A trace
  computes the same values as an eager run on the same example, so it takes the same
  branch. Used only when no other tracer is active (a debugger or coverage tool would be
  displaced); the caller then falls back to `BranchRecorder`.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import linecache
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

from modelengine.errors import first_line

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
    """What a trace said: bool conversions (frozen branches) and other tracer warnings;
    `taken` (when the branches were watched during the trace) says which way each went."""

    bool_sites: list[Site] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    taken: dict[Site, str] | None = None


@contextlib.contextmanager
def capture_tracer_warnings(*, watch_branches: bool = False) -> Iterator[TracerNotes]:
    from torch.jit._trace import TracerWarning

    notes = TracerNotes()
    caught: list[warnings.WarningMessage] = []
    watcher = _BranchWatcher() if watch_branches and sys.gettrace() is None else None

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        caught.append(warnings.WarningMessage(message, category, filename, lineno, file, line))
        if (
            watcher is not None
            and issubclass(category, TracerWarning)
            and str(message).startswith(BOOL_WARNING)
        ):
            watcher.arm(Site(filename, lineno))

    with warnings.catch_warnings():  # restores showwarning on the way out
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", TracerWarning)
        warnings.showwarning = show
        try:
            yield notes
        finally:
            if watcher is not None:
                watcher.stop()
    if watcher is not None:
        notes.taken = watcher.taken
    for w in caught:
        if not issubclass(w.category, TracerWarning):
            continue
        # Keep the name as the frame had it: BranchRecorder matches frames by co_filename.
        site = Site(w.filename, w.lineno)
        if str(w.message).startswith(BOOL_WARNING):
            if site not in notes.bool_sites:
                notes.bool_sites.append(site)
        else:
            text = f"{site.location} `{site.code}`: {first_line(str(w.message))}"
            if text not in notes.other:
                notes.other.append(text)


# (line, column, end line, end column), as `ast` nodes and `code.co_positions()` give them
Position = tuple[int, int, int, int]


@dataclass(frozen=True)
class _Span:
    test: tuple[int, int]  # lines of the condition
    body: tuple[int, int]  # lines of the `then` block
    # Where the branches are when one shares a line with the condition (a conditional
    # expression, a one-line `if`): which one runs is told by the running instruction's
    # position. `else` is None for an `if` without one; `whole` is the statement then.
    values: tuple[Position, Position | None] | None = None
    test_at: Position | None = None
    whole: Position | None = None

    def value_taken(self, frame: FrameType, *, after_test: bool = True) -> str | None:
        """`then`/`else` when the frame's current instruction tells; `after_test` says the
        condition has run (else an instruction before the statement proves nothing)."""
        assert self.values is not None
        at = _instruction_position(frame.f_code, frame.f_lasti)
        if at is None:
            return None
        then, other = self.values
        if _within(at, then):
            return "then"
        if other is not None:
            return "else" if _within(at, other) else None
        if after_test and self.whole is not None and not _within(at, self.whole):
            return "else"
        return None

    def is_test(self, frame: FrameType) -> bool:
        at = _instruction_position(frame.f_code, frame.f_lasti)
        return at is not None and self.test_at is not None and _within(at, self.test_at)


def _position(node: ast.expr | ast.stmt) -> Position:
    return (node.lineno, node.col_offset, node.end_lineno or node.lineno, node.end_col_offset or 0)


def _block(statements: list[ast.stmt]) -> Position:
    first, last = _position(statements[0]), _position(statements[-1])
    return (first[0], first[1], last[2], last[3])


def _within(inner: Position, outer: Position) -> bool:
    return inner[:2] >= outer[:2] and (inner[2], inner[3]) <= (outer[2], outer[3])


@functools.lru_cache(maxsize=256)
def _positions(code: CodeType) -> tuple[tuple[int | None, int | None, int | None, int | None], ...]:
    return tuple(code.co_positions())


def _instruction_position(code: CodeType, offset: int) -> Position | None:
    positions = _positions(code)
    index = offset // 2  # one entry per 2-byte code unit
    if not 0 <= index < len(positions):
        return None
    line, end_line, col, end_col = positions[index]
    if line is None or end_line is None or col is None or end_col is None:
        return None
    return (line, col, end_line, end_col)


def _spans(file: str) -> tuple[_Span, ...]:
    try:
        stat = Path(file).stat()
    except OSError:
        return ()
    return _parsed_spans(file, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _parsed_spans(file: str, mtime_ns: int, size: int) -> tuple[_Span, ...]:
    """`if`/`while`/conditional-expression spans of a source file, parsed once per version
    of the file (every export and verification probe asks again)."""
    try:
        tree = ast.parse(Path(file).read_text())
    except (OSError, SyntaxError, ValueError):
        return ()
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If | ast.While):
            end = node.test.end_lineno or node.test.lineno
            body_end = node.body[-1].end_lineno or node.body[-1].lineno
            if node.body[0].lineno <= end:  # `if c: x = -x`: the body shares the condition's line
                orelse = _block(node.orelse) if node.orelse else None
                spans.append(
                    _Span(
                        (node.test.lineno, end),
                        (node.body[0].lineno, body_end),
                        (_block(node.body), orelse),
                        _position(node.test),
                        _position(node),
                    )
                )
            else:
                spans.append(_Span((node.test.lineno, end), (node.body[0].lineno, body_end)))
        elif isinstance(node, ast.IfExp):
            end = node.test.end_lineno or node.test.lineno
            body = _position(node.body)
            values = (body, _position(node.orelse))
            spans.append(_Span((node.test.lineno, end), (body[0], body[2]), values, _position(node.test)))
    return tuple(spans)


def statement_span(site: Site) -> _Span | None:
    """The innermost `if`/`while`/conditional expression whose condition covers the site's line."""
    best = None
    for span in _spans(site.file):
        lo, hi = span.test
        if lo <= site.line <= hi and (best is None or lo >= best.test[0]):
            best = span
    return best


class _BranchWatcher:
    """Which branch each bool-conversion site takes, noted in the frame that converts."""

    def __init__(self) -> None:
        self.taken: dict[Site, str] = {}
        self._spans: dict[Site, _Span | None] = {}
        self._pending: dict[FrameType, list[tuple[Site, _Span]]] = {}
        self._installed = False

    def arm(self, site: Site) -> None:
        if site in self.taken:
            return
        if site not in self._spans:
            self._spans[site] = statement_span(site)
        span = self._spans[site]
        if span is None:
            self.taken[site] = "unknown"
            return
        frame = sys._getframe(1)
        while frame is not None and not (
            frame.f_code.co_filename == site.file and frame.f_lineno == site.line
        ):
            frame = frame.f_back  # type: ignore[assignment]
        if frame is None:
            return
        pending = self._pending.setdefault(frame, [])
        if all(s != site for s, _ in pending):
            pending.append((site, span))
        frame.f_trace_lines = True
        if span.values is not None:
            frame.f_trace_opcodes = True
        frame.f_trace = self._local
        if not self._installed:
            # Line events reach a frame's f_trace only while some tracer is installed; this
            # one leaves every other frame alone.
            sys.settrace(self._no_calls)
            self._installed = True

    def _no_calls(self, frame: FrameType, event: str, arg: Any) -> None:
        return None

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        pending = self._pending.get(frame)
        if not pending or event == "return":
            self._pending.pop(frame, None)
            return None
        if event not in ("line", "opcode"):
            return self._local
        now = frame.f_lineno
        waiting = []
        for site, span in pending:
            lo, hi = span.test
            if site in self.taken:
                continue
            if span.values is not None:
                value = span.value_taken(frame) if event == "opcode" else None
                if value is None:
                    waiting.append((site, span))
                else:
                    self.taken[site] = value
            elif event != "line" or lo <= now <= hi:
                waiting.append((site, span))
            else:
                self.taken[site] = "then" if span.body[0] <= now <= span.body[1] else "else"
        if waiting:
            self._pending[frame] = waiting
            return self._local
        del self._pending[frame]
        frame.f_trace_opcodes = False
        return None

    def stop(self) -> None:
        if self._installed:
            sys.settrace(None)
            self._installed = False
        for frame in self._pending:
            frame.f_trace = None
            frame.f_trace_opcodes = False
        self._pending.clear()


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
        by_opcode = {
            file for file, spans in by_file.items() if any(span.values is not None for _, span in spans)
        }

        def local(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                for site, span in by_file.get(frame.f_code.co_filename, []):
                    if span.values is None or site in taken:
                        continue
                    if span.is_test(frame):
                        tested.add((frame, site))
                        continue
                    value = span.value_taken(frame, after_test=(frame, site) in tested)
                    if value is not None:
                        taken[site] = value
                return local
            if event != "line":
                return local
            prev = _prev.get(frame)
            now = frame.f_lineno
            _prev[frame] = now
            if prev is None:
                return local
            for site, span in by_file.get(frame.f_code.co_filename, []):
                lo, hi = span.test
                if span.values is not None or site in taken or not (lo <= prev <= hi) or lo <= now <= hi:
                    continue
                taken[site] = "then" if span.body[0] <= now <= span.body[1] else "else"
            return local

        _prev: dict[FrameType, int] = {}
        tested: set[tuple[FrameType, Site]] = set()
        outer = sys.gettrace()

        def global_trace(frame: FrameType, event: str, arg: Any) -> Any:
            chained = outer(frame, event, arg) if outer is not None else None  # type: ignore[arg-type]
            if frame.f_code.co_filename in self._files:
                if frame.f_code.co_filename in by_opcode:
                    frame.f_trace_opcodes = True
                return local
            return chained

        sys.settrace(global_trace)
        try:
            result = fn(*args)
        finally:
            sys.settrace(outer)
            _prev.clear()
            tested.clear()
        for site, span in self._spans.items():
            if span is None:
                taken.setdefault(site, "unknown")
        return result, taken
