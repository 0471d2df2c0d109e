"""fastoptim.ewma against pandas' ewm().mean(): one long series and DataFrames, one
pytest-benchmark group per shape (T steps x K series) and dtype.

    pytest bench/bench_ewma.py --benchmark-only
    pytest bench/bench_ewma.py --benchmark-only -k "10000000 and float64"

Each benchmark builds its data with fastoptim.cli.bench_ewma, the same setup as
``python -m fastoptim.cli.bench_ewma`` (which also prints the ratios): "fastoptim" and
"pandas" take the same pandas Series/DataFrame and return one; "ndarray" is fastoptim on a
C-ordered (T, K) array; "chain_limit" (one series, float64, needs a C compiler) is the
bare recurrence m = a*m + b*x, the time no scan of a single series can beat.
"""
import numpy as np
import pytest

pytest.importorskip("fastoptim.kernels", reason="fastoptim._kernels is not built")
pytest.importorskip("pandas")

from fastoptim.cli import bench_ewma as _bench  # noqa: E402

IMPLEMENTATIONS = ("pandas", "fastoptim", "ndarray", "chain_limit")
_chain = []   # the compiled chain loop, built once


def chain_loop():
    if not _chain:
        _chain.append(_bench.chain_loop())
    return _chain[0]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", _bench.SHAPES, ids=_bench.shape_name)
def test_ewma(benchmark, shape, dtype, implementation):
    values = (100 + np.cumsum(np.random.default_rng(shape[0]).standard_normal(shape),
                              axis=0)).astype(dtype)
    chain = chain_loop() if dtype == "float64" else None
    steps = _bench.make_steps(values, _bench.BETA, None, chain)
    if implementation not in steps:
        pytest.skip("the chain limit is measured on one float64 series, with a C compiler")
    benchmark.group = f"EWMA {dtype} {_bench.shape_name(shape)}"
    benchmark.extra_info["elements"] = values.size
    benchmark(steps[implementation])
