"""`modelengine operator`: run the controller against a cluster (kubeconfig or in-cluster).

Flags map onto `OperatorConfig`; kopf is imported only when the command runs, so
`modelengine --help` stays light. Bad flags end as one line and exit 2.

High availability has one mechanism: a coordination.k8s.io Lease (`operator/leader.py`),
on whenever the pod knows its namespace ($POD_NAMESPACE, as the chart sets it). kopf itself
runs standalone (no peering objects, no peering RBAC).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import socket
from typing import Any

from modelengine.operator.config import (
    BUILDER_IMAGE_BACKEND_VERSIONS,
    DEFAULT_BUILDER_IMAGE,
    DEFAULT_RUNTIME_IMAGE,
    ConfigError,
    OperatorConfig,
    parse_backend_versions,
)

log = logging.getLogger("modelengine.operator")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "operator",
        help="run the Kubernetes operator (kopf) that builds engines for ModelEngines",
        description="Watch ModelEngines, Nodes and builder Jobs; build one engine per GPU kind; report status.",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], metavar="NS", help="watch NS (repeatable)"
    )
    p.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)"
    )
    p.add_argument("--builder-image", default=DEFAULT_BUILDER_IMAGE, help="image of builder Jobs")
    p.add_argument("--runtime-image", default=DEFAULT_RUNTIME_IMAGE, help="image of the runtime sidecar")
    p.add_argument("--max-builds", type=int, default=16, help="builder Jobs running at once, overall")
    p.add_argument(
        "--max-builds-per-kind", type=int, default=4, help="builder Jobs running at once per target kind"
    )
    p.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port (0: off)")
    p.add_argument("--liveness-port", type=int, default=8081, help="kopf liveness /healthz port (0: off)")
    p.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="only the holder of a coordination.k8s.io Lease reconciles (default: on when $POD_NAMESPACE is set)",
    )
    p.add_argument("--lease-name", default="modelengine-operator", help="name of the leader-election Lease")
    p.add_argument("--lease-namespace", help="namespace of the Lease (default: $POD_NAMESPACE)")
    p.add_argument(
        "--backend-version",
        action="append",
        default=[],
        metavar="NAME=VERSION",
        help="backend version of the builder image (part of build keys); default: the published builder "
        f"image's pins ({', '.join(f'{k}={v}' for k, v in BUILDER_IMAGE_BACKEND_VERSIONS.items())}), "
        "then $MODELENGINE_BACKEND_VERSIONS",
    )
    p.add_argument(
        "--runtime-backend-version",
        action="append",
        default=[],
        metavar="NAME=VERSION",
        help="backend version of the serving (runtime) image; engines it cannot load are not rolled "
        "out (default: the builder's)",
    )
    p.add_argument(
        "--job-deadline-seconds", type=int, default=3600, help="activeDeadlineSeconds of builder Jobs"
    )
    p.add_argument("--job-backoff-limit", type=int, default=1, help="backoffLimit of builder Jobs")
    p.add_argument(
        "--job-ttl-seconds", type=int, default=86400, help="ttlSecondsAfterFinished of builder Jobs"
    )
    p.add_argument("--builder-cpu", default="2", help="CPU request and limit of builder pods")
    p.add_argument("--builder-memory", default="8Gi", help="memory request and limit of builder pods")
    p.add_argument("--runtime-cpu", default="1", help="CPU request of serving pods (spec.serving)")
    p.add_argument("--runtime-memory", default="2Gi", help="memory request and limit of serving pods")
    p.add_argument(
        "--status-interval", type=float, default=5.0, help="seconds between progress-only status writes"
    )
    hook = p.add_argument_group("sidecar injection webhook (pods annotated modelengine.io/inject)")
    hook.add_argument("--webhook-port", type=int, default=9443, help="HTTPS port of the webhook (0: off)")
    hook.add_argument(
        "--webhook-namespace",
        help="namespace of its Service and Secret (default: $POD_NAMESPACE; neither: off)",
    )
    hook.add_argument("--webhook-service", default="modelengine-webhook", help="the webhook Service's name")
    hook.add_argument(
        "--webhook-secret", default="modelengine-webhook-tls", help="Secret holding the serving certificate"
    )
    hook.add_argument(
        "--webhook-configuration",
        default="modelengine",
        help="MutatingWebhookConfiguration whose caBundle the operator keeps in sync",
    )
    hook.add_argument(
        "--webhook-cert-manager",
        action="store_true",
        help="cert-manager writes the Secret and the caBundle; the operator only reads the Secret",
    )
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> OperatorConfig:
    if args.job_deadline_seconds < 60:
        raise ConfigError("--job-deadline-seconds must be >= 60")
    if args.job_backoff_limit < 0 or args.job_ttl_seconds < 0:
        raise ConfigError("--job-backoff-limit and --job-ttl-seconds must be >= 0")
    for flag in ("builder_cpu", "builder_memory", "runtime_cpu", "runtime_memory"):
        if not QUANTITY.fullmatch(getattr(args, flag)):
            raise ConfigError(
                f"--{flag.replace('_', '-')} {getattr(args, flag)!r}: not a Kubernetes quantity (e.g. 2, 500m, 8Gi)"
            )
    for flag in ("metrics_port", "liveness_port", "webhook_port"):
        if not 0 <= getattr(args, flag) <= 65535:
            raise ConfigError(f"--{flag.replace('_', '-')} must be a port number (0-65535)")
    return OperatorConfig(
        builder_image=args.builder_image,
        runtime_image=args.runtime_image,
        max_builds=args.max_builds,
        max_builds_per_kind=args.max_builds_per_kind,
        backend_versions={
            **BUILDER_IMAGE_BACKEND_VERSIONS,
            **parse_backend_versions(_env_versions() + args.backend_version),
        },
        runtime_backend_versions=parse_backend_versions(args.runtime_backend_version),
        job_deadline_seconds=args.job_deadline_seconds,
        job_backoff_limit=args.job_backoff_limit,
        job_ttl_seconds=args.job_ttl_seconds,
        builder_cpu=args.builder_cpu,
        builder_memory=args.builder_memory,
        runtime_cpu=args.runtime_cpu,
        runtime_memory=args.runtime_memory,
        status_interval_seconds=args.status_interval,
    )


QUANTITY = re.compile(r"([0-9]+(\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")


def _env_versions() -> list[str]:
    """Overrides from the environment: MODELENGINE_BACKEND_VERSIONS=a=1,b=2."""
    raw = os.environ.get("MODELENGINE_BACKEND_VERSIONS", "")
    return [p.strip() for p in raw.split(",") if p.strip()]


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from modelengine.operator.controller import Controller
    from modelengine.operator.kube import ApiError
    from modelengine.operator.kube_client import ClientApi
    from modelengine.operator.run import connection_info, operate
    from modelengine.operator.storage import StoreProvider

    try:
        api = ClientApi(kubeconfig=args.kubeconfig, user_agent=config.identity, workers=config.workers)
    except ApiError as err:
        raise ConfigError(str(err)) from None
    elector = None
    lease_namespace = args.lease_namespace or os.environ.get("POD_NAMESPACE")
    use_lease = args.leader_election if args.leader_election is not None else bool(lease_namespace)
    if use_lease:
        from modelengine.operator.leader import LeaseElector

        identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
        elector = LeaseElector(
            api=api, namespace=lease_namespace or "default", name=args.lease_name, identity=identity
        )
    controller = Controller(
        config=config, api=api, stores=StoreProvider(read_secret=api.read_secret), elector=elector
    )
    if args.metrics_port:
        controller.metrics.serve(args.metrics_port)
    liveness = f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None
    webhook = _webhook(args, controller=controller, api=api)
    print(
        f"modelengine operator: watching {', '.join(args.namespace) or 'all namespaces'}; "
        f"builder image {config.builder_image}; metrics :{args.metrics_port or '-'}",
        flush=True,
    )
    try:
        asyncio.run(
            operate(
                controller,
                login=connection_info(api),
                namespaces=args.namespace,
                liveness_endpoint=liveness,
                webhook=webhook,
            )
        )
    finally:
        api.close()
    return 0


def _webhook(args: argparse.Namespace, *, controller: Any, api: Any) -> Any:
    """The injection webhook for `operate`, or None when off (port 0, or no namespace known)."""
    namespace = args.webhook_namespace or os.environ.get("POD_NAMESPACE")
    if not args.webhook_port or not namespace:
        return None
    from modelengine.operator.webhook import WebhookServer, WebhookService
    from modelengine.operator.webhook_certs import ClientCertApi, WebhookCerts, service_dns_names

    certs = WebhookCerts(
        api=ClientCertApi(api.configuration),
        namespace=namespace,
        secret=args.webhook_secret,
        dns_names=service_dns_names(args.webhook_service, namespace),
        webhook_configuration=None if args.webhook_cert_manager else args.webhook_configuration,
        managed=not args.webhook_cert_manager,
    )
    server = WebhookServer(cache=controller.cache, config=controller.config, port=args.webhook_port)
    return WebhookService(server=server, certs=certs)
