"""torch.optim optimizers whose step runs fastoptim's kernels on the tensors' own memory.

    >>> import fastoptim.torch
    >>> opt = fastoptim.torch.Adam(model.parameters(), lr=1e-3)   # was torch.optim.Adam

Each class takes torch.optim's constructor arguments (param groups, per-group
hyperparameters), keeps its state under torch.optim's names and layout (a float32
``state[p]["step"]`` tensor, ``exp_avg``, ``momentum_buffer``, ``sum``, ...), and is a
``torch.optim.Optimizer``: LR schedulers, ``zero_grad``, ``state_dict``/``load_state_dict``,
``torch.save`` and ``ZeroRedundancyOptimizer`` work as with the originals, and a checkpoint
moves between the two in both directions.

``step()`` views every tensor as a NumPy array without a copy (``tensor.detach().numpy()``)
and hands the arrays to the kernel, which updates them in place. It accepts contiguous
float32/float64 CPU tensors only; anything else (CUDA, float16/bfloat16, non-contiguous,
sparse gradients) gets a TypeError/ValueError naming the parameter, raised before any
tensor or state entry is touched. ``foreach`` and ``fused`` are accepted and ignored (the
kernel is one fused pass either way); ``capturable`` and ``differentiable`` are refused.
Extra keyword arguments: ``backend`` ("auto", "c", "numpy", as fastoptim.Adam) and
``threads`` (kernel threads; None = all cores).

Results equal torch.optim's up to rounding, not bit for bit: torch writes the moment
updates with lerp/addcmul/addcdiv and divides by sqrt(bc2) where the kernels multiply by
its reciprocal (DESIGN.md).
"""
from typing import NamedTuple

import numpy as np

try:
    import torch
except ImportError as exc:  # torch is optional: only this module needs it
    raise ImportError("fastoptim.torch needs PyTorch, which is not installed; "
                      "install it with `pip install torch==2.13.0`") from exc

from fastoptim._backend import resolve_backend
from fastoptim._checks import FLOAT_DTYPES, check_buffers, check_threads

__all__ = ["Adam", "AdamW", "SGD", "RMSprop", "Adagrad"]

def _step_dtype():
    """The dtype torch.optim gives state["step"] (float32 unless the default is float64)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _scalar(value):
    """A hyperparameter as a Python float (torch allows 1-element tensors for lr, betas)."""
    return float(value)


def _numpy_view(tensor, what):
    """A NumPy array over the tensor's own memory (``detach().numpy()`` never copies, and
    we check that it did not), or the error that says why there is none."""
    try:
        array = tensor.detach().numpy()
    except (AttributeError, RuntimeError, TypeError):  # sparse, CUDA, conjugate bit, ...
        array = None
    if (array is None or array.dtype not in FLOAT_DTYPES or not array.flags.c_contiguous
            or (array.size and array.ctypes.data != tensor.data_ptr())):
        _refuse(tensor, what)
    return array


def _refuse(tensor, what):
    """Raise the error that says why the tensor has no zero-copy float32/float64 view."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.layout != torch.strided:
        raise TypeError(f"{what} is a {tensor.layout} tensor; fastoptim.torch needs dense "
                        "tensors (sparse gradients are not supported)")
    if tensor.device.type != "cpu":
        raise TypeError(f"{what} is on {tensor.device}; fastoptim.torch updates CPU tensors "
                        "only (use torch.optim on accelerators)")
    if tensor.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{what} has dtype {tensor.dtype}; fastoptim.torch supports "
                        "torch.float32 and torch.float64")
    if not tensor.is_contiguous():
        raise ValueError(f"{what} is not contiguous (shape {tuple(tensor.shape)}, strides "
                         f"{tensor.stride()}); the kernels update contiguous memory in place")
    raise ValueError(f"{what} cannot be viewed as a NumPy array without a copy "
                     f"(conjugate or negative bit: {tensor.is_conj()}, {tensor.is_neg()})")


def _check_nonnegative(**values):
    for name, value in values.items():
        if not 0.0 <= value:  # also refuses NaN
            raise ValueError(f"Invalid {name}: {value} (must be >= 0)")


def _check_below_one(**values):
    for name, value in values.items():
        if not 0.0 <= value < 1.0:
            raise ValueError(f"Invalid {name}: {value} (must be in [0, 1))")


class _Views(NamedTuple):
    """NumPy views of the tensors one update writes: the param, its state buffers and its
    step counter. They stay valid while each tensor keeps its memory and layout."""

    layout: list  # _layout() of each tensor, when the views were made
    spans: list  # (first byte, end) of each written tensor, to test the grad against
    param: np.ndarray
    state: dict
    step: np.ndarray  # 0-d view of state["step"]; None for SGD


def _layout(tensor):
    return tensor.data_ptr(), tensor.dtype, tensor.shape, tensor.stride()


def _span(tensor):
    start = tensor.data_ptr()
    return start, start + tensor.numel() * tensor.element_size()


def _grad_fits(grad, param, spans):
    """The kernel's rules for a grad -- the param's dtype and shape, no memory shared with
    a tensor the kernel writes -- in torch's terms, cheap enough for every step."""
    start, end = _span(grad)
    return (grad.dtype == param.dtype and grad.shape == param.shape
            and not any(first < end and start < last for first, last in spans))


class _KernelOptimizer(torch.optim.Optimizer):
    """A torch.optim.Optimizer whose step runs one fastoptim kernel per parameter.

    A subclass gives ``_check_group(group)`` (the constructor's checks), ``_state_names(group)``
    (its state buffers, in torch's order) and ``_update(kernels, group, param, grad, state,
    step)``, which maps the group's hyperparameters to one kernel call on NumPy views.
    step() first prepares every parameter of every group -- views, checks, the state torch
    would create lazily, the next step count -- and only then runs the kernels, so a refused
    tensor leaves all params and all state as they were.
    """

    _counts_steps = True  # keeps torch's state["step"]; SGD does not

    def __init__(self, params, defaults, backend="auto", threads=None):
        resolve_backend(backend)  # refuse a bad name (or a missing build for "c") now
        check_threads(threads)
        self.backend = backend
        self.threads = threads
        self._views = {}  # param -> _Views, kept from one step to the next
        super().__init__(params, defaults)
        for group in self.param_groups:
            self._check_group(group)

    def __getstate__(self):  # torch's pickles only defaults, state and param_groups
        return {**super().__getstate__(), "backend": self.backend, "threads": self.threads}

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("backend", "auto")
        self.__dict__.setdefault("threads", None)
        self.__dict__.setdefault("_views", {})
        for param_state in self.state.values():  # as torch: old checkpoints hold float steps
            if "step" in param_state and not torch.is_tensor(param_state["step"]):
                param_state["step"] = torch.tensor(float(param_state["step"]),
                                                   dtype=_step_dtype())
        for group in self.param_groups:  # groups saved by an older torch lack newer keys
            for key, value in self.defaults.items():
                group.setdefault(key, value)

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns closure()'s loss, if any."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        kernels = resolve_backend(self.backend)
        views, updates = {}, []
        for g, group in enumerate(self.param_groups):
            self._check_group(group)
            for i, param in enumerate(group["params"]):
                if param.grad is not None:
                    name = self._param_name(group, g, i)
                    updates.append(self._prepare(group, name, param, views))
        self._views = views  # only the params stepped now: no stale memory kept alive
        for group, param, created, tensors, view, grad, step in updates:
            if created:
                self.state[param].update(created)
            if view.step is not None:
                view.step[()] = step  # torch's `state["step"] += 1`, in its dtype
            self._update(kernels, group, view.param, grad, view.state, int(step))
            torch.autograd.graph.increment_version(tensors)  # autograd sees the write
        return loss

    def _prepare(self, group, name, param, views):
        """Views, checks, new state and next step count for one param; writes nothing."""
        state = self.state.get(param, {})
        created = self._new_state(group, param, state)
        full = {**state, **created}
        keys = self._state_names(group)
        tensors = [param] + [full[key] for key in keys]
        step_tensor = full["step"] if self._counts_steps else None
        layout = [_layout(t) for t in tensors]
        if step_tensor is not None:
            layout.append(_layout(step_tensor))
        view = self._views.get(param)
        fresh = view is None or view.layout != layout
        if fresh:
            view = self._make_views(name, keys, tensors, step_tensor, layout)
        grad_array = _numpy_view(param.grad, f"the grad of {name}")
        # the kernel's own rules: in full for new views, else the grad's part in torch terms
        if fresh or not _grad_fits(param.grad, param, view.spans):
            check_buffers(view.param, grad_array, [f"state[{key!r}] of {name}" for key in keys],
                          [view.state[key] for key in keys], names=(name, f"the grad of {name}"))
        views[param] = view
        step = self._step_number(view, created)
        if not step >= 1:
            raise ValueError(f"state['step'] of {name} is {step - 1}; it must be >= 0")
        return group, param, created, tensors, view, grad_array, step

    @staticmethod
    def _make_views(name, keys, tensors, step_tensor, layout):
        arrays = [_numpy_view(t, what) for t, what in
                  zip(tensors, [name] + [f"state[{key!r}] of {name}" for key in keys])]
        step = None
        if step_tensor is not None:
            if step_tensor.device.type != "cpu" or step_tensor.numel() != 1:
                raise ValueError(f"state['step'] of {name} must be a one-element CPU tensor")
            step = step_tensor.detach().numpy()
        return _Views(layout, [_span(t) for t in tensors], arrays[0],
                      dict(zip(keys, arrays[1:])), step)

    def _new_state(self, group, param, state):
        """The state entries torch.optim would create for this param now (none once it has
        them): a zero step counter, then each buffer filled with its initial value."""
        created = {}
        if self._counts_steps and "step" not in state:
            created["step"] = torch.tensor(0.0, dtype=_step_dtype())
        for key in self._state_names(group):
            if key not in state:
                created[key] = torch.full_like(param, self._initial_value(key),
                                               memory_format=torch.preserve_format)
        return created

    def _step_number(self, view, created):
        """The step this update makes: torch's counter plus one, in the counter's dtype
        (a NumPy scalar; the kernels get it as an int)."""
        return view.step + 1

    def _initial_value(self, key):
        return 0.0

    @staticmethod
    def _param_name(group, g, i):
        names = group.get("param_names")
        where = f"param {i} of param group {g}"
        return f"param {names[i]!r} ({where})" if names else where

    def _check_group(self, group):
        for flag in ("capturable", "differentiable"):
            if group.get(flag):
                raise ValueError(f"{type(self).__name__} from fastoptim.torch does not "
                                 f"support {flag}=True")
        _check_nonnegative(lr=_scalar(group["lr"]), weight_decay=_scalar(group["weight_decay"]))

    def _state_names(self, group):
        return ()

    def _update(self, kernels, group, param, grad, state, step):
        raise NotImplementedError


class Adam(_KernelOptimizer):
    """torch.optim.Adam on fastoptim's adam_step (adamw_step with decoupled_weight_decay).

    m <- b1*m + (1-b1)*g;  v <- b2*v + (1-b2)*g*g;  amsgrad: vmax <- max(vmax, v)
    p <- p - (lr/bc1)*m / (sqrt(v)*(1/sqrt(bc2)) + eps),  bc1 = 1 - b1^t, bc2 = 1 - b2^t
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False,
                 backend="auto", threads=None):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                        capturable=capturable, differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults, backend, threads)

    def _check_group(self, group):
        super()._check_group(group)
        beta1, beta2 = group["betas"]
        _check_nonnegative(eps=group["eps"])
        _check_below_one(**{"betas[0]": _scalar(beta1), "betas[1]": _scalar(beta2)})

    def _state_names(self, group):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ())

    def _update(self, kernels, group, param, grad, state, step):
        kernel = kernels.adamw_step if group["decoupled_weight_decay"] else kernels.adam_step
        beta1, beta2 = group["betas"]
        kernel(param, grad, state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq"),
               lr=_scalar(group["lr"]), step=step, beta1=_scalar(beta1), beta2=_scalar(beta2),
               eps=group["eps"], weight_decay=_scalar(group["weight_decay"]),
               maximize=group["maximize"], threads=self.threads)


class AdamW(Adam):
    """torch.optim.AdamW: p <- p*(1 - lr*wd) first (decoupled), then Adam without L2."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None, backend="auto", threads=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, backend=backend, threads=threads)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:  # as torch: a loaded AdamW group stays decoupled
            group["decoupled_weight_decay"] = True


class SGD(_KernelOptimizer):
    """torch.optim.SGD on fastoptim's sgd_step, or momentum_step (form="torch").

    b <- g on the first step, else b <- mu*b + (1-d)*g;  p <- p - lr*(g + mu*b if nesterov
    else b);  without momentum p <- p - lr*g.  Like torch, no step counter is kept: the
    momentum buffer is created from the first gradient.
    """

    _counts_steps = False

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None, backend="auto", threads=None):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                        foreach=foreach, differentiable=differentiable, fused=fused)
        super().__init__(params, defaults, backend, threads)

    def _check_group(self, group):
        super()._check_group(group)
        _check_nonnegative(momentum=group["momentum"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _state_names(self, group):
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _step_number(self, view, created):
        # momentum_step's step 1 sets b <- g, as torch's first step copies the grad
        return 1 if "momentum_buffer" in created else 2

    def _update(self, kernels, group, param, grad, state, step):
        lr = _scalar(group["lr"])
        if group["momentum"] == 0:
            kernels.sgd_step(param, grad, lr=lr, weight_decay=_scalar(group["weight_decay"]),
                             maximize=group["maximize"], threads=self.threads)
            return
        kernels.momentum_step(param, grad, state["momentum_buffer"], lr=lr,
                              momentum=group["momentum"], step=step,
                              dampening=group["dampening"], nesterov=group["nesterov"],
                              weight_decay=_scalar(group["weight_decay"]),
                              maximize=group["maximize"], threads=self.threads)


class RMSprop(_KernelOptimizer):
    """torch.optim.RMSprop on fastoptim's rmsprop_step (centered and momentum variants).

    v <- a*v + (1-a)*g*g;  den = sqrt(v - ga*ga) + eps with ga <- a*ga + (1-a)*g (centered),
    else sqrt(v) + eps;  momentum > 0: b <- mu*b + g/den, p <- p - lr*b;  else p - lr*g/den
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False, *, backend="auto", threads=None):
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                        maximize=maximize, differentiable=differentiable)
        super().__init__(params, defaults, backend, threads)

    def _check_group(self, group):
        super()._check_group(group)
        _check_nonnegative(eps=group["eps"], momentum=group["momentum"], alpha=group["alpha"])

    def _state_names(self, group):
        return (("square_avg",) + (("momentum_buffer",) if group["momentum"] > 0 else ())
                + (("grad_avg",) if group["centered"] else ()))

    def _update(self, kernels, group, param, grad, state, step):
        kernels.rmsprop_step(param, grad, state["square_avg"], state.get("grad_avg"),
                             state.get("momentum_buffer"), lr=_scalar(group["lr"]),
                             alpha=group["alpha"], eps=group["eps"], momentum=group["momentum"],
                             weight_decay=_scalar(group["weight_decay"]),
                             maximize=group["maximize"], threads=self.threads)


class Adagrad(_KernelOptimizer):
    """torch.optim.Adagrad on fastoptim's adagrad_step.

    clr = lr / (1 + (t-1)*lr_decay);  s <- s + g*g;  p <- p - clr*g / (sqrt(s) + eps)
    Like torch, the state of every param is created in the constructor, with ``sum`` filled
    with initial_accumulator_value.
    """

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0,
                 initial_accumulator_value=0, eps=1e-10, foreach=None, *, maximize=False,
                 differentiable=False, fused=None, backend="auto", threads=None):
        _check_nonnegative(initial_accumulator_value=initial_accumulator_value)
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, fused=fused)
        super().__init__(params, defaults, backend, threads)
        for group in self.param_groups:
            for param in group["params"]:
                self.state[param] = self._new_state(group, param, {})

    def _check_group(self, group):
        super()._check_group(group)
        _check_nonnegative(lr_decay=group["lr_decay"], eps=group["eps"])

    def _state_names(self, group):
        return ("sum",)

    def _initial_value(self, key):
        # torch takes it from the constructor's defaults, for every group
        return self.defaults["initial_accumulator_value"]

    def _update(self, kernels, group, param, grad, state, step):
        kernels.adagrad_step(param, grad, state["sum"], lr=_scalar(group["lr"]), step=step,
                             lr_decay=group["lr_decay"], eps=group["eps"],
                             weight_decay=_scalar(group["weight_decay"]),
                             maximize=group["maximize"], threads=self.threads)
