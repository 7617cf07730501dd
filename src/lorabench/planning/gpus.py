"""Peak throughput, memory and memory bandwidth of common GPUs (and of this project's 2-core CPU), for `lorabench
plan`.

Each entry: dense (no 2:4 sparsity) tensor-core peak for fp16/bf16 inputs with fp32 accumulation, the
non-tensor fp32 peak (PyTorch leaves TF32 matmuls off by default, so float32 training runs at this one),
memory as marketed (GB, taken as GiB: nvidia-smi shows ~49140 MiB for the A6000's 48 GB; a few cards
expose slightly less) and whether the GPU has bf16. Datasheets list tensor peaks "with sparsity" (2x);
the dense value is half of that. Memory bandwidth: the datasheet's peak (GB/s = 1e9 bytes/s), what a step that
streams every weight once cannot beat (the roofline: time >= bytes / bandwidth). The CPU entry is measured here
(benchmarks/cpu_roofline.py: torch's fp32 matmul on both cores, a numpy copy's read + write bytes per second).
"""
from __future__ import annotations

from dataclasses import dataclass

from lorabench.errors import LorabenchError


@dataclass(frozen=True)
class GPU:
    """One GPU model. half_tflops: dense fp16/bf16 tensor peak (TFLOP/s); fp32_tflops: fp32 peak
    (TFLOP/s, no tensor cores); memory_gb: memory per GPU (GB as marketed ~ GiB); bf16: bf16 support;
    bandwidth_gbs: memory bandwidth (GB/s, 1e9 bytes/s); cpu: a CPU (float32, no CUDA overhead)."""
    name: str
    half_tflops: float
    fp32_tflops: float
    memory_gb: float
    bf16: bool
    source: str
    bandwidth_gbs: float = 0.0
    cpu: bool = False


CPU_GFLOPS = 328.4         # measured: benchmarks/cpu_roofline.py (fp32 matmul 2048 x 2048, 2 cores; BENCHMARKS.md)
CPU_BANDWIDTH_GBS = 24.6   # measured: benchmarks/cpu_roofline.py (numpy copy of 512 MB, read + write)

GPUS: dict[str, GPU] = {g.name: g for g in [
    # NVIDIA RTX A6000 datasheet: FP16/BF16 tensor 309.7 TFLOPS with sparsity (154.8 dense), FP32 38.7, 48 GB.
    GPU("A6000", 154.8, 38.7, 48, True, "NVIDIA RTX A6000 datasheet", bandwidth_gbs=768),  # 768 GB/s GDDR6
    # NVIDIA A100 datasheet: BF16/FP16 tensor 312 TFLOPS dense (624 sparse), FP32 19.5, 40 or 80 GB.
    GPU("A100-40GB", 312.0, 19.5, 40, True, "NVIDIA A100 datasheet", bandwidth_gbs=1555),  # 1,555 GB/s HBM2
    GPU("A100-80GB", 312.0, 19.5, 80, True, "NVIDIA A100 datasheet", bandwidth_gbs=2039),  # 2,039 GB/s (SXM)
    # NVIDIA H100 datasheet (SXM): BF16/FP16 tensor 1,979 TFLOPS with sparsity (989.4 dense), FP32 67, 80 GB.
    GPU("H100-SXM", 989.4, 66.9, 80, True, "NVIDIA H100 datasheet (SXM5)", bandwidth_gbs=3350),  # 3.35 TB/s
    # NVIDIA H200 datasheet (SXM): same compute as the H100 SXM, 141 GB HBM3e.
    GPU("H200", 989.4, 66.9, 141, True, "NVIDIA H200 datasheet (SXM)", bandwidth_gbs=4800),  # 4.8 TB/s HBM3e
    # NVIDIA L4 datasheet: BF16/FP16 tensor 242 TFLOPS with sparsity (121 dense), FP32 30.3, 24 GB.
    GPU("L4", 121.0, 30.3, 24, True, "NVIDIA L4 datasheet", bandwidth_gbs=300),  # 300 GB/s
    # NVIDIA T4 datasheet: mixed-precision (FP16/FP32) 65 TFLOPS, FP32 8.1, 16 GB; Turing: no bf16.
    GPU("T4", 65.0, 8.1, 16, False, "NVIDIA T4 datasheet", bandwidth_gbs=320),  # 320+ GB/s
    # NVIDIA V100 datasheet (SXM2): tensor 125 TFLOPS, FP32 15.7, 32 GB (a 16 GB model exists); Volta: no bf16.
    GPU("V100", 125.0, 15.7, 32, False, "NVIDIA V100 datasheet (SXM2 32 GB)", bandwidth_gbs=900),  # 900 GB/s
    # NVIDIA Ada GPU architecture whitepaper (RTX 4090): FP16/BF16 tensor with FP32 accumulate 165.2 dense
    # (330.3 with FP16 accumulate), FP32 82.6, 24 GB.
    GPU("RTX-4090", 165.2, 82.6, 24, True, "NVIDIA Ada Lovelace architecture whitepaper",
        bandwidth_gbs=1008),  # 1,008 GB/s GDDR6X
    # AWS's A10G (g5 instances) has no NVIDIA datasheet. Its tensor peak is lower than the A10's (125 dense):
    # ~70 TFLOPS bf16 per Baseten's "NVIDIA A10 vs A10G" comparison; FP32 31.2; 24 GB. The least certain row.
    GPU("A10G", 70.0, 31.2, 24, True, "Baseten, NVIDIA A10 vs A10G (no NVIDIA datasheet for the A10G)",
        bandwidth_gbs=600),  # 600 GB/s (AWS g5 instance page)
    # This project's machines: 2 CPU cores, 24 GB; fp32 matmul peak and copy bandwidth measured by
    # benchmarks/cpu_roofline.py (BENCHMARKS.md, "CPU roofline").
    GPU("CPU-2core", CPU_GFLOPS / 1000, CPU_GFLOPS / 1000, 24, False, "measured here: benchmarks/cpu_roofline.py",
        bandwidth_gbs=CPU_BANDWIDTH_GBS, cpu=True),
]}


def gpu(name: str) -> GPU:
    """The table's entry for `name` (case-insensitive); `LorabenchError` listing the names otherwise."""
    for key, g in GPUS.items():
        if key.lower() == name.strip().lower():
            return g
    raise LorabenchError(f"unknown GPU {name!r} (known: {', '.join(GPUS)}; or give --tflops and --gpu-memory)")
