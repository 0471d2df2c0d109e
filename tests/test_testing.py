"""fastoptim.testing: ULP distances, assert_same_bits, and compare_optimizer finding 0 ULP
for exact implementations and the failing step and element for wrong ones (issue 18)."""
import functools
import math
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import fastoptim as fo
from conftest import needs_kernels
from fastoptim.testing import (
    DEFAULT_SIZES,
    NAN_VS_NUMBER,
    assert_same_bits,
    compare_optimizer,
    max_ulp,
    random_problem,
    resolve_optimizer,
    ulp_distance,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL = (0, 1, 7, 8, 9, 33, 1000)   # sizes for the tests that need no big array


def _float_dtypes():
    """The four formats, bfloat16 only when ml_dtypes is installed."""
    dtypes = [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)]
    try:
        import ml_dtypes
    except ImportError:
        return dtypes
    return dtypes + [np.dtype(ml_dtypes.bfloat16)]


def _optimizer_classes():
    """Every optimizer class fastoptim exports, whatever the list is when the tests run."""
    return sorted({getattr(fo, name) for name in fo.__all__
                   if isinstance(getattr(fo, name), type)
                   and issubclass(getattr(fo, name), fo.Optimizer)
                   and getattr(fo, name) is not fo.Optimizer}, key=lambda c: c.__name__)


# -- ulp_distance -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_ulp_distance_of_16_bit_formats_is_the_rank_difference_among_all_values(name):
    """Independent count: list every non-NaN value of the format in increasing order (-0.0
    just before +0.0); the distance of two values is how far apart they are in that list."""
    if name == "bfloat16":
        dtype = np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    else:
        dtype = np.dtype(name)
    every = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(dtype)
    with np.errstate(invalid="ignore"):
        value = every.astype(np.float64)
    every, value = every[~np.isnan(value)], value[~np.isnan(value)]
    order = np.lexsort((~np.signbit(value), value))   # by value; -0.0 before +0.0
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size)
    rng = np.random.default_rng(1)
    i, j = rng.integers(0, every.size, 5000), rng.integers(0, every.size, 5000)
    got = ulp_distance(every[i], every[j])
    assert got.dtype == np.uint64
    np.testing.assert_array_equal(got, np.abs(rank[i] - rank[j]).astype(np.uint64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ulp_distance_counts_nextafter_steps(dtype):
    rng = np.random.default_rng(2)
    x = (rng.choice([-1.0, 1.0], 200) * 10.0 ** rng.uniform(-30, 30, 200)).astype(dtype)
    steps = rng.integers(0, 60, 200)
    y = x.copy()
    for k in range(steps.max()):
        moving = steps > k
        y[moving] = np.nextafter(y[moving], dtype(np.inf))   # away from 0 or toward it
    np.testing.assert_array_equal(ulp_distance(x, y), steps.astype(np.uint64))
    np.testing.assert_array_equal(ulp_distance(y, x), steps.astype(np.uint64))


@pytest.mark.parametrize("dtype", _float_dtypes(), ids=str)
def test_ulp_distance_around_zero_infinity_and_nan(dtype):
    def a(*values):
        return np.array(values, np.float64).astype(dtype)

    tiny = float(np.array([1], f"u{dtype.itemsize}").view(dtype)[0])   # the smallest subnormal
    assert ulp_distance(a(0.0), a(-0.0))[0] == 1   # so that 0 always means the same bits
    assert ulp_distance(a(tiny), a(-tiny))[0] == 3   # -tiny, -0, +0, tiny
    assert ulp_distance(a(np.inf), a(np.inf))[0] == 0
    nan = a(np.nan, np.nan)
    nan.view(f"u{dtype.itemsize}")[1] |= 1        # another payload
    minus_nan = -nan
    np.testing.assert_array_equal(ulp_distance(nan, minus_nan), [0, 0])
    np.testing.assert_array_equal(ulp_distance(a(np.nan, 1.0), a(1.0, np.nan)),
                                  [NAN_VS_NUMBER, NAN_VS_NUMBER])
    assert max_ulp(a(np.nan, 1.0), a(np.nan, 1.0)) == 0
    assert max_ulp(a(np.nan, 1.0), a(2.0, 1.0)) == math.inf
    assert max_ulp(a(), a()) == 0
    # -inf to +inf is every finite value in between, both zeros and both infinities
    finite_positive = int(np.array(np.inf, dtype).view(f"u{dtype.itemsize}")) - 1
    assert max_ulp(a(-np.inf), a(np.inf)) == 2 * finite_positive + 3
    assert max_ulp(a(-np.inf), a(np.inf)) < NAN_VS_NUMBER


def test_ulp_distance_takes_torch_tensors_including_bfloat16():
    torch = pytest.importorskip("torch")
    pytest.importorskip("ml_dtypes")
    t = torch.tensor([1.0, -2.0, 3.5], dtype=torch.bfloat16)
    shifted = t.clone()
    shifted[1] = torch.nextafter(t[1:2], torch.tensor([-10.0], dtype=torch.bfloat16))[0]
    np.testing.assert_array_equal(ulp_distance(t, shifted), [0, 1, 0])
    assert max_ulp(torch.ones(4, dtype=torch.float64), np.ones(4)) == 0


def test_ulp_distance_refuses_what_it_cannot_compare():
    with pytest.raises(TypeError, match="a must be one of float16"):
        ulp_distance(np.ones(3, np.int64), np.ones(3, np.int64))
    with pytest.raises(TypeError, match="same dtype"):
        ulp_distance(np.ones(3, np.float32), np.ones(3))
    with pytest.raises(ValueError, match="same shape"):
        ulp_distance(np.ones(3), np.ones(4))


# -- assert_same_bits -------------------------------------------------------------------------

def test_assert_same_bits_passes_equal_bits_and_any_nan():
    a = np.array([1.0, np.nan, -0.0, np.inf], np.float32)
    b = a.copy()
    b.view(np.uint32)[1] ^= 0x80000001   # the other sign, another payload: still NaN
    assert_same_bits(a, b)
    assert_same_bits(np.arange(3), np.arange(3))


def test_assert_same_bits_says_how_many_where_and_how_far():
    desired = np.arange(12, dtype=np.float64).reshape(3, 4) + 1.0
    actual = desired.copy()
    actual[0, 2] = np.nextafter(actual[0, 2], 0.0)
    actual[2, 1] = np.nan
    with pytest.raises(AssertionError) as info:
        assert_same_bits(actual, desired, "w")
    message = str(info.value)
    assert message.startswith("w: 2 of 12 elements differ (max NaN vs number)")
    assert "[(0, 2)]: 2.9999999999999996 vs 3.0 (1 ULP)" in message
    assert "[(2, 1)]: nan vs 10.0 (NaN vs number)" in message
    with pytest.raises(AssertionError, match=r"actual is float32\[3\], desired is float64\[3\]"):
        assert_same_bits(np.ones(3, np.float32), np.ones(3))
    with pytest.raises(AssertionError, match=r"1 of 3 elements differ; first at\n  \[1\]: 5 vs 1"):
        assert_same_bits(np.array([1, 5, 1]), np.array([1, 1, 1]))


# -- random_problem ---------------------------------------------------------------------------

def test_random_problem_spans_magnitudes_with_zeros_and_is_seeded():
    params, grads = random_problem((0, 9, 50_000), "float32", 3, seed=7)
    assert [p.shape for p in params] == [(0,), (9,), (50_000,)]
    assert len(grads) == 3 and all(len(g) == 3 for g in grads)
    assert all(a.dtype == np.float32 for a in params + grads[0])
    p = np.abs(params[2])
    assert p.min() >= 1.0 and p.max() <= 10.0          # away from 0
    g = np.abs(grads[0][2])
    nonzero = g[g > 0]
    assert np.log10(nonzero.max() / nonzero.min()) > 6   # many decades
    assert 0.02 < np.mean(g == 0) < 0.08                 # 1 % always, 3 % per step
    again, again_grads = random_problem((0, 9, 50_000), "float32", 3, seed=7)
    assert_same_bits(again[2], params[2])
    assert_same_bits(again_grads[2][2], grads[2][2])
    with_specials = random_problem((1000,), "float64", 2, seed=7, special_values=True)[1]
    g = np.concatenate([step[0] for step in with_specials])
    assert np.isnan(g).any() and np.isposinf(g).any() and np.isneginf(g).any()


# -- compare_optimizer: exact candidates give 0 ULP -------------------------------------------

def exact_v(v, g, beta2):
    return beta2 * v + (1.0 - beta2) * (g * g)


def exact_denominator(v, t, beta2, eps):
    return np.sqrt(v) * (1.0 / math.sqrt(1.0 - beta2**t)) + eps


def adam_update(p, g, m, v, t, *, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                v_update=exact_v, denominator=exact_denominator):
    """One Adam step written here from the textbook formula and fastoptim's rounding rules
    (every per-step scalar in double precision, rounded once when it meets the array;
    products left to right; sqrt(v) times 1/sqrt(bc2)); the wrong candidates below swap a
    piece."""
    m[:] = beta1 * m + (1.0 - beta1) * g
    v[:] = v_update(v, g, beta2)
    p -= (lr / (1.0 - beta1**t)) * m / denominator(v, t, beta2, eps)


def adam_step_function(**pieces):
    """A candidate step(params, grads, state) of adam_update, counting steps as torch does."""
    def step(params, grads, state):
        for p, g, s in zip(params, grads, state):
            s["step"] += 1
            adam_update(p, g, s["exp_avg"], s["exp_avg_sq"], s["step"], **pieces)
    return step


numpy_adam = adam_step_function()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("resync", [False, True])
def test_an_independent_numpy_adam_is_0_ulp_from_the_reference(dtype, resync):
    report = compare_optimizer(numpy_adam, "Adam", dtype=dtype, steps=6, resync=resync,
                               lr=1e-3)
    assert report.buffers == ("param", "exp_avg", "exp_avg_sq") and not report.not_compared
    assert report.max_ulp == 0 and report.max_rel_error == 0 and report.first_divergence is None
    assert len(report.rows) == 6 * 3
    assert report.drift_free == report.drift_resynced == (0,) * 6
    assert report.sizes == DEFAULT_SIZES


def test_the_independent_numpy_adam_matches_through_nan_and_inf():
    report = compare_optimizer(numpy_adam, "adam", dtype="float64", sizes=SMALL, steps=4,
                               special_values=True)
    assert report.max_ulp == 0 and report.nan_mismatches == 0


@needs_kernels
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls", _optimizer_classes(), ids=lambda c: c.__name__)
def test_fastoptims_compiled_kernels_are_0_ulp_from_the_reference(cls, dtype):
    report = compare_optimizer(functools.partial(cls, backend="c"), cls.__name__, dtype=dtype,
                               steps=5, special_values=True)
    assert report.kind == "an optimizer class on NumPy arrays"
    assert report.max_ulp == 0, report
    assert report.first_divergence is None and not report.not_compared


@needs_kernels
@pytest.mark.parametrize("name,hyper", [
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1, maximize=True, eps_root=1e-12)),
    ("AdamW", dict(lr=0.01, amsgrad=True, betas=(0.8, 0.99))),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.9, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.5)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("Momentum", dict(lr=0.05, form="ewma", bias_correction=True)),
])
def test_the_compiled_kernels_with_their_options_and_two_threads(name, hyper):
    cls = resolve_optimizer(name)
    report = compare_optimizer(functools.partial(cls, backend="c", threads=2), name,
                               dtype="float32", sizes=DEFAULT_SIZES + (2 * 65536 + 37,),
                               steps=3, **hyper)
    assert report.max_ulp == 0, report
    names = tuple(cls(np.zeros(3, np.float32), backend="numpy", **hyper).state[0])
    assert report.buffers == ("param",) + names and not report.not_compared


# -- compare_optimizer: wrong candidates are caught where they go wrong -----------------------

def _assert_only_params_wrong_from_step_1(report):
    first = report.first_divergence
    assert (first.step, first.buffer) == (1, "param")
    assert report.max_ulp_of("exp_avg") == 0 and report.max_ulp_of("exp_avg_sq") == 0
    assert report.max_ulp_of("param") > 1000 and report.max_rel_error > 1e-4


def test_eps_inside_the_square_root_is_caught_at_step_1_in_the_params():
    wrong = adam_step_function(
        denominator=lambda v, t, beta2, eps: np.sqrt(v / (1.0 - beta2**t) + eps))
    report = compare_optimizer(wrong, "Adam", dtype="float32", sizes=SMALL, steps=3)
    _assert_only_params_wrong_from_step_1(report)
    first = report.first_divergence
    # every element whose gradient is not 0 gets another update: the first of them is the
    # first element of the first non-empty array
    assert random_problem(SMALL, "float32", 3, seed=0)[1][0][1][0] != 0
    assert (first.param, first.size, first.element) == (1, 1, 0)
    assert first.actual != first.desired and first.ulp == int(
        ulp_distance(np.array([first.actual]), np.array([first.desired]))[0])
    assert "first difference: step 1, param of params[1] (n=1) [0]" in str(report)


def test_a_missing_bias_correction_of_v_is_caught_at_step_1():
    wrong = adam_step_function(denominator=lambda v, t, beta2, eps: np.sqrt(v) + eps)
    report = compare_optimizer(wrong, "Adam", dtype="float64", sizes=SMALL, steps=3)
    _assert_only_params_wrong_from_step_1(report)
    assert report.max_rel_error > 1e-3


def test_a_float32_accumulation_in_a_float64_optimizer_is_caught_in_exp_avg_sq():
    def float32_v(v, g, beta2):
        return beta2 * v.astype(np.float32) + (1.0 - beta2) * (g * g).astype(np.float32)

    wrong = adam_step_function(v_update=float32_v)
    sizes = (1, 1000)
    report = compare_optimizer(wrong, "Adam", dtype="float64", sizes=sizes, steps=2)
    v_row = next(r for r in report.rows if (r.step, r.buffer) == (1, "exp_avg_sq"))
    assert report.max_ulp_of("exp_avg") == 0
    assert v_row.max_ulp > 2**20        # float32 keeps 29 bits fewer than float64
    grads = random_problem(sizes, "float64", 2, seed=0)[1]
    assert grads[0][0][0] != 0          # so v of the very first element is off by rounding
    assert (v_row.first.param, v_row.first.element) == (0, 0)


def test_a_kernel_that_skips_its_tail_elements_is_caught_at_the_first_tail_element():
    width = 8

    def blocked_adam(params, grads, state):
        """Adam on the whole blocks of 8 only: the tail of each array is skipped."""
        for p, g, s in zip(params, grads, state):
            s["step"] += 1
            b = slice(0, p.size - p.size % width)
            adam_update(p[b], g[b], s["exp_avg"][b], s["exp_avg_sq"][b], s["step"])

    sizes = (16, 9, 1000, 7, 64)
    report = compare_optimizer(blocked_adam, "Adam", dtype="float32", sizes=sizes, steps=2)
    first = report.first_divergence
    assert (first.step, first.buffer, first.param, first.size, first.element) == (1, "param",
                                                                                   1, 9, 8)
    params, grads = random_problem(sizes, "float32", 2, seed=0)
    assert first.actual == params[1][8]                # untouched
    # exactly the tail elements whose gradient is not 0 differ (a zero gradient leaves
    # Adam's state and param unchanged, so skipping it is harmless)
    tails = sum(int(np.count_nonzero(g[n - n % width:])) for g, n in zip(grads[0], sizes))
    assert tails > 0
    assert report.rows[0].differing == tails and report.rows[1].differing == tails
    assert f"params[1] (n=9) [8]: {params[1][8]!s}" in str(report)


# -- resync -----------------------------------------------------------------------------------

class NudgingSGD(fo.SGD):
    """fastoptim's SGD, then the first element of the first param one ULP up: an error of
    exactly 1 ULP per step. With lr=0 the reference never moves, so the drift is t ULP."""

    def step(self, grads):
        super().step(grads)
        p = self.params[0]
        p[0] = np.nextafter(p[0], p.dtype.type(np.inf))


@pytest.mark.parametrize("resync", [False, True])
def test_resync_makes_each_row_a_one_step_error(resync):
    report = compare_optimizer(NudgingSGD, "SGD", dtype="float64", sizes=(3, 5), steps=4,
                               resync=resync, lr=0.0)
    assert report.drift_free == (1, 2, 3, 4)
    assert report.drift_resynced == (1, 1, 1, 1)
    assert [row.max_ulp for row in report.rows] == ([1, 1, 1, 1] if resync else [1, 2, 3, 4])
    assert all(row.differing == 1 for row in report.rows)
    start = random_problem((3, 5), "float64", 4, seed=0)[0][0][0]
    first = report.first_divergence
    assert (first.param, first.element, first.desired) == (0, 0, start)
    assert first.actual == np.nextafter(start, np.inf)
    assert report.max_ulp == (1 if resync else 4)


class NudgingMomentum(fo.Momentum):
    """Momentum with its buffer's first element nudged one ULP up after each step."""

    def step(self, grads):
        super().step(grads)
        b = self.state[0]["momentum_buffer"]
        b[0] = np.nextafter(b[0], b.dtype.type(np.inf))


def test_resync_overwrites_same_named_state_too():
    report = compare_optimizer(NudgingMomentum, "Momentum", dtype="float32", sizes=(4,),
                               steps=5, resync=True, lr=0.0)
    assert [(r.buffer, r.max_ulp) for r in report.rows] == [("param", 0),
                                                            ("momentum_buffer", 1)] * 5


def test_state_under_other_names_is_not_compared_and_said_so():
    def adam_with_own_names(params, grads, state):
        for p, g, s in zip(params, grads, state):
            if "m" not in s:
                s["m"], s["v"] = s.pop("exp_avg"), s.pop("exp_avg_sq")
            s["step"] += 1
            adam_update(p, g, s["m"], s["v"], s["step"])

    report = compare_optimizer(adam_with_own_names, "Adam", sizes=(5,), steps=2)
    assert report.buffers == ("param",)
    assert report.not_compared == ("exp_avg", "exp_avg_sq")
    assert "not compared (the candidate keeps no state of these names): exp_avg, exp_avg_sq" \
        in str(report)


def test_the_candidate_gets_copies_of_the_grads():
    def scribbling_adam(params, grads, state):
        numpy_adam(params, grads, state)
        for g in grads:
            g[...] = np.nan          # must not reach the reference or the second run

    report = compare_optimizer(scribbling_adam, "Adam", sizes=SMALL, steps=3)
    assert report.max_ulp == 0 and report.drift_resynced == (0, 0, 0)


# -- torch.optim candidates -------------------------------------------------------------------

@needs_kernels
@pytest.mark.parametrize("resync", [False, True])
def test_fastoptim_torch_adapter_is_0_ulp_through_the_torch_path(resync):
    pytest.importorskip("torch")
    import fastoptim.torch as fot

    report = compare_optimizer(fot.Adam, "Adam", dtype="float64", sizes=SMALL, steps=4,
                               resync=resync, lr=1e-2, weight_decay=0.1, device="cpu")
    assert report.kind == "a torch.optim.Optimizer"
    assert report.buffers == ("param", "exp_avg", "exp_avg_sq")
    assert report.max_ulp == 0, report


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_optim_adam_is_within_rounding_of_the_reference(dtype):
    torch = pytest.importorskip("torch")
    report = compare_optimizer(functools.partial(torch.optim.Adam, foreach=False), "Adam",
                               dtype=dtype, sizes=SMALL, steps=5, resync=True, lr=1e-3)
    assert report.buffers == ("param", "exp_avg", "exp_avg_sq")
    assert report.candidate == "torch.optim.Adam(foreach=False)"
    # torch rounds differently (lerp, addcdiv, FMA): params within a few ULP per step, the
    # state within a few ULP of its scale
    assert report.max_ulp_of("param") <= 4, report
    assert report.max_scaled_error < 64 * np.finfo(dtype).eps, report


# -- refusals ---------------------------------------------------------------------------------

def test_resolve_optimizer_takes_torchs_spellings():
    assert resolve_optimizer("RMSprop") is fo.RMSProp
    assert resolve_optimizer("adagrad") is fo.AdaGrad
    assert resolve_optimizer("AdamW") is fo.AdamW
    assert resolve_optimizer(fo.Adam) is fo.Adam
    with pytest.raises(ValueError, match="optimizer: fastoptim has no optimizer named 'Adamm'"):
        resolve_optimizer("Adamm")


@pytest.mark.parametrize("call,error,message", [
    (lambda: compare_optimizer(numpy_adam, "Adamm"), ValueError, "optimizer: fastoptim has no"),
    (lambda: compare_optimizer(42, "Adam"), TypeError, "candidate must be a step function"),
    (lambda: compare_optimizer(lambda params: None, "Adam"), TypeError,
     r"candidate: a step function is called as step\(params, grads, state\)"),
    (lambda: compare_optimizer(numpy_adam, "Adam", dtype="int32"), TypeError, "dtype must be"),
    (lambda: compare_optimizer(numpy_adam, "Adam", sizes=()), ValueError, "sizes must be"),
    (lambda: compare_optimizer(numpy_adam, "Adam", sizes=(3, -1)), ValueError, "sizes must"),
    (lambda: compare_optimizer(numpy_adam, "Adam", steps=0), ValueError, "steps must be"),
    (lambda: compare_optimizer(numpy_adam, "Adam", device="cuda"), ValueError,
     "device applies to torch.optim candidates only"),
    (lambda: compare_optimizer(fo.Adam, "Adam", device="cuda"), ValueError, "device applies"),
    (lambda: compare_optimizer(fo.Adam, "Adam", backend="c"), ValueError,
     "backend: the reference always runs backend='numpy'"),
])
def test_bad_arguments_are_refused_before_anything_runs(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_a_candidate_that_changes_the_dtype_is_told_where():
    def float64_sgd(params, grads, state):
        for i, (p, g) in enumerate(zip(params, grads)):
            params[i] = p.astype(np.float64) - 1e-3 * g

    with pytest.raises(TypeError, match=r"the candidate's param of params\[0\] after step 1 "
                                        r"is float64\[3\], expected float32\[3\]"):
        compare_optimizer(float64_sgd, "SGD", dtype="float32", sizes=(3,), steps=1, lr=1e-3)


# -- the README example -----------------------------------------------------------------------

def _readme_section():
    readme = (ROOT / "README.md").read_text()
    return readme[readme.index("## Test your own optimizer against fastoptim"):]


def test_the_readme_example_runs_and_catches_the_bug(capsys):
    text = _readme_section()
    code, output = re.findall(r"```(?:python|text)?\n(.*?)```", text, re.S)[:2]
    assert len(code.strip().splitlines()) <= 14
    namespace = {}
    exec(compile(code, "README example", "exec"), namespace)
    printed = capsys.readouterr().out
    report = namespace["report"]
    _assert_only_params_wrong_from_step_1(report)
    # every line the README shows is in what the example prints ("..." stands for the rest)
    for line in output.splitlines():
        if line.strip() and line.strip() != "...":
            assert line in printed, line


# -- python -m fastoptim verify --against torch -----------------------------------------------

def test_verify_against_torch_prints_one_cell_per_optimizer_and_implementation(capsys):
    torch = pytest.importorskip("torch")
    from fastoptim.cli import main, verify_torch

    sizes = (7, 33)
    assert main(["verify", "--against", "torch", "--sizes", "7", "33", "--steps", "2",
                 "--dtypes", "float64"]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out and "2 steps" in out
    header = next(line for line in out.splitlines() if line.startswith("optimizer"))
    assert header.split() == ["optimizer", "for-loop", "foreach", "fused"]
    cells = {}
    for label, name, hyper in verify_torch.CONFIGS:
        try:
            has_both = resolve_optimizer(name) is not None and hasattr(torch.optim, name)
        except ValueError:
            has_both = False
        line = next((line for line in out.splitlines() if line.startswith(label + "  ")), None)
        assert (line is not None) == has_both, label
        if line is not None:
            cells[label] = re.findall(r"(\d+) \((\d+)\)|(-)", line[len(label):])
            assert len(cells[label]) == 3, line
    assert cells["RMSprop"][2] == ("", "", "-")          # torch has no fused RMSprop
    # each cell is compare_optimizer's drift and one-step error on the same problem
    report = compare_optimizer(functools.partial(torch.optim.Adam, fused=True), "Adam",
                               dtype="float64", sizes=sizes, steps=2, lr=1e-3)
    assert cells["Adam"][2][:2] == (str(report.drift_free[-1]), str(max(report.drift_resynced)))
    # and torch is within rounding of the reference: an ULP or two per step -- except where
    # torch keeps a scalar of the step in a float32 tensor whatever the param's dtype
    # (NAdam's mu_product, ASGD's eta and mu), which costs float64 params their precision
    float32_scalars = {"NAdam", "ASGD"}
    assert all(int(one_step) <= 2 for label, row in cells.items() for _, one_step, dash in row
               if not dash and label not in float32_scalars)


def test_verify_against_torch_in_low_precision(capsys):
    """bfloat16 and float16 params: torch's implementations against fastoptim's reference,
    which computes in float32 and rounds each store once."""
    pytest.importorskip("torch")
    from fastoptim.cli import main

    assert main(["verify", "--against", "torch", "--sizes", "7", "33", "--steps", "1",
                 "--dtypes", "float16"]) == 0
    out = capsys.readouterr().out
    header = [line for line in out.splitlines() if line.strip().startswith("float16")]
    assert header, out
    assert any(line.startswith("Adam ") for line in out.splitlines())


def test_verify_against_torch_without_torch_exits_2(monkeypatch, capsys):
    from fastoptim.cli import main

    monkeypatch.setitem(sys.modules, "torch", None)
    assert main(["verify", "--against", "torch"]) == 2
    assert "pip install torch" in capsys.readouterr().err


def test_verify_against_torch_from_a_fresh_process():
    pytest.importorskip("torch")
    result = subprocess.run([sys.executable, "-m", "fastoptim", "verify", "--against", "torch",
                             "--sizes", "9", "--steps", "1", "--dtypes", "float32"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^Adam( +\d+ \(\d+\)){3}$", result.stdout, re.M), result.stdout
