"""Publishing engines and release records: artifacts first, manifest last.

The manifest's presence is the only signal that an engine is complete, so every reader
(cache lookup, operator, runtime) checks for `manifest.json`, never for the engine file.
A build that dies mid-upload leaves at most an engine file with no manifest, which no
reader trusts and the next builder overwrites.

Two builders racing on one key: engine bytes are not reproducible, so each uploads its
engine under a name carrying its own sha256 (`engine.<sha12>.plan`); the manifest names
that file and its sha256. Whoever writes the manifest first wins; the loser sees the
manifest when it re-checks just before publishing and stops. On S3 a last-second race
can still have both write a manifest, but each manifest names its own, intact engine
file, so a reader always gets a consistent pair. The golden samples (`store.golden`) go up the same
way, between the engine and the manifest, named with their own sha256.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from modelengine.errors import utc_now
from modelengine.store.base import NotFound, ObjectStore, StoreError
from modelengine.store.golden import GOLDEN_BASE_NAME
from modelengine.store.layout import engine_key, manifest_key, release_key
from modelengine.store.manifest import EngineManifest, ReleaseRecord
from modelengine.store.open import sha256_file
from modelengine.store.trust import parse_manifest, parse_release

__all__ = [
    "digest_bytes",
    "dumps",
    "engine_file_name",
    "publish_engine",
    "read_manifest",
    "read_release",
    "utc_now",  # re-exported: older callers import it from here
    "verify_download",
    "write_release",
]


def read_manifest(store: ObjectStore, build_key: str) -> EngineManifest | None:
    """The published manifest of a build key, or None when nothing complete exists.

    Parsed as untrusted (`store.trust`): a tampered manifest is an `UntrustedDocument`.
    """
    key = manifest_key(build_key)
    try:
        raw = store.get_bytes(key)
    except NotFound:
        return None
    return parse_manifest(raw, where=store.url_for(key), build_key=build_key)


def engine_file_name(base: str, sha256: str) -> str:
    stem, dot, ext = base.rpartition(".")
    return f"{stem}.{sha256[:12]}.{ext}" if dot else f"{base}.{sha256[:12]}"


def publish_engine(
    store: ObjectStore,
    *,
    engine_path: Path,
    base_name: str,
    manifest: EngineManifest,
    golden_path: Path | None = None,
) -> tuple[EngineManifest, bool]:
    """Upload engine (and the golden samples `manifest.golden` describes, from `golden_path`),
    then the manifest. Returns (the manifest in force, whether ours won)."""
    existing = read_manifest(store, manifest.build_key)
    if existing is not None:
        return existing, False
    sha = sha256_file(engine_path)
    name = engine_file_name(base_name, sha)
    store.put_file(engine_key(manifest.build_key, name), engine_path)
    update: dict[str, object] = {"engine_file": name, "sha256": sha, "size": engine_path.stat().st_size}
    golden_name = None
    if manifest.golden is not None and golden_path is not None:
        golden_sha = sha256_file(golden_path)
        golden_name = engine_file_name(GOLDEN_BASE_NAME, golden_sha)
        store.put_file(engine_key(manifest.build_key, golden_name), golden_path)
        update["golden"] = manifest.golden.model_copy(
            update={"file": golden_name, "sha256": golden_sha, "size": golden_path.stat().st_size}
        )
    final = manifest.model_copy(update=update)
    # Re-check right before the manifest: a racing builder may have finished meanwhile.
    existing = read_manifest(store, manifest.build_key)
    if existing is not None:
        if existing.engine_file != name:
            store.delete(engine_key(manifest.build_key, name))
        if golden_name is not None and (existing.golden is None or existing.golden.file != golden_name):
            store.delete(engine_key(manifest.build_key, golden_name))
        return existing, False
    store.put_bytes(manifest_key(manifest.build_key), final.model_dump_json(indent=2).encode())
    return final, True


def verify_download(path: Path, expected_sha256: str) -> None:
    got = sha256_file(path)
    if got != expected_sha256:
        raise StoreError(
            f"sha256 mismatch for {path.name}: expected {expected_sha256[:12]}…, got {got[:12]}…"
        )


def write_release(store: ObjectStore, record: ReleaseRecord) -> str:
    key = release_key(record.namespace, record.name)
    store.put_bytes(key, record.model_dump_json(indent=2).encode())
    return store.url_for(key)


def read_release(store: ObjectStore, namespace: str, name: str) -> ReleaseRecord | None:
    key = release_key(namespace, name)
    try:
        raw = store.get_bytes(key)
    except NotFound:
        return None
    return parse_release(raw, where=f"release record {store.url_for(key)}")


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dumps(doc: object) -> bytes:
    return json.dumps(doc, indent=2, sort_keys=True).encode()
