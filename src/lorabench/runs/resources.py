"""Measuring what a run costs: peak memory (CPU RSS or per-GPU allocated) and versions.
"""
from __future__ import annotations

import platform
import resource
from pathlib import Path


def _read_hwm_kb() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (Linux: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory inside a `with` block.

    CPU: the process's peak resident set size, reset at entry where Linux allows it, so
    that several runs in one process each get their own peak (else the process-lifetime
    peak, flagged by `scope: process`). CUDA: max allocated bytes per GPU.
    """

    def __enter__(self):
        import torch
        self.cuda = torch.cuda.is_available()
        if self.cuda:
            for i in range(torch.cuda.device_count()):
                torch.cuda.reset_peak_memory_stats(i)
        self.scope = "run" if _reset_hwm() else "process"
        self.result = None
        return self

    def now_mb(self) -> float:
        """The peak so far (MB), inside the block."""
        import torch
        if self.cuda:
            return round(max(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())) / 2**20, 1)
        return round((_read_hwm_kb() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024, 1)

    def __exit__(self, *exc):
        import torch
        if self.cuda:
            per_gpu = [round(torch.cuda.max_memory_allocated(i) / 2**20, 1) for i in range(torch.cuda.device_count())]
            self.result = {"kind": "cuda_max_allocated", "per_device_mb": per_gpu, "mb": max(per_gpu)}
        else:
            kb = _read_hwm_kb() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.result = {"kind": "cpu_peak_rss", "mb": round(kb / 1024, 1), "scope": self.scope}
        return False


def versions() -> dict[str, str]:
    import importlib.metadata as md
    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "datasets", "scikit-learn", "lorabench"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def machine() -> dict:
    import os

    import torch
    out = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return out
