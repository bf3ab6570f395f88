"""What accelerator this machine has: an NVIDIA GPU (via NVML) or none (CPU).

NVML (`nvidia-ml-py`, module `pynvml`) reports the product name and compute capability
without a CUDA context, so detection is cheap and works in a container with the driver
mounted. Any NVML failure (library missing, no driver, no device) means "CPU only", with
the reason kept for the log. Only device 0 is considered: in a Kubernetes pod the device
plugin exposes exactly the GPU the pod was given.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


def normalize_product(product: str) -> str:
    """Product names compare case- and separator-insensitively.

    NVML says "NVIDIA A100-SXM4-80GB", GPU Feature Discovery labels say
    "NVIDIA-A100-SXM4-80GB": both normalize to "nvidia-a100-sxm4-80gb".
    """
    out = "".join(c if c.isalnum() else "-" for c in product.strip().lower())
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-")


@dataclass(frozen=True)
class Accelerator:
    """One machine's accelerator; `compute_capability` None means CPU only."""

    product: str | None = None
    compute_capability: str | None = None
    note: str = ""  # why there is no GPU, when there is none

    @property
    def is_gpu(self) -> bool:
        return self.compute_capability is not None

    @property
    def cc_tuple(self) -> tuple[int, int] | None:
        if self.compute_capability is None:
            return None
        major, _, minor = self.compute_capability.partition(".")
        return int(major), int(minor or 0)

    def describe(self) -> str:
        if not self.is_gpu:
            return "no GPU (CPU only)" + (f": {self.note}" if self.note else "")
        return f"{self.product or 'unknown GPU'} (compute capability {self.compute_capability})"


CPU_ONLY = Accelerator()


def detect() -> Accelerator:
    """The local GPU through NVML, or CPU_ONLY with the reason."""
    try:
        import pynvml
    except ImportError:
        return Accelerator(note="nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except Exception as err:
        return Accelerator(note=f"NVML unavailable ({type(err).__name__})")
    try:
        if pynvml.nvmlDeviceGetCount() < 1:
            return Accelerator(note="NVML reports no GPU")
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        product = name.decode() if isinstance(name, bytes) else str(name)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        return Accelerator(product=product, compute_capability=f"{major}.{minor}")
    except Exception as err:
        return Accelerator(note=f"NVML query failed ({type(err).__name__})")
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            log.debug("nvmlShutdown failed", exc_info=True)
