"""Reductions (fastoptim.kernels.norms), clipping (fastoptim.clip_grad_norm) and the fused
max_grad_norm / check_finite of the optimizers.

The sums run in one fixed order (docs/design.md): blocks of 2048, 16 lanes in float64,
lanes combined pairwise, blocks and arrays in order. So they must be bit-identical for any
thread count and in both backends; the order itself is checked against a plain Python
implementation of its description; the values against torch.nn.utils.clip_grad_norm_ run
on float64 copies.
"""
import math
import tracemalloc

import ml_dtypes
import numpy as np
import pytest

import fastoptim as fo
from conftest import assert_same_bits, kernels, needs_kernels
from fastoptim import reference

BLOCK, LANES = 2048, 16
LOW = (ml_dtypes.bfloat16, np.float16)


def arrays(sizes, dtype, seed=0, special=False):
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        x = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n)
        if special and n > 4:
            x[rng.integers(0, n, 3)] = [0.0, -0.0, 1e-40]
        out.append(x.astype(dtype))
    return out


def python_ordered_sum(terms):
    """The documented order, written out with Python floats: per block, lane k adds elements
    k, k + 16, ...; lanes combined pairwise; blocks added in order."""
    total = 0.0
    for start in range(0, len(terms), BLOCK):
        block = terms[start:start + BLOCK]
        lanes = [0.0] * LANES
        for i, t in enumerate(block):
            lanes[i % LANES] += t
        while len(lanes) > 1:
            lanes = [lanes[2 * k] + lanes[2 * k + 1] for k in range(len(lanes) // 2)]
        total += lanes[0]
    return total


# -- the order ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 2047, 2048, 2049, 5000])
def test_reference_sums_in_the_documented_order(n):
    x = arrays([n], np.float32, seed=n)[0]
    terms = [float(v) * float(v) for v in x]
    assert reference.ordered_sum(np.array(terms)) == python_ordered_sum(terms)
    (value, finite), = reference.norms(x)
    assert value == python_ordered_sum(terms) and finite == 0.0


# -- fast == reference, any thread count --------------------------------------------------------

SIZES = [[0], [1], [2047], [2048], [2049], [4096 + 17], [3 * 65536 + 5],
         list(np.random.default_rng(9).integers(0, 300, 200))]


@needs_kernels
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, *LOW], ids=str)
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: f"{len(s)}x{max(s)}")
def test_norms_are_identical_across_threads_and_backends(sizes, dtype, norm_type):
    xs = arrays(sizes, dtype, seed=len(sizes), special=True)
    expected = reference.norms(xs, norm_type=norm_type)
    for threads in (1, 2, 3, 7):
        got = kernels.norms(xs, norm_type=norm_type, threads=threads)
        assert_same_bits(got, expected, f"threads={threads}")


@needs_kernels
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, *LOW], ids=str)
def test_nonfinite_elements_are_flagged_per_array(dtype, norm_type):
    xs = arrays([10, 5000, 7, 3, 40], dtype)
    xs[1][4321] = np.inf
    xs[3][0] = np.nan
    xs[4][:] = ml_dtypes.finfo(dtype).max     # finite, though the sum of squares may overflow
    for module in (kernels, reference):
        flags = module.norms(xs, norm_type=norm_type)[:, 1]
        assert [f == 0 for f in flags] == [True, False, True, False, True]


def test_norms_refuse_a_norm_it_does_not_have():
    with pytest.raises(ValueError, match="norm_type"):
        reference.norms(np.ones(3), norm_type=3.0)


# -- clip_grad_norm against torch ------------------------------------------------------------------

torch = pytest.importorskip("torch")


def torch_clip(grads, max_norm, norm_type):
    """torch.nn.utils.clip_grad_norm_ on float64 copies: (norm, clipped grads)."""
    params = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = torch.from_numpy(g.astype(np.float64))
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
    return float(norm), [p.grad.numpy() for p in params]


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-6), (np.float64, 1e-12)], ids=str)
def test_clip_grad_norm_matches_torch(dtype, rtol, norm_type, backend):
    if backend == "c" and kernels is None:
        pytest.skip("fastoptim._kernels is not built")
    grads = arrays([1_000_003, 7, 2048], dtype, seed=4)
    expected_norm, expected = torch_clip(grads, 1.0, norm_type)
    norm = fo.clip_grad_norm(grads, 1.0, norm_type=norm_type, backend=backend)
    assert isinstance(norm, float)
    assert norm == pytest.approx(expected_norm, rel=rtol)
    for g, e in zip(grads, expected):
        np.testing.assert_allclose(g, e, rtol=rtol * 4, atol=0)


def test_clip_grad_norm_leaves_small_and_zero_gradients_alone():
    small = [np.full(5, 0.1), np.zeros(3)]
    before = [g.copy() for g in small]
    assert fo.clip_grad_norm(small, 10.0) == pytest.approx(math.sqrt(5 * 0.01))
    for g, b in zip(small, before):
        assert_same_bits(g, b)
    zeros = [np.zeros(4, np.float32)]
    assert fo.clip_grad_norm(zeros, 1.0) == 0.0
    assert not zeros[0].any()


def test_clip_grad_norm_in_low_precision_rounds_once():
    g = np.linspace(-4, 4, 1001).astype(ml_dtypes.bfloat16)
    wide = g.astype(np.float32)
    norm = fo.clip_grad_norm(g, 1.0)
    coefficient = 1.0 / (norm + 1e-6)
    assert_same_bits(g, (wide * np.float32(coefficient)).astype(ml_dtypes.bfloat16))


def test_nonfinite_norm_raises_when_asked_and_changes_nothing():
    grads = [np.ones(4), np.array([1.0, np.inf])]
    before = [g.copy() for g in grads]
    with pytest.raises(RuntimeError, match="non-finite|cannot be clipped"):
        fo.clip_grad_norm(grads, 1.0, error_if_nonfinite=True)
    for g, b in zip(grads, before):
        assert_same_bits(g, b)
    fo.clip_grad_norm(grads, 1.0)                  # as torch: scaled by max_norm / inf = 0
    assert not grads[0].any()


# -- fused into a step ----------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSProp", "Lion", "LAMB"])
def test_max_grad_norm_equals_clipping_then_stepping(name, backend):
    if backend == "c" and kernels is None:
        pytest.skip("fastoptim._kernels is not built")
    params = arrays([3000, 17], np.float32, seed=6)
    grads = [arrays([3000, 17], np.float32, seed=10 + t) for t in range(3)]
    fused = getattr(fo, name)([p.copy() for p in params], lr=1e-2, max_grad_norm=0.5,
                              backend=backend)
    plain = getattr(fo, name)([p.copy() for p in params], lr=1e-2, backend=backend)
    for g in grads:
        before = [x.copy() for x in g]
        fused.step(g)
        for x, b in zip(g, before):
            assert_same_bits(x, b, "the caller's grads are not written")
        clipped = [x.copy() for x in g]
        fo.clip_grad_norm(clipped, 0.5, backend=backend)
        plain.step(clipped)
    for a, b in zip(fused.params, plain.params):
        assert_same_bits(a, b)


@needs_kernels
def test_check_finite_allocates_nothing_proportional_to_n():
    n = 4_000_000
    p, g = np.zeros(n, np.float32), np.ones(n, np.float32)
    opt = fo.Adam(p, lr=1e-3, check_finite=True, max_grad_norm=1e9)
    opt.step(g)
    tracemalloc.start()
    try:
        opt.step(g)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < n // 100, f"a checked step traced {peak} bytes for {n} elements"


def test_torch_adapter_max_grad_norm_equals_clipping_then_stepping():
    import fastoptim.torch as fot
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.Tanh(), torch.nn.Linear(30, 1))
    twin = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.Tanh(), torch.nn.Linear(30, 1))
    twin.load_state_dict(model.state_dict())
    fused = fot.Adam(model.parameters(), lr=1e-2, max_grad_norm=0.1)
    plain = fot.Adam(twin.parameters(), lr=1e-2)
    x, y = torch.randn(64, 20), torch.randn(64, 1)
    for _ in range(3):
        for m, opt in ((model, fused), (twin, plain)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
        fo.clip_grad_norm([p.grad.numpy() for p in twin.parameters()], 0.1)
        fused.step()
        plain.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
