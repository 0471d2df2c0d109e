"""Every kernel and option combination, as data: what `python -m fastoptim verify` runs.

A case names a kernel of fastoptim.kernels / fastoptim.reference, its state buffers in
argument order (None where an optional buffer is not used, so that variant is the one
tested) and its keyword arguments. ``run_case`` drives one case over a list of gradients
with either backend, so both see exactly the same calls.
"""
import itertools
from typing import NamedTuple, Optional, Tuple

import numpy as np

# kernels whose signature takes the 1-based step number
TAKES_STEP = frozenset({"momentum_step", "adagrad_step", "adam_step", "adamw_step"})


class KernelCase(NamedTuple):
    label: str                          # short and unique: kernel and its non-default options
    kernel: str                         # function name in fastoptim.kernels and .reference
    state: Tuple[Optional[str], ...]    # state buffer names in argument order; None = unused
    options: dict                       # keyword arguments other than step and threads


def optimizer_variants():
    """(kernel, variant label, state buffer names, options) for each variant of each
    optimizer kernel, before maximize and weight decay are combined in."""
    yield "sgd_step", "", (), dict(lr=0.05)
    for variant, form in [
        ("torch", dict(form="torch")),
        ("torch dampening=0.3", dict(form="torch", dampening=0.3)),
        ("torch nesterov", dict(form="torch", nesterov=True)),
        ("ewma", dict(form="ewma")),
        ("ewma bias_correction", dict(form="ewma", bias_correction=True)),
        ("ewma nesterov", dict(form="ewma", nesterov=True)),
        ("ewma nesterov bias_correction", dict(form="ewma", nesterov=True, bias_correction=True)),
        ("velocity", dict(form="velocity")),
        ("velocity nesterov", dict(form="velocity", nesterov=True)),
    ]:
        yield "momentum_step", variant, ("momentum_buffer",), dict(lr=0.05, momentum=0.9, **form)
    for lr_decay in (0.0, 0.01):
        yield ("adagrad_step", f"lr_decay={lr_decay:g}" if lr_decay else "", ("state_sum",),
               dict(lr=0.05, lr_decay=lr_decay, eps=1e-10))
    for centered, momentum in itertools.product((False, True), (0.0, 0.9)):
        variant = _words("centered" if centered else "",
                         f"momentum={momentum:g}" if momentum else "")
        state = ("square_avg", "grad_avg" if centered else None,
                 "momentum_buffer" if momentum else None)
        yield "rmsprop_step", variant, state, dict(lr=0.01, alpha=0.9, eps=1e-8, momentum=momentum)
    for kernel, amsgrad, eps_root in itertools.product(("adam_step", "adamw_step"),
                                                       (False, True), (0.0, 1e-8)):
        variant = _words("amsgrad" if amsgrad else "",
                         f"eps_root={eps_root:g}" if eps_root else "")
        state = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq" if amsgrad else None)
        yield kernel, variant, state, dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                                           eps_root=eps_root)


def kernel_cases():
    """All cases: each optimizer kernel variant with and without maximize and L2 weight
    decay, then the EWMA state update."""
    cases = []
    for kernel, variant, state, options in optimizer_variants():
        for maximize, weight_decay in itertools.product((False, True), (0.0, 0.1)):
            label = _words(kernel, variant, "maximize" if maximize else "",
                           f"wd={weight_decay:g}" if weight_decay else "")
            cases.append(KernelCase(label, kernel, state,
                                    dict(options, maximize=maximize, weight_decay=weight_decay)))
    for beta in (0.5, 0.9):
        cases.append(KernelCase(f"ewma_step beta={beta:g}", "ewma_step", (), dict(beta=beta)))
    return cases


def _words(*parts):
    return " ".join(p for p in parts if p)


def run_case(module, case, param, grads, threads=None):
    """Run one step of ``case`` per gradient with ``module`` (kernels or reference), from a
    copy of ``param`` and zero state. Returns {buffer name: array} for param and the state."""
    param = param.copy()
    state = [None if name is None else np.zeros_like(param) for name in case.state]
    kernel = getattr(module, case.kernel)
    for step, grad in enumerate(grads, start=1):
        options = dict(case.options, threads=threads)
        if case.kernel in TAKES_STEP:
            options["step"] = step
        kernel(param, grad, *state, **options)
    buffers = {"average" if case.kernel == "ewma_step" else "param": param}
    buffers.update((name, s) for name, s in zip(case.state, state) if name is not None)
    return buffers
