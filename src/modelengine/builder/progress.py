"""Progress reporting for long work: stage, elapsed time, and what was skipped as cached.

The pipeline reports through the small `Reporter` protocol so the CLI can print lines for
a person, the builder Job can print plain lines for `kubectl logs`, and tests can record
what happened. Timings per stage are collected here too; the benchmark reads them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, TextIO


class Reporter(Protocol):
    def stage(self, name: str, detail: str = "") -> None: ...

    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def done(self, name: str, seconds: float, *, cached: bool = False, detail: str = "") -> None: ...


@dataclass
class StageTiming:
    name: str
    seconds: float
    cached: bool = False
    detail: str = ""


@dataclass
class Timings:
    stages: list[StageTiming] = field(default_factory=list)

    def total(self, name: str) -> float:
        return sum(s.seconds for s in self.stages if s.name == name)

    @contextmanager
    def measure(self, name: str, reporter: Reporter, detail: str = "") -> Iterator[StageTiming]:
        reporter.stage(name, detail)
        entry = StageTiming(name, 0.0, detail=detail)
        start = time.perf_counter()
        try:
            yield entry
        finally:
            entry.seconds = time.perf_counter() - start
            self.stages.append(entry)
        reporter.done(name, entry.seconds, cached=entry.cached, detail=entry.detail)


class StreamReporter:
    """Human-readable lines: `[  1.2s] export     traced with torch 2.13 ...`."""

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self._stream = stream or sys.stderr
        self._start = time.perf_counter()
        self._quiet = quiet

    def _line(self, tag: str, message: str) -> None:
        if self._quiet and tag not in ("warning",):
            return
        elapsed = time.perf_counter() - self._start
        print(f"[{elapsed:6.1f}s] {tag:<9} {message}", file=self._stream, flush=True)

    def stage(self, name: str, detail: str = "") -> None:
        self._line(name, detail or "...")

    def info(self, message: str) -> None:
        self._line("", message)

    def warn(self, message: str) -> None:
        self._line("warning", message)

    def done(self, name: str, seconds: float, *, cached: bool = False, detail: str = "") -> None:
        what = "cached, skipped" if cached else f"done in {seconds:.2f}s"
        self._line(name, f"{what}{' — ' + detail if detail else ''}")


class RecordingReporter:
    """Keeps every event; for tests and the benchmark."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def stage(self, name: str, detail: str = "") -> None:
        self.events.append(("stage", f"{name}: {detail}"))

    def info(self, message: str) -> None:
        self.events.append(("info", message))

    def warn(self, message: str) -> None:
        self.events.append(("warn", message))

    def done(self, name: str, seconds: float, *, cached: bool = False, detail: str = "") -> None:
        self.events.append(("done", f"{name}: {'cached' if cached else 'built'} {detail}"))

    def warnings(self) -> list[str]:
        return [m for kind, m in self.events if kind == "warn"]
