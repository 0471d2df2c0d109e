"""Optimizer steps side by side: fastoptim (C), its data-movement limit, the NumPy reference
and torch.optim fused / foreach, one pytest-benchmark group per optimizer, dtype and size.
The EWMA against pandas is in bench_ewma.py.

    pytest bench/bench_kernels.py --benchmark-only
    pytest bench/bench_kernels.py --benchmark-only -k "Adam and float32"

Each benchmark builds its problem with fastoptim.cli.bench.make_problem, the same setup as
``python -m fastoptim bench`` (which also reports % of the limit and speedups per row).
"""
import numpy as np
import pytest

pytest.importorskip("fastoptim.kernels", reason="fastoptim._kernels is not built")

from fastoptim.cli import bench as _bench  # noqa: E402

try:
    import torch
except ImportError:
    torch = None

SIZES = (1_000, 1_000_000, 10_000_000)   # per-call cost, about the L3 cache, DRAM


@pytest.mark.parametrize("implementation", _bench.IMPLEMENTATIONS)
@pytest.mark.parametrize("n", SIZES, ids=_bench.human)
@pytest.mark.parametrize("dtype", _bench.DTYPES)
@pytest.mark.parametrize("optimizer", _bench.DEFAULT_OPTIMIZERS)
def test_step(benchmark, optimizer, dtype, n, implementation):
    if implementation.startswith("torch") and torch is None:
        pytest.skip("torch is not installed")
    problem = _bench.make_problem(optimizer, dtype, n, torch=torch, which=(implementation,))
    if implementation not in problem.steps:
        pytest.skip(f"torch.optim has no {implementation} {optimizer} on this CPU")
    benchmark.group = f"{optimizer} {dtype} n={_bench.human(n)}"
    benchmark.extra_info["values_per_element"] = problem.values_per_element
    benchmark.extra_info["bytes_per_step"] = (problem.values_per_element
                                              * np.dtype(dtype).itemsize * n)
    benchmark(problem.steps[implementation])
