"""Concurrent build limits: overall and per GPU kind, with a first-come queue.

In-flight builds are counted from the Jobs the controller sees (its informer cache), not
from a counter it increments, so a restarted operator starts with the right numbers. A
target that cannot start now is Queued; the controller remembers who queued first and
retries them, in that order, whenever a build finishes.
"""

from __future__ import annotations

import itertools
from collections import Counter


def kind_of(target_name: str) -> str:
    """The GPU kind a build occupies: its target name (compute capability + product)."""
    return target_name


class BuildLimiter:
    def __init__(self, *, max_builds: int, max_per_kind: int) -> None:
        self.max_builds = max_builds
        self.max_per_kind = max_per_kind
        self._running: dict[str, str] = {}  # job name → kind
        self._per_kind: Counter[str] = Counter()  # kind → running builds (asked per planned target)
        self._waiting: dict[tuple[str, str], int] = {}  # (namespace, name) → ticket
        self._tickets = itertools.count()

    def set_running(self, job: str, kind: str) -> None:
        previous = self._running.get(job)
        if previous is not None:
            self._per_kind[previous] -= 1
        self._running[job] = kind
        self._per_kind[kind] += 1

    def set_finished(self, job: str) -> bool:
        kind = self._running.pop(job, None)
        if kind is None:
            return False
        self._per_kind[kind] -= 1
        return True

    def running(self) -> int:
        return len(self._running)

    def running_for(self, kind: str) -> int:
        return self._per_kind[kind]

    def can_start(self, kind: str) -> bool:
        return len(self._running) < self.max_builds and self.running_for(kind) < self.max_per_kind

    def wait(self, owner: tuple[str, str]) -> None:
        self._waiting.setdefault(owner, next(self._tickets))

    def done_waiting(self, owner: tuple[str, str]) -> None:
        self._waiting.pop(owner, None)

    def waiting(self) -> list[tuple[str, str]]:
        return sorted(self._waiting, key=lambda o: self._waiting[o])
