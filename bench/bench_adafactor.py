"""fastoptim.Adafactor against fastoptim.Adam and torch.optim.Adafactor (its default
for-loop and foreach=True) on one float32 matrix: 5000 x 6000 (30M elements, memory-bound)
and 1000 x 1000 (1M, about the L3 cache). One pytest-benchmark group per size.

    pytest bench/ --benchmark-only -k bench_adafactor

Issue 14's targets: at 30M, Adafactor at least 1.8x faster than fastoptim's float32 Adam and
at least 3x torch.optim.Adafactor. Adafactor reads the gradient three times and the param
twice (its update needs the row and column statistics and then the update's norm before it
may write): 24 bytes per element against Adam's 28 in one pass.
"""
from functools import partial

import numpy as np
import pytest

pytest.importorskip("fastoptim.kernels", reason="fastoptim._kernels is not built")

import fastoptim  # noqa: E402
from fastoptim.cli import bench as _bench  # noqa: E402

try:
    import torch
except ImportError:
    torch = None

SIZES = (1_000_000, 30_000_000)
IMPLEMENTATIONS = ("fastoptim Adafactor", "fastoptim Adam", "torch Adafactor",
                   "torch Adafactor foreach")


def make_step(implementation, n):
    """One step of ``implementation`` on a seeded (rows, cols) float32 param and grad, its
    state already made by a first step."""
    rng = np.random.default_rng(n)
    shape = _bench.matrix_shape(n)
    param = rng.standard_normal(shape, dtype=np.float32)
    grad = rng.standard_normal(shape, dtype=np.float32)
    if implementation.startswith("fastoptim"):
        cls, lr = ((fastoptim.Adafactor, 1e-2) if implementation.endswith("Adafactor")
                   else (fastoptim.Adam, 1e-3))
        step = partial(cls(param, lr=lr, backend="c").step, grad)
    else:
        tensor = torch.from_numpy(param)
        tensor.grad = torch.from_numpy(grad)
        step = torch.optim.Adafactor([tensor], lr=1e-2,
                                     foreach=implementation.endswith("foreach")).step
    step()
    return step


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("n", SIZES, ids=_bench.human)
def test_step(benchmark, n, implementation):
    if implementation.startswith("torch") and torch is None:
        pytest.skip("torch is not installed")
    rows, cols = _bench.matrix_shape(n)
    benchmark.group = f"Adafactor float32 {rows}x{cols}"
    benchmark(make_step(implementation, n))
