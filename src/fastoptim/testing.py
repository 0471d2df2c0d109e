"""fastoptim.testing: fastoptim's exact NumPy reference as the oracle for your own optimizer.

If you write a fast optimizer (a CUDA or Triton kernel, a C++ offload optimizer, a port to
another framework), run it side by side with fastoptim's reference on the same random
problems and see, step by step and buffer by buffer, how many units in the last place (ULP)
it is away::

    from fastoptim.testing import compare_optimizer
    report = compare_optimizer(my_adam_step, "Adam", dtype="float32", lr=1e-3)
    print(report)           # a table: per step and buffer, max ULP, max relative error,
                            #   error relative to the buffer's scale, first differing element
    assert report.max_ulp == 0                  # same operations in the same order, or
    assert report.max_ulp_of("param") <= 2      #   rounded differently (FMA, lerp, ...)

Also here: `ulp_distance`, `max_ulp` and `assert_same_bits`, the element-wise comparisons
fastoptim's own tests and ``python -m fastoptim verify`` use, for float16, bfloat16 (NumPy
arrays of ml_dtypes.bfloat16), float32 and float64; they also take torch tensors.

ULP distance: the number of representable values you step over going from a to b, so 0
means identical bits and adjacent floats are 1 apart; -0.0 and +0.0 count as adjacent
(1 ULP), so that 0 always means the same bits. A NaN matches any NaN (0 ULP, whatever its
sign and payload); a NaN against a number is not a distance and is reported separately.
"""
import dataclasses
import functools
import inspect
import math
import sys

import numpy as np

__all__ = [
    "DEFAULT_SIZES",
    "FLOAT_DTYPE_NAMES",
    "NAN_VS_NUMBER",
    "float_dtype",
    "as_numpy",
    "ulp_distance",
    "max_ulp",
    "bits",
    "assert_same_bits",
    "random_problem",
    "resolve_optimizer",
    "compare_optimizer",
    "Report",
    "StepRow",
    "Divergence",
]

# Sizes that catch real bugs: an empty array, a scalar-only call, one element either side of
# the vector widths (8 floats per AVX2 register, 16 per AVX-512; unrolled loops go up to 64),
# a cache-sized array, and an odd size above 2**16 that threaded kernels split unevenly.
DEFAULT_SIZES = (0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000, 4097, 65537)

# ulp_distance's value where exactly one side is NaN: above every real distance (the widest,
# -inf to +inf in float64, is 0xFFE0000000000001), so a threshold on the distance catches it.
NAN_VS_NUMBER = np.uint64(2**64 - 1)

FLOAT_DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64")
_SIGNED = {2: np.int16, 4: np.int32, 8: np.int64}
_UNSIGNED = {2: np.uint16, 4: np.uint32, 8: np.uint64}


# -- dtypes and conversions -------------------------------------------------------------------

def float_dtype(dtype, what="dtype"):
    """np.dtype for float16, bfloat16 (needs ml_dtypes), float32 or float64, given as a name
    or a NumPy type; TypeError naming `what` for anything else."""
    if isinstance(dtype, str) and dtype == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise TypeError(f"{what}: bfloat16 arrays need the ml_dtypes package "
                            "(pip install ml_dtypes)") from None
        return np.dtype(ml_dtypes.bfloat16)
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or resolved.name not in FLOAT_DTYPE_NAMES:
        raise TypeError(f"{what} must be one of {', '.join(FLOAT_DTYPE_NAMES)}, got {dtype!r}")
    return resolved


def as_numpy(x):
    """A NumPy view or copy of an array, a torch tensor (any device; bfloat16 becomes
    ml_dtypes.bfloat16) or anything np.asarray takes. torch is never imported here."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach") and hasattr(x, "cpu"):   # a torch tensor
        tensor = x.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            return tensor.view(_torch().int16).numpy().view(float_dtype("bfloat16"))
        return tensor.numpy()
    return np.asarray(x)


def _torch():
    import torch

    return torch


def _float_array(x, what):
    a = as_numpy(x)
    float_dtype(a.dtype, what)
    return a


def _same_layout(a, b, what_a="a", what_b="b"):
    a, b = _float_array(a, what_a), _float_array(b, what_b)
    if a.dtype != b.dtype:
        raise TypeError(f"{what_a} and {what_b} must have the same dtype, got {a.dtype} and "
                        f"{b.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"{what_a} and {what_b} must have the same shape, got {a.shape} and "
                         f"{b.shape}")
    return a, b


# -- bits and ULP -----------------------------------------------------------------------------

def bits(a):
    """The raw bits of a float array as unsigned integers of the same width."""
    a = np.ascontiguousarray(_float_array(a, "a"))
    return a.view(_UNSIGNED[a.dtype.itemsize])


def _ordered_keys(a):
    """int64 keys in the order of the values: adjacent floats get adjacent keys, -0.0 and
    +0.0 are one apart (-1 and 0)."""
    width = a.dtype.itemsize
    signed = np.ascontiguousarray(a).view(_SIGNED[width]).astype(np.int64)
    magnitude = signed & np.int64((1 << (8 * width - 1)) - 1)
    return np.where(signed >= 0, signed, -1 - magnitude)


def _isnan(a):
    """NaN by its bits (exponent all ones, mantissa not 0): works for every float format
    without relying on a NumPy ufunc loop for it."""
    width = a.dtype.itemsize
    magnitude = bits(a) & _UNSIGNED[width]((1 << (8 * width - 1)) - 1)
    return magnitude > np.array(np.inf, a.dtype).view(_UNSIGNED[width])


def ulp_distance(a, b):
    """Element-wise ULP distance between two float arrays of the same dtype and shape, as
    uint64: 0 for identical bits and for NaN against NaN, NAN_VS_NUMBER where exactly one
    side is NaN. Takes NumPy arrays (float16, ml_dtypes.bfloat16, float32, float64) and
    torch tensors."""
    a, b = _same_layout(a, b)
    ka, kb = _ordered_keys(a), _ordered_keys(b)
    # |ka - kb| can reach 2**64 - 2**53: subtract in uint64, where the wrap-around is exact
    ua, ub = ka.view(np.uint64), kb.view(np.uint64)
    distance = np.where(ka >= kb, ua - ub, ub - ua)
    nan_a, nan_b = _isnan(a), _isnan(b)
    distance[nan_a & nan_b] = 0
    distance[nan_a != nan_b] = NAN_VS_NUMBER
    return distance


def max_ulp(a, b):
    """The largest ULP distance between a and b: an int (0 when empty), or math.inf when a
    NaN meets a number anywhere."""
    distance = ulp_distance(a, b)
    if distance.size == 0:
        return 0
    worst = distance.max()
    return math.inf if worst == NAN_VS_NUMBER else int(worst)


def _format_ulp(ulp):
    """A distance (from ulp_distance, or max_ulp's int or inf) as text."""
    return "NaN vs number" if ulp == NAN_VS_NUMBER or ulp == math.inf else f"{int(ulp)} ULP"


def assert_same_bits(actual, desired, what="array", *, show=5):
    """Raise AssertionError unless actual and desired have the same dtype, shape and bits
    (a NaN matches any NaN). The message says how many elements differ and shows the first
    `show` of them: index, both values and, for floats, their ULP distance. Arrays of other
    dtypes (integers, bools) are compared for equality."""
    actual, desired = as_numpy(actual), as_numpy(desired)
    if actual.dtype != desired.dtype or actual.shape != desired.shape:
        raise AssertionError(f"{what}: actual is {actual.dtype}{list(actual.shape)}, desired "
                             f"is {desired.dtype}{list(desired.shape)}")
    floats = actual.dtype.name in FLOAT_DTYPE_NAMES
    distance = ulp_distance(actual, desired) if floats else (actual != desired)
    differ = np.flatnonzero(distance)
    if differ.size == 0:
        return
    worst = f" (max {_format_ulp(distance.max())})" if floats else ""
    lines = [f"{what}: {differ.size} of {actual.size} elements differ{worst}; first at"]
    for flat in differ[:show]:
        index = tuple(int(k) for k in np.unravel_index(flat, actual.shape))
        index = index[0] if len(index) == 1 else index
        ulp = f" ({_format_ulp(distance.flat[flat])})" if floats else ""
        lines.append(f"  [{index}]: {actual.flat[flat]!s} vs {desired.flat[flat]!s}{ulp}")
    raise AssertionError("\n".join(lines))


# -- random problems --------------------------------------------------------------------------

# log10 range of the per-element gradient scales: wide enough that eps matters for some
# elements and not for others, narrow enough that g*g neither overflows nor vanishes
_GRAD_DECADES = {"float16": (-2, 1), "bfloat16": (-6, 1), "float32": (-6, 1),
                 "float64": (-8, 1)}


def random_problem(sizes, dtype, steps, seed, *, special_values=False):
    """Start params and per-step grads: ``(params, grads)`` with params a list of 1-D arrays
    (one per size) and grads[t] the list of grads of step t + 1.

    Params have random signs and magnitudes in [1, 10], away from 0, so that a param's ULP
    distance measures the update and not cancellation near 0. Each grad element has its own scale,
    fixed over the steps, spread log-uniformly over many decades (see _GRAD_DECADES), times
    a fresh normal sample each step; 1 % of the elements are always 0 and another 3 % are 0
    on any given step. special_values=True also puts NaN, +-inf, -0.0, the smallest
    subnormal and the largest finite value into a few grad elements of each array (the NaN
    and inf then flow through the state as IEEE says, and NaN matches NaN).
    """
    dtype = float_dtype(dtype)
    rng = np.random.default_rng(seed)
    low, high = _GRAD_DECADES[dtype.name]
    params, scales = [], []
    for n in sizes:
        p = rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(0, 1, n)
        params.append(p.astype(dtype))
        scale = 10.0 ** rng.uniform(low, high, n)
        scale[rng.random(n) < 0.01] = 0.0
        scales.append(scale)
    specials = None
    if special_values:
        # the smallest subnormal and the largest finite value by their bits (np.finfo does
        # not know bfloat16)
        unsigned = _UNSIGNED[dtype.itemsize]
        inf_bits = int(np.array(np.inf, dtype).view(unsigned))
        tiny, huge = np.array([1, inf_bits - 1], unsigned).view(dtype).astype(np.float64)
        specials = np.array([np.nan, np.inf, -np.inf, -0.0, tiny, huge])
    grads = []
    for _ in range(steps):
        step_grads = []
        for scale in scales:
            g = scale * rng.standard_normal(scale.size)
            g[rng.random(scale.size) < 0.03] = 0.0
            if specials is not None and scale.size:
                where = rng.integers(0, scale.size, min(len(specials), 1 + scale.size // 64))
                g[where] = rng.choice(specials, where.size)
            step_grads.append(g.astype(dtype))
        grads.append(step_grads)
    return params, grads


# -- the optimizer under test -----------------------------------------------------------------

def resolve_optimizer(name):
    """The fastoptim optimizer class of a name, case-insensitively (torch's "RMSprop" and
    "Adagrad" find fastoptim's RMSProp and AdaGrad), or the class itself."""
    import fastoptim

    base = fastoptim.Optimizer
    if isinstance(name, type) and issubclass(name, base):
        return name
    if not isinstance(name, str):
        raise TypeError(f"optimizer must be a name or a fastoptim optimizer class, got {name!r}")
    classes = {attr: getattr(fastoptim, attr) for attr in dir(fastoptim)}
    classes = {attr: c for attr, c in classes.items()
               if isinstance(c, type) and issubclass(c, base) and c is not base}
    if name in classes:
        return classes[name]
    for attr, cls in classes.items():
        if attr.lower() == name.lower():
            return cls
    raise ValueError(f"optimizer: fastoptim has no optimizer named {name!r}; it has "
                     f"{', '.join(sorted(classes))}")


def _copy_into(destination, source):
    """Overwrite an array or a torch tensor in place with a NumPy array's values."""
    if isinstance(destination, np.ndarray):
        np.copyto(destination, source)
    else:
        with _torch().no_grad():   # the candidate's params are leaves that require grad
            destination.copy_(_to_torch(source, destination.device))


def _to_torch(a, device):
    torch = _torch()
    if a.dtype.name == "bfloat16":
        tensor = torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    else:
        tensor = torch.from_numpy(a.copy())
    return tensor.to(device)


class _StepFunctionRun:
    """A candidate given as step(params, grads, state): lists it may update in place or whose
    entries it may replace; state[i] starts as a copy of the reference's initial state of
    param i plus "step": 0, the count of steps taken that the function increments."""

    kind = "a step function"

    def __init__(self, step_function, params, initial_state):
        self._step_function = step_function
        self.params = params
        self.state = [dict(st, step=0) for st in initial_state]

    def step(self, grads):
        self._step_function(self.params, grads, self.state)


def _training(optimizer):
    """The optimizer, switched to training where it has modes (Schedule-Free's train(),
    which both fastoptim and the schedulefree reference require before stepping)."""
    if callable(getattr(optimizer, "train", None)):
        optimizer.train()
    return optimizer


class _ArrayOptimizerRun:
    """A candidate class with fastoptim's interface: cls(params, **hyperparameters), .params,
    .state (one dict per param), .step(grads)."""

    kind = "an optimizer class on NumPy arrays"

    def __init__(self, cls, params, hyperparameters):
        self.optimizer = _training(cls(params, **hyperparameters))
        self.params = self.optimizer.params
        self.state = self.optimizer.state

    def step(self, grads):
        self.optimizer.step(grads)


class _TorchOptimizerRun:
    """A torch.optim.Optimizer class (or a partial of one) on tensors of `device`: grads go
    into .grad, then step(); state is read by name from optimizer.state[tensor]."""

    kind = "a torch.optim.Optimizer"

    def __init__(self, cls, params, hyperparameters, device):
        self.device = device or "cpu"
        self.params = [_to_torch(p, self.device).requires_grad_() for p in params]
        self.optimizer = _training(cls(self.params, **hyperparameters))

    @property
    def state(self):
        return [self.optimizer.state.get(p, {}) for p in self.params]

    def step(self, grads):
        for p, g in zip(self.params, grads):
            p.grad = _to_torch(g, self.device)
        self.optimizer.step()


def _candidate_runner(candidate, hyperparameters, device):
    """A function (params, initial_state) -> a fresh run of the candidate, and its kind;
    everything about the candidate is checked here, before anything runs."""
    target = candidate
    while isinstance(target, functools.partial):
        target = target.func
    torch = sys.modules.get("torch")   # a torch.optim class means torch is imported
    if isinstance(target, type) and torch is not None and issubclass(target,
                                                                      torch.optim.Optimizer):
        return (lambda params, _: _TorchOptimizerRun(candidate, params, hyperparameters,
                                                     device)), _TorchOptimizerRun.kind
    if device is not None:
        raise ValueError("device applies to torch.optim candidates only")
    if isinstance(target, type):
        return (lambda params, _: _ArrayOptimizerRun(candidate, params, hyperparameters)), \
            _ArrayOptimizerRun.kind
    if not callable(candidate):
        raise TypeError("candidate must be a step function step(params, grads, state), an "
                        "optimizer class or a functools.partial of one, got "
                        f"{type(candidate).__name__}")
    try:
        inspect.signature(candidate).bind(None, None, None)
    except TypeError:
        raise TypeError(f"candidate: a step function is called as step(params, grads, state); "
                        f"{_describe(candidate)} cannot take those three arguments (a factory "
                        "of optimizers is given as functools.partial(cls, ...))") from None
    except ValueError:   # no signature to inspect (a builtin): try it
        pass
    return (lambda params, initial_state: _StepFunctionRun(candidate, params, initial_state)), \
        _StepFunctionRun.kind


def _describe(candidate):
    """A short name: a function's own name, a class by its public path (torch.optim.Adam,
    fastoptim.Adam), a partial with its fixed arguments."""
    if isinstance(candidate, functools.partial):
        arguments = [repr(a) for a in candidate.args]
        arguments += [f"{k}={v!r}" for k, v in candidate.keywords.items()]
        return f"{_describe(candidate.func)}({', '.join(arguments)})"
    if not isinstance(candidate, type):
        return getattr(candidate, "__name__", None) or type(candidate).__name__
    name = candidate.__qualname__
    parts = candidate.__module__.split(".")
    for k in range(1, len(parts) + 1):   # the shortest module that exports the class
        module = ".".join(parts[:k])
        if getattr(sys.modules.get(module), name, None) is candidate:
            return name if module == "__main__" else f"{module}.{name}"
    return name


# -- the report -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Divergence:
    """One element where the candidate's bits differ from the reference's."""

    step: int          # 1 on the first step
    buffer: str        # "param" or a state name
    param: int         # which array: an index into sizes
    size: int
    element: int       # flat index within that array
    actual: object     # the candidate's value (a NumPy scalar of the dtype)
    desired: object    # the reference's value
    ulp: object        # int, or math.inf for NaN against a number

    def __str__(self):
        return (f"step {self.step}, {self.buffer} of params[{self.param}] (n={self.size}) "
                f"[{self.element}]: {self.actual!s} vs {self.desired!s} "
                f"({_format_ulp(self.ulp)})")


@dataclasses.dataclass(frozen=True)
class StepRow:
    """One buffer after one step, over all arrays."""

    step: int
    buffer: str
    max_ulp: object          # int, or math.inf when a NaN meets a number
    max_rel_error: float     # max |actual - desired| / |desired| (inf where desired is 0)
    max_scaled_error: float  # max |actual - desired| / max |desired|, per array
    differing: int           # elements whose bits differ (NaN against NaN does not)
    nan_mismatches: int      # elements NaN on one side only
    first: object            # the first differing element (a Divergence), or None


@dataclasses.dataclass(frozen=True)
class Report:
    """What compare_optimizer found. `rows` are of the run `resync` chose; `drift_free` and
    `drift_resynced` hold the params' max ULP after each step in both runs."""

    candidate: str
    kind: str
    optimizer: str
    dtype: str
    sizes: tuple
    steps: int
    seed: int
    resync: bool
    hyperparameters: dict
    buffers: tuple             # compared: "param", then the state names both sides have
    not_compared: tuple        # reference state names the candidate does not keep
    rows: tuple
    drift_free: tuple
    drift_resynced: tuple

    @property
    def max_ulp(self):
        """Largest ULP distance over every step and buffer (math.inf: NaN vs a number)."""
        return max((row.max_ulp for row in self.rows), default=0)

    @property
    def max_rel_error(self):
        """Largest element-wise |actual - desired| / |desired| (inf where desired is 0)."""
        return max((row.max_rel_error for row in self.rows), default=0.0)

    @property
    def max_scaled_error(self):
        """Largest max|actual - desired| / max|desired| of an array: the error relative to
        the buffer's scale, meaningful also where values cross zero (a state such as
        exp_avg), where one rounding difference is many ULPs of a tiny result."""
        return max((row.max_scaled_error for row in self.rows), default=0.0)

    @property
    def nan_mismatches(self):
        """Elements NaN on one side only, summed over steps and buffers."""
        return sum(row.nan_mismatches for row in self.rows)

    @property
    def first_divergence(self):
        """The first element that differs: earliest step, then "param" before the state,
        then the lowest array and element index; None when all bits agree."""
        return next((row.first for row in self.rows if row.first is not None), None)

    def max_ulp_of(self, buffer):
        """The largest ULP distance of one buffer ("param" or a state name)."""
        if buffer not in self.buffers:
            raise ValueError(f"buffer {buffer!r} was not compared; compared: {self.buffers}")
        return max(row.max_ulp for row in self.rows if row.buffer == buffer)

    def __str__(self):
        hyper = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        mode = ("re-synchronised to the reference after every step: each row is one step's "
                "error from identical inputs" if self.resync else
                "free-running: each row is the difference accumulated since the start")
        lines = [
            f"{self.candidate} ({self.kind}) against fastoptim.{self.optimizer} (NumPy "
            f"reference){': ' + hyper if hyper else ''}",
            f"{self.dtype}, {self.steps} steps, seed {self.seed}; {len(self.sizes)} arrays of "
            f"sizes {' '.join(map(str, self.sizes))} ({sum(self.sizes):,} elements)",
            mode,
            "",
            f"{'step':>4}  {'buffer':<14} {'max ULP':>10} {'rel err':>8} {'err/scale':>9} "
            f"{'differ':>7} {'NaN/num':>7}  first differing element",
        ]
        for row in self.rows:
            first = ""
            if row.first is not None:
                d = row.first
                first = (f"params[{d.param}] (n={d.size}) [{d.element}]: {d.actual!s} vs "
                         f"{d.desired!s}")
            lines.append(f"{row.step:>4}  {row.buffer:<14} {_ulp_cell(row.max_ulp):>10} "
                         f"{row.max_rel_error:>8.2g} {row.max_scaled_error:>9.2g} "
                         f"{row.differing:>7} {row.nan_mismatches:>7}  {first}".rstrip())
        label = 30
        lines += ["", f"{'params, max ULP after step':<{label}}"
                  + "".join(f"{t:>8}" for t in range(1, self.steps + 1))]
        for name, drift in (("  free-running (drift)", self.drift_free),
                            ("  re-synchronised (one step)", self.drift_resynced)):
            lines.append(f"{name:<{label}}" + "".join(f"{_ulp_cell(u):>8}" for u in drift))
        if self.not_compared:
            lines.append(f"not compared (the candidate keeps no state of these names): "
                         f"{', '.join(self.not_compared)}")
        first = self.first_divergence
        lines.append(f"max ULP {_ulp_cell(self.max_ulp)}, max relative error "
                     f"{self.max_rel_error:.2g}, max error/scale {self.max_scaled_error:.2g}; "
                     + (f"first difference: {first}" if first else "identical bits"))
        return "\n".join(lines)


def _ulp_cell(ulp):
    return "NaN/num" if ulp == math.inf else str(ulp)


# -- comparing --------------------------------------------------------------------------------

def _compare_buffer(step, buffer, actual, desired, sizes, dtype):
    """A StepRow for one buffer: actual (the candidate's arrays or tensors) against desired
    (the reference's arrays), compared as one concatenation of all arrays."""
    for i, (a, d) in enumerate(zip(actual, desired)):
        if as_numpy(a).dtype != dtype or tuple(a.shape) != d.shape:
            raise TypeError(f"the candidate's {buffer} of params[{i}] after step {step} is "
                            f"{as_numpy(a).dtype}{list(a.shape)}, expected "
                            f"{dtype}{list(d.shape)}")
    a = np.concatenate([as_numpy(x).ravel() for x in actual])
    d = np.concatenate([x.ravel() for x in desired])
    distance = ulp_distance(a, d)
    differ = np.flatnonzero(distance)
    if differ.size == 0:
        return StepRow(step, buffer, 0, 0.0, 0.0, 0, 0, None)
    mismatched = distance == NAN_VS_NUMBER
    with np.errstate(all="ignore"):
        d64 = d.astype(np.float64)
        error = np.abs(a.astype(np.float64) - d64)
        error[(distance == 0) | mismatched] = 0.0
        error[np.isnan(error)] = np.inf                # inf against inf of the other sign
        rel = np.where(error == 0, 0.0, error / np.abs(d64))
        rel[np.isnan(rel)] = np.inf                    # inf against a finite value
    # which array each differing element is in, and where in it (a state array may have
    # another shape than its param: the element is then its flat index)
    offsets = np.cumsum([0] + [x.size for x in desired])
    owner = np.searchsorted(offsets, differ, side="right") - 1
    scaled = 0.0
    for i in np.unique(owner):
        part = slice(offsets[i], offsets[i + 1])
        scale = np.abs(d64[part][np.isfinite(d64[part])]).max(initial=0.0)
        scaled = max(scaled, float(error[part].max() / scale) if scale else math.inf)
    j, i = int(differ[0]), int(owner[0])
    element = j - int(offsets[i])
    first = Divergence(step, buffer, i, sizes[i], element, a[j], d[j],
                       math.inf if mismatched[j] else int(distance[j]))
    worst = math.inf if mismatched.any() else int(distance.max())
    return StepRow(step, buffer, worst, float(rel.max()), scaled, int(differ.size),
                   int(mismatched.sum()), first)


def _state_arrays(run, name, desired):
    """The candidate's state `name` for every param, or None when it keeps no such state of
    the reference's shapes."""
    found = []
    for state, d in zip(run.state, desired):
        a = state.get(name)
        if not hasattr(a, "shape") or tuple(a.shape) != d.shape:
            return None
        found.append(a)
    return found


def _run_candidate(make_run, params, grads, initial_state, trajectory, sizes, dtype, resync):
    """Step a fresh run of the candidate through the problem, comparing after every step
    (and, with resync, overwriting its params and same-named state with the reference's)."""
    run = make_run([p.copy() for p in params],
                   [{name: _copy(a) for name, a in st.items()} for st in initial_state])
    rows, compared = [], {"param"}
    for step, (step_grads, desired) in enumerate(zip(grads, trajectory), 1):
        run.step([g.copy() for g in step_grads])
        buffers = {"param": run.params}
        for name in desired:
            if name != "param":
                found = _state_arrays(run, name, desired[name])
                if found is not None:
                    buffers[name] = found
        for name, actual in buffers.items():
            rows.append(_compare_buffer(step, name, actual, desired[name], sizes, dtype))
            if resync:
                for a, d in zip(actual, desired[name]):
                    _copy_into(a, d)
        compared.update(buffers)
    return rows, compared


def _reference_trajectory(reference_class, params, grads, hyperparameters):
    """The reference's initial state and, after each step, a copy of its params and of its
    float state arrays (other state, such as a step count, is not compared)."""
    reference = _training(reference_class([p.copy() for p in params], backend="numpy",
                                          **hyperparameters))
    initial_state = [{name: _copy(a) for name, a in st.items()} for st in reference.state]
    trajectory = []
    for step_grads in grads:
        reference.step([g.copy() for g in step_grads])
        snapshot = {"param": [p.copy() for p in reference.params]}
        for name in dict.fromkeys(name for st in reference.state for name in st):
            arrays = [st.get(name) for st in reference.state]
            if all(isinstance(a, np.ndarray) and a.dtype.name in FLOAT_DTYPE_NAMES
                   for a in arrays):
                snapshot[name] = [a.copy() for a in arrays]
        trajectory.append(snapshot)
    return initial_state, trajectory


def _copy(value):
    return value.copy() if isinstance(value, np.ndarray) else value


def compare_optimizer(candidate, optimizer, *, dtype="float32", sizes=DEFAULT_SIZES, steps=10,
                      seed=0, resync=False, special_values=False, device=None,
                      **hyperparameters):
    """Run `candidate` side by side with fastoptim's NumPy reference of `optimizer` on the
    same random problem and report how far apart they are after every step.

    candidate -- one of
      * a step function ``step(params, grads, state)``: params and grads are lists of NumPy
        arrays (one per size; NumPy copies, so a GPU kernel copies them to the device and
        back), state a list with one dict per param. state[i] starts as a copy of the
        reference's initial state under torch.optim's names ("exp_avg", "sum", ...) plus
        "step": 0, the number of steps taken, which the function increments as torch.optim
        does. Update the arrays in place or put new ones in their place; state under other
        names is yours and is not compared. The hyperparameters below configure the
        reference only: use the same ones in your function.
      * a torch.optim.Optimizer class, or functools.partial(cls, fused=True, ...): built as
        cls(tensors, **hyperparameters) on tensors of `device` (default "cpu"); each step
        sets every .grad and calls step(); its state is read as optimizer.state[tensor][name].
      * an optimizer class with fastoptim's interface (fastoptim.Adam itself, i.e. the
        compiled kernels, or functools.partial(fastoptim.Adam, threads=1)): built as
        cls(arrays, **hyperparameters), stepped with .step(grads), read via .params and
        .state[i][name].
    optimizer -- the name of a fastoptim optimizer ("Adam", "AdamW", "SGD", ...; torch's
      spellings "RMSprop" and "Adagrad" work too) or its class; its reference is built as
      cls(arrays, backend="numpy", **hyperparameters).
    dtype -- "float16", "bfloat16", "float32" or "float64" (what the reference supports).
    sizes, steps, seed -- the problem: one 1-D array per size (see random_problem), steps
      updates from seeded random gradients.
    resync -- which run `report.rows` (and max_ulp, max_rel_error, first_divergence) come
      from. Both runs always happen, on fresh copies of the problem:
      * resync=False, free-running: the candidate runs on its own results, so a row is the
        difference accumulated since the start (rounding differences drift);
      * resync=True: after each step is compared, the candidate's params and its state
        arrays named as the reference's are overwritten with the reference's values, so a
        row is the error of one step from identical inputs. The step count and state under
        other names are left alone.
      report.drift_free and report.drift_resynced give the params' max ULP per step of both.
    special_values -- also feed NaN, +-inf, -0.0, subnormal and huge gradient elements.
    device -- for torch.optim candidates: where their tensors live ("cuda", ...).

    The candidate sees copies of the grads, never the reference's arrays. Buffers are
    compared by name: "param" always, a state array when the candidate keeps one of the same
    name and shape (the report lists the reference's state names it found no match for).
    """
    reference_class = resolve_optimizer(optimizer)
    dtype = float_dtype(dtype)
    sizes = tuple(sizes)
    if not sizes or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool)
                            and n >= 0 for n in sizes):
        raise ValueError(f"sizes must be a non-empty sequence of integers >= 0, got {sizes!r}")
    sizes = tuple(int(n) for n in sizes)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if "backend" in hyperparameters:
        raise ValueError("backend: the reference always runs backend='numpy'; choose the "
                         "candidate's with functools.partial(cls, backend=...)")
    make_run, kind = _candidate_runner(candidate, hyperparameters, device)

    params, grads = random_problem(sizes, dtype, steps, seed, special_values=special_values)
    # NaN and inf are the point of special_values: no warnings about them
    with np.errstate(all="ignore" if special_values else None):
        initial_state, trajectory = _reference_trajectory(reference_class, params, grads,
                                                          hyperparameters)
        runs = {mode: _run_candidate(make_run, params, grads, initial_state, trajectory,
                                     sizes, dtype, mode) for mode in (False, True)}
    rows, compared = runs[bool(resync)]
    reference_names = list(trajectory[0])
    return Report(
        candidate=_describe(candidate), kind=kind, optimizer=reference_class.__name__,
        dtype=dtype.name, sizes=sizes, steps=int(steps), seed=seed, resync=bool(resync),
        hyperparameters=dict(hyperparameters),
        buffers=tuple(name for name in reference_names if name in compared),
        not_compared=tuple(name for name in reference_names if name not in compared),
        rows=tuple(rows),
        drift_free=tuple(r.max_ulp for r in runs[False][0] if r.buffer == "param"),
        drift_resynced=tuple(r.max_ulp for r in runs[True][0] if r.buffer == "param"))
