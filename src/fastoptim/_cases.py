"""Every kernel and option combination, as data: what `python -m fastoptim verify` and the
fast-vs-reference tests run.

A case names a kernel function of fastoptim.kernels / fastoptim.reference, its state
buffers in argument order (None where an optional buffer is not used, so that variant is
the one tested), its keyword arguments, and the keyword arguments that change with the step
(NAdam's running product, Schedule-Free's averaging weight). ``run_case`` drives one case
over a list of gradients with either backend, so both see exactly the same calls. Every
kernel function of fastoptim._kernel_specs.FUNCTIONS must have cases: ``missing_cases``
names any that has none (a test fails on it).
"""
import itertools
import math
from typing import Callable, NamedTuple, Optional, Tuple

import numpy as np

from fastoptim._kernel_specs import FUNCTIONS, nadam_momentum


class KernelCase(NamedTuple):
    label: str                          # short and unique: kernel and its non-default options
    kernel: str                         # function name in fastoptim.kernels and .reference
    state: Tuple[Optional[str], ...]    # state buffer names in argument order; None = unused
    options: dict                       # keyword arguments other than step and threads
    per_step: Optional[Callable] = None     # step -> more keyword arguments for that step
    initial: Tuple = ()                 # (name, value) for state not starting at 0


def _words(*parts):
    return " ".join(p for p in parts if p)


def _nadam_schedule(step, beta1=0.9, momentum_decay=4e-3):
    return {"mu_product": math.prod(nadam_momentum(beta1, momentum_decay, k)
                                    for k in range(1, step + 1))}


def _schedulefree_schedule(step):
    return {"ckp1": 1.0 / step}     # equal weights: the plain average of the z iterates


def optimizer_variants():
    """(kernel, variant label, state buffer names, options, per_step, initial) for each
    variant of each optimizer kernel, before maximize and weight decay are combined in."""
    yield "sgd_step", "", (), dict(lr=0.05), None, ()
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
        yield ("momentum_step", variant, ("momentum_buffer",),
               dict(lr=0.05, momentum=0.9, **form), None, ())
    for lr_decay, eps_in_sqrt in itertools.product((0.0, 0.01), (False, True)):
        yield ("adagrad_step", _words(f"lr_decay={lr_decay:g}" if lr_decay else "",
                                      "eps_in_sqrt" if eps_in_sqrt else ""),
               ("state_sum",), dict(lr=0.05, lr_decay=lr_decay, eps=1e-10,
                                    eps_in_sqrt=eps_in_sqrt), None, ())
    for centered, momentum, eps_in_sqrt in itertools.product((False, True), (0.0, 0.9),
                                                             (False, True)):
        variant = _words("centered" if centered else "",
                         f"momentum={momentum:g}" if momentum else "",
                         "eps_in_sqrt" if eps_in_sqrt else "")
        state = ("square_avg", "grad_avg" if centered else None,
                 "momentum_buffer" if momentum else None)
        yield ("rmsprop_step", variant, state,
               dict(lr=0.01, alpha=0.9, eps=1e-8, momentum=momentum, eps_in_sqrt=eps_in_sqrt),
               None, ())
    yield "adadelta_step", "", ("square_avg", "acc_delta"), dict(lr=1.0, rho=0.9), None, ()
    for kernel, amsgrad, denominator in itertools.product(
            ("adam_step", "adamw_step"), (False, True), ("torch", "eps_root", "eps_hat")):
        extra = {"eps_root": dict(eps_root=1e-8), "eps_hat": dict(eps_hat=True)}.get(
            denominator, {})
        variant = _words("amsgrad" if amsgrad else "",
                         denominator if denominator != "torch" else "")
        state = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq" if amsgrad else None)
        yield (kernel, variant, state, dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, **extra),
               None, ())
    yield "adamax_step", "", ("exp_avg", "exp_inf"), dict(lr=2e-3), None, ()
    yield ("nadam_step", "", ("exp_avg", "exp_avg_sq"), dict(lr=2e-3), _nadam_schedule, ())
    # RAdam with the default beta2 switches to the rectified update at step 6
    yield "radam_step", "", ("exp_avg", "exp_avg_sq"), dict(lr=1e-3), None, ()
    yield "radam_step", "beta2=0.9", ("exp_avg", "exp_avg_sq"), dict(lr=1e-3, beta2=0.9), None, ()
    for bias_correction, max_trust_ratio in ((True, None), (False, None), (True, 0.5)):
        variant = _words("" if bias_correction else "no bias_correction",
                         f"max_trust_ratio={max_trust_ratio:g}" if max_trust_ratio else "")
        yield ("lamb_step", variant, ("exp_avg", "exp_avg_sq"),
               dict(lr=1e-2, bias_correction=bias_correction, max_trust_ratio=max_trust_ratio),
               None, ())
    # Adafactor: row_var and col_var for params of 2+ dimensions, variance for the others
    for variant, options in (("", {}), ("eps1=1e-3 d=2 beta2_decay=-0.5",
                                        dict(eps1=1e-3, d=2.0, beta2_decay=-0.5))):
        yield ("adafactor_step", variant, ("row_var", "col_var", "variance"),
               dict(lr=1e-2, **options), None, ())
    yield "lion_step", "", ("exp_avg",), dict(lr=1e-3), None, ()
    yield ("rprop_step", "", ("prev", "step_size"), dict(lr=1e-2), None,
           (("step_size", 1e-2),))
    for mu in (1.0, 0.25):
        yield ("asgd_step", f"mu={mu:g}", ("ax",), dict(eta=0.05, mu=mu, lambd=1e-2), None, ())
    yield ("schedulefree_adamw_step", "", ("z", "exp_avg_sq"), dict(lr=0.01),
           _schedulefree_schedule, (("z", "param"),))


def kernel_cases():
    """All cases: each optimizer kernel variant with and without maximize and weight decay
    (L2, and decoupled where the kernel has both), then the kernels that are not optimizers."""
    cases = []
    for kernel, variant, state, options, per_step, initial in optimizer_variants():
        decays = [("", {}), ("wd=0.1", dict(weight_decay=0.1))]
        if "decoupled_weight_decay" in _parameters(kernel) and kernel != "adamw_step":
            decays.append(("decoupled wd=0.1", dict(weight_decay=0.1,
                                                   decoupled_weight_decay=True)))
        for maximize, (decay_label, decay) in itertools.product((False, True), decays):
            if "weight_decay" in options and decay:
                continue
            label = _words(kernel, variant, "maximize" if maximize else "", decay_label)
            cases.append(KernelCase(label, kernel, state,
                                    dict(options, maximize=maximize, **decay), per_step, initial))
    cases.append(KernelCase("interpolate_step", "interpolate_step", (), dict(weight=0.3)))
    for beta in (0.5, 0.9):
        cases.append(KernelCase(f"ewma_step beta={beta:g}", "ewma_step", (), dict(beta=beta)))
    for norm_type in (2.0, 1.0, math.inf):
        cases.append(KernelCase(f"norms norm_type={norm_type:g}", "norms", (),
                                dict(norm_type=norm_type)))
    return cases


def _parameters(kernel):
    import inspect
    return inspect.signature(FUNCTIONS[kernel][0]).parameters


def missing_cases(cases=None):
    """The kernel functions that have no case."""
    covered = {case.kernel for case in (cases or kernel_cases())}
    return sorted(set(FUNCTIONS) - covered)


def takes_step(kernel):
    return "step" in _parameters(kernel)


def run_case(module, case, param, grads, threads=None, state_dtype=None, **options):
    """Run one step of ``case`` per gradient with ``module`` (kernels or reference), from a
    copy of ``param`` (an array, or a list of arrays for the list form) and the case's
    initial state (in ``state_dtype``, default each param's). Returns {buffer name: array,
    or list of arrays}; for ``norms``, {"norms": the sums of every step}. ``options``
    (param_copy, rounding, seed) go to every call."""
    many = isinstance(param, list)
    params = [p.copy() for p in param] if many else [param.copy()]
    kernel = getattr(module, case.kernel)
    if case.kernel == "norms":
        return {"norms": np.array([kernel(g, threads=threads, **case.options) for g in grads])}
    initial = dict(case.initial)
    state_shape = FUNCTIONS[case.kernel][1].state_shape     # Adafactor's: not the param's
    state = []
    for name in case.state:
        if name is None:
            state.append(None)
            continue
        column = []
        for p in params:
            dtype = state_dtype or p.dtype
            shape = p.shape if state_shape is None else state_shape(name, p.shape)
            column.append(None if shape is None else p.astype(dtype)
                          if initial.get(name) == "param"
                          else np.full(shape, initial.get(name, 0.0), dtype))
        state.append(column)
    for step, grad in enumerate(grads, start=1):
        kwargs = dict(case.options, threads=threads, **options)
        if takes_step(case.kernel):
            kwargs["step"] = step
        if case.per_step:
            kwargs.update(case.per_step(step))
        arguments = [params if many else params[0], grad]
        arguments += [None if s is None else s if many else s[0] for s in state]
        kernel(*arguments, **kwargs)
    buffers = {"average" if case.kernel == "ewma_step" else "param": params if many else params[0]}
    buffers.update((name, s if many else s[0]) for name, s in zip(case.state, state)
                   if name is not None and any(a is not None for a in s))
    if options.get("param_copy") is not None:
        buffers["param_copy"] = options["param_copy"]
    return buffers
