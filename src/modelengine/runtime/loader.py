"""Loading one selected engine: download, sha256 check, backend load, warm-up, acceptance.

Blocking work (downloads, hashing, deserialization, the warm-up runs) happens here, in
plain functions the data plane calls from a worker thread, never on the event loop.
Downloads go to a cache directory keyed by build key and checked against the sha256 the
release record names, so a restarted runtime reuses a verified file and a corrupted or
substituted one is refused (the runtime then stays not-ready and says so).

Backends are obtained through a factory (`get_backend` by default), so the GPU backends
other engineers write are used through the same `Backend`/`Engine` protocol; a backend
that cannot execute here raises `BackendUnavailable`, which becomes the not-ready reason.

Acceptance at load: after the warm-up and before the engine may be served, it must
reproduce the manifest's golden samples (`store.golden`: inputs at the profile's min, opt
and max shapes with their ONNX reference outputs, checked against the sha256 the manifest
names) within the recorded tolerance, whatever the backend. A mismatch is
`AcceptanceFailed`, one line naming the sample, the output, the max abs/rel error and the
tolerance; the engine is closed and never served. A manifest without golden samples (an
engine built before they existed) loads with a warning and `acceptance: skipped`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelengine.api.models import BackendName
from modelengine.api.versions import installed_version
from modelengine.backends.base import Backend, Engine
from modelengine.backends.golden import check_golden
from modelengine.errors import first_line
from modelengine.store.base import ObjectStore, StoreError
from modelengine.store.golden import GoldenSample, decode_golden, read_golden
from modelengine.store.layout import MANIFEST_NAME
from modelengine.store.manifest import EngineManifest, GoldenSamples, ReleaseEngine, TensorInfo
from modelengine.store.open import sha256_file
from modelengine.store.publish import verify_download
from modelengine.store.trust import confine, engine_object_key, parse_manifest

log = logging.getLogger(__name__)

BackendFactory = Callable[[str], Backend]


class EngineLoadError(RuntimeError):
    """The selected engine could not be made ready; one line, shown in /v2/health/ready."""


class AcceptanceFailed(EngineLoadError):
    """The engine loaded but did not reproduce its golden samples (deterministic: an engine
    that fails once fails again, so a reload does not retry it until the release changes)."""


@dataclass(frozen=True)
class EngineInfo:
    """What was loaded, for metadata, metrics and logs."""

    backend: str
    backend_version: str
    build_key: str
    target: str
    sha256: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]


@dataclass
class LoadedEngine:
    engine: Engine
    info: EngineInfo
    load_seconds: float
    acceptance: str = "not run"  # one line: "3 golden sample(s) passed: ..." or why it was skipped


NO_GOLDEN = "skipped: the manifest has no golden samples (engine built before acceptance at load)"


@dataclass(frozen=True)
class Golden:
    """The golden samples of one manifest, decoded; with the tolerance to hold them to."""

    samples: list[GoldenSample]
    ref: GoldenSamples


def accept(loaded: LoadedEngine, golden: Golden | None) -> LoadedEngine:
    """Run the golden samples on a loaded engine; `AcceptanceFailed` (engine closed) on a mismatch."""
    info = loaded.info
    if golden is None:
        log.warning("engine %s (%s): acceptance %s", info.target, info.build_key, NO_GOLDEN)
        loaded.acceptance = NO_GOLDEN
        return loaded
    try:
        result = check_golden(loaded.engine, golden.samples, rtol=golden.ref.rtol, atol=golden.ref.atol)
    except Exception as err:
        loaded.engine.close()
        raise AcceptanceFailed(
            f"{info.target}: engine failed acceptance: running the golden samples: {first_line(err)}"
        ) from None
    if result.failure is not None:
        loaded.engine.close()
        raise AcceptanceFailed(f"{info.target}: engine failed acceptance: {result.failure}")
    loaded.acceptance = result.summary()
    log.info("engine %s (%s): acceptance %s", info.target, info.build_key, loaded.acceptance)
    return loaded


def installed_versions() -> dict[str, str]:
    """Backend name -> installed version, for every backend whose library is installed."""
    out: dict[str, str] = {}
    for name in BackendName:
        version = installed_version(name)
        if version is not None:
            out[name.value] = version
    return out


def default_backend_factory(name: str) -> Backend:
    """The registry's backends; ONNX Runtime with serving options (see `ort_serving`)."""
    if name == BackendName.ONNXRUNTIME.value:
        from modelengine.runtime.ort_serving import ServingOnnxRuntimeBackend

        return ServingOnnxRuntimeBackend()
    from modelengine.backends.registry import get_backend

    return get_backend(name)


def fetch_verified(store: ObjectStore, key: str, sha256: str, dest: Path) -> Path:
    """The object at `key` as a local file whose sha256 is `sha256` (cached at `dest`)."""
    if dest.is_file() and sha256_file(dest) == sha256:
        return dest
    try:
        store.get_file(key, dest)
        verify_download(dest, sha256)
    except StoreError as err:
        dest.unlink(missing_ok=True)
        raise EngineLoadError(f"engine {store.url_for(key)}: {err}") from None
    return dest


def read_manifest_at(store: ObjectStore, key: str, *, build_key: str) -> EngineManifest:
    """The manifest at `key` of this store, parsed as untrusted."""
    try:
        return parse_manifest(
            store.get_bytes(key), where=f"manifest {store.url_for(key)}", build_key=build_key
        )
    except StoreError as err:
        raise EngineLoadError(first_line(err)) from None


def load_and_warm(
    path: Path,
    info: EngineInfo,
    *,
    backend_factory: BackendFactory,
) -> LoadedEngine:
    """Load `path` with its backend and run it once per input profile's opt shape."""
    start = time.perf_counter()
    try:
        backend = backend_factory(info.backend)
    except (ImportError, ValueError, KeyError) as err:
        raise EngineLoadError(f"backend {info.backend} is not available in this runtime: {err}") from None
    try:
        engine = backend.load(path, inputs=info.inputs, outputs=info.outputs)
    except Exception as err:
        raise EngineLoadError(
            f"cannot load {info.target} ({info.backend} {info.backend_version}): {first_line(err)}"
        ) from None
    try:
        warm_up(engine)
    except Exception as err:
        engine.close()
        raise EngineLoadError(f"warm-up of {info.target} failed: {first_line(err)}") from None
    return LoadedEngine(engine, info, time.perf_counter() - start)


def warm_up(engine: Engine) -> None:
    engine.infer(warmup_feeds(engine.inputs))


def warmup_feeds(inputs: list[TensorInfo]) -> Mapping[str, np.ndarray]:
    """Zeros at each input's opt shape (or its static shape, dynamic dims as 1)."""
    feeds: dict[str, np.ndarray] = {}
    for t in inputs:
        shape = t.opt or [d if d > 0 else 1 for d in t.shape]
        feeds[t.name] = np.zeros(shape, dtype=np.dtype(t.dtype))
    return feeds


def info_from_manifest(manifest: EngineManifest, target: str | None = None) -> EngineInfo:
    return EngineInfo(
        backend=manifest.backend,
        backend_version=manifest.backend_version,
        build_key=manifest.build_key,
        target=target or _target_name(manifest),
        sha256=manifest.sha256,
        inputs=manifest.inputs,
        outputs=manifest.outputs,
    )


def _target_name(manifest: EngineManifest) -> str:
    cc = manifest.target.compute_capability
    return f"{manifest.backend}-cc{cc}" if cc else f"{manifest.backend}-cpu"


def load_release_engine(
    store: ObjectStore,
    engine: ReleaseEngine,
    *,
    cache_dir: Path,
    backend_factory: BackendFactory,
) -> LoadedEngine:
    """Manifest + engine file of a release entry, verified, loaded and warmed up.

    The entry's URIs only name keys: both objects are read from `store`, the store the
    release record came from (`store.trust`), and the download lands inside `cache_dir`.
    """
    try:
        manifest_key = engine_object_key(engine.manifest_uri, engine.build_key, file_name=MANIFEST_NAME)
        key = engine_object_key(engine.uri, engine.build_key)
        dest = confine(cache_dir, engine.build_key, key.rsplit("/", 1)[-1])
    except StoreError as err:
        raise EngineLoadError(f"release entry {engine.target[:64]} is refused: {first_line(err)}") from None
    manifest = read_manifest_at(store, manifest_key, build_key=engine.build_key)
    if manifest.sha256 != engine.sha256:
        raise EngineLoadError(
            f"release names sha256 {engine.sha256[:12]}… for {engine.target}, "
            f"its manifest says {manifest.sha256[:12]}…"
        )
    golden = None
    if manifest.golden is not None:
        try:
            samples = read_golden(
                store, engine.build_key, manifest.golden, inputs=manifest.inputs, outputs=manifest.outputs
            )
        except StoreError as err:
            raise EngineLoadError(first_line(err)) from None
        golden = Golden(samples, manifest.golden)
    log.info("fetching engine %s", store.url_for(key))
    path = fetch_verified(store, key, engine.sha256, dest)
    loaded = load_and_warm(path, info_from_manifest(manifest, engine.target), backend_factory=backend_factory)
    return accept(loaded, golden)


def load_local_engine(
    manifest_path: Path,
    *,
    installed: Mapping[str, str],
    backend_factory: BackendFactory,
) -> LoadedEngine:
    """An engine on local disk described by its manifest.json (no release record)."""
    try:
        manifest = parse_manifest(manifest_path.read_bytes(), where=f"manifest {manifest_path}")
        path = confine(manifest_path.parent, manifest.engine_file)
    except OSError as err:
        raise EngineLoadError(f"cannot read {manifest_path}: {err.strerror}") from None
    except StoreError as err:
        raise EngineLoadError(first_line(err)) from None
    have = installed.get(manifest.backend)
    if have is None:
        raise EngineLoadError(f"{manifest.backend} is not installed in this runtime")
    if have != manifest.backend_version:
        raise EngineLoadError(
            f"engine built with {manifest.backend} {manifest.backend_version}, "
            f"this runtime has {manifest.backend} {have}"
        )
    try:
        verify_download(path, manifest.sha256)
    except (StoreError, OSError) as err:
        raise EngineLoadError(f"engine {path}: {err}") from None
    golden = None
    if manifest.golden is not None:
        try:
            golden_path = confine(manifest_path.parent, manifest.golden.file)
            samples = decode_golden(
                golden_path.read_bytes(),
                manifest.golden,
                inputs=manifest.inputs,
                outputs=manifest.outputs,
                where=f"golden samples {golden_path}",
            )
        except OSError as err:
            raise EngineLoadError(
                f"cannot read the golden samples of {manifest_path}: {err.strerror}"
            ) from None
        except StoreError as err:
            raise EngineLoadError(first_line(err)) from None
        golden = Golden(samples, manifest.golden)
    loaded = load_and_warm(path, info_from_manifest(manifest), backend_factory=backend_factory)
    return accept(loaded, golden)
