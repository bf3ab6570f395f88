"""Dynamic batching: concurrent requests merged along the batch dimension, run once, split.

One collector task per engine forms batches; up to `instances` batches run at once (each
in the data plane's thread pool). The collector waits for a free instance first, then
takes the oldest request and adds every queued request of the same *shape key* (names,
dtypes and non-batch dimensions of all inputs) until the batch holds `max_batch` rows or
`max_delay` has passed since the oldest request arrived. While all instances are busy,
requests pile up in the queue, so under load batches grow by themselves. The delay is
only waited out while another batch is executing (more requests are then on their way);
on an idle server a lone request runs at once, so batching costs a single client no
latency (Triton's dynamic batcher always waits its queue delay).

Requests are validated before they are queued (the data plane calls the engine's
`check_inputs`), so one bad request can never poison a batch. Requests with another shape
key are held back for a later batch, never merged. Results are split back by row offsets
in submission order, so each caller gets exactly its own rows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

Feeds = Mapping[str, np.ndarray]
Outputs = dict[str, np.ndarray]
RunFn = Callable[[Feeds], Awaitable[Outputs]]
BatchObserver = Callable[[int], None]


def shape_key(feeds: Feeds) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    return tuple(sorted((n, a.dtype.str, tuple(a.shape[1:])) for n, a in feeds.items()))


def batch_rows(feeds: Feeds) -> int:
    return int(next(iter(feeds.values())).shape[0])


@dataclass
class _Pending:
    feeds: Feeds
    rows: int
    key: tuple[tuple[str, str, tuple[int, ...]], ...]
    future: asyncio.Future[Outputs]
    enqueued: float
    dispatched: float = field(default=0.0)


class BatcherClosed(RuntimeError):
    pass


class Batcher:
    def __init__(
        self,
        run: RunFn,
        *,
        max_batch: int,
        max_delay_s: float,
        instances: int = 1,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self._run = run
        self.max_batch = max(1, max_batch)
        self.max_delay_s = max(0.0, max_delay_s)
        self._slots = asyncio.Semaphore(max(1, instances))
        self._on_batch = on_batch or (lambda _rows: None)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._held: collections.deque[_Pending] = collections.deque()
        self._outstanding = 0
        self._running = 0  # batches executing now
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._collector: asyncio.Task[None] = asyncio.get_running_loop().create_task(self._collect())

    @property
    def pending(self) -> int:
        """Requests submitted and not answered yet (queued or running)."""
        return self._outstanding

    async def submit(self, feeds: Feeds) -> tuple[Outputs, float]:
        """Run `feeds` as part of a batch; returns (this request's outputs, queue seconds)."""
        if self._closing:
            raise BatcherClosed("the engine is being unloaded")
        loop = asyncio.get_running_loop()
        item = _Pending(feeds, batch_rows(feeds), shape_key(feeds), loop.create_future(), time.perf_counter())
        self._outstanding += 1
        self._idle.clear()
        if self._running == 0 and self._queue.empty() and not self._held and not self._slots.locked():
            # Idle engine: run now, skipping the collector's hop (no one to batch with).
            await self._slots.acquire()
            self._running += 1  # counted before the first await inside, so followers batch
            await self._execute([item], item.rows, counted=True)
        else:
            self._queue.put_nowait(item)
        try:
            out = await item.future
        finally:
            self._outstanding -= 1
            if self._outstanding == 0:
                self._idle.set()
        return out, item.dispatched - item.enqueued

    async def close(self) -> None:
        """Stop taking requests, finish every queued and running one, stop the collector."""
        self._closing = True
        await self._idle.wait()
        self._collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._collector

    async def _next(self) -> _Pending:
        if self._held:
            return self._held.popleft()
        return await self._queue.get()

    async def _collect(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                first = await self._next()
            except BaseException:
                self._slots.release()
                raise
            batch, rows = [first], first.rows
            rows = self._take_held(batch, rows, first.key)
            deadline = first.enqueued + self.max_delay_s
            while rows < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - time.perf_counter()
                    # Wait for more only while another batch runs: then more requests are
                    # on their way. An idle server runs a lone request at once.
                    if remaining <= 0 or self._closing or self._running == 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                if item.key != first.key:
                    self._held.append(item)
                    continue
                if rows + item.rows > self.max_batch:
                    self._held.appendleft(item)
                    break
                batch.append(item)
                rows += item.rows
            task = asyncio.get_running_loop().create_task(self._execute(batch, rows))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take_held(self, batch: list[_Pending], rows: int, key: object) -> int:
        keep: collections.deque[_Pending] = collections.deque()
        for item in self._held:
            if item.key == key and rows + item.rows <= self.max_batch:
                batch.append(item)
                rows += item.rows
            else:
                keep.append(item)
        self._held = keep
        return rows

    async def _execute(self, batch: list[_Pending], rows: int, *, counted: bool = False) -> None:
        if not counted:
            self._running += 1
        now = time.perf_counter()
        for item in batch:
            item.dispatched = now
        try:
            if len(batch) == 1:
                feeds = batch[0].feeds
            else:
                feeds = {n: np.concatenate([b.feeds[n] for b in batch]) for n in batch[0].feeds}
            self._on_batch(rows)
            out = await self._run(feeds)
            offset = 0
            for item in batch:
                part = {k: v[offset : offset + item.rows] for k, v in out.items()}
                offset += item.rows
                if not item.future.done():
                    item.future.set_result(part)
        except Exception as err:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(err)
        finally:
            self._running -= 1
            self._slots.release()
