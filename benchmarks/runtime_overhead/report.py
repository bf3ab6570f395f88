"""The figures of one model, the table printed from them with the targets checked, and
the throughput plot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import CONCURRENCY, MAX_BATCH


@dataclass
class ModelResult:
    name: str
    direct: tuple[float, float] = (0.0, 0.0)
    floor: tuple[float, float] = (0.0, 0.0)  # bare aiohttp round trip, same bytes
    in_server_ms: float = 0.0  # mean time inside the server per request (its own metric)
    http_json: tuple[float, float] = (0.0, 0.0)
    http_binary: tuple[float, float] = (0.0, 0.0)
    ceiling: tuple[float, float] = (0.0, 0.0)  # in-process samples/s at batch 1, batch 64
    # server batch-size histogram over the 64-client phase with batching: le -> executions, sum, count
    batches_64: dict[str, float] = field(default_factory=dict)
    throughput: dict[str, dict[int, float]] = field(default_factory=dict)  # mode -> clients -> rps
    p99_ms: dict[str, dict[int, float]] = field(default_factory=dict)
    # server -> (format -> (req/s, p99 ms)) at 64 clients with dynamic batching; "triton" when run
    vs_triton: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    # gRPC, batching on: server ("modelengine", "triton") -> clients -> (req/s, p50 ms, p99 ms)
    grpc: dict[str, dict[int, tuple[float, float, float]]] = field(default_factory=dict)


def report(results: list[ModelResult]) -> list[str]:
    fails: list[str] = []
    http_results = [r for r in results if r.throughput]  # none with --grpc-only
    lines: list[str] = []
    if http_results:
        lines += [
            "",
            "Latency, batch 1 (ms)            p50      p99   overhead p50: raw (HTTP - direct), "
            "beyond the bare-HTTP floor (HTTP - direct - floor)",
        ]
    for r in http_results:
        lines.append(f"{r.name}")
        lines.append(f"  direct Engine.infer       {r.direct[0]:8.3f} {r.direct[1]:8.3f}")
        for label, (p50, p99) in (("HTTP binary", r.http_binary), ("HTTP JSON", r.http_json)):
            raw = p50 - r.direct[0]
            lines.append(
                f"  {label:<25} {p50:8.3f} {p99:8.3f}   raw {raw:+.3f}, beyond floor {raw - r.floor[0]:+.3f}"
            )
        lines.append(f"  {'bare aiohttp, no model':<25} {r.floor[0]:8.3f} {r.floor[1]:8.3f}   (the floor)")
        lines.append(f"  {'inside the server (mean)':<25} {r.in_server_ms:8.3f}")
        if r.http_binary[0] - r.direct[0] > 0.3:
            fails.append(f"{r.name}: binary HTTP overhead {r.http_binary[0] - r.direct[0]:.3f} ms > 0.3 ms")
    if http_results:
        lines += ["", "Throughput, batch-1 requests (req/s) and client p99 (ms)"]
        lines.append(
            f"{'model':<14} {'clients':>7} {'batching off':>13} {'p99':>8} {'batching on':>12} {'p99':>8} {'gain':>6}"
        )
    for r in http_results:
        for c in CONCURRENCY:
            off, on = r.throughput["off"][c], r.throughput["on"][c]
            lines.append(
                f"{r.name:<14} {c:>7} {off:>13.0f} {r.p99_ms['off'][c]:>8.2f} {on:>12.0f} "
                f"{r.p99_ms['on'][c]:>8.2f} {on / off:>5.2f}x"
            )
        if r.batches_64:
            lines.append(f"{'':<14} 64 clients, batching on: {batch_summary(r.batches_64)}")
        b1, b64 = r.ceiling
        lines.append(
            f"{'':<14} engine alone, in-process: {b1:.0f}/s at batch 1, {b64:.0f}/s at batch {MAX_BATCH} "
            f"(batching can gain at most {b64 / b1:.2f}x)"
        )
        gain = r.throughput["on"][64] / r.throughput["off"][64]
        if gain < 3:
            fails.append(f"{r.name}: batching gain at 64 clients {gain:.2f}x < 3x")
    if any(r.vs_triton for r in results):
        lines += ["", "Against Triton at 64 clients, dynamic batching both (req/s, client p99 ms)"]
        lines.append(
            f"{'model':<14} {'format':>7} {'modelengine':>12} {'p99':>8} {'triton':>8} {'p99':>8} {'ratio':>6}"
        )
        for r in results:
            if "triton" not in r.vs_triton:
                continue
            for fmt in ("binary", "json"):
                (me, me99), (tr, tr99) = r.vs_triton["modelengine"][fmt], r.vs_triton["triton"][fmt]
                lines.append(
                    f"{r.name:<14} {fmt:>7} {me:>12.0f} {me99:>8.2f} {tr:>8.0f} {tr99:>8.2f} {me / tr:>5.2f}x"
                )
                if me < 1.5 * tr or me99 >= tr99:
                    fails.append(
                        f"{r.name} {fmt}: {me / tr:.2f}x Triton's throughput, p99 {me99:.1f} vs {tr99:.1f} ms"
                    )
    lines += grpc_report(results, fails)
    lines.append("")
    met = "HTTP overhead <= 0.3 ms, batching >= 3x" if http_results else ""
    if any("triton" in r.grpc for r in results):
        met += ("; " if met else "") + "gRPC >= 1.5x Triton's throughput at 64 clients with a lower p99"
    lines += [f"TARGET MISSED: {f}" for f in fails] or [f"targets met: {met}"]
    return lines


def grpc_report(results: list[ModelResult], fails: list[str]) -> list[str]:
    """The gRPC table (modelengine, and Triton when run); the 64-client target into `fails`."""
    if not any(r.grpc for r in results):
        return []
    lines = [
        "",
        "KServe v2 gRPC, batch-1 requests, dynamic batching (req/s, client p50 / p99 ms)",
        f"{'model':<14} {'clients':>7} {'modelengine':>12} {'p50':>7} {'p99':>7} "
        f"{'triton':>8} {'p50':>7} {'p99':>7} {'ratio':>6}",
    ]
    for r in results:
        me, tr = r.grpc.get("modelengine", {}), r.grpc.get("triton", {})
        for c in CONCURRENCY:
            if c not in me:
                continue
            row = f"{r.name:<14} {c:>7} {me[c][0]:>12.0f} {me[c][1]:>7.2f} {me[c][2]:>7.2f}"
            if c in tr:
                row += f" {tr[c][0]:>8.0f} {tr[c][1]:>7.2f} {tr[c][2]:>7.2f} {me[c][0] / tr[c][0]:>5.2f}x"
            lines.append(row)
        if not r.throughput:  # --grpc-only: the HTTP table, which shows the ceiling, is not printed
            b1, b64 = r.ceiling
            lines.append(
                f"{'':<14} engine alone, in-process: {b1:.0f}/s at batch 1, {b64:.0f}/s at batch {MAX_BATCH}"
            )
        if 64 in me and 64 in tr and (me[64][0] < 1.5 * tr[64][0] or me[64][2] >= tr[64][2]):
            fails.append(
                f"{r.name} gRPC: {me[64][0] / tr[64][0]:.2f}x Triton's throughput at 64 clients, "
                f"p99 {me[64][2]:.1f} vs {tr[64][2]:.1f} ms"
            )
    return lines


def batch_summary(hist: dict[str, float]) -> str:
    """Executions, mean rows and the share of rows in batches of each size range."""
    count, rows = hist.get("count", 0.0), hist.get("sum", 0.0)
    if not count:
        return "no executions"
    bounds = sorted((float(k), v) for k, v in hist.items() if k not in ("sum", "count", "+Inf"))
    # rows per bucket are not exported; executions per bucket are: show their distribution
    parts, prev = [], 0.0
    for le, cum in bounds:
        if cum - prev > 0:
            parts.append(f"<={le:.0f}: {100 * (cum - prev) / count:.0f}%")
        prev = cum
    return f"{count:.0f} executions, {rows / count:.1f} rows each on average; executions by size {', '.join(parts)}"


def plot(results: list[ModelResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        xs = np.arange(len(CONCURRENCY))
        ax.bar(xs - 0.2, [r.throughput["off"][c] for c in CONCURRENCY], 0.4, label="batching off")
        ax.bar(xs + 0.2, [r.throughput["on"][c] for c in CONCURRENCY], 0.4, label="dynamic batching")
        ax.axhline(
            r.ceiling[1], color="gray", linestyle="--", linewidth=1, label=f"engine alone, batch {MAX_BATCH}"
        )
        ax.axhline(r.ceiling[0], color="gray", linestyle=":", linewidth=1, label="engine alone, batch 1")
        ax.set_xticks(xs, [str(c) for c in CONCURRENCY])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("requests / s (batch 1 each)")
        ax.set_title(f"{r.name}: modelengine serve, ONNX Runtime CPU")
        ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
