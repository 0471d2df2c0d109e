"""The NumPy front end: optimizer objects over contiguous arrays, updated in place.

Each class is a rule (fastoptim.rules: hyperparameters, state, kernel call) plus what this
front end owns: the arrays, the step count, the per-optimizer scalars, .npz checkpoints and
the options below. A step checks everything, runs one kernel call over every array (the
compiled one, or the NumPy reference: ``backend=``) and only then counts the step; Ctrl-C
is held back between the two, so params, state and step count always agree.
"""
import collections.abc
import math

import numpy as np

from fastoptim import _interrupts, checkpoint, rules
from fastoptim._backend import backend_name, resolve_backend
from fastoptim._checks import (
    FLOAT32,
    FLOAT64,
    LOW_PRECISION,
    ROUNDINGS,
    check_array,
    check_choice,
    check_dtype_name,
    check_flag,
    check_no_shared_memory,
    check_nonnegative,
    check_real,
    check_seed,
    check_threads,
    compute_dtype,
)
from fastoptim.clipping import clip_coefficient, total_norm

__all__ = ["Optimizer", "SGD", "Momentum", "Nesterov", "AdaGrad", "Adagrad", "RMSProp",
           "RMSprop", "Adadelta", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "LAMB", "Lion",
           "Rprop", "ASGD", "ScheduleFreeAdamW", "Adafactor"]

# The options every optimizer takes besides its hyperparameters (keyword only), with their
# defaults and one line each for help().
OPTIONS = (
    ("backend", "auto", '"c" (compiled kernels), "numpy" (the reference) or "auto" (compiled, '
                        "else the reference with a warning)"),
    ("threads", None, "threads per step (None: FASTOPTIM_NUM_THREADS, else every core)"),
    ("check_finite", False, "refuse (or skip) a step whose gradients hold NaN or inf"),
    ("on_nonfinite", "raise", '"raise" (FloatingPointError) or "skip" (step() returns False) '
                              "when check_finite finds NaN/inf"),
    ("max_grad_norm", None, "clip the gradients' total norm to this, inside the step (the "
                            "caller's grads are not written)"),
    ("norm_type", 2.0, "the norm of max_grad_norm: 2, 1 or inf"),
    ("master_weights", False, "params are low precision: keep float32 master copies, update "
                              "them, and write the params back rounded in the same pass"),
    ("state_dtype", None, 'dtype of the state buffers ("float32", "bfloat16", "float16"); '
                          "None: the params' (float32 with master_weights)"),
    ("rounding", "nearest", '"nearest" (even) or "stochastic": how bfloat16/float16 stores round'),
    ("seed", 0, "seed of stochastic rounding (reproducible, whatever the thread count)"),
)


class Optimizer:
    """Base class of the optimizers; each subclass names its rule (fastoptim.rules)."""

    rule = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        rule = cls.__dict__.get("rule")
        if rule is None:
            return
        cls.__signature__ = rule.signature([(name, default) for name, default, _ in OPTIONS])
        cls.__doc__ = _docstring(cls, rule)
        for h in rule.hyperparameters:
            setattr(cls, h.name, _hyperparameter_property(h))

    def __init__(self, params, *args, **kwargs):
        values = self.rule.bind(type(self).__signature__, f"fastoptim.{type(self).__name__}",
                                (params, *args), kwargs)
        values.pop("params")
        options = {name: values.pop(name) for name, _, _ in OPTIONS}
        rule = self.rule

        self._kernels = resolve_backend(options["backend"])
        self._backend = backend_name(self._kernels)
        self.threads = None if options["threads"] is None else check_threads(options["threads"])
        self.check_finite = check_flag("check_finite", options["check_finite"])
        self.on_nonfinite = check_choice("on_nonfinite", options["on_nonfinite"],
                                         ("raise", "skip"))
        self.max_grad_norm = (None if options["max_grad_norm"] is None
                              else check_nonnegative("max_grad_norm", options["max_grad_norm"]))
        self.norm_type = check_real("norm_type", options["norm_type"])
        if self.norm_type not in (1.0, 2.0, math.inf):
            raise ValueError(f"norm_type must be 1, 2 or inf, got {options['norm_type']!r}")
        self.rounding = check_choice("rounding", options["rounding"], ROUNDINGS)
        self.seed = check_seed(options["seed"])
        master = check_flag("master_weights", options["master_weights"])

        user_params = _check_params(params)
        if master:
            for i, p in enumerate(user_params):
                if p.dtype not in LOW_PRECISION:
                    raise TypeError(f"master_weights=True keeps float32 copies of low-precision"
                                    f" params; params[{i}] is {p.dtype}")
            self.params = tuple(p.astype(FLOAT32) for p in user_params)
            self._copies = tuple(user_params)
        else:
            self.params = tuple(user_params)
            self._copies = None
        state_dtype = options["state_dtype"]
        self.state_dtype = None if state_dtype is None else check_dtype_name("state_dtype",
                                                                             state_dtype)
        for i, p in enumerate(self.params):
            if self.state_dtype is not None and (p.dtype == FLOAT64) != (self.state_dtype == FLOAT64):
                raise TypeError(f"state_dtype {self.state_dtype} does not go with params[{i}] "
                                f"of {p.dtype}: float64 params keep float64 state, others "
                                "float32, bfloat16 or float16")

        lr = values["lr"]   # a number, or a schedule: checked as its first value
        self._hyper = rule.checked({**values, "lr": lr(0) if callable(lr) else lr})
        del self._hyper["lr"]
        self._lr = None
        self.lr = lr
        self.step_count = 0
        self.skipped_steps = 0
        self.scalars = rule.scalars(self._state_hyperparameters())
        self._build_state()

    # -- hyperparameters -------------------------------------------------------------------------

    @property
    def backend(self):
        """"c" (the compiled kernels) or "numpy" (the reference)."""
        return self._backend

    @property
    def lr(self):
        """The learning rate: a number, or a schedule (a callable of the 0-based step)."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = value if callable(value) else check_nonnegative("lr", value)

    def current_lr(self):
        """The learning rate the next step will use."""
        if not callable(self._lr):
            return self._lr
        value = self._lr(self.step_count)
        try:
            return check_nonnegative("lr", value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the lr schedule gave {value!r} at step {self.step_count}: "
                             f"{exc}") from None

    def _state_hyperparameters(self):
        """The hyperparameters as the rule sees them (lr a number: the schedule's first)."""
        lr = self._lr(0) if callable(self._lr) else self._lr
        return {**self._hyper, "lr": check_nonnegative("lr", lr)}

    # -- state -----------------------------------------------------------------------------------

    def _build_state(self):
        """Fresh state buffers (rule.state: names and initial values) for every param."""
        h = self._state_hyperparameters()
        states = []
        for p in self.params:
            dtype = self.state_dtype or p.dtype
            st = {}
            for name, initial, shape in self.rule.buffers(h, p.shape):
                st[name] = p.astype(dtype) if initial == "param" else np.full(shape, initial,
                                                                              dtype)
            if self._copies is not None:
                st["master_param"] = p
            states.append(st)
        self._set_state(states)

    def _set_state(self, states):
        # read-only mappings: change the arrays in place, never replace them (the kernel
        # call below holds these very arrays)
        self.state = tuple(StateView(i, st) for i, st in enumerate(states))
        # a param without some buffer (Adafactor's: row and column factors, or a variance)
        # has None in its column
        names = dict.fromkeys(name for st in states for name in st)
        self._columns = {name: _kernel_arg([st.get(name) for st in states]) for name in names}

    def state_dict(self):
        """Plain data: optimizer kind, step count, hyperparameters, scalars and a copy of
        every state array (a list with one dict per param). A schedule given as lr is not
        data: it is saved as None and the loading optimizer keeps its own."""
        hyper = {"lr": None if callable(self._lr) else self._lr}
        hyper.update((h.name, self._hyper[h.name]) for h in self.rule.hyperparameters
                     if h.name != "lr")
        return {
            "optimizer": type(self).__name__,
            "step_count": self.step_count,
            "hyperparameters": {k: list(v) if isinstance(v, tuple) else v
                                for k, v in hyper.items()},
            "scalars": dict(self.scalars),
            "state": [{name: a.copy() for name, a in st.items()} for st in self.state],
        }

    def load_state_dict(self, state_dict):
        """Restore a state dict. Everything is checked first -- optimizer kind, number of
        params, hyperparameters, the state buffers they imply, shapes and dtypes -- so a bad
        one raises ValueError/TypeError and leaves the optimizer as it was. State arrays are
        copied in (new buffers are made when the hyperparameters switch one on or off)."""
        step_count, checked, lr, scalars, states, expected = self._check_state_dict(state_dict)
        # all checked: commit
        with _interrupts.deferred():
            self._hyper = checked
            self._lr = lr
            self.scalars = scalars
            self.step_count = step_count
            current = [dict(st) for st in self.state]
            new_states = []
            for i, (own, st) in enumerate(zip(current, states)):
                fresh = {}
                for name in expected[i]:
                    array = own.get(name)
                    if array is None or array.dtype != st[name].dtype:
                        array = np.empty_like(st[name])
                    np.copyto(array, st[name])
                    fresh[name] = array
                new_states.append(fresh)
            if self._copies is not None:
                for i, st in enumerate(new_states):
                    self.params[i][...] = st["master_param"]
                    st["master_param"] = self.params[i]
                    self._copies[i][...] = self.params[i].astype(self._copies[i].dtype)
            self._set_state(new_states)

    def _check_state_dict(self, state_dict):
        """Every check of load_state_dict; it reads only the arrays' shapes and dtypes (so
        load() runs it on a checkpoint's headers before reading any array). Returns the step
        count, the checked hyperparameters, lr, the scalars, the states (a list) and the
        state names each must hold."""
        try:
            kind = state_dict["optimizer"]
            step_count = state_dict["step_count"]
            hyper = dict(state_dict["hyperparameters"])
            states = list(state_dict["state"])
            scalars = dict(state_dict.get("scalars") or {})
        except (KeyError, TypeError) as exc:
            raise ValueError(f"state_dict is not a fastoptim state dict: missing {exc}") from exc
        if kind != type(self).__name__:
            raise ValueError(f"state_dict is for {kind}, not {type(self).__name__}")
        if isinstance(step_count, bool) or not isinstance(step_count, (int, np.integer)) \
                or not 0 <= step_count < 2**62:
            raise ValueError(f"state_dict step_count must be an integer >= 0, got {step_count!r}")
        names = {h.name for h in self.rule.hyperparameters}
        # a checkpoint from before a hyperparameter existed means its default
        hyper = {**{h.name: h.default for h in self.rule.hyperparameters if h.name not in hyper},
                 **hyper}
        if set(hyper) != names:
            raise ValueError(f"state_dict hyperparameters are {sorted(hyper)}, expected "
                             f"{sorted(names)}")
        if len(states) != len(self.params):
            raise ValueError(f"state_dict holds state for {len(states)} params, the optimizer "
                             f"has {len(self.params)}")
        lr = self._lr if hyper["lr"] is None else check_nonnegative("lr", hyper["lr"])
        checked = self.rule.checked({**hyper, "lr": 0.0 if callable(lr) else lr})
        checked.pop("lr")
        expected_scalars = self.rule.scalars(checked | {"lr": 0.0})
        if set(scalars) != set(expected_scalars):
            raise ValueError(f"state_dict scalars are {sorted(scalars)}, expected "
                             f"{sorted(expected_scalars)}")
        for name, value in scalars.items():
            if not isinstance(value, (bool, int, float, np.integer, np.floating)):
                raise ValueError(f"state_dict scalar {name!r} must be a number, got {value!r}")
        expected = [name for name, _ in self.rule.state(checked | {"lr": 0.0})]
        if self._copies is not None:
            expected.append("master_param")
        expected = [[name for name in expected if self._buffer_shape(name, param) is not None]
                    for param in self.params]
        for i, (param, st) in enumerate(zip(self.params, states)):
            self._check_loaded_state(i, param, st, expected[i])
        scalars = {k: type(expected_scalars[k])(v) for k, v in scalars.items()}
        return int(step_count), checked, lr, scalars, states, expected

    def _check_loaded_state(self, i, param, state, expected):
        if not isinstance(state, dict) or set(state) != set(expected):
            names = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"state_dict state[{i}] holds {names}, expected {sorted(expected)}")
        for name in expected:
            a = state[name]
            if not isinstance(a, np.ndarray):
                raise TypeError(f"state_dict state[{i}][{name!r}] must be an ndarray, "
                                f"got {type(a).__name__}")
            own = self.state[i].get(name) if i < len(self.state) else None
            dtype = own.dtype if own is not None else (self.state_dtype or param.dtype)
            if name == "master_param":
                dtype = FLOAT32
            shape = self._buffer_shape(name, param)
            if a.shape != shape or (a.dtype != dtype and not (
                    name != "master_param" and self.state_dtype is None
                    and compute_dtype(a.dtype) == compute_dtype(param.dtype))):
                raise ValueError(f"state_dict state[{i}][{name!r}] is {a.dtype}{list(a.shape)}"
                                 f", expected {dtype}{list(shape)}")

    def _buffer_shape(self, name, param):
        """The shape of state ``name`` of ``param`` (None: it has none)."""
        return param.shape if name == "master_param" else self.rule.buffer_shape(name,
                                                                                 param.shape)

    def save(self, path):
        """Write a checkpoint (.npz) atomically: a crash mid-save leaves the old file."""
        checkpoint.write_atomic(path, self.state_dict())

    def load(self, path):
        """Restore a checkpoint written by save(); ValueError (and no change) if the file is
        corrupt, truncated, foreign or for another optimizer. Whether it fits this optimizer
        is checked on the file's headers, before any array is read."""
        self.load_state_dict(checkpoint.read(path, expected=self._check_state_dict))

    # -- stepping --------------------------------------------------------------------------------

    def step(self, grads, *, grad_scale=None):
        """Update every param in place from its gradient (an array, or a list matching
        params). ``grad_scale``: the loss scale the gradients carry (they are divided by it
        inside the step). Everything is checked before anything is written.

        Returns True, or False when check_finite=True, on_nonfinite="skip" and a gradient
        holds NaN/inf: then nothing is written and skipped_steps counts it.
        """
        grads = self._check_grads(grads)
        factor = 1.0
        if grad_scale is not None:
            grad_scale = check_real("grad_scale", grad_scale, 0.0, low_open=True)
            factor = 1.0 / grad_scale
        kernels = self._kernels
        if self.check_finite or self.max_grad_norm is not None:
            sums = kernels.norms(_kernel_arg(grads), norm_type=self.norm_type,
                                 threads=self.threads)
            if self.check_finite and not all(f == 0 for f in sums[:, 1]):
                if self.on_nonfinite == "raise":
                    raise FloatingPointError("grads hold NaN or inf (check_finite=True): the "
                                             "step was not taken and nothing was changed")
                self.skipped_steps += 1
                return False
            if self.max_grad_norm is not None:
                total = total_norm(sums[:, 0], self.norm_type) * factor
                factor *= clip_coefficient(total, self.max_grad_norm)
        lr = self.current_lr()
        call = self.rule.kernel({**self._hyper, "lr": lr}, lr, self.step_count + 1,
                                self.scalars)
        kernel = getattr(kernels, call.kernel)
        buffers = [None if name is None else self._columns.get(name) for name in call.buffers]
        with _interrupts.deferred():
            kernel(_kernel_arg(self.params), _kernel_arg(grads), *buffers, **call.kwargs,
                   grad_factor=factor, param_copy=_kernel_arg(self._copies),
                   rounding=self.rounding, seed=self.seed, threads=self.threads)
            self.step_count += 1
            self.scalars = call.scalars or self.scalars
        return True

    def _check_grads(self, grads):
        if isinstance(grads, np.ndarray):
            grads = [grads]
        elif not isinstance(grads, (list, tuple)):
            raise TypeError(f"grads must be an array or a list of arrays (one per param), got "
                            f"{type(grads).__name__}")
        if len(grads) != len(self.params):
            raise ValueError(f"grads has {len(grads)} arrays but the optimizer holds "
                             f"{len(self.params)} params")
        return list(grads)

    # -- objects ---------------------------------------------------------------------------------

    def __getstate__(self):
        state = dict(self.__dict__)
        state["state"] = [dict(st) for st in self.state]   # plain dicts in the pickle
        del state["_columns"], state["_kernels"]            # a module does not pickle
        return state

    def __setstate__(self, state):
        states = state.pop("state")     # master_param is self.params[i] again (pickle's memo)
        self.__dict__.update(state)
        self._kernels = resolve_backend(self._backend)
        self._set_state(states)

    def __repr__(self):
        lr = self._lr if callable(self._lr) else f"{self._lr:g}"
        changed = [f"{h.name}={self._hyper[h.name]!r}" for h in self.rule.hyperparameters
                   if h.name != "lr" and self._hyper[h.name] != h.check(h.default)]
        return (f"fastoptim.{type(self).__name__}(<{len(self.params)} arrays>, lr={lr}"
                + "".join(", " + c for c in changed) + f", backend={self._backend!r}, "
                f"step_count={self.step_count})")


class StateView(collections.abc.Mapping):
    """One param's state, ``opt.state[i]``: its arrays by name. The optimizer steps these
    very arrays, so an entry cannot be replaced or removed (TypeError); write into the
    array instead (``opt.state[i]["exp_avg"][...] = values``), or use load_state_dict."""

    __slots__ = ("_index", "_arrays")

    def __init__(self, index, arrays):
        self._index = index
        self._arrays = arrays

    def __getitem__(self, name):
        return self._arrays[name]

    def __iter__(self):
        return iter(self._arrays)

    def __len__(self):
        return len(self._arrays)

    def __setitem__(self, name, value):
        raise TypeError(f"opt.state[{self._index}][{name!r}] cannot be replaced: the optimizer "
                        f"steps the array it holds; write into it in place "
                        f"(opt.state[{self._index}][{name!r}][...] = values) or use "
                        "load_state_dict")

    def __delitem__(self, name):
        raise TypeError(f"opt.state[{self._index}][{name!r}] cannot be removed: the state "
                        "buffers follow from the hyperparameters (use load_state_dict)")

    def __repr__(self):
        return repr(self._arrays)


def _kernel_arg(arrays):
    """The kernel's buffer argument: the array itself when there is one (the cheaper
    single-array path), else the list."""
    if arrays is None:
        return None
    return arrays[0] if len(arrays) == 1 else list(arrays)


def _check_params(params):
    if isinstance(params, np.ndarray):
        params = [params]
    elif isinstance(params, (list, tuple)):
        params = list(params)
    else:
        try:
            params = list(params)
        except TypeError:
            raise TypeError(f"params must be an array or a list of arrays, got "
                            f"{type(params).__name__}") from None
    if not params:
        raise ValueError("params is empty: give an array or a non-empty list of arrays")
    checked = [check_array("params" if len(params) == 1 else f"params[{i}]", p, written=True)
               for i, p in enumerate(params)]
    check_no_shared_memory(("params",), [(p,) for p in checked])
    return checked


def _hyperparameter_property(h):
    def get(self):
        return self._lr if h.name == "lr" else self._hyper[h.name]

    def set(self, value):
        if h.name == "lr":
            type(self).lr.fset(self, value)
            return
        new = {**self._hyper, h.name: h.check(value)}
        self.rule.check({**new, "lr": 0.0})
        if [n for n, _ in self.rule.state(new | {"lr": 0.0})] != \
                [n for n, _ in self.rule.state(self._hyper | {"lr": 0.0})]:
            raise ValueError(f"{h.name} cannot change on a live optimizer: it switches a state "
                             "buffer on or off (make a new optimizer, or load_state_dict)")
        self._hyper = new

    return property(get, set, doc=h.doc) if h.name != "lr" else Optimizer.lr


def _docstring(cls, rule):
    lines = [rule.summary, "", rule.formula, "", "Hyperparameters (torch.optim's names and "
             "defaults" + (f", as torch.optim.{rule.torch_name}" if rule.torch_name else "")
             + "):"]
    lines += [f"    {h.name}={h.default!r}: {h.doc}" for h in rule.hyperparameters]
    lines += ["", "Options:"] + [f"    {name}={default!r}: {doc}" for name, default, doc in OPTIONS]
    lines += ["", "params: one contiguous writable array or a list of them (float32, float64, "
              "bfloat16, float16), updated in place by step(grads)."]
    return "\n".join(lines)


class SGD(Optimizer):
    rule = rules.SGD


class Momentum(Optimizer):
    rule = rules.MOMENTUM


class Nesterov(Optimizer):
    rule = rules.NESTEROV


class AdaGrad(Optimizer):
    rule = rules.ADAGRAD


class RMSProp(Optimizer):
    rule = rules.RMSPROP


class Adadelta(Optimizer):
    rule = rules.ADADELTA


class Adam(Optimizer):
    rule = rules.ADAM


class AdamW(Optimizer):
    rule = rules.ADAMW


class Adamax(Optimizer):
    rule = rules.ADAMAX


class NAdam(Optimizer):
    rule = rules.NADAM


class RAdam(Optimizer):
    rule = rules.RADAM


class LAMB(Optimizer):
    rule = rules.LAMB


class Lion(Optimizer):
    rule = rules.LION


class Rprop(Optimizer):
    rule = rules.RPROP


class ASGD(Optimizer):
    rule = rules.ASGD


class Adafactor(Optimizer):
    rule = rules.ADAFACTOR


class ScheduleFreeAdamW(Optimizer):
    rule = rules.SCHEDULEFREE_ADAMW

    def train(self):
        """Switch the params to y, where gradients are taken (call before training steps)."""
        self._switch(to_train=True)

    def eval(self):
        """Switch the params to x, the average to evaluate (call before evaluating)."""
        self._switch(to_train=False)

    def _switch(self, to_train):
        if self.scalars["train_mode"] == to_train:
            return
        weight = rules.schedulefree_weight(self._hyper["betas"][0], to_train)
        with _interrupts.deferred():
            self._kernels.interpolate_step(_kernel_arg(self.params), self._columns["z"],
                                           weight=weight, param_copy=_kernel_arg(self._copies),
                                           threads=self.threads)
            self.scalars = {**self.scalars, "train_mode": to_train}

    def step(self, grads, **kwargs):
        if not self.scalars["train_mode"]:
            raise RuntimeError("ScheduleFreeAdamW is not in train mode: call opt.train() "
                               "before step() (and opt.eval() before evaluating)")
        return super().step(grads, **kwargs)


# torch.optim's spellings of the same optimizers
Adagrad = AdaGrad
RMSprop = RMSProp
