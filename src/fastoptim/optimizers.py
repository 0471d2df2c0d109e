"""Optimizer objects: hold params and state, validate, call a kernel.

Each class takes torch.optim's hyperparameter names and defaults, updates one or several
contiguous float32/float64 arrays in place, and runs its update through a backend:
``"c"`` (fastoptim.kernels), ``"numpy"`` (fastoptim.reference) or ``"auto"`` (the compiled
one, falling back to the reference with one warning when the extension is not built).
"""
import numpy as np

from fastoptim import checkpoint, reference
from fastoptim._backend import resolve_backend
from fastoptim._checks import MOMENTUM_FORMS, check_array, check_no_shared_memory

__all__ = ["Optimizer", "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSProp", "Adam", "AdamW"]

def _kernel_arg(arrays):
    return arrays[0] if len(arrays) == 1 else arrays


def _check_unit_interval(name, value):
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def _check_nonnegative(name, value):
    if not value >= 0.0:  # also refuses NaN
        raise ValueError(f"{name} must be >= 0, got {value}")


class Optimizer:
    """Base class: params, per-param state arrays, hyperparameters, the step count.

    Subclasses list their ``hyperparameters`` (attribute names, saved in checkpoints) and
    define ``_state_names()`` (the state arrays each param gets, zero-filled unless
    ``_initial_state`` says otherwise), ``_check_hyperparameters()`` and
    ``_update(grads, lr, step)``, which calls one kernel on all arrays at once: the kernel
    checks every buffer before it writes any, and the compiled one steps them all in one
    call into C.
    """

    hyperparameters = ("lr",)

    def __init__(self, params, *, lr, backend="auto", threads=None, check_finite=False,
                 on_nonfinite="raise"):
        self.params = self._check_params([params] if isinstance(params, np.ndarray)
                                         else list(params))
        self._kernels = resolve_backend(backend)
        self.backend = "numpy" if self._kernels is reference else "c"
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
        self.threads = threads
        self.check_finite = bool(check_finite)
        self.on_nonfinite = on_nonfinite
        self.lr = lr
        self.step_count = 0
        self.skipped_steps = 0
        self._check_hyperparameters()
        self.state = [
            {name: self._initial_state(name, p) for name in self._state_names()}
            for p in self.params
        ]
        # the kernel's arguments: one list per buffer, the same arrays as self.params and
        # self.state (or the array itself when there is one: the cheaper single-array path)
        self._params_arg = _kernel_arg(self.params)
        self._states = {name: _kernel_arg([st[name] for st in self.state])
                        for name in self._state_names()}

    # -- hyperparameters -------------------------------------------------------------------

    @property
    def lr(self):
        """The learning rate: a number, or a schedule (a callable of the 0-based step)."""
        return self._lr

    @lr.setter
    def lr(self, value):
        if not callable(value):
            value = float(value)
            _check_nonnegative("lr", value)
        self._lr = value

    def current_lr(self):
        """The learning rate the next step will use."""
        if not callable(self._lr):
            return self._lr
        lr = float(self._lr(self.step_count))
        if not lr >= 0.0:
            raise ValueError(f"lr schedule gave {lr} at step {self.step_count}; lr must be >= 0")
        return lr

    def _check_hyperparameters(self):
        pass

    # -- state ------------------------------------------------------------------------------

    def _state_names(self):
        return ()

    def _initial_state(self, name, param):
        return np.zeros_like(param)

    def state_dict(self):
        """Plain data: optimizer kind, step count, hyperparameters and a copy of every
        state array (a list with one dict per param). A schedule given as lr is not data:
        it is saved as None and the loading optimizer keeps its own."""
        hyper = {name: getattr(self, name) for name in self.hyperparameters}
        if callable(hyper["lr"]):
            hyper["lr"] = None
        hyper = {k: list(v) if isinstance(v, tuple) else v for k, v in hyper.items()}
        return {
            "optimizer": type(self).__name__,
            "step_count": self.step_count,
            "hyperparameters": hyper,
            "state": [{name: a.copy() for name, a in st.items()} for st in self.state],
        }

    def load_state_dict(self, state_dict):
        """Restore a state dict. Everything is checked first -- optimizer kind, number of
        params, hyperparameters, state names, shapes and dtypes -- so a bad one raises
        ValueError/TypeError and leaves the optimizer as it was. State arrays are copied
        into the optimizer's own buffers."""
        try:
            kind = state_dict["optimizer"]
            step_count = state_dict["step_count"]
            hyper = dict(state_dict["hyperparameters"])
            states = list(state_dict["state"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"state_dict is not a fastoptim state dict: missing {exc}") from exc
        if kind != type(self).__name__:
            raise ValueError(f"state_dict is for {kind}, not {type(self).__name__}")
        if isinstance(step_count, bool) or not isinstance(step_count, (int, np.integer)) \
                or step_count < 0:
            raise ValueError(f"state_dict step_count must be an integer >= 0, got {step_count!r}")
        if set(hyper) != set(self.hyperparameters):
            raise ValueError(f"state_dict hyperparameters are {sorted(hyper)}, expected "
                             f"{sorted(self.hyperparameters)}")
        if len(states) != len(self.params):
            raise ValueError(f"state_dict holds state for {len(states)} params, the optimizer "
                             f"has {len(self.params)}")
        if hyper["lr"] is None:
            hyper["lr"] = self._lr
        old = {name: getattr(self, name) for name in self.hyperparameters}
        try:
            self._set_hyperparameters(hyper)
            self._check_hyperparameters()
            expected = self._state_names()
            for i, (param, st) in enumerate(zip(self.params, states)):
                self._check_loaded_state(i, param, st, expected)
        except BaseException:
            self._set_hyperparameters(old)
            raise
        for own, st in zip(self.state, states):
            for name in expected:
                np.copyto(own[name], st[name])
        self.step_count = int(step_count)

    def _set_hyperparameters(self, hyper):
        for name, value in hyper.items():
            if isinstance(value, list):
                value = tuple(value)
            setattr(self, name, value)

    @staticmethod
    def _check_loaded_state(i, param, state, expected):
        if not isinstance(state, dict) or set(state) != set(expected):
            names = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"state_dict state[{i}] holds {names}, expected {sorted(expected)}")
        for name in expected:
            a = state[name]
            if not isinstance(a, np.ndarray):
                raise TypeError(f"state_dict state[{i}][{name!r}] must be an ndarray, "
                                f"got {type(a).__name__}")
            if a.dtype != param.dtype or a.shape != param.shape:
                raise ValueError(f"state_dict state[{i}][{name!r}] is {a.dtype}{list(a.shape)}"
                                 f", param {i} is {param.dtype}{list(param.shape)}")

    def save(self, path):
        """Write a checkpoint (.npz) atomically: a crash mid-save leaves the old file."""
        checkpoint.write_atomic(path, self.state_dict())

    def load(self, path):
        """Restore a checkpoint written by save(); ValueError (and no change) if the file is
        corrupt, truncated, foreign or for another optimizer."""
        self.load_state_dict(checkpoint.read(path))

    # -- stepping ---------------------------------------------------------------------------

    def step(self, grads):
        """Update every param in place from its gradient (an array, or a list matching
        params). Every grad is checked before any buffer is written.

        Returns True, or False when check_finite=True, on_nonfinite="skip" and a grad
        holds NaN/Inf: then nothing is written and skipped_steps counts it.
        """
        grads = [grads] if isinstance(grads, np.ndarray) else grads
        if len(grads) != len(self.params):
            raise ValueError(f"grads has {len(grads)} arrays but the optimizer holds "
                             f"{len(self.params)} params")
        if self.check_finite and not all(np.isfinite(g).all() for g in grads):
            if self.on_nonfinite == "raise":
                raise FloatingPointError("grads hold NaN or Inf (check_finite=True): the step "
                                         "was not taken and nothing was changed")
            self.skipped_steps += 1
            return False
        self._update(_kernel_arg(grads), self.current_lr(), self.step_count + 1)
        self.step_count += 1
        return True

    def _update(self, grads, lr, step):
        raise NotImplementedError

    @staticmethod
    def _check_params(params):
        if not params:
            raise ValueError("params is empty: give an array or a non-empty list of arrays")
        for i, p in enumerate(params):
            check_array("params" if len(params) == 1 else f"params[{i}]", p, written=True)
        check_no_shared_memory(("params",), [(p,) for p in params])
        return params

    def __repr__(self):
        lr = self._lr if callable(self._lr) else f"{self._lr:g}"
        return (f"{type(self).__name__}(<{len(self.params)} arrays>, lr={lr}, "
                f"backend={self.backend!r})")


class SGD(Optimizer):
    """torch.optim.SGD: p <- p - lr*g; with momentum > 0, momentum in the given form.

    ``form`` ("torch", "ewma" or "velocity") and ``bias_correction`` (ewma form) go beyond
    torch; see fastoptim.reference.momentum_step for the three update rules. ``options``
    (backend, threads, check_finite, on_nonfinite) are those of Optimizer.
    """

    hyperparameters = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize",
                       "form", "bias_correction")

    def __init__(self, params, *, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, maximize=False, form="torch", bias_correction=False,
                 **options):
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.weight_decay = float(weight_decay)
        self.nesterov = bool(nesterov)
        self.maximize = bool(maximize)
        self.form = form
        self.bias_correction = bool(bias_correction)
        super().__init__(params, lr=lr, **options)

    def _check_hyperparameters(self):
        _check_unit_interval("momentum", self.momentum)
        _check_unit_interval("dampening", self.dampening)
        _check_nonnegative("weight_decay", self.weight_decay)
        if self.form not in MOMENTUM_FORMS:
            raise ValueError(f"form must be one of {MOMENTUM_FORMS}, got {self.form!r}")
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov requires momentum > 0 and dampening == 0")
        if self.dampening != 0 and self.form != "torch":
            raise ValueError(f"dampening applies to form='torch' only, got form={self.form!r}")
        if self.bias_correction and self.form != "ewma":
            raise ValueError(f"bias_correction applies to form='ewma' only, got {self.form!r}")

    def _state_names(self):
        return ("momentum_buffer",) if self.momentum > 0 else ()

    def _update(self, grads, lr, step):
        if not self._states:
            self._kernels.sgd_step(self._params_arg, grads, lr=lr,
                                   weight_decay=self.weight_decay, maximize=self.maximize,
                                   threads=self.threads)
            return
        self._kernels.momentum_step(
            self._params_arg, grads, self._states["momentum_buffer"], lr=lr,
            momentum=self.momentum, step=step,
            dampening=self.dampening, nesterov=self.nesterov, form=self.form,
            bias_correction=self.bias_correction, weight_decay=self.weight_decay,
            maximize=self.maximize, threads=self.threads)


class Momentum(SGD):
    """SGD with momentum (default 0.9) in the torch, ewma (Ng) or velocity (CS231n) form."""

    def __init__(self, params, *, lr=1e-3, momentum=0.9, dampening=0.0, weight_decay=0.0,
                 nesterov=False, maximize=False, form="torch", bias_correction=False,
                 **options):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                         form=form, bias_correction=bias_correction, **options)


class Nesterov(Momentum):
    """Momentum with nesterov=True (torch.optim.SGD(nesterov=True) in the torch form)."""

    def __init__(self, params, *, lr=1e-3, momentum=0.9, weight_decay=0.0, maximize=False,
                 form="torch", bias_correction=False, **options):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         nesterov=True, maximize=maximize, form=form,
                         bias_correction=bias_correction, **options)


class AdaGrad(Optimizer):
    """torch.optim.Adagrad: s <- s + g*g; p <- p - clr*g/(sqrt(s) + eps)."""

    hyperparameters = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps",
                       "maximize")

    def __init__(self, params, *, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, maximize=False, **options):
        self.lr_decay = float(lr_decay)
        self.weight_decay = float(weight_decay)
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.eps = float(eps)
        self.maximize = bool(maximize)
        super().__init__(params, lr=lr, **options)

    def _check_hyperparameters(self):
        _check_nonnegative("lr_decay", self.lr_decay)
        _check_nonnegative("weight_decay", self.weight_decay)
        _check_nonnegative("initial_accumulator_value", self.initial_accumulator_value)
        _check_nonnegative("eps", self.eps)

    def _state_names(self):
        return ("sum",)  # torch.optim.Adagrad's name

    def _initial_state(self, name, param):
        return np.full_like(param, self.initial_accumulator_value)

    def _update(self, grads, lr, step):
        self._kernels.adagrad_step(self._params_arg, grads, self._states["sum"], lr=lr, step=step,
                                   lr_decay=self.lr_decay, eps=self.eps,
                                   weight_decay=self.weight_decay, maximize=self.maximize,
                                   threads=self.threads)


class RMSProp(Optimizer):
    """torch.optim.RMSprop, with its centered and momentum variants."""

    hyperparameters = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")

    def __init__(self, params, *, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
                 momentum=0.0, centered=False, maximize=False, **options):
        self.alpha = float(alpha)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.momentum = float(momentum)
        self.centered = bool(centered)
        self.maximize = bool(maximize)
        super().__init__(params, lr=lr, **options)

    def _check_hyperparameters(self):
        _check_unit_interval("alpha", self.alpha)
        _check_unit_interval("momentum", self.momentum)
        _check_nonnegative("eps", self.eps)
        _check_nonnegative("weight_decay", self.weight_decay)

    def _state_names(self):
        names = ("square_avg",)
        if self.centered:
            names += ("grad_avg",)
        if self.momentum > 0:
            names += ("momentum_buffer",)
        return names

    def _update(self, grads, lr, step):
        states = self._states
        self._kernels.rmsprop_step(self._params_arg, grads, states["square_avg"],
                                   states.get("grad_avg"), states.get("momentum_buffer"),
                                   lr=lr, alpha=self.alpha,
                                   eps=self.eps, momentum=self.momentum,
                                   weight_decay=self.weight_decay, maximize=self.maximize,
                                   threads=self.threads)


class Adam(Optimizer):
    """torch.optim.Adam (L2 weight decay, amsgrad), plus optax's eps_root."""

    hyperparameters = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "eps_root")

    _decoupled = False

    def __init__(self, params, *, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, maximize=False, eps_root=0.0, **options):
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.amsgrad = bool(amsgrad)
        self.maximize = bool(maximize)
        self.eps_root = float(eps_root)
        super().__init__(params, lr=lr, **options)

    def _check_hyperparameters(self):
        _check_unit_interval("betas[0]", self.betas[0])
        _check_unit_interval("betas[1]", self.betas[1])
        _check_nonnegative("eps", self.eps)
        _check_nonnegative("eps_root", self.eps_root)
        _check_nonnegative("weight_decay", self.weight_decay)

    def _state_names(self):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.amsgrad else ())

    def _update(self, grads, lr, step):
        kernel = self._kernels.adamw_step if self._decoupled else self._kernels.adam_step
        states = self._states
        kernel(self._params_arg, grads, states["exp_avg"], states["exp_avg_sq"],
               states.get("max_exp_avg_sq"), lr=lr, step=step, beta1=self.betas[0],
               beta2=self.betas[1], eps=self.eps, eps_root=self.eps_root, weight_decay=self.weight_decay, maximize=self.maximize,
               threads=self.threads)


class AdamW(Adam):
    """torch.optim.AdamW: decoupled weight decay p <- p*(1 - lr*wd), then Adam."""

    _decoupled = True

    def __init__(self, params, *, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, maximize=False, eps_root=0.0, **options):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, eps_root=eps_root, **options)
