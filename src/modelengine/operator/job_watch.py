"""The builder Jobs' informer: a paged LIST, then a WATCH from its resourceVersion.

Why our own and not kopf's: kopf lists a resource in one unpaged request, parses it whole
and watches every Job in the namespace (the label filter is applied client side). At a
restart with 1,500 builder Jobs that one list was the operator's memory peak (≈60 MB
parsed on top of the imports). Here:

- the LIST is paged (`kube_client.LIST_PAGE` items) and each item is slimmed as its page arrives
  (`informers.slim_job`), so memory holds one page of whole Jobs at a time;
- the WATCH carries the label selector, so the server sends only builder Jobs, and starts
  at the list's resourceVersion, so nothing is replayed and nothing falls in between;
- bookmarks keep the resume point fresh; when the stream ends (the server's timeout, a
  broken connection) it resumes from the last resourceVersion seen; `410 Gone` (the
  server's history no longer reaches back that far) means re-list, and every Job cached
  but absent from the new list is reported DELETED (its deletion happened unseen).

The stream is read by a daemon thread per watched namespace (the `kubernetes` client is
synchronous): it parses and slims each event and hands it to the event loop with
`call_soon_threadsafe`, so events reach `observe` in the server's order and on the loop,
as kopf's handlers did. Stopping closes the open response, which ends the thread's read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from modelengine.errors import first_line
from modelengine.operator.informers import key_of, slim_job
from modelengine.operator.kube import ApiError, Listing, WatchStream
from modelengine.operator.workqueue import Key

log = logging.getLogger("modelengine.operator")

Observe = Callable[[str, dict[str, Any]], None]

WATCH_TIMEOUT_SECONDS = 300  # a real server ends watches after 5-10 min anyway


class JobApi(Protocol):
    async def list_jobs(
        self,
        namespace: str | None,
        label_selector: str,
        *,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> Listing: ...

    def watch_jobs(
        self, namespace: str | None, label_selector: str, resource_version: str, timeout_seconds: int
    ) -> WatchStream:
        """Open a WATCH (blocking; called from the watch thread)."""
        ...


class Expired(Exception):
    """The server answered 410: the resume point is gone, re-list."""


class JobWatch:
    def __init__(
        self,
        *,
        api: JobApi,
        namespaces: list[str],
        label_selector: str,
        observe: Observe,
        known: Callable[[], dict[Key, dict[str, Any]]],
        retry_seconds: float = 2.0,
        timeout_seconds: int = WATCH_TIMEOUT_SECONDS,
        on_restart: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.api = api
        self.scopes: list[str | None] = list(namespaces) or [None]
        self.label_selector = label_selector
        self.observe = observe
        self.known = known
        self.retry_seconds = retry_seconds
        self.timeout_seconds = timeout_seconds
        self.on_restart = on_restart  # "expired" (410: re-listed) or "error" (reconnected)
        self.synced = asyncio.Event()  # every scope listed once
        self._stopped = threading.Event()
        self._open: set[WatchStream] = set()
        self._lock = threading.Lock()
        self._versions: dict[str | None, str] = {}  # scope → the last resourceVersion seen

    async def run(self) -> None:
        """List and watch every scope until cancelled."""
        listed = [asyncio.Event() for _ in self.scopes]
        tasks = [
            asyncio.create_task(self._run_scope(scope, done), name=f"job-watch-{scope or 'all'}")
            for scope, done in zip(self.scopes, listed, strict=True)
        ]
        try:
            await asyncio.gather(*(e.wait() for e in listed))
            self.synced.set()
            await asyncio.gather(*tasks)
        finally:
            self._stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _stop(self) -> None:
        self._stopped.set()
        with self._lock:
            streams = list(self._open)
        for stream in streams:
            stream.close()

    async def _run_scope(self, scope: str | None, listed: asyncio.Event) -> None:
        while True:
            try:
                if scope not in self._versions:
                    self._versions[scope] = await self._list(scope)
                    listed.set()
                await self._watch(scope, self._versions[scope])
            except Expired:
                log.info("Job watch of %s expired (410): listing again", scope or "all namespaces")
                self._versions.pop(scope, None)
                self.on_restart("expired")
            except ApiError as err:
                log.warning("Job watch of %s failed (retrying): %s", scope or "all namespaces", err)
                self.on_restart("error")
                await asyncio.sleep(self.retry_seconds)
            except Exception as err:  # a bug must not end the watch for good: say so, go on
                log.error("Job watch of %s broke (retrying): %s", scope or "all namespaces", first_line(err))
                self.on_restart("error")
                await asyncio.sleep(self.retry_seconds)

    async def _list(self, scope: str | None) -> str:
        listing = await self.api.list_jobs(scope, self.label_selector, transform=slim_job)
        seen: set[Key] = set()
        for job in listing.items:
            seen.add(key_of(job))
            self.observe("ADDED", job)
        for key, cached in list(self.known().items()):
            if (scope is None or key[0] == scope) and key not in seen:
                self.observe("DELETED", cached)  # deleted while unwatched: else cached forever
        return listing.resource_version

    async def _watch(self, scope: str | None, version: str) -> None:
        """Stream events until the server ends the watch (`_versions` keeps the resume point)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def finish(result: BaseException | None) -> None:
            if done.done():
                return
            if result is not None:
                done.set_exception(result)
            else:
                done.set_result(None)

        def pump() -> None:
            result: BaseException | None = None
            try:
                self._pump(scope, version, loop)
            except BaseException as err:  # handed to the loop, raised there
                result = err
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(finish, result)

        threading.Thread(target=pump, name=f"job-watch-{scope or 'all'}", daemon=True).start()
        await done

    def _pump(self, scope: str | None, version: str, loop: asyncio.AbstractEventLoop) -> None:
        """Runs in the watch thread: read, slim and hand over events in order."""
        stream = self.api.watch_jobs(scope, self.label_selector, version, self.timeout_seconds)
        with self._lock:
            self._open.add(stream)
        try:
            if self._stopped.is_set():
                return
            for event in stream.events():
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Expired()
                    raise ApiError(int(obj.get("code") or 0), str(obj.get("message") or "watch error"))
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    loop.call_soon_threadsafe(self.observe, kind, slim_job(obj))
                seen = (obj.get("metadata") or {}).get("resourceVersion")
                if seen:
                    # Set on the loop, after the event: a resume never skips an unhandled one.
                    loop.call_soon_threadsafe(self._versions.__setitem__, scope, str(seen))
        except (ApiError, Expired):
            raise
        except Exception as err:  # the connection broke mid-stream: resume from the last version
            if not self._stopped.is_set():
                raise ApiError(0, f"watch stream broke: {first_line(err)}") from None
        finally:
            with self._lock:
                self._open.discard(stream)
            stream.close()
