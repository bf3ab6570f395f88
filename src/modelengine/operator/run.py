"""Run the operator in-process: the kopf registry, settings and the controller wired up.

`operate()` is what `modelengine operator` runs and what the tests and the benchmark run
in a thread against KMock; stop it with its `stop_flag`. All handlers are kopf *event*
handlers (stateless: no progress or diff-base annotations are written), feeding the
controller's caches (builder Jobs come from the controller's own informer, `job_watch`); the controller's workers start in kopf's startup handler so that
they share its context (event posting, settings).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any, cast

import kopf

from modelengine.api.models import API_GROUP, API_VERSION, PLURAL
from modelengine.logs import redact
from modelengine.operator.build_jobs import LABEL_MANAGED, MANAGED_BY
from modelengine.operator.controller import Controller, event_ref
from modelengine.operator.serving_objects import COMPONENT, LABEL_COMPONENT
from modelengine.operator.slim import EventsOnlyDiffBase, check_event_only
from modelengine.operator.webhook import WebhookService


def connection_info(api: Any) -> kopf.ConnectionInfo:
    """kopf's credentials from the same configuration the controller's client loaded."""
    cfg = api.configuration
    token = None
    auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
    if auth:
        token = auth.split(" ", 1)[1] if auth.lower().startswith("bearer ") else auth
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        username=cfg.username or None,
        password=cfg.password or None,
        token=token,
    )


def post_event(body: dict[str, Any], etype: str, reason: str, message: str) -> None:
    """Every Event the operator posts passes here, redacted (a message may quote an error)."""
    kopf.event(cast(kopf.Body, event_ref(body)), type=etype, reason=reason, message=redact(message))


def build_registry(controller: Controller, *, login: kopf.ConnectionInfo | None) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = logging.WARNING
        # kopf would post its own log lines about an object as Events, unredacted: only ours.
        settings.posting.loggers = False
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.networking.request_timeout = 60
        # Event handlers only: kopf's per-event change detection would be pure overhead.
        settings.persistence.diffbase_storage = EventsOnlyDiffBase()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await controller.stop()

    if login is not None:

        @kopf.on.login(registry=registry)
        def do_login(**_: Any) -> kopf.ConnectionInfo:
            return login

    @kopf.on.event(API_GROUP, API_VERSION, PLURAL, registry=registry)
    async def modelengine_event(type: str, body: kopf.Body, **_: Any) -> None:
        controller.start()  # first event: inside kopf's context, so events can be posted
        controller.observe_modelengine(type, dict(body))

    @kopf.on.event(
        "apps",
        "v1",
        "deployments",
        labels={LABEL_MANAGED: MANAGED_BY, LABEL_COMPONENT: COMPONENT},
        registry=registry,
    )
    async def deployment_event(type: str, body: kopf.Body, **_: Any) -> None:
        controller.start()
        controller.observe_deployment(type, dict(body))

    @kopf.on.event("", "v1", "nodes", registry=registry)
    async def node_event(type: str, body: kopf.Body, **_: Any) -> None:
        controller.start()  # first event: inside kopf's context, so events can be posted
        controller.observe_node(type, dict(body))

    check_event_only(registry)
    return registry


async def operate(
    controller: Controller,
    *,
    login: kopf.ConnectionInfo | None,
    namespaces: Collection[str] = (),
    peering: str | None = None,
    priority: int = 0,
    liveness_endpoint: str | None = None,
    stop_flag: Any = None,
    ready_flag: Any = None,
    webhook: WebhookService | None = None,
) -> None:
    """Run until `stop_flag` is set. No peering name → standalone (no peering writes).

    `webhook`: the sidecar-injection webhook, served beside kopf on this loop (every
    replica, leader or not) and stopped with it.
    """
    registry = build_registry(controller, login=login)
    controller.post_event = post_event
    controller.namespaces = list(namespaces)
    webhook_task = asyncio.create_task(webhook.run(), name="webhook") if webhook is not None else None
    try:
        await kopf.operator(
            registry=registry,
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            standalone=peering is None,
            peering_name=peering,
            priority=priority,
            liveness_endpoint=liveness_endpoint,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        if webhook_task is not None:
            webhook_task.cancel()
            await asyncio.gather(webhook_task, return_exceptions=True)
