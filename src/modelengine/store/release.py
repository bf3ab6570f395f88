"""Building a release record from published manifests (shared by the CLI and the operator)."""

from __future__ import annotations

from modelengine.store.base import ObjectStore
from modelengine.store.layout import engine_key, manifest_key
from modelengine.store.manifest import EngineManifest, ReleaseEngine, ReleaseRecord
from modelengine.store.publish import utc_now


def make_release(
    store: ObjectStore,
    *,
    namespace: str,
    name: str,
    generation: int,
    engines: list[tuple[str, EngineManifest]],
) -> ReleaseRecord:
    """`engines`: (target name, manifest) per Ready target, in a stable order."""
    if not engines:
        raise ValueError("a release needs at least one engine")
    first = engines[0][1]
    return ReleaseRecord(
        namespace=namespace,
        name=name,
        generation=generation,
        model_digest=first.model_digest,
        inputs=first.inputs,
        outputs=first.outputs,
        engines=[
            ReleaseEngine(
                target=target,
                build_key=m.build_key,
                backend=m.backend,
                backend_version=m.backend_version,
                compute_capability=m.target.compute_capability,
                product=m.target.product,
                hardware_compatibility=m.hardware_compatibility,
                uri=store.url_for(engine_key(m.build_key, m.engine_file)),
                manifest_uri=store.url_for(manifest_key(m.build_key)),
                sha256=m.sha256,
                size=m.size,
            )
            for target, m in sorted(engines, key=lambda e: e[0])
        ],
        updated=utc_now(),
    )
