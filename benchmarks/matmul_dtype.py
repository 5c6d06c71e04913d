"""fp32 vs bf16 matmul throughput on this CPU: why `fast_dtype()` picks fp32 without
native bf16 (AVX512-BF16 / AMX).

    .venv/bin/python benchmarks/matmul_dtype.py

Shapes are the ones LoRA training multiplies for SmolLM2-135M (128 tokens x 1536 MLP
width x 576 hidden), with the weight both contiguous and transposed as in backward.
"""

from __future__ import annotations

import time

import torch

from structune.models.precision import cpu_has_fast_bf16


def gflops(a: torch.Tensor, b: torch.Tensor, repeats: int = 5) -> float:
    a @ b  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    seconds = (time.perf_counter() - started) / repeats
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / seconds / 1e9


def main() -> None:
    print(f"threads={torch.get_num_threads()} native bf16={cpu_has_fast_bf16()}")
    print(f"{'dtype':<10} {'contiguous GFLOP/s':>19} {'transposed GFLOP/s':>19}")
    for dtype in (torch.float32, torch.bfloat16):
        grad = torch.randn(128, 1536, dtype=dtype)
        weight = torch.randn(1536, 576, dtype=dtype)
        transposed = torch.randn(576, 1536, dtype=dtype).t()
        print(
            f"{str(dtype).removeprefix('torch.'):<10} {gflops(grad, weight):>19.1f} "
            f"{gflops(grad, transposed):>19.1f}"
        )


if __name__ == "__main__":
    main()
