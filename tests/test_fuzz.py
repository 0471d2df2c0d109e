"""Property-based tests (hypothesis): the compiled kernels and the NumPy reference agree bit
for bit on whatever they are given -- random sizes (0 to a few thousand, now and then one
split across threads), both dtypes, hyperparameters anywhere in their valid range (lr 0,
betas a hair below 1, eps 0, weight decay 1e30 or 1e-30, ...), and buffers full of NaN (with
payloads and either sign), +-Inf, subnormals, +-0 and values near the dtype's limit -- one
array per buffer or a list of arrays of mixed sizes and dtypes, any thread count, any
parallel threshold. A NaN matches any NaN: which NaN comes out when two meet depends on
operand order, which neither C nor NumPy fixes (NumPy's own scalar and SIMD loops differ),
and with maximize GCC folds p - lr*(-g) into p + lr*g, which keeps the NaN's sign where
NumPy flips it. Every other element must match in all its bits, and the caller's grad
buffer must be left untouched.

The example budget is fixed and the search derandomized, so a CI run always tries the same
cases and takes the same time. FASTOPTIM_FUZZ_EXAMPLES=<n> raises the budget for a local,
longer search (each test then tries n examples).
"""
import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import bits, kernels, needs_kernels
from fastoptim import reference

pytestmark = needs_kernels

EXAMPLES = int(os.environ.get("FASTOPTIM_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

DEFAULT_THRESHOLD = 65536   # the default per-thread element count of fastoptim.kernels


# -- hyperparameters: the special values of each range, and anything in between ---------------

def _values(special, low, high, typical, exclude_max=False):
    """A special value, anything in [low, high], or a value in the typical range (where a
    rounding difference between two formulas shows, rather than drowning in Inf or 0)."""
    return st.one_of(st.sampled_from(special),
                     st.floats(low, high, exclude_max=exclude_max, allow_nan=False),
                     st.floats(*typical, allow_nan=False))


BELOW_ONE = float(np.nextafter(1.0, 0.0))
# betas, alpha, momentum, dampening: [0, 1)
UNIT = _values([0.0, 5e-324, 1e-12, 0.1, 0.5, 0.9, 0.99, 0.999, 1 - 1e-6, 1 - 1e-12, BELOW_ONE],
               0.0, 1.0, (0.5, 0.9999), exclude_max=True)
# lr >= 0: 1e39 and 1e300 overflow float32 when rounded (inf), 1e-45 and 5e-324 underflow it
LR = _values([0.0, 5e-324, 1e-45, 1e-30, 1e-3, 0.1, 1.0, 1e30, 1e38, 1e39, 1e300], 0.0, 100.0,
            (1e-4, 0.1))
WEIGHT_DECAY = _values([0.0, 1e-300, 1e-50, 1e-30, 1e-2, 1.0, 1e30, 1e300], 0.0, 10.0,
                       (1e-4, 0.1))
EPS = _values([0.0, 5e-324, 1e-50, 1e-45, 1e-30, 1e-10, 1e-8, 1.0, 1e30], 0.0, 1.0,
              (1e-10, 1e-6))
EPS_ROOT = st.one_of(st.just(0.0), EPS)
LR_DECAY = _values([0.0, 1e-10, 0.01, 1.0, 1e10, 1e300], 0.0, 10.0, (1e-4, 0.1))
STEP = st.one_of(st.integers(1, 30), st.sampled_from([1, 2, 1000, 2**31, 2**53, 2**62 - 4]))
MAXIMIZE = st.booleans()


# Each kernel: its state buffers in positional order (None: an optional one left out) and its
# keyword arguments, drawn together because some options decide which buffers exist.

@st.composite
def sgd_case(draw):
    return (), dict(lr=draw(LR), weight_decay=draw(WEIGHT_DECAY), maximize=draw(MAXIMIZE))


@st.composite
def momentum_case(draw):
    form = draw(st.sampled_from(("torch", "ewma", "velocity")))
    kw = dict(lr=draw(LR), momentum=draw(UNIT), form=form, nesterov=draw(st.booleans()),
              weight_decay=draw(WEIGHT_DECAY), maximize=draw(MAXIMIZE))
    if form == "torch" and not kw["nesterov"]:
        kw["dampening"] = draw(st.one_of(st.just(0.0), UNIT))
    if form == "ewma":
        kw["bias_correction"] = draw(st.booleans())
    return ("momentum_buffer",), kw


@st.composite
def adagrad_case(draw):
    return ("state_sum",), dict(lr=draw(LR), lr_decay=draw(LR_DECAY), eps=draw(EPS),
                                weight_decay=draw(WEIGHT_DECAY), maximize=draw(MAXIMIZE))


@st.composite
def rmsprop_case(draw):
    centered = draw(st.booleans())
    momentum = draw(st.one_of(st.just(0.0), UNIT))
    names = ("square_avg", "grad_avg" if centered else None,
             "momentum_buffer" if momentum != 0 else None)
    return names, dict(lr=draw(LR), alpha=draw(UNIT), eps=draw(EPS), momentum=momentum,
                       weight_decay=draw(WEIGHT_DECAY), maximize=draw(MAXIMIZE))


@st.composite
def adam_case(draw):
    names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq" if draw(st.booleans()) else None)
    return names, dict(lr=draw(LR), beta1=draw(UNIT), beta2=draw(UNIT), eps=draw(EPS),
                       eps_root=draw(EPS_ROOT), weight_decay=draw(WEIGHT_DECAY),
                       maximize=draw(MAXIMIZE))


@st.composite
def ewma_case(draw):
    return (), dict(beta=draw(UNIT))


CASES = {
    "sgd_step": sgd_case(),
    "momentum_step": momentum_case(),
    "adagrad_step": adagrad_case(),
    "rmsprop_step": rmsprop_case(),
    "adam_step": adam_case(),
    "adamw_step": adam_case(),
    "ewma_step": ewma_case(),
}
TAKES_STEP = ("momentum_step", "adagrad_step", "adam_step", "adamw_step")


# -- buffers ----------------------------------------------------------------------------------

def special_values(dtype):
    """Values that break naive arithmetic, NaNs with payloads and both signs included."""
    dtype = np.dtype(dtype)
    info = np.finfo(dtype)
    huge = 1e38 if dtype == np.float32 else 1e308
    plain = np.array([0.0, np.inf, np.nan, info.smallest_subnormal, 3 * info.smallest_subnormal,
                      info.smallest_normal, info.max, huge, 1.0, info.eps, 0.5], dtype)
    if dtype == np.float32:   # quiet NaN with a payload, signalling NaN
        nans = np.array([0x7FC00001, 0x7FC12345, 0x7F800001, 0x7FA00000], np.uint32)
    else:
        nans = np.array([0x7FF8000000000001, 0x7FF8DEADBEEF0000, 0x7FF0000000000001],
                        np.uint64)
    values = np.concatenate([plain, nans.view(dtype)])
    return np.concatenate([values, -values])   # -0, -inf, negative NaNs, ...


SPECIALS = {np.dtype(t): special_values(t) for t in (np.float32, np.float64)}
# share of each buffer replaced by special values, and the spread of the ordinary values:
# normal * 10**U(-m, m), m capped below the dtype's range, or None: all +0 (zero-initialized
# state and params, where signed zeros meet)
FRACTIONS = (0.0, 0.002, 0.05, 0.3, 1.0)
MAGNITUDES = (None, 0, 3, 30, 300)


def make_array(rng, n, dtype, fraction, magnitude):
    dtype = np.dtype(dtype)
    if magnitude is None:
        a = np.zeros(n, dtype)
    else:
        m = min(magnitude, 37 if dtype == np.float32 else 307)
        a = (rng.standard_normal(n) * 10.0 ** rng.uniform(-m, m, n)).astype(dtype)
    if fraction:
        where = np.flatnonzero(rng.random(n) < fraction)
        specials = SPECIALS[dtype]
        a[where] = specials[rng.integers(0, specials.size, where.size)]   # keeps NaN bits
    return a


@st.composite
def layouts(draw, many):
    """(size, dtype) of each array: one, or a list of 0 to 5 with mixed dtypes."""
    def size():
        # now and then an array that the default threshold splits across threads
        if draw(st.integers(0, 24)) == 0:
            return 2 * DEFAULT_THRESHOLD + draw(st.integers(0, 200))
        return draw(st.one_of(st.integers(0, 40), st.integers(0, 4000)))
    dtype = st.sampled_from((np.float32, np.float64))
    count = draw(st.integers(0, 5)) if many else 1
    return [(size(), draw(dtype)) for _ in range(count)]


# -- comparison -------------------------------------------------------------------------------

def assert_same_bits_nan_as_nan(actual, expected, what):
    """Bits equal everywhere, except where both are NaN (any payload, either sign)."""
    both_nan = np.isnan(actual) & np.isnan(expected)
    differ = np.flatnonzero((bits(actual) != bits(expected)) & ~both_nan)
    if differ.size:
        i = differ[0]
        raise AssertionError(
            f"{what}: {differ.size} of {actual.size} elements differ; first at {i}: "
            f"fast {actual.flat[i]!r} (0x{int(bits(actual).flat[i]):x}) vs reference "
            f"{expected.flat[i]!r} (0x{int(bits(expected).flat[i]):x})")


@contextlib.contextmanager
def parallel_threshold(n):
    """Set fastoptim.kernels' parallel threshold for a block (None: leave it), then restore."""
    old = kernels.build_info()["parallel_threshold"]
    if n is not None:
        kernels.set_parallel_threshold(n)
    try:
        yield
    finally:
        kernels.set_parallel_threshold(old)


def run(module, name, single, roles, buffers, grads, kw, step0, threads):
    """Step one backend over copies of the buffers, one step per grad; return the copies."""
    buffers = [[None if a is None else a.copy() for a in arrays] for arrays in buffers]
    fn = getattr(module, name)
    for t, grad in enumerate(grads):
        args = [None if role is None else arrays[0] if single else arrays
                for role, arrays in zip(roles, buffers)]
        args.insert(1, grad[0] if single else grad)
        step_kw = dict(kw, threads=threads)
        if name in TAKES_STEP:
            step_kw["step"] = step0 + t
        with np.errstate(all="ignore"):
            fn(*args, **step_kw)
    return buffers


def fuzz_one(name, data, many):
    state_names, kw = data.draw(CASES[name], label="state, hyperparameters")
    layout = data.draw(layouts(many), label="layout")
    steps = data.draw(st.integers(1, 3), label="steps")
    step0 = data.draw(STEP, label="first step")
    if name in TAKES_STEP:
        assume(step0 + steps - 1 < 2**63)
    threads = data.draw(st.sampled_from([None, 1, 2, 3, 7]), label="threads")
    threshold = data.draw(st.sampled_from([None, None, 1, 64, 1000]), label="threshold")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    # hyperparameters as Python floats, or as NumPy scalars (which NumPy would not round to
    # a float32 array's dtype: the reference must convert them as the C wrapper does);
    # np.float32 only where it holds the same value (1 - 1e-12 would become 1)
    scalar = data.draw(st.sampled_from([float, np.float64, np.float32]), label="scalar type")
    with np.errstate(all="ignore"):
        kw = {k: scalar(v) if isinstance(v, float) and float(scalar(v)) == v else v
              for k, v in kw.items()}

    roles = ("param",) + tuple(state_names)      # every buffer but grad, in call order
    # a third of the examples have only ordinary values: a rounding difference between two
    # formulas shows there, where in a buffer full of Inf and NaN it would drown
    ordinary = data.draw(st.integers(0, 2), label="special values") == 0
    profile = {role: (0.0, 0) if ordinary else
               (data.draw(st.sampled_from(FRACTIONS), label=f"{role} specials"),
                data.draw(st.sampled_from(MAGNITUDES), label=f"{role} magnitude"))
               for role in roles + ("grad",) if role is not None}
    rng = np.random.default_rng(seed)
    buffers = [[None if role is None else make_array(rng, n, dt, *profile[role])
                for n, dt in layout] for role in roles]
    grads = [[make_array(rng, n, dt, *profile["grad"]) for n, dt in layout]
             for _ in range(steps)]
    grads_before = [[g.copy() for g in grad] for grad in grads]

    single = not many
    with parallel_threshold(threshold):
        fast = run(kernels, name, single, roles, buffers, grads, kw, step0, threads)
    slow = run(reference, name, single, roles, buffers, grads, kw, step0, threads)

    for role, fast_arrays, slow_arrays in zip(roles, fast, slow):
        for i, (a, b) in enumerate(zip(fast_arrays, slow_arrays)):
            if a is not None:
                assert_same_bits_nan_as_nan(a, b, f"{name} {role}[{i}] ({a.dtype}, n={a.size})")
    for grad, before in zip(grads, grads_before):
        for g, g0 in zip(grad, before):
            assert np.array_equal(bits(g), bits(g0)), f"{name} wrote its grad buffer"


@pytest.mark.parametrize("name", list(CASES))
@FUZZ
@given(data=st.data())
def test_fast_equals_reference_on_anything(name, data):
    fuzz_one(name, data, many=False)


@pytest.mark.parametrize("name", list(CASES))
@FUZZ
@given(data=st.data())
def test_fast_equals_reference_on_lists_of_arrays(name, data):
    fuzz_one(name, data, many=True)


# -- the special-value generator itself: the fuzz above is only as good as its inputs ---------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_generated_buffers_hold_every_kind_of_special_value(dtype):
    a = make_array(np.random.default_rng(0), 20000, dtype, 0.3, 300)
    info = np.finfo(dtype)
    assert np.isnan(a).any() and np.signbit(a[np.isnan(a)]).any()
    assert len(set(bits(a[np.isnan(a)]).tolist())) >= 4          # several NaN payloads
    assert (a == np.inf).any() and (a == -np.inf).any()
    assert ((a == 0) & np.signbit(a)).any() and ((a == 0) & ~np.signbit(a)).any()
    assert ((a != 0) & (np.abs(a) < info.smallest_normal)).any()   # subnormals
    assert (np.abs(a) >= (1e38 if dtype == np.float32 else 1e308)).any()


# -- mismatches found while writing these tests (fixed in csrc/; kept as regressions) ---------

def _adam_both(state, **kw):
    out = []
    for module in (kernels, reference):
        bufs = [a.copy() for a in state]
        with np.errstate(all="ignore"):
            module.adam_step(*bufs, **kw)
        out.append(bufs)
    return out


def test_eps_root_that_rounds_to_zero_in_float32_keeps_the_eps_root_formula():
    # eps_root = 1e-50 is > 0 as a double but 0 as a float32. The reference picks the formula
    # from the double: sqrt(v * (1/bc2) + 0) + eps; a kernel that decided on the float32
    # value used sqrt(v) * (1/sqrt(bc2)) + eps, one ulp away for this element.
    state = [np.array([0.0022116026], np.float32), np.array([0.69139904], np.float32),
             np.zeros(1, np.float32), np.zeros(1, np.float32)]
    fast, slow = _adam_both(state, lr=1e-3, step=3, eps_root=1e-50)
    assert_same_bits_nan_as_nan(fast[0], slow[0], "param")
    # and the two formulas really differ here, or the test would prove nothing
    plain = _adam_both(state, lr=1e-3, step=3, eps_root=0.0)[1]
    assert (bits(plain[0]) != bits(slow[0])).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_amsgrad_maximum_of_signed_zeros_matches_numpy(dtype):
    # max_exp_avg_sq = -0 (a state no step produces, but a user may load) meets exp_avg_sq = +0:
    # NumPy's maximum returns its second argument on a tie, +0; C must too.
    state = [np.ones(3, dtype), np.zeros(3, dtype), np.zeros(3, dtype), np.zeros(3, dtype),
             np.array([-0.0, 0.0, -0.0], dtype)]
    fast, slow = _adam_both(state, lr=1e-3, step=1, eps=0.0)
    for i, what in enumerate(("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")):
        assert_same_bits_nan_as_nan(fast[i], slow[i], what)


# -- allocation failure: a MemoryError, never a crash ------------------------------------------

FAULT_INJECTION = r"""
import os, sys
import numpy as np
import _testcapi
from fastoptim import kernels

def arrays(k, fill):
    return [np.full(10 + i, fill, np.float32) for i in range(k)]

ps, gs = arrays(3, 0.0), arrays(3, 1.0)
ms, vs, sq = arrays(3, 0.0), arrays(3, 0.0), arrays(3, 0.0)
calls = {
    "sgd_step, one array": lambda: kernels.sgd_step(ps[0], gs[0], lr=1.0),
    "sgd_step, list": lambda: kernels.sgd_step(ps, gs, lr=1.0),
    "adam_step, list, no amsgrad": lambda: kernels.adam_step(ps, gs, ms, vs, None, lr=1.0, step=1),
    "rmsprop_step, list": lambda: kernels.rmsprop_step(ps, gs, sq, lr=1.0),
}
problems = []
for what, call in calls.items():
    everything = ps + gs + ms + vs + sq
    refcounts = [sys.getrefcount(a) for a in everything]
    for nth in range(40):              # fail the nth allocation of the call, and only that one
        before = [p.copy() for p in ps]
        _testcapi.set_nomemory(nth, nth + 1)
        try:
            call()
            failed = False
        except MemoryError:
            failed = True
        finally:
            _testcapi.remove_mem_hooks()
        now = [sys.getrefcount(a) for a in everything]
        if now != refcounts:
            # an array freed under the caller's feet: report, and exit before anything
            # touches it again (the interpreter's teardown would crash)
            print(f"{what}: allocation {nth} failed and the reference counts of the caller's "
                  f"arrays changed: {refcounts} -> {now}", flush=True)
            os._exit(0)
        changed = [not np.array_equal(p, b) for p, b in zip(ps, before)]
        if failed and any(changed):
            problems.append(f"{what}: MemoryError after writing a buffer (allocation {nth})")
print("\n".join(problems) or "OK", flush=True)
"""


def test_allocation_failure_raises_memory_error_and_leaves_everything_intact():
    # Each allocation the call makes is failed in turn: the call must raise MemoryError with
    # no buffer written, or succeed, and never release a reference it does not own. (Cython
    # 3.3 compiled a list comprehension in _run_many into a double release when the list
    # could not grow: the caller's array was freed under it.)
    testcapi = pytest.importorskip("_testcapi")
    if not hasattr(testcapi, "set_nomemory"):
        pytest.skip("this Python's _testcapi cannot make allocations fail")
    result = subprocess.run([sys.executable, "-c", FAULT_INJECTION], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"the interpreter crashed:\n{result.stderr[-2000:]}"
    assert result.stdout.strip() == "OK", result.stdout
