"""The work queue: each key reconciled by one worker at a time, retried with backoff.

controller-runtime's queue semantics, small enough to read in one go:

- a key is queued at most once (`pending`); an event for a key being reconciled marks it
  `dirty`, and it is queued again when that reconcile ends, so no event is lost and no key
  runs twice at once;
- a reconcile that raises is retried after `retry * 2**(n-1)` seconds (capped), and the
  count resets on the first success; the worker itself never dies;
- `idle` is set whenever nothing is pending or active (tests and benchmarks wait on it);
- an optional gate (leader election) holds every worker while this replica is passive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from modelengine.logs import redact

log = logging.getLogger("modelengine.operator")

Key = tuple[str, str]  # (namespace, name)
Reconcile = Callable[[Key], Awaitable[None]]


class Gate(Protocol):
    leading: asyncio.Event


class Outcomes(Protocol):
    def reconciled(self, *, ok: bool) -> None: ...


class WorkQueue:
    def __init__(
        self,
        *,
        retry_seconds: float,
        max_retry_seconds: float,
        outcomes: Outcomes | None = None,
        gate: Gate | None = None,
    ) -> None:
        self._retry = retry_seconds
        self._max_retry = max_retry_seconds
        self._outcomes = outcomes
        self._gate = gate
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._pending: set[Key] = set()
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self._failures_in_row: dict[Key, int] = {}
        self.idle = asyncio.Event()
        self.idle.set()

    def add(self, key: Key) -> None:
        if key in self._pending:
            return
        if key in self._active:
            self._dirty.add(key)
            return
        self._pending.add(key)
        self.idle.clear()
        self._queue.put_nowait(key)

    def add_after(self, delay: float, key: Key) -> None:
        asyncio.get_running_loop().call_later(delay, self.add, key)

    async def work(self, reconcile: Reconcile) -> None:
        """One worker: take keys and reconcile them, forever."""
        while True:
            if self._gate is not None:
                await self._gate.leading.wait()  # a passive replica keeps warm caches, no writes
            key = await self._queue.get()
            self._pending.discard(key)
            self._active.add(key)
            try:
                await reconcile(key)
                self._failures_in_row.pop(key, None)
                if self._outcomes is not None:
                    self._outcomes.reconciled(ok=True)
            except Exception as err:  # retried with backoff; never kills the worker
                n = self._failures_in_row.get(key, 0) + 1
                self._failures_in_row[key] = n
                delay = min(self._retry * 2 ** (n - 1), self._max_retry)
                if self._outcomes is not None:
                    self._outcomes.reconciled(ok=False)
                log.warning("reconcile %s/%s failed (retry in %.0fs): %s", *key, delay, redact(str(err)))
                self.add_after(delay, key)
            finally:
                self._active.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.add(key)
                if not self._pending and not self._active:
                    self.idle.set()
