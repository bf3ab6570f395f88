"""Run a Python module under tracemalloc and write where its peak memory was allocated.

    python benchmarks/trace_peak.py OUT.txt -m modelengine.cli operator ...

A sampling thread snapshots the traced allocations every second and keeps the largest;
the top allocation sites of that snapshot (by file and line, 6 frames deep) go to OUT.txt
once memory falls back from the peak, and again at exit. Slows the process down (2-3×): use it to find *what* holds memory, not *how much*.
"""

from __future__ import annotations

import atexit
import runpy
import sys
import threading
import time
import tracemalloc
from pathlib import Path


def main() -> None:
    out, flag, module, *args = sys.argv[1:]
    assert flag == "-m", "usage: trace_peak.py OUT.txt -m MODULE [ARGS...]"
    tracemalloc.start(6)
    best: list[tracemalloc.Snapshot | None] = [None]
    best_size = [0]

    def sample() -> None:
        written = 0
        while True:
            time.sleep(1.0)
            size = tracemalloc.get_traced_memory()[0]
            if size > best_size[0]:
                best_size[0], best[0] = size, tracemalloc.take_snapshot()
            if best_size[0] > written and size < 0.9 * best_size[0]:  # past a peak: write it now
                report()  # (a process killed at the end never runs atexit)
                written = best_size[0]

    def report() -> None:
        snapshot = best[0]
        if snapshot is None:
            return
        lines = [
            f"peak traced {best_size[0] / 1e6:.1f} MB (traced peak {tracemalloc.get_traced_memory()[1] / 1e6:.1f} MB)"
        ]
        for stat in snapshot.statistics("traceback")[:25]:
            lines.append(f"{stat.size / 1e6:8.1f} MB {stat.count:8d} blocks")
            lines.extend(f"      {frame.filename}:{frame.lineno}" for frame in stat.traceback)
        Path(out).write_text("\n".join(lines) + "\n")

    threading.Thread(target=sample, daemon=True, name="trace-peak").start()
    atexit.register(report)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
