"""Adam over bfloat16 storage, layout by layout, next to float32 Adam, each layout's
data-movement limit and torch's fused bfloat16 Adam: one pytest-benchmark group per size.

    pytest bench/bench_low_precision.py --benchmark-only
    pytest bench/bench_low_precision.py --benchmark-only -k 30M

Each benchmark builds its step with fastoptim.cli.bench_low_precision.make_step, the setup
``python -m fastoptim bench --low-precision`` times (which also reports the issue's goals:
bfloat16 moments >= 1.25x float32 Adam at 30M; all-bfloat16 >= 1.0x torch fused bfloat16 at
30M and >= 1.5x at 1M; float32 master with bfloat16 grad and copy within 1.05x of float32
Adam's time).
"""
import pytest

pytest.importorskip("fastoptim.kernels", reason="fastoptim._kernels is not built")

from fastoptim.cli import bench_low_precision as _low  # noqa: E402
from fastoptim.cli.bench import human  # noqa: E402

try:
    import torch
except ImportError:
    torch = None

KEYS = [layout.key for layout in _low.LAYOUTS]


def _group(benchmark, n, bytes_per_element):
    benchmark.group = f"Adam low precision n={human(n)}"
    benchmark.extra_info["bytes_per_element"] = bytes_per_element


@pytest.mark.parametrize("what", ["step", "limit"])
@pytest.mark.parametrize("layout", KEYS)
@pytest.mark.parametrize("n", _low.SIZES, ids=human)
def test_layout(benchmark, n, layout, what):
    _group(benchmark, n, _low.BY_KEY[layout].bytes_per_element())
    made = _low.make_step(layout, n)
    benchmark(made.step if what == "step" else made.limit)


@pytest.mark.parametrize("n", _low.SIZES, ids=human)
def test_torch_fused_bfloat16(benchmark, n):
    if torch is None:
        pytest.skip("torch is not installed")
    step = _low.make_torch_step(torch, n)
    if step is None:
        pytest.skip("this torch has no fused Adam on the CPU")
    _group(benchmark, n, _low.BY_KEY["bf16"].bytes_per_element())
    benchmark(step)
