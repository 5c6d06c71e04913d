"""Which floating-point type is fast on this machine.

bf16 is fast only where the hardware does bf16 arithmetic: on a CPU, AVX512-BF16 or AMX.
Elsewhere PyTorch emulates it: measured on a 2-core AVX2 EPYC, a bf16 matmul ran at
2-11 GFLOP/s against ~135 in fp32 (benchmarks/matmul_dtype.py), and one LoRA training
step took 80 s instead of 7.
So "auto" picks bf16 only where it pays.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

DType = Literal["float32", "bfloat16"]


@cache
def cpu_has_fast_bf16() -> bool:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False  # not Linux: stay with fp32, which is always fast
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def fast_dtype() -> DType:
    """bfloat16 where this CPU computes it natively, float32 otherwise (models run on the
    CPU; GPU placement is not wired in yet)."""
    return "bfloat16" if cpu_has_fast_bf16() else "float32"
