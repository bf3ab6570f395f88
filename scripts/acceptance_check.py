"""Run on any machine (the GPU host included): the runtime's loader on the engine this machine
selects from each store's release record — download, sha256, load, warm-up, acceptance.

    python scripts/acceptance_check.py --name combinednet STORE [STORE ...]

Needs only numpy, pydantic and the engine's backend (no aiohttp, gRPC or boto3), so it runs
under a GPU image's own python with pydantic carried as wheels. Prints, per store, the
selection and either the acceptance summary or the one-line refusal the pod would show.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from modelengine.api.models import BackendName  # noqa: E402
from modelengine.api.versions import installed_version  # noqa: E402
from modelengine.runtime import accelerator  # noqa: E402
from modelengine.runtime.loader import (  # noqa: E402
    EngineLoadError,
    default_backend_factory,
    load_release_engine,
)
from modelengine.runtime.selection import select_engine  # noqa: E402
from modelengine.store.open import open_store  # noqa: E402
from modelengine.store.publish import read_release  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("stores", nargs="+", type=Path, help="store folders (file://)")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--name", default="combinednet")
    args = parser.parse_args()
    accel = accelerator.detect()
    installed = {b.value: v for b in BackendName if (v := installed_version(b))}
    print("accelerator:", accel.describe(), "| backends:", installed, "| python", sys.version.split()[0])
    refused = 0
    for path in args.stores:
        store = open_store(path.resolve().as_uri())
        record = read_release(store, args.namespace, args.name)
        if record is None:
            print(f"[{path}] no release record {args.namespace}/{args.name}")
            return 2
        selection = select_engine(accel, record, installed)
        print(f"[{path}] selected: {selection.reason}")
        if selection.engine is None:
            refused += 1
            continue
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as cache:
            try:
                loaded = load_release_engine(
                    store, selection.engine, cache_dir=Path(cache), backend_factory=default_backend_factory
                )
            except EngineLoadError as err:
                refused += 1
                print(f"[{path}] NOT ready after {time.perf_counter() - start:.2f}s: {err}")
                continue
            loaded.engine.close()
        print(f"[{path}] ready after {time.perf_counter() - start:.2f}s: acceptance {loaded.acceptance}")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
