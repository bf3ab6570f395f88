"""GPU kinds in the cluster, from NVIDIA GPU Feature Discovery's Node labels.

A Node is a GPU node when GFD labelled it `nvidia.com/gpu.present=true` (or at least gave
it a product and compute capability). The inventory keeps one GpuKind per Node name and
tells its caller when the *set* of kinds changes, which is what re-plans `auto` targets:
a new L4 pool adds a kind, a tenth L4 node does not.
"""

from __future__ import annotations

from collections.abc import Mapping

from modelengine.api.targets import GpuKind

PRODUCT = "nvidia.com/gpu.product"
MAJOR = "nvidia.com/gpu.compute.major"
MINOR = "nvidia.com/gpu.compute.minor"
FAMILY = "nvidia.com/gpu.family"
PRESENT = "nvidia.com/gpu.present"


def gpu_kind(labels: Mapping[str, str]) -> GpuKind | None:
    """The GPU kind a Node's labels describe, or None for a CPU node / incomplete labels."""
    if labels.get(PRESENT, "true").lower() != "true":
        return None
    product, major, minor = labels.get(PRODUCT), labels.get(MAJOR), labels.get(MINOR)
    if not product or not (major or "").isdigit() or not (minor or "").isdigit():
        return None
    return GpuKind(product=product, compute_capability=f"{major}.{minor}", family=labels.get(FAMILY))


class NodeInventory:
    """Node name → GPU kind; `update`/`remove` return True when the set of kinds changed."""

    def __init__(self) -> None:
        self._nodes: dict[str, GpuKind] = {}

    def update(self, name: str, labels: Mapping[str, str]) -> bool:
        before = self.kinds()
        kind = gpu_kind(labels)
        if kind is None:
            self._nodes.pop(name, None)
        else:
            self._nodes[name] = kind
        return self.kinds() != before

    def remove(self, name: str) -> bool:
        before = self.kinds()
        self._nodes.pop(name, None)
        return self.kinds() != before

    def kinds(self) -> list[GpuKind]:
        return sorted(set(self._nodes.values()))

    def products(self) -> dict[str, str]:
        return {k.product: k.compute_capability for k in self._nodes.values()}
