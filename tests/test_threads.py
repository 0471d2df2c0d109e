"""Threads: the thread count never changes a bit, OMP_NUM_THREADS sets the default, and a step
releases the GIL -- two Python threads stepping two optimizers at once get the results of
stepping them one after the other, and a Python thread runs while a step is in C.

Element-wise updates are independent, so any split across OpenMP threads must give the bits
of one thread (docs/design.md), NaNs included. Every result is also checked against the NumPy
reference, so "all thread counts equally wrong" fails too; there a NaN matches any NaN,
because which NaN an operation on NaNs returns is not fixed (see tests/test_fuzz.py).
"""
import hashlib
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastoptim as fo
from conftest import assert_same_bits, bits, kernels, needs_kernels, parallel_threshold
from fastoptim import reference

pytestmark = needs_kernels

THREADS = (1, 2, 3, None)          # None: the default (all cores, or OMP_NUM_THREADS)
BIG = 3 * 65536 + 101              # split three ways at the default threshold


def assert_matches_reference(actual, expected, what):
    """Bits equal, except where both are NaN."""
    both_nan = np.isnan(actual) & np.isnan(expected)
    differ = np.flatnonzero((bits(actual) != bits(expected)) & ~both_nan)
    assert not differ.size, (f"{what}: {differ.size} elements differ from the reference, first "
                             f"at {differ[0]}: {actual.flat[differ[0]]!r} vs "
                             f"{expected.flat[differ[0]]!r}")


def problem(sizes, seed=0, steps=3):
    """Params (alternating float32/float64) and `steps` lists of grads with a few NaN/Inf."""
    rng = np.random.default_rng(seed)
    dtypes = [np.float32 if i % 2 == 0 else np.float64 for i in range(len(sizes))]
    params = [rng.standard_normal(n).astype(dt) for n, dt in zip(sizes, dtypes)]
    grads = []
    for _ in range(steps):
        step = [rng.standard_normal(n).astype(dt) for n, dt in zip(sizes, dtypes)]
        for g in step:
            if g.size > 10:
                g[rng.integers(0, g.size, 3)] = (np.nan, np.inf, -0.0)
        grads.append(step)
    return params, grads


# many arrays: two big enough to be split, and 60 small ones that add up to more than twice
# the threshold, so they are shared out among the threads whole (fo_run_many's two paths)
MANY = [BIG, 2 * 65536] + [997 + 61 * i for i in range(60)]


# -- kernels ------------------------------------------------------------------------------------

KERNEL_CASES = [
    ("sgd_step", (), dict(lr=0.05, weight_decay=0.1, maximize=True)),
    ("momentum_step", ("momentum_buffer",), dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("momentum_step", ("momentum_buffer",), dict(lr=0.05, momentum=0.9, form="velocity")),
    ("adagrad_step", ("state_sum",), dict(lr=0.05, lr_decay=0.01)),
    ("rmsprop_step", ("square_avg", "grad_avg", "momentum_buffer"), dict(lr=0.01, momentum=0.9)),
    ("adam_step", ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), dict(lr=1e-3, weight_decay=0.1)),
    ("adamw_step", ("exp_avg", "exp_avg_sq", None), dict(lr=1e-3, eps_root=1e-8)),
    ("ewma_step", (), dict(beta=0.9)),
]
TAKES_STEP = ("momentum_step", "adagrad_step", "adam_step", "adamw_step")


def run_kernel(module, name, state_names, kw, params, grads, threads, as_list=True):
    """Step copies of params with one kernel; return params and state, flattened."""
    params = [p.copy() for p in params]
    states = [None if s is None else [np.zeros_like(p) for p in params] for s in state_names]
    fn = getattr(module, name)
    for t, grad in enumerate(grads, start=1):
        step_kw = dict(kw, threads=threads)
        if name in TAKES_STEP:
            step_kw["step"] = t
        with np.errstate(all="ignore"):   # NaN and Inf in the grads
            if as_list:
                fn(params, grad, *states, **step_kw)
            else:
                for i, (p, g) in enumerate(zip(params, grad)):
                    fn(p, g, *[None if s is None else s[i] for s in states], **step_kw)
    return params + [a for s in states if s is not None for a in s]


@pytest.mark.parametrize("case", KERNEL_CASES, ids=[f"{c[0]}{i}" for i, c in enumerate(KERNEL_CASES)])
def test_kernel_bits_do_not_depend_on_thread_count(case):
    name, state_names, kw = case
    params, grads = problem(MANY)
    expected = run_kernel(reference, name, state_names, kw, params, grads, None)
    one = run_kernel(kernels, name, state_names, kw, params, grads, 1)
    for i, (a, b) in enumerate(zip(one, expected)):
        assert_matches_reference(a, b, f"{name} threads=1 buffer {i}")
    for threads in THREADS[1:]:
        got = run_kernel(kernels, name, state_names, kw, params, grads, threads)
        for i, (a, b) in enumerate(zip(got, one)):
            assert_same_bits(a, b, f"{name} threads={threads} vs 1, buffer {i}")
    # one call per array (fo_parallel_for alone) agrees with the list form
    one_by_one = run_kernel(kernels, name, state_names, kw, params, grads, 3, as_list=False)
    for i, (a, b) in enumerate(zip(one_by_one, one)):
        assert_same_bits(a, b, f"{name} one array per call, buffer {i}")


@pytest.mark.parametrize("threshold", [1, 100, 4096, 2**62, 2**63 - 1])
@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_any_parallel_threshold_gives_the_same_bits(threshold, threads):
    # threshold 1: every array split as far as it goes, chunk edges everywhere; 2**62 and
    # the int64 maximum: nothing ever split (and no overflow in 2 * threshold)
    params, grads = problem([1, 63, 64, 65, 1000, 5000, 20011], seed=threads)
    name, state_names, kw = KERNEL_CASES[5]   # adam with amsgrad: five buffers
    expected = run_kernel(reference, name, state_names, kw, params, grads, None)
    one = run_kernel(kernels, name, state_names, kw, params, grads, 1)
    with parallel_threshold(threshold):
        # clamped to (2**63 - 1) // 4 so that 2 * threshold cannot overflow
        assert kernels.build_info()["parallel_threshold"] == min(threshold, (2**63 - 1) // 4)
        got = run_kernel(kernels, name, state_names, kw, params, grads, threads)
    for i, (a, b, c) in enumerate(zip(got, one, expected)):
        assert_same_bits(a, b, f"threshold={threshold} threads={threads} buffer {i}")
        assert_matches_reference(a, c, f"threshold={threshold} threads={threads} buffer {i}")


def test_parallel_threshold_is_restored_and_clamped():
    default = kernels.build_info()["parallel_threshold"]
    with parallel_threshold(0):
        assert kernels.build_info()["parallel_threshold"] == 1   # at least one element
    with parallel_threshold(-5):
        assert kernels.build_info()["parallel_threshold"] == 1
    assert kernels.build_info()["parallel_threshold"] == default


# -- optimizer classes --------------------------------------------------------------------------

OPTIMIZERS = [
    (fo.SGD, dict(lr=0.05, weight_decay=0.1)),
    (fo.Momentum, dict(lr=0.05, form="ewma", bias_correction=True)),
    (fo.Nesterov, dict(lr=0.05)),
    (fo.AdaGrad, dict(lr=0.05, initial_accumulator_value=0.1)),
    (fo.RMSProp, dict(lr=0.01, centered=True, momentum=0.9)),
    (fo.Adam, dict(lr=1e-3, amsgrad=True)),
    (fo.AdamW, dict(lr=1e-3, eps_root=1e-8)),
]


def run_optimizer(cls, kw, params, grads, backend, threads):
    params = [p.copy() for p in params]
    opt = cls(params, backend=backend, threads=threads, **kw)
    with np.errstate(all="ignore"):
        for grad in grads:
            opt.step(grad)
    return params + [a for st in opt.state for a in st.values()]


@pytest.mark.parametrize("cls,kw", OPTIMIZERS, ids=[c.__name__ for c, _ in OPTIMIZERS])
def test_optimizer_bits_do_not_depend_on_threads(cls, kw):
    params, grads = problem(MANY[:2] + MANY[2::3], seed=3)
    expected = run_optimizer(cls, kw, params, grads, "numpy", None)
    one = run_optimizer(cls, kw, params, grads, "c", 1)
    for i, (a, b) in enumerate(zip(one, expected)):
        assert_matches_reference(a, b, f"{cls.__name__} threads=1 buffer {i}")
    for threads in THREADS[1:]:
        got = run_optimizer(cls, kw, params, grads, "c", threads)
        for i, (a, b) in enumerate(zip(got, one)):
            assert_same_bits(a, b, f"{cls.__name__} threads={threads} vs 1, buffer {i}")


# -- the default thread count from the environment ------------------------------------------------

CHILD = """
import hashlib, sys
import numpy as np
import fastoptim as fo
from fastoptim import kernels
rng = np.random.default_rng(7)
p = rng.standard_normal(%d).astype(np.float32)
opt = fo.Adam(p, lr=1e-3, backend="c")
for _ in range(3):
    opt.step(rng.standard_normal(p.size).astype(np.float32))
print(kernels.build_info()["max_threads"], hashlib.sha256(p.tobytes()).hexdigest())
""" % BIG


def child_run(**env_vars):
    """build_info()["max_threads"] and a digest of three Adam steps (threads=None) in a fresh
    interpreter with the given environment variables (and no inherited thread settings)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "FASTOPTIM_NUM_THREADS")}
    env.update({k: str(v) for k, v in env_vars.items()})
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    return int(out[0]), out[1]


@pytest.fixture(scope="module")
def expected_digest():
    rng = np.random.default_rng(7)
    p = rng.standard_normal(BIG).astype(np.float32)
    opt = fo.Adam(p, lr=1e-3, backend="numpy")
    for _ in range(3):
        opt.step(rng.standard_normal(p.size).astype(np.float32))
    return hashlib.sha256(p.tobytes()).hexdigest()


CORES = os.cpu_count()     # the default team is capped by the cores this process may use


@pytest.mark.parametrize("env, team", [
    (dict(OMP_NUM_THREADS=1), 1),
    (dict(OMP_NUM_THREADS=3), min(3, CORES)),
    (dict(FASTOPTIM_NUM_THREADS=3), min(3, CORES)),
    (dict(FASTOPTIM_NUM_THREADS=2, OMP_NUM_THREADS=1), min(2, CORES)),     # ours wins
    (dict(FASTOPTIM_NUM_THREADS="", OMP_NUM_THREADS=3), min(3, CORES)),    # empty: not set
    (dict(FASTOPTIM_NUM_THREADS=10**6), CORES),                           # capped
    (dict(FASTOPTIM_NUM_THREADS="two"), CORES),                           # ignored (warned)
], ids=["OMP=1", "OMP=3", "FASTOPTIM=3", "FASTOPTIM=2,OMP=1", "FASTOPTIM=empty,OMP=3",
        "FASTOPTIM=10**6", "FASTOPTIM=two"])
def test_environment_sets_the_default_thread_count_and_changes_no_bit(env, team,
                                                                      expected_digest):
    max_threads, digest = child_run(**env)
    assert max_threads == team, f"{env} gave a default team of {max_threads}, not {team}"
    assert digest == expected_digest, f"{env} changed the result"


# -- the GIL ------------------------------------------------------------------------------------

def test_two_python_threads_stepping_two_optimizers_match_sequential_steps():
    # big enough for both optimizers to run thread teams, from two Python threads at once
    sizes = [2_000_003, 70_001]
    p_adam, g_adam = problem(sizes, seed=11, steps=4)
    p_mom, g_mom = problem(sizes[::-1], seed=12, steps=4)

    def make():
        return (fo.Adam([p.copy() for p in p_adam], lr=1e-3, amsgrad=True, backend="c"),
                fo.Momentum([p.copy() for p in p_mom], lr=0.05, nesterov=True, backend="c"))

    sequential = make()
    for opt, grads in zip(sequential, (g_adam, g_mom)):
        for g in grads:
            opt.step(g)

    concurrent = make()
    start = threading.Barrier(2)
    errors = []

    def work(opt, grads):
        try:
            start.wait()
            for g in grads:
                opt.step(g)
        except BaseException as exc:   # re-raised in the main thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(opt, grads))
               for opt, grads in zip(concurrent, (g_adam, g_mom))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors
    for a, b in zip(sequential, concurrent):
        assert a.step_count == b.step_count == 4
        for x, y in zip(list(a.params) + [s for st in a.state for s in st.values()],
                        list(b.params) + [s for st in b.state for s in st.values()]):
            assert_same_bits(y, x, "concurrent vs sequential")


N_GIL = 8_000_000      # one SGD step over it takes milliseconds: a long window in C


def caught_mid_step(step, p, attempts=400):
    """Step p (p[i] decreases by 1 per step) until a Python thread sees a step half done.

    The watcher reads p[0] and THEN p[-1]. A step writes p[0] before p[-1] (the single
    thread runs from the first element to the last; a team's first thread starts at p[0],
    its last thread ends at p[-1]). So p[0] already stepped further than p[-1] means that the
    watcher's two reads, both made while it held the GIL, fell inside one step: the step ran
    without the GIL. No timing is measured: if the GIL were held, the pattern could never be
    seen and every attempt would fail. Returns the number of such sightings.
    """
    done = threading.Event()
    seen = [0, 0]        # [sightings, loop iterations of the watcher]

    def watch():
        while not done.is_set():
            first = p[0]
            last = p[-1]
            seen[1] += 1
            if first < last:
                seen[0] += 1
                done.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for _ in range(attempts):
            if done.is_set():
                break
            step()
    finally:
        done.set()
        watcher.join()
    return seen[0], seen[1]


@pytest.mark.skipif(os.environ.get("FASTOPTIM_UNDER_VALGRIND") == "1",
                    reason="valgrind runs one thread at a time, so the watcher may never be "
                           "scheduled during a step")
@pytest.mark.parametrize("threads", [1, None])
@pytest.mark.parametrize("how", ["kernel", "kernel, list form", "optimizer"])
def test_a_python_thread_runs_while_a_step_is_in_c(how, threads):
    p = np.zeros(N_GIL, np.float32)
    g = np.ones_like(p)
    if how == "kernel":
        def step():
            kernels.sgd_step(p, g, lr=1.0, threads=threads)
    elif how == "kernel, list form":
        def step():
            kernels.sgd_step([p], [g], lr=1.0, threads=threads)
    else:
        opt = fo.SGD(p, lr=1.0, backend="c", threads=threads)

        def step():
            opt.step(g)
    sightings, iterations = caught_mid_step(step, p)
    assert sightings > 0, (f"in {iterations} reads a Python thread never saw a step half done: "
                           "the GIL is held while the kernel runs")
    # the steps themselves were exact: p went down by 1 per step, everywhere alike
    assert p[0] == p[-1] == p[N_GIL // 2] < 0
    assert np.all(p == p[0])


# A step in C must keep its arrays alive: with the GIL released, another Python thread may
# drop the last reference to an array of the caller's list while the step still writes it.
LIST_KEEPS_ARRAYS_ALIVE = r"""
import threading, weakref
import numpy as np
from fastoptim import kernels

N = 16_000_000
for attempt in range(50):
    params = [np.zeros(N, np.float32)]         # the list holds the array's only reference
    grads = [np.ones(N, np.float32)]
    alive = weakref.ref(params[0])
    step_done, verdict = threading.Event(), []

    def drop_mid_step():
        while not step_done.is_set():
            p = params[0]
            first, last = p[0], p[-1]
            del p
            if first < last:                   # the step is half done (see caught_mid_step)
                params[0] = None
                if not step_done.is_set():     # still inside the step: a valid trial
                    verdict.append("HELD" if alive() is not None else "FREED")
                return

    dropper = threading.Thread(target=drop_mid_step)
    dropper.start()
    kernels.sgd_step(params, grads, lr=1.0, threads=1)
    step_done.set()
    dropper.join()
    if verdict:
        print(verdict[0], flush=True)
        break
else:
    print("NEVER-MID-STEP", flush=True)
"""


def test_a_list_call_keeps_its_arrays_alive_while_it_runs():
    """Another thread emptying the caller's lists mid-step must not free an array that C is
    writing without the GIL (a use-after-free before _run_many held tuples of the lists)."""
    result = subprocess.run([sys.executable, "-c", LIST_KEEPS_ARRAYS_ALIVE],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"the interpreter crashed ({result.returncode}): " \
                                   f"{result.stdout.strip()} {result.stderr[-1000:]}"
    assert result.stdout.strip() == "HELD"
