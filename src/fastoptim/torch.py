"""torch.optim optimizers whose step runs fastoptim's kernels on the tensors' own memory.

    >>> import fastoptim.torch
    >>> opt = fastoptim.torch.Adam(model.parameters(), lr=1e-3)   # was torch.optim.Adam

Each class is a rule (fastoptim.rules) plus what this front end owns: param groups with
per-group hyperparameters, torch.optim's state names and layout (a float32 ``state[p]["step"]``
tensor, ``exp_avg``, ``momentum_buffer``, ...), ``state_dict``/``load_state_dict`` (a
checkpoint moves between torch.optim and fastoptim.torch in both directions), LR schedulers,
closures, ``GradScaler`` (its grad_scale and found_inf) and ``ZeroRedundancyOptimizer``.

A step works per param group from a cached plan: the params and their state checked once,
flat NumPy views of them (dense layouts such as channels_last included) and their
addresses, rebuilt only when a tensor moves. Each step adds the gradients' addresses and
runs one kernel call per distinct step number (normally one per group) with the GIL
released; the per-param step counters of a group live side by side in one tensor, so they
advance in one operation. Every check of every group runs before the first write, and
Ctrl-C is held back until params, state and counters are all updated.

Accepted: dense CPU tensors of float32, float64, bfloat16 and float16 (bfloat16/float16 as
torch's fused optimizers do: state in the param's dtype, math in float32; or with
``master_weights=True``: float32 master params and state, the params written back rounded
in the same pass). Refused with a TypeError/ValueError naming the parameter, before anything
changes: other devices and dtypes, overlapping layouts, sparse gradients, ``capturable=True``,
``differentiable=True``. ``foreach``/``fused`` are accepted and ignored (the kernel is one
fused pass either way). A gradient whose layout differs from its param's is copied into the
param's layout first.
"""
import math

import numpy as np

try:
    import torch
except ImportError as exc:  # torch is optional: only this module needs it
    raise ImportError("fastoptim.torch needs PyTorch, which is not installed; "
                      "install it with `pip install torch==2.13.0`") from exc

from fastoptim import _interrupts, _kernel_specs, rules
from fastoptim._backend import resolve_backend
from fastoptim._checks import (
    BFLOAT16,
    FLOAT64,
    ROUNDINGS,
    check_choice,
    check_dtype_name,
    check_flag,
    check_nonnegative,
    check_real,
    check_seed,
    check_threads,
)
from fastoptim.clipping import clip_coefficient, total_norm

try:    # threaded steps run on torch's own OpenMP team (see share_openmp_team)
    from fastoptim.kernels import share_openmp_team
except ImportError:     # the NumPy backend only
    pass
else:
    share_openmp_team()

__all__ = ["SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adadelta", "Adamax", "NAdam",
           "RAdam", "Rprop", "ASGD", "Lion", "LAMB", "ScheduleFreeAdamW", "Adafactor"]

_TORCH_DTYPES = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64),
                 torch.float16: np.dtype(np.float16), torch.bfloat16: BFLOAT16}
_FROM_NUMPY = {v: k for k, v in _TORCH_DTYPES.items()}
# torch.optim's flags: foreach and fused are accepted and ignored, the others refused
_TORCH_FLAGS = (("foreach", None), ("fused", None), ("capturable", False),
                ("differentiable", False))
# this front end's options (their meaning: help(fastoptim.Optimizer))
_OPTIONS = (("backend", "auto"), ("threads", None), ("master_weights", False),
            ("state_dtype", None), ("rounding", "nearest"), ("seed", 0),
            ("max_grad_norm", None), ("norm_type", 2.0), ("check_finite", False),
            ("on_nonfinite", "raise"))


_NO_STATE = {}     # the state of a param whose optimizer keeps none (plain SGD)


def _step_dtype():
    """The dtype torch.optim gives state["step"] (float32 unless the default is float64)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _scalar(value):
    """A hyperparameter as Python data: 1-element tensors (torch allows them for lr and
    betas) become numbers, pairs become tuples."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, list):
        return tuple(_scalar(v) for v in value)
    if isinstance(value, tuple):
        return tuple(_scalar(v) for v in value)
    return value


def _is_dense(tensor):
    """No overlap and no gap in some order of the dimensions (contiguous, channels_last,
    permuted): the elements fill numel() consecutive slots from data_ptr()."""
    if tensor.numel() == 0:
        return True
    expected = 1
    for stride, size in sorted((st, s) for s, st in zip(tensor.shape, tensor.stride()) if s != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _flat_view(tensor):
    """A 1-D NumPy array over the tensor's memory, in memory order (never a copy)."""
    flat = torch.as_strided(tensor.detach(), (tensor.numel(),), (1,))
    if tensor.dtype == torch.bfloat16:
        return flat.view(torch.int16).numpy().view(BFLOAT16)
    return flat.numpy()


def _view(tensor, shaped):
    """The kernels' view of a tensor: flat, or, for a rule whose state is not of its
    param's shape (Adafactor), in its own shape (the tensor is contiguous then)."""
    return _flat_view(tensor).reshape(tensor.shape) if shaped else _flat_view(tensor)


def _check_tensor(tensor, what):
    """A tensor the kernels may update in place, or the error that says why not."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.layout != torch.strided:
        raise TypeError(f"{what} is a {tensor.layout} tensor; fastoptim.torch needs dense "
                        "tensors (sparse gradients are not supported)")
    if tensor.device.type != "cpu":
        raise TypeError(f"{what} is on {tensor.device}; fastoptim.torch updates CPU tensors "
                        "only (use torch.optim on accelerators)")
    if tensor.dtype not in _TORCH_DTYPES:
        raise TypeError(f"{what} has dtype {tensor.dtype}; fastoptim.torch supports float32, "
                        "float64, bfloat16 and float16")
    if tensor.is_conj() or tensor.is_neg():
        raise ValueError(f"{what} is a conjugate or negative view; call .resolve_conj() / "
                         ".resolve_neg() first")
    if not _is_dense(tensor):
        raise ValueError(f"{what} is not dense (shape {tuple(tensor.shape)}, strides "
                         f"{tensor.stride()}): its elements overlap or leave gaps")


def _dry_run(kernel, buffers, scalars, writes=True, **options):
    """A runner that runs nothing (sums of zeros): a kernel function called with it only
    checks its arguments. Adafactor's measuring pass gets no arrays' sums at all."""
    if kernel.state_shape is not None and not writes:
        return np.zeros((0, kernel.sums)), None
    return np.zeros((1, kernel.sums)) if kernel.sums else None


def _position(group, p):
    """The index of param p in its group (for messages: only computed when raising)."""
    return next(i for i, q in enumerate(group["params"]) if q is p)


def _param_name(group, g, i):
    names = group.get("param_names")
    where = f"param {i} of param group {g}"
    return f"param {names[i]!r} ({where})" if names else where


class _Plan:
    """A param group's tensors as the kernels see them, valid while every tensor keeps its
    memory (``fingerprint``): flat views and addresses of the params (float32 masters with
    master_weights), their state buffers and param copies, and the group's counters."""

    def __init__(self, params, keys):
        self.params = params            # the params stepped, in group order
        self.keys = keys                # the state buffer names
        self.views = {}                 # "param", "copy", buffer name -> flat views
        self.addresses = {}             # the same -> int64 array of data addresses
        self.dtypes = {}                # the same -> int32 array of dtype codes
        self.n = None                   # elements of each param
        self.nbytes = None              # bytes of each param's gradient
        self.nonempty = None            # n > 0
        self.counters = {}              # "step", "mu_product", ... -> float array view
        self.tables = {}                # a call's address table (compiled backend)
        self.pending = []               # (param, {state entries}) to insert at commit
        self.states = []                # each param's state dict, once committed
        self.strides = [p.stride() for p in params]
        self.fingerprint = None


class _Grads:
    """A group's gradients this step: the tensors, their addresses and, made when first
    needed, their flat views."""

    def __init__(self, tensors, addresses, shaped=False):
        self.tensors = tensors
        self.addresses = addresses
        self.shaped = shaped
        self._views = None

    @property
    def views(self):
        if self._views is None:
            self._views = [_view(t, self.shaped) for t in self.tensors]
        return self._views


class _Optimizer(torch.optim.Optimizer):
    """A torch.optim.Optimizer whose step runs one fastoptim rule (the class's ``rule``)."""

    rule = None
    _step_supports_amp_scaling = True   # GradScaler hands over grad_scale and found_inf
    _group_scalars = False              # the rule's scalars live in the param group, not
                                        # in each param's state (Schedule-Free)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        rule = cls.__dict__.get("rule")
        if rule is None:
            return
        cls.__signature__ = rule.signature(_TORCH_FLAGS + _OPTIONS)
        like = f"torch.optim.{rule.torch_name}" if rule.torch_name else "a torch.optim"
        cls.__doc__ = (f"{rule.summary}\n\n{rule.formula}\n\nAs {like} optimizer, running "
                       "fastoptim's kernels (see fastoptim.torch). Hyperparameters:\n"
                       + "\n".join(f"    {h.name}={h.default!r}: {h.doc}"
                                   for h in rule.hyperparameters)
                       + "\nOptions beyond torch.optim (see help(fastoptim.Optimizer)): "
                       + ", ".join(f"{n}={d!r}" for n, d in _OPTIONS)
                       + "\ntorch.optim's " + ", ".join(f"{n}={d!r}" for n, d in _TORCH_FLAGS)
                       + ": foreach and fused are accepted and ignored (the kernel is one "
                       "fused pass), capturable=True and differentiable=True are refused")

    def __init__(self, params, *args, **kwargs):
        defaults = self.rule.bind(type(self).__signature__,
                                  f"fastoptim.torch.{type(self).__name__}", (params, *args), kwargs)
        params = defaults.pop("params")
        options = {name: defaults.pop(name) for name, _ in _OPTIONS}
        resolve_backend(options["backend"])    # refuse a bad name (or a missing build) now
        self.backend = options["backend"]
        self.threads = check_threads(options["threads"]) or None
        self.master_weights = check_flag("master_weights", options["master_weights"])
        self.state_dtype = (None if options["state_dtype"] is None
                            else check_dtype_name("state_dtype", options["state_dtype"]))
        self.rounding = check_choice("rounding", options["rounding"], ROUNDINGS)
        self.seed = check_seed(options["seed"])
        self.max_grad_norm = (None if options["max_grad_norm"] is None
                              else check_nonnegative("max_grad_norm", options["max_grad_norm"]))
        self.norm_type = check_real("norm_type", options["norm_type"])
        if self.norm_type not in (1.0, 2.0, math.inf):
            raise ValueError(f"norm_type must be 1, 2 or inf, got {options['norm_type']!r}")
        self.check_finite = check_flag("check_finite", options["check_finite"])
        self.on_nonfinite = check_choice("on_nonfinite", options["on_nonfinite"],
                                         ("raise", "skip"))
        self._plans = {}
        self._checked = {}      # group index -> (its hyperparameters, as last checked)
        self._steps_taken = 0   # keys stochastic rounding for rules without step counters
        if self._group_scalars:
            h = self.rule.checked({**self.rule.defaults(),
                                   **{k: _scalar(v) for k, v in defaults.items()
                                      if k in self.rule.defaults()}})
            defaults.update(self.rule.scalars(h))
        super().__init__(params, defaults)
        for g, group in enumerate(self.param_groups):
            self._hyperparameters(group, g)

    def __getstate__(self):     # torch pickles only defaults, state and param_groups
        state = super().__getstate__()
        state.update({name: getattr(self, name) for name, _ in _OPTIONS})
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        for name, default in _OPTIONS:
            self.__dict__.setdefault(name, default)
        self.__dict__.setdefault("_steps_taken", 0)
        self._plans = {}
        self._checked = {}
        for param_state in self.state.values():  # as torch: old checkpoints hold float steps
            if "step" in param_state and not torch.is_tensor(param_state["step"]):
                param_state["step"] = torch.tensor(float(param_state["step"]),
                                                   dtype=_step_dtype())
        for group in self.param_groups:  # groups saved by an older torch lack newer keys
            for key, value in self.defaults.items():
                group.setdefault(key, value)

    def load_state_dict(self, state_dict):
        """torch.optim's load_state_dict, then checks that every hyperparameter is valid and
        every param's state holds the buffers its group needs (as torch.optim would fail on a
        missing one, in its param's shape); on failure the optimizer keeps its previous
        state -- the very state mapping and group dicts, which torch's load replaces."""
        saved = self.state, self.param_groups
        super().load_state_dict(state_dict)
        try:
            self._restore_state_dtypes(state_dict)
            for g, group in enumerate(self.param_groups):
                h = self._hyperparameters(group, g)
                needed = [n for n, _ in self.rule.state(h)]
                if self.rule.counts_steps:
                    needed.append("step")
                if self.master_weights:
                    needed.append("master_param")
                for i, p in enumerate(group["params"]):
                    st = self.state.get(p)
                    if not st:
                        continue
                    missing = [n for n in needed if n not in st
                               and self._buffer_shape(n, p) is not None]
                    if missing:
                        raise ValueError(f"state_dict: the state of {_param_name(group, g, i)}"
                                         f" lacks {missing}")
                    for key in needed:
                        if self._buffer_shape(key, p) is None:
                            continue
                        value = st[key]
                        if not torch.is_tensor(value):
                            raise TypeError(f"state_dict: state[{key!r}] of "
                                            f"{_param_name(group, g, i)} is not a tensor")
                        if key == "step" and (value.numel() != 1
                                              or not 0 <= float(value) < 2**53):
                            raise ValueError(f"state_dict: state['step'] of "
                                             f"{_param_name(group, g, i)} must be one number "
                                             f">= 0, got {value!r}"[:300])
                        shape = self._buffer_shape(key, p)
                        if key != "step" and tuple(value.shape) != shape:
                            raise ValueError(f"state_dict: state[{key!r}] of "
                                             f"{_param_name(group, g, i)} has shape "
                                             f"{tuple(value.shape)}, not {shape}")
        except BaseException:
            self.state, self.param_groups = saved
            raise
        finally:
            self._plans = {}

    def _restore_state_dtypes(self, state_dict):
        """torch.optim's load casts every state tensor but "step" to its param's dtype; this
        front end keeps float32 master params (master_weights), its state buffers in
        state_dtype and its counters (NAdam's mu_product, ...) in their own dtype. Those are
        taken again from the state dict, in the dtype the optimizer keeps, so a resumed run
        is the uninterrupted one."""
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        for g, group in enumerate(self.param_groups):
            buffers = {n for n, _ in self.rule.state(self._hyperparameters(group, g))}
            for p in group["params"]:
                st = self.state.get(p)
                source = state_dict["state"].get(saved_ids.pop(0)) if saved_ids else None
                if not st or not isinstance(source, dict):
                    continue
                for key, value in st.items():
                    original = source.get(key)
                    if key == "step" or not (torch.is_tensor(value) and torch.is_tensor(original)
                                             and original.is_floating_point()):
                        continue
                    wanted = (torch.float32 if key == "master_param" else
                              self._state_dtype(p) if key in buffers else original.dtype)
                    if value.dtype != wanted:
                        st[key] = original.to(dtype=wanted, copy=True)

    def __repr__(self):
        return "fastoptim.torch." + super().__repr__()

    # -- hyperparameters ---------------------------------------------------------------------

    def _hyperparameters(self, group, g):
        """The group's hyperparameters checked by the rule; torch's flags refused or ignored."""
        for flag in ("capturable", "differentiable"):
            if group.get(flag):
                raise ValueError(f"fastoptim.torch.{type(self).__name__} does not support "
                                 f"{flag}=True (param group {g})")
        values = {h.name: _scalar(group[h.name]) for h in self.rule.hyperparameters}
        last = self._checked.get(g)
        try:
            unchanged = last is not None and bool(last[0] == values)
        except (TypeError, ValueError, RuntimeError):     # e.g. a tensor of several values
            unchanged = False
        if unchanged:
            return last[1]
        try:
            checked = self.rule.checked(values)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"param group {g}: {exc}") from None
        self._checked[g] = (values, checked)
        return checked

    def _scalar_names(self, h):
        return [] if self._group_scalars else list(self.rule.scalars(h))

    def _buffer_shape(self, key, p):
        """The shape of state ``key`` of param p (None: p has no such buffer)."""
        if key in ("step", "master_param"):
            return tuple(p.shape)
        return self.rule.buffer_shape(key, p.shape)

    # -- plans -------------------------------------------------------------------------------

    def _fingerprint(self, plan):
        """Where the plan's tensors live: the state mapping, each param's memory, and each
        tensor of each param's state (load_state_dict, which replaces them all, also drops
        the plans)."""
        prints = [id(self.state)]
        prints += [p.data_ptr() for p in plan.params]
        for st in plan.states:
            prints += map(id, st.values())
        return prints

    def _plan(self, g, group, active, h, codes):
        """The group's plan for these params: the cached one while nothing moved. ``codes``:
        the compiled backend's dtype codes (None with the NumPy backend)."""
        keys = [name for name, _ in self.rule.state(h)]
        plan = self._plans.get(g)
        if (plan is not None and plan.keys == keys and len(plan.params) == len(active)
                and all(a is b for a, b in zip(plan.params, active))
                and (plan.dtypes or codes is None)
                and self._fingerprint(plan) == plan.fingerprint):
            plan.pending = []
            return plan
        return self._build_plan(g, group, active, h, keys, codes)

    def _build_plan(self, g, group, params, h, keys, codes):
        """Check every tensor; make the state torch would create lazily (inserted at commit),
        the flat views and addresses, and the group's shared counters."""
        initial = dict(self.rule.state(h))
        master = self.master_weights
        counters = (["step"] if self.rule.counts_steps else []) + self._scalar_names(h)
        plan = _Plan(params, keys)
        columns = ["param"] + keys + (["copy"] if master else [])
        views = {name: [] for name in columns}
        merged_states = []
        shaped = self.rule.state_shape is not None
        for p in params:
            name = _param_name(group, g, _position(group, p))
            _check_tensor(p, name)
            if shaped and not p.is_contiguous():
                raise ValueError(f"{name} is not contiguous (strides {p.stride()}): "
                                 f"{type(self).__name__} keeps row and column state, which "
                                 "needs the param's rows in memory order")
            own = [key for key in keys if self.rule.buffer_shape(key, p.shape) is not None]
            if master and p.dtype not in (torch.bfloat16, torch.float16):
                raise TypeError(f"{name}: master_weights=True keeps float32 copies of "
                                f"bfloat16/float16 params; this one is {p.dtype}")
            st = self.state.get(p, {})
            fresh = {}      # torch's order: the counters (filled in below), then buffers
            for key in counters:
                if key not in st:
                    fresh[key] = None
            if master and "master_param" not in st:
                fresh["master_param"] = p.detach().to(
                    torch.float32, memory_format=torch.preserve_format, copy=True)
            stepped = fresh.get("master_param", st.get("master_param", p))
            for key in own:
                old = st.get(key)
                shape = self.rule.buffer_shape(key, p.shape)
                if old is None:
                    fresh[key] = self._new_buffer(p, stepped, initial[key], shape)
                elif (not torch.is_tensor(old) or tuple(old.shape) != shape
                      or not (old.stride() == p.stride() if shape == tuple(p.shape)
                              else old.is_contiguous())):
                    # e.g. a contiguous buffer loaded for a channels_last param: the same
                    # values in the param's layout
                    _check_tensor(old, f"state[{key!r}] of {name}")
                    if tuple(old.shape) != shape:
                        raise ValueError(f"state[{key!r}] of {name} has shape "
                                         f"{tuple(old.shape)}, expected {shape}")
                    fresh[key] = self._new_buffer(p, stepped, 0.0, shape, old.dtype).copy_(old)
            merged = {**st, **fresh}
            for key in own + (["master_param"] if master else []):
                _check_tensor(merged[key], f"state[{key!r}] of {name}")
                if (merged[key].dtype == torch.float64) != (p.dtype == torch.float64):
                    raise TypeError(f"state[{key!r}] of {name} is {merged[key].dtype} but "
                                    f"the param is {p.dtype}")
            views["param"].append(_view(merged["master_param"] if master else p, shaped))
            if master:
                views["copy"].append(_view(p, shaped))
            for key in keys:
                views[key].append(_view(merged[key], shaped) if key in own else None)
            merged_states.append((p, fresh, merged))
        # the group's counters (torch's per-param "step", NAdam's "mu_product", ...) side by
        # side in one tensor each: state[p][name] becomes a view of its element
        start = self.rule.scalars(h)
        for key in counters:
            values = [(0.0 if key == "step" else start[key]) if m[key] is None else m[key].item()
                      for _, _, m in merged_states]
            shared = torch.tensor(values, dtype=_step_dtype())
            for (_, fresh, merged), view in zip(merged_states, shared.unbind()):
                fresh[key] = merged[key] = view
            plan.counters[key] = shared.numpy()
        for name in columns:    # (None: a param without that buffer; address 0)
            plan.views[name] = views[name]
            plan.addresses[name] = np.array([0 if v is None else v.ctypes.data
                                             for v in views[name]], np.int64)
            if codes is not None:   # the compiled backend's table (_run)
                plan.dtypes[name] = np.array([-1 if v is None else codes[v.dtype]
                                              for v in views[name]], np.int32)
        plan.n = np.array([p.numel() for p in params], np.int64)
        # the written memory, sorted: no two pieces may overlap, and each step's gradients
        # are checked against it (_grads) before anything is written
        starts = np.concatenate([plan.addresses[c] for c in columns])
        ends = starts + np.concatenate([[0 if v is None else v.nbytes for v in views[c]]
                                        for c in columns]).astype(np.int64)
        order = np.argsort(starts, kind="stable")
        if (ends[order][:-1] > starts[order][1:]).any():
            self._explain_overlap(plan, None, None, g, group)
        sentinel = [np.iinfo(np.int64).min]     # a piece that starts and ends before all
        plan.written = (np.concatenate([sentinel, starts[order]]),
                        np.concatenate([sentinel, ends[order]]))
        plan.nbytes = plan.n * params[0].element_size()     # a gradient's, as its param's
        plan.nonempty = plan.n > 0
        plan.pending = [(p, fresh) for p, fresh, _ in merged_states if fresh]
        return plan

    def _new_buffer(self, p, stepped, initial, shape=None, dtype=None):
        dtype = dtype or self._state_dtype(p)
        if initial == "param":
            return stepped.detach().to(dtype, memory_format=torch.preserve_format, copy=True)
        if shape is not None and shape != tuple(p.shape):   # Adafactor's row, column state
            return torch.full(shape, initial, dtype=dtype)
        return torch.full_like(p, initial, dtype=dtype, memory_format=torch.preserve_format)

    def _state_dtype(self, p):
        if self.state_dtype is None:
            return torch.float32 if self.master_weights else p.dtype
        if (p.dtype == torch.float64) != (self.state_dtype == FLOAT64):
            raise TypeError(f"state_dtype {self.state_dtype} does not go with a {p.dtype} "
                            "param: float64 params keep float64 state, others float32, "
                            "bfloat16 or float16")
        return _FROM_NUMPY[self.state_dtype]

    # -- stepping ----------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):
        """Update every parameter that has a gradient; returns closure()'s loss, if any."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        found_inf = getattr(self, "found_inf", None)
        if found_inf is not None and float(found_inf) > 0:
            return loss                 # GradScaler saw inf/NaN: skip, as torch's fused do
        grad_scale = getattr(self, "grad_scale", None)
        factor = 1.0 if grad_scale is None else 1.0 / float(grad_scale)
        kernels = resolve_backend(self.backend)
        compiled = kernels.__name__ == "fastoptim.kernels"

        # 1. check everything and gather the calls; nothing is written here
        work = []
        for g, group in enumerate(self.param_groups):
            h = self._hyperparameters(group, g)
            active = [p for p in group["params"] if p.grad is not None]
            if active:
                plan = self._plan(g, group, active, h,
                                  kernels.DTYPE_CODES if compiled else None)
                grads = self._grads(g, group, plan)
                work.append((g, group, h, plan, grads))
        if not work:
            return loss
        if self.check_finite or self.max_grad_norm is not None:
            views = [v for *_, grads in work for v in grads.views]
            sums = kernels.norms(views, norm_type=self.norm_type, threads=self.threads)
            if self.check_finite and not all(f == 0 for f in sums[:, 1]):
                if self.on_nonfinite == "raise":
                    raise FloatingPointError("a gradient holds NaN or inf (check_finite=True): "
                                             "the step was not taken and nothing changed")
                return loss
            if self.max_grad_norm is not None:
                total = total_norm(sums[:, 0], self.norm_type) * factor
                factor *= clip_coefficient(total, self.max_grad_norm)
        calls = [self._calls(g, group, h, plan) for g, group, h, plan, _ in work]
        # each call's own checks (step range, the scalars it derives) run again as it starts,
        # before it writes; run them all now when a failure there would come after a first
        # call wrote, or after new state was added (one call on settled state needs not)
        if len(calls) > 1 or len(calls[0]) > 1 or work[0][3].pending:
            for group_calls in calls:
                for kernel, buffers, kwargs, *_ in group_calls:
                    function, _ = _kernel_specs.FUNCTIONS[kernel]
                    function(_dry_run, "param", "grad", *buffers, **kwargs)

        # 2. write: new state, the kernels, the counters -- with Ctrl-C held back
        with _interrupts.deferred():
            for (g, group, h, plan, grads), group_calls in zip(work, calls):
                for p, fresh in plan.pending:
                    self.state[p].update(fresh)     # (self.state makes the dict if new)
                for kernel, buffers, kwargs, scalars, members in group_calls:
                    self._run(kernels, compiled, kernel, plan, grads, buffers, members,
                              dict(kwargs, grad_factor=factor, rounding=self.rounding,
                                   seed=self.seed, threads=self.threads))
                    self._advance(group, plan, scalars, members)
                if plan.fingerprint is None or plan.pending:
                    plan.states = [self.state.get(p, _NO_STATE) for p in plan.params]
                    plan.fingerprint = self._fingerprint(plan)
                    self._plans[g] = plan
                torch.autograd.graph.increment_version(plan.params)
            self._steps_taken += 1
        return loss

    def _grads(self, g, group, plan):
        """The gradients in their params' layout (one in another layout is copied into the
        param's), checked, and checked not to share memory with what the step writes.

        torch already holds a grad to its param's dtype, shape and device; what is left to
        check is its layout, which one comparison of all the strides covers (a sparse grad
        has no data pointer and no strides: RuntimeError)."""
        tensors = [p.grad for p in plan.params]
        try:
            addresses = [t.data_ptr() for t in tensors]
            as_planned = [t.stride() for t in tensors] == plan.strides
        except RuntimeError:
            as_planned = False
        if not as_planned:
            tensors = [self._grad_in_layout(g, group, p, t)
                       for p, t in zip(plan.params, tensors)]
            addresses = [t.data_ptr() for t in tensors]
        addresses = np.array(addresses, np.int64)
        grads = _Grads(tensors, addresses, shaped=self.rule.state_shape is not None)
        # a gradient may not share memory with anything the step writes
        # the written piece that starts last before each gradient's end (the sentinel if
        # none) must end before the gradient starts; the pieces are disjoint and sorted
        starts, ends = plan.written
        last_before = np.searchsorted(starts, addresses + plan.nbytes) - 1
        if ((ends[last_before] > addresses) & plan.nonempty).any():
            self._explain_overlap(plan, grads, None, g, group)
        return grads

    @staticmethod
    def _grad_in_layout(g, group, p, grad):
        """A grad that may be stepped with its param: checked, and copied into the param's
        layout when its own differs."""
        if grad.layout == torch.strided and grad.stride() == p.stride():
            return grad
        name = _param_name(group, g, _position(group, p))
        _check_tensor(grad, f"the grad of {name}")
        if grad.dtype != p.dtype or grad.shape != p.shape:
            raise TypeError(f"the grad of {name} is {grad.dtype}{list(grad.shape)}, the "
                            f"param {p.dtype}{list(p.shape)}")
        return torch.empty_like(p).copy_(grad)

    def _calls(self, g, group, h, plan):
        """A group's kernel calls: one per distinct (step, scalars) among its params (one,
        unless params joined the group at different times)."""
        names = (["step"] if "step" in plan.counters else []) + self._scalar_names(h)
        columns = [plan.counters[name] for name in names]
        fresh_buffer = None
        if not self.rule.counts_steps and plan.keys:   # torch's SGD: b <- g when b is new
            new = {id(p) for p, fresh in plan.pending if any(k in fresh for k in plan.keys)}
            fresh_buffer = np.array([id(p) in new for p in plan.params])
            columns.append(fresh_buffer)
        if columns and len(plan.params) > 1 and any((c != c[0]).any() for c in columns):
            by_key = {}
            for i, key in enumerate(zip(*[c.tolist() for c in columns])):
                by_key.setdefault(key, []).append(i)
            member_lists = list(by_key.values())
        else:
            member_lists = [None]       # every param of the group
        param_index = sum(len(gr["params"]) for gr in self.param_groups[:g])
        calls = []
        for members in member_lists:
            first = 0 if members is None else members[0]
            if "step" in plan.counters:
                count = plan.counters["step"][first]
                if not (math.isfinite(count) and count == int(count)):
                    name = _param_name(group, g, _position(group, plan.params[first]))
                    raise ValueError(f"state['step'] of {name} is {count}: a step count is a "
                                     "whole number")
                step = int(count) + 1
            elif self._group_scalars:
                step = int(group["k"]) + 1
            else:
                step = self._steps_taken + 1
            if self._group_scalars:
                scalars = {k: group[k] for k in self.rule.scalars(h)}
            else:
                # as NumPy scalars of the counters' dtype (torch's float32): the rule then
                # computes in float32 what torch computes on its float32 state tensors
                # (NAdam's mu_product *= mu), and the trajectories agree to rounding
                scalars = {k: plan.counters[k][first] for k in self._scalar_names(h)}
            call = self.rule.kernel(h, h["lr"], step, scalars)
            kwargs = dict(call.kwargs, param_index=param_index)
            if fresh_buffer is not None and call.kernel == "momentum_step":
                kwargs["first_step"] = bool(fresh_buffer[first])
            calls.append((call.kernel, call.buffers, kwargs, call.scalars, members))
        return calls

    def _run(self, kernels, compiled, kernel, plan, grads, buffers, members, kwargs):
        """One kernel call over the plan's params (or the ``members`` among them)."""
        if not compiled or self.rule.state_shape is not None:  # Adafactor: arrays, not a table
            def pick(column):
                return column if members is None else [column[i] for i in members]
            copy = plan.views.get("copy")
            getattr(kernels, kernel)(
                pick(plan.views["param"]), pick(grads.views),
                *[None if b is None else pick(plan.views[b]) for b in buffers],
                param_copy=None if copy is None else pick(copy), **kwargs)
            return
        # the compiled backend: a table of addresses, one row per param, kept in the plan;
        # each step writes its gradients' column
        key = (kernel, tuple(buffers), None if members is None else tuple(members))
        if key not in plan.tables:
            plan.tables[key] = self._table(plan, buffers, members)
        table, codes, n = plan.tables[key]
        table[:, 1] = grads.addresses if members is None else grads.addresses[members]

        def run(spec_kernel, _buffers, scalars, param_copy=None, **options):
            return kernels.run_table(spec_kernel, table, codes, n, scalars, **options)

        function, _ = _kernel_specs.FUNCTIONS[kernel]
        function(run, "param", "grad", *buffers, **kwargs)

    def _table(self, plan, buffers, members):
        """Addresses and dtype codes of a call's buffers (the gradient column left to each
        step), and the element counts, one row per param of ``members`` (None: all)."""
        rows = slice(None) if members is None else list(members)
        columns = ["param", "grad"] + list(buffers) + ["copy"]
        count = len(plan.n) if members is None else len(members)
        table = np.zeros((count, len(columns)), np.int64)
        codes = np.zeros((count, len(columns)), np.int32)
        for c, name in enumerate(columns):
            if name == "grad":     # the gradient has the dtype of the param the model holds
                codes[:, c] = plan.dtypes["copy" if self.master_weights else "param"][rows]
            elif name is not None and name in plan.addresses:
                table[:, c] = plan.addresses[name][rows]
                codes[:, c] = plan.dtypes[name][rows]
        return table, codes, np.ascontiguousarray(plan.n[rows])

    def _explain_overlap(self, plan, grads, members, g, group):
        """Raise the ValueError that names two tensors of a step sharing memory (written
        ones with each other, or a gradient with a written one)."""
        spans = []
        for i in range(len(plan.params)) if members is None else members:
            name = _param_name(group, g, _position(group, plan.params[i]))
            labeled = [(plan.views["param"][i], name, True)]
            if grads is not None:
                labeled.append((grads.views[i], f"the grad of {name}", False))
            labeled += [(plan.views[k][i], f"state[{k!r}] of {name}", True) for k in plan.keys
                        if plan.views[k][i] is not None]
            if "copy" in plan.views:
                labeled.append((plan.views["copy"][i], name, True))
            spans += [(*np.lib.array_utils.byte_bounds(a), written, label)
                      for a, label, written in labeled if a.size]
        spans.sort()
        for i, (start, end, written, label) in enumerate(spans):
            for other_start, _, other_written, other in spans[i + 1:]:
                if other_start >= end:
                    break
                if written or other_written:
                    raise ValueError(f"{other} shares memory with {label}: give each its own "
                                     "tensor")
        raise AssertionError("fastoptim.torch: an overlap was found but not located")

    def _advance(self, group, plan, scalars, members):
        """After a call: its params' step counters and scalars move on."""
        rows = slice(None) if members is None else members
        if "step" in plan.counters:
            plan.counters["step"][rows] += 1
        if self._group_scalars:
            group.update(scalars)
            return
        for key, value in scalars.items():
            plan.counters[key][rows] = value


def _optimizer(rule, extra=None):
    namespace = {"rule": rule, "__module__": __name__, **(extra or {})}
    return type(rule.torch_name or rule.name, (_Optimizer,), namespace)


class _ScheduleFree:
    """Schedule-Free's train()/eval(): the params hold y (where gradients are taken) in
    train mode and x (the average, to evaluate) in eval mode, as in the reference code."""

    _group_scalars = True

    @torch.no_grad()
    def train(self):
        """Switch the params to y (call before training steps)."""
        self._switch(True)

    @torch.no_grad()
    def eval(self):
        """Switch the params to x (call before evaluating)."""
        self._switch(False)

    def _switch(self, to_train):
        kernels = resolve_backend(self.backend)
        with _interrupts.deferred():
            for group in self.param_groups:
                if group["train_mode"] == to_train:
                    continue
                weight = rules.schedulefree_weight(_scalar(group["betas"])[0], to_train)
                for p in group["params"]:
                    st = self.state.get(p, {})
                    if "z" not in st:
                        continue
                    target = st.get("master_param", p)
                    kernels.interpolate_step(
                        _flat_view(target), _flat_view(st["z"]), weight=weight,
                        param_copy=_flat_view(p) if "master_param" in st else None,
                        threads=self.threads)
                    torch.autograd.graph.increment_version([p])
                group["train_mode"] = to_train

    @torch.no_grad()
    def step(self, closure=None):
        if not all(group["train_mode"] for group in self.param_groups):
            raise RuntimeError("ScheduleFreeAdamW is not in train mode: call opt.train() "
                               "before step() (and opt.eval() before evaluating)")
        return _Optimizer.step(self, closure)


class _EagerState:
    """torch.optim.Adagrad creates every param's state in its constructor (step 0, sum
    filled with initial_accumulator_value); so does its twin here."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for g, group in enumerate(self.param_groups):
            h = self._hyperparameters(group, g)
            for p in group["params"]:
                self.state[p]["step"] = torch.tensor(0.0, dtype=_step_dtype())
                for key, initial in self.rule.state(h):
                    self.state[p][key] = self._new_buffer(p, p, initial)


SGD = _optimizer(rules.SGD)
Adam = _optimizer(rules.ADAM)
AdamW = _optimizer(rules.ADAMW)
Adagrad = type("Adagrad", (_EagerState, _Optimizer),
               {"rule": rules.ADAGRAD, "__module__": __name__})
RMSprop = _optimizer(rules.RMSPROP)
Adadelta = _optimizer(rules.ADADELTA)
Adamax = _optimizer(rules.ADAMAX)
NAdam = _optimizer(rules.NADAM)
RAdam = _optimizer(rules.RADAM)
Rprop = _optimizer(rules.RPROP)
ASGD = _optimizer(rules.ASGD)
Lion = _optimizer(rules.LION)
LAMB = _optimizer(rules.LAMB)
Adafactor = _optimizer(rules.ADAFACTOR)
ScheduleFreeAdamW = type("ScheduleFreeAdamW", (_ScheduleFree, _Optimizer),
                         {"rule": rules.SCHEDULEFREE_ADAMW, "__module__": __name__})
