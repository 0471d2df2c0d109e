"""fastoptim.torch.Adam's step against torch.optim.Adam (default, foreach=True, fused=True),
side by side in one pytest-benchmark group per problem.

    pytest bench/bench_torch_adapter.py --benchmark-only

Each benchmark builds its optimizer with fastoptim.cli.bench_torch.make_adam_step, the setup
``python -m fastoptim bench --vs torch`` times (fixed grads, state already created).
"""
import pytest

pytest.importorskip("torch")

from fastoptim.cli import bench_torch as _torch_bench  # noqa: E402


def run(benchmark, variant, tensors, numel):
    try:
        step = _torch_bench.make_adam_step(variant, tensors, numel)
    except RuntimeError as exc:  # e.g. no fused Adam on this CPU
        pytest.skip(f"torch.optim.Adam {variant} is not available here: {exc}")
    benchmark.extra_info["elements"] = tensors * numel
    benchmark(step)


@pytest.mark.benchmark(group="Adam step, 1 param of 10M float32")
@pytest.mark.parametrize("variant", _torch_bench.VARIANTS)
def test_adam_one_large_param(benchmark, variant):
    run(benchmark, variant, 1, 10_000_000)


@pytest.mark.benchmark(group="Adam step, 100 params of 10k float32")
@pytest.mark.parametrize("variant", _torch_bench.VARIANTS)
def test_adam_model_like_params(benchmark, variant):
    run(benchmark, variant, 100, 10_000)
