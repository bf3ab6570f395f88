"""What the operator need not compute or keep per watch event.

kopf builds an "essence" of every object on every event (a deep copy of the body minus
status and system metadata) and diffs it against the last handled one, so that
`on.create`/`on.update` handlers learn what changed. The operator registers only
`on.event` handlers, which never see that diff, yet kopf pays for it on each event: about
0.7 ms per builder Job event as a v1.36 server sends it (pod template, managedFields),
a sixth of the operator's CPU at 1,500 Jobs (docs/operator.md, scale benchmark).

`EventsOnlyDiffBase` is a diff-base storage that keeps nothing: its essence is empty and
there is no stored one, so kopf's change detection costs nothing. Set it in the startup
handler (`settings.persistence.diffbase_storage = EventsOnlyDiffBase()`); it is only
correct while no changing handler (`on.create/update/delete/resume/field`) is
registered, which `check_event_only` asserts on a registry.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kopf


class EventsOnlyDiffBase(kopf.DiffBaseStorage):
    """No essence built, fetched or stored: for operators with event handlers only."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def check_event_only(registry: kopf.OperatorRegistry) -> None:
    """Refuse a registry with changing handlers: they need the diff base this storage drops."""
    changing = registry._changing.get_all_handlers()  # kopf has no public accessor for this
    if changing:
        names = ", ".join(str(h.id) for h in changing)
        raise ValueError(f"EventsOnlyDiffBase needs event handlers only; changing handlers: {names}")
