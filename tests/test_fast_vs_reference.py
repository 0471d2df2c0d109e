"""The compiled kernels and the NumPy reference give identical bits, for every kernel,
option combination, dtype and a range of sizes, over several steps (DESIGN.md)."""
import itertools

import numpy as np
import pytest

from conftest import DTYPES, assert_same_bits, kernels, needs_kernels
from fastoptim import reference

# sizes that hit a scalar-only call, SIMD tails, and (the last) a split across threads
SIZES = (1, 7, 31, 1000, 2 * 65536 + 37)
STEPS = 6


def kernel_cases():
    """(kernel name, state buffer names, keyword arguments) for every option combination."""
    for maximize, wd in itertools.product((False, True), (0.0, 0.1)):
        common = dict(maximize=maximize, weight_decay=wd)
        yield "sgd_step", (), dict(lr=0.05, **common)
        momentum_forms = [
            dict(form="torch", nesterov=False, dampening=0.0),
            dict(form="torch", nesterov=False, dampening=0.3),
            dict(form="torch", nesterov=True),
            dict(form="ewma", nesterov=False, bias_correction=False),
            dict(form="ewma", nesterov=False, bias_correction=True),
            dict(form="ewma", nesterov=True, bias_correction=True),
            dict(form="ewma", nesterov=True, bias_correction=False),
            dict(form="velocity", nesterov=False),
            dict(form="velocity", nesterov=True),
        ]
        for form in momentum_forms:
            yield "momentum_step", ("momentum_buffer",), dict(lr=0.05, momentum=0.9, **form,
                                                               **common)
        for lr_decay in (0.0, 0.01):
            yield "adagrad_step", ("state_sum",), dict(lr=0.05, lr_decay=lr_decay, eps=1e-10,
                                                      **common)
        for centered, momentum in itertools.product((False, True), (0.0, 0.9)):
            names = ("square_avg", "grad_avg" if centered else None,
                     "momentum_buffer" if momentum else None)
            yield "rmsprop_step", names, dict(lr=0.01, alpha=0.9, eps=1e-8, momentum=momentum,
                                              **common)
        for name, amsgrad, eps_root in itertools.product(("adam_step", "adamw_step"),
                                                         (False, True), (0.0, 1e-8)):
            names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq" if amsgrad else None)
            yield name, names, dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                                    eps_root=eps_root, **common)
    for beta in (0.5, 0.9):
        yield "ewma_step", (), dict(beta=beta)


CASES = list(kernel_cases())


def case_id(case):
    name, names, kw = case
    opts = ",".join(f"{k}={v}" for k, v in kw.items())
    return f"{name}[{','.join(n for n in names if n)}]({opts})"


def run_steps(module, name, state_names, kw, param, grads, threads=None):
    """Run STEPS steps of one kernel; return param and the state arrays."""
    param = param.copy()
    state = [None if n is None else np.zeros_like(param) for n in state_names]
    if name == "rmsprop_step":  # grad_avg and momentum_buffer are passed by keyword
        state_kw = dict(zip(("grad_avg", "momentum_buffer"), state[1:]))
        state = state[:1]
    else:
        state_kw = {}
    fn = getattr(module, name)
    for t, grad in enumerate(grads, start=1):
        step_kw = dict(kw, threads=threads)
        if name not in ("sgd_step", "rmsprop_step", "ewma_step"):
            step_kw["step"] = t
        fn(param, grad, *state, **state_kw, **step_kw)
    return [param] + [s for s in state + list(state_kw.values()) if s is not None]


def random_problem(n, dtype, seed):
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(n).astype(dtype)
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(STEPS)]
    return param, grads


@needs_kernels
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_fast_equals_reference_bit_for_bit(case, dtype, n):
    name, state_names, kw = case
    param, grads = random_problem(n, dtype, seed=n)
    fast = run_steps(kernels, name, state_names, kw, param, grads)
    slow = run_steps(reference, name, state_names, kw, param, grads)
    assert not np.array_equal(fast[0], param), "the kernel did not update param"
    for i, (a, b) in enumerate(zip(fast, slow)):
        assert_same_bits(a, b, f"{name} buffer {i}")


@needs_kernels
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("case", CASES[::7], ids=[case_id(c) for c in CASES[::7]])
def test_thread_count_does_not_change_bits(case, threads):
    name, state_names, kw = case
    param, grads = random_problem(3 * 65536 + 5, np.float32, seed=1)
    one = run_steps(kernels, name, state_names, kw, param, grads, threads=1)
    many = run_steps(kernels, name, state_names, kw, param, grads, threads=threads)
    for a, b in zip(one, many):
        assert_same_bits(a, b)

