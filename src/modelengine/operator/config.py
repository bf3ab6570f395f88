"""Operator configuration: what `modelengine operator` flags set, in one frozen object.

Backend versions matter because they are part of every build key: the operator has no
TensorRT in its image, so it must know which versions the builder image carries. The
published builder image pins them (builder-image/Dockerfile, pyproject's builder extra) and
`BUILDER_IMAGE_BACKEND_VERSIONS` repeats those pins, so `modelengine operator` knows them
with no configuration (a test keeps the three equal); `--backend-version` overrides them
for a custom builder image. A wrong version is caught by the builder, which refuses with
both versions named.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from modelengine.api.models import BackendName
from modelengine.api.versions import installed_version

DEFAULT_BUILDER_IMAGE = "ghcr.io/modelengine/builder:latest"
DEFAULT_RUNTIME_IMAGE = "ghcr.io/modelengine/runtime:latest"

# The exact backend versions installed in the published builder image (its pins).
BUILDER_IMAGE_BACKEND_VERSIONS: Mapping[str, str] = {
    "tensorrt-rtx": "1.7.1.116",
    "onnxruntime": "1.32.0",
}


class ConfigError(ValueError):
    exit_code = 2


@dataclass(frozen=True)
class OperatorConfig:
    builder_image: str = DEFAULT_BUILDER_IMAGE
    runtime_image: str = DEFAULT_RUNTIME_IMAGE
    builder_command: tuple[str, ...] = ("modelengine", "builder")
    max_builds: int = 16
    max_builds_per_kind: int = 4
    backend_versions: Mapping[str, str] = field(default_factory=dict)
    # The serving image's backends; unset ones default to the builder's (one release pins both).
    runtime_backend_versions: Mapping[str, str] = field(default_factory=dict)
    job_deadline_seconds: int = 3600
    job_backoff_limit: int = 1
    job_ttl_seconds: int = 86400
    builder_cpu: str = "2"
    builder_memory: str = "8Gi"
    runtime_cpu: str = "1"
    runtime_memory: str = "2Gi"
    identity: str = "modelengine-operator"
    workers: int = 8
    status_interval_seconds: float = 5.0  # at most one progress-only status write per interval
    retry_seconds: float = 2.0
    max_retry_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.max_builds < 1 or self.max_builds_per_kind < 1:
            raise ConfigError("--max-builds and --max-builds-per-kind must be >= 1")
        for name in [*self.backend_versions, *self.runtime_backend_versions]:
            try:
                BackendName(name)
            except ValueError:
                allowed = ", ".join(b.value for b in BackendName)
                raise ConfigError(f"--backend-version: unknown backend {name!r} (use {allowed})") from None

    def runtime_backend_version(self, backend: BackendName) -> str | None:
        """The version the serving image loads engines with (the version gate's other side)."""
        return self.runtime_backend_versions.get(backend.value) or self.backend_version(backend)

    def backend_version(self, backend: BackendName) -> str | None:
        """The version builds of this backend get; None when neither configured nor installed."""
        return self.backend_versions.get(backend.value) or installed_version(backend)


def parse_backend_versions(pairs: list[str]) -> dict[str, str]:
    """`NAME=VERSION` flags → mapping; one line naming the bad flag otherwise."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, version = pair.partition("=")
        if not sep or not name.strip() or not version.strip():
            raise ConfigError(f"--backend-version {pair!r}: expected NAME=VERSION, e.g. tensorrt-rtx=1.7.0")
        out[name.strip()] = version.strip()
    return out
