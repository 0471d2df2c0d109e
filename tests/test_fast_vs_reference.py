"""The compiled kernels and the NumPy reference give identical bits, for every kernel,
option combination (fastoptim._cases, the list `python -m fastoptim verify` runs too),
dtype and a range of sizes, over several steps (docs/design.md)."""
import numpy as np
import pytest

from conftest import DTYPES, assert_same_bits, kernels, needs_kernels
from fastoptim import reference
from fastoptim._cases import kernel_cases, missing_cases, run_case

# sizes that hit a scalar-only call, SIMD tails, and (the last) a split across threads
SIZES = (1, 7, 31, 1000, 2 * 65536 + 37)
STEPS = 6
CASES = kernel_cases()
IDS = [case.label for case in CASES]


def random_problem(n, dtype, seed, steps=STEPS):
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(n).astype(dtype)
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(steps)]
    return param, grads


@needs_kernels
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fast_equals_reference_bit_for_bit(case, dtype, n):
    param, grads = random_problem(n, dtype, seed=n)
    fast = run_case(kernels, case, param, grads)
    slow = run_case(reference, case, param, grads)
    first = next(iter(fast))
    if case.kernel != "norms":
        assert not np.array_equal(fast[first], param), "the kernel did not update its buffer"
    for name in fast:
        assert_same_bits(fast[name], slow[name], f"{case.label}: {name}")


@needs_kernels
@pytest.mark.parametrize("case", CASES[::3], ids=IDS[::3])
def test_list_form_equals_one_call_per_array(case):
    """Many arrays of both dtypes in one call give the bits of one call per array, in both
    backends (the scalars are the same for every array of a step)."""
    shapes_dtypes = [((5,), np.float32), ((3, 4), np.float64), ((0,), np.float32),
                     ((70000,), np.float32), ((2, 2, 2), np.float64)]
    rng = np.random.default_rng(3)
    params = [rng.standard_normal(s).astype(d) for s, d in shapes_dtypes]
    grads = [[rng.standard_normal(p.shape).astype(p.dtype) for p in params] for _ in range(3)]
    one_by_one = [run_case(kernels, case, p, [g[i] for g in grads])
                  for i, p in enumerate(params)]
    for module in (kernels, reference):
        together = _run_case_on_lists(module, case, params, grads)
        for i, single in enumerate(one_by_one):
            for name in single:
                if name == "norms":     # (steps, arrays, 2): array i of every step
                    assert_same_bits(together[name][:, i], single[name][:, 0], f"{name}[{i}]")
                else:
                    assert_same_bits(together[name][i], single[name], f"{name}[{i}]")


def _run_case_on_lists(module, case, params, grads):
    return run_case(module, case, list(params), grads)


def test_every_kernel_has_cases():
    """A kernel without cases would never be compared with its twin."""
    assert missing_cases() == []


@needs_kernels
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("case", CASES[::7], ids=IDS[::7])
def test_thread_count_does_not_change_bits(case, threads):
    param, grads = random_problem(3 * 65536 + 5, np.float32, seed=1)
    one = run_case(kernels, case, param, grads, threads=1)
    many = run_case(kernels, case, param, grads, threads=threads)
    for name in one:
        assert_same_bits(one[name], many[name], name)
