"""What fastoptim accepts, and the error it raises otherwise -- in one place.

Buffers: both backends run ``check_call`` (the compiled one only when its O(1) fast check
fails, to raise the precise error). Hyperparameters: the kernel functions, the optimizer
rules and both front ends use the ``check_*`` helpers below. Everything here runs before
anything is written.
"""
import numbers
import operator

import numpy as np
from numpy.lib.array_utils import byte_bounds

try:
    import ml_dtypes
    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes is a dependency
    BFLOAT16 = None

FLOAT32, FLOAT64, FLOAT16 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)
LOW_PRECISION = tuple(d for d in (BFLOAT16, FLOAT16) if d is not None)
# float64 buffers compute in double; everything else in float (wider stores round once)
STORAGE_DTYPES = (FLOAT32, FLOAT64) + LOW_PRECISION
DTYPE_NAMES = {"float32": FLOAT32, "float64": FLOAT64, "float16": FLOAT16}
if BFLOAT16 is not None:
    DTYPE_NAMES["bfloat16"] = BFLOAT16
ROUNDINGS = ("nearest", "stochastic")


# -- buffers -----------------------------------------------------------------------------------

def compute_dtype(dtype):
    """The dtype the arithmetic runs in for a parameter of this dtype."""
    return FLOAT64 if dtype == FLOAT64 else FLOAT32


def plain(name, a):
    """An array as a plain ndarray over the same memory. Subclasses (np.matrix, np.memmap)
    are used through such a view, so both backends see ndarray arithmetic; masked arrays
    are refused, since an update would ignore their mask."""
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array: fastoptim updates every element, so its "
                        "mask would be ignored; pass a plain ndarray (e.g. a.filled())")
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    return a if type(a) is np.ndarray else a.view(np.ndarray)


def check_array(name, a, written, dtypes=STORAGE_DTYPES):
    """One buffer: an ndarray of an accepted dtype in native byte order, C-contiguous,
    aligned, and writable when the kernel writes it. Returns it as a plain ndarray."""
    a = plain(name, a)
    if a.dtype not in dtypes or not a.dtype.isnative:
        accepted = ", ".join(str(d) for d in dtypes)
        raise TypeError(f"{name} has dtype {a.dtype}; accepted: {accepted} in native byte "
                        "order" + ("" if BFLOAT16 is not None else
                                   " (bfloat16 needs `pip install ml_dtypes`)"))
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use numpy.ascontiguousarray)")
    if not a.flags.aligned:
        raise ValueError(f"{name} is not aligned to its dtype")
    if written and not a.flags.writeable:
        raise ValueError(f"{name} is read-only: it is updated in place")
    return a


def buffer_dtypes(role, param_dtype, copy=False):
    """The dtypes a buffer may have next to a param of ``param_dtype``: everything float64
    with float64 params; float32 or low precision otherwise (computed in float). A param
    copy is low precision, next to float32 params only."""
    if copy:
        return LOW_PRECISION if param_dtype == FLOAT32 else ()
    if role == 0:
        return STORAGE_DTYPES
    return (FLOAT64,) if param_dtype == FLOAT64 else (FLOAT32,) + LOW_PRECISION


def check_call(roles, buffers, param_copy=None, writes=True):
    """The buffers of one kernel call, checked, as a list of per-array tuples (one entry per
    role, None where an optional buffer is unused, then the param copy or None).

    ``roles`` is the kernel's roles (name, optional); ``buffers`` one argument per role: an
    array (one array to update) or a list/tuple of arrays (many, e.g. an optimizer's whole
    parameter list). In the list form array i is checked under the names "param[i]", ...;
    no buffer that is written may share memory with any other buffer of the call. Role 1
    (the gradient) is only read; so is everything when ``writes`` is False.
    """
    names = [r.name for r in roles] + ["param_copy"]
    optional = [r.optional for r in roles] + [True]
    arguments = list(buffers) + [param_copy]
    many = isinstance(arguments[0], (list, tuple))
    count = len(arguments[0]) if many else 1     # an empty list is a call that does nothing
    columns = []
    for name, is_optional, b in zip(names, optional, arguments):
        if b is None:
            if not is_optional:
                raise TypeError(f"{name} is required, got None")
            columns.append([None] * count)
        elif many != isinstance(b, (list, tuple)):
            raise TypeError(f"{name} must be {'a list of arrays' if many else 'one array'}, "
                            f"as {names[0]} is")
        elif many and len(b) != count:
            raise ValueError(f"{name} has {len(b)} arrays but {names[0]} has {count}")
        else:
            columns.append(list(b) if many else [b])
    groups = []
    for i in range(count):
        def label(name):
            return f"{name}[{i}]" if many else name
        param = check_array(label(names[0]), columns[0][i], writes)
        group = [param]
        for k in range(1, len(names)):
            a = columns[k][i]
            if a is not None or not optional[k]:
                copy = k == len(names) - 1
                if copy and param.dtype != FLOAT32:
                    raise TypeError(f"{label(names[k])}: a {param.dtype} param has no "
                                    "low-precision copy (the copy is for float32 params: "
                                    "master weights)")
                a = check_array(label(names[k]), a, copy or (writes and k != 1),
                                buffer_dtypes(k, param.dtype, copy))
                if a.shape != param.shape:
                    raise ValueError(f"{label(names[k])} has shape {a.shape} but "
                                     f"{label(names[0])} has shape {param.shape}")
            group.append(a)
        groups.append(tuple(group))
    check_no_shared_memory(names, groups, writes, label_all=many)
    return groups


def check_shaped_call(roles, state_shape, buffers, param_copy=None, writes=True):
    """check_call for a kernel whose state buffers are not of the param's shape (Adafactor's
    row and column factors): the state buffer ``name`` of a param of shape S must have the
    shape state_shape(name, S), and be None when that is None. Roles 0 and 1 (param, grad)
    are checked by check_call. Returns the per-array tuples (param, grad, the state
    buffers, the param copy)."""
    names = [r.name for r in roles]
    groups = check_call(roles[:2], buffers[:2], param_copy, writes)
    many = isinstance(buffers[0], (list, tuple))
    columns = []
    for name, b in zip(names[2:], buffers[2:]):
        if b is None:
            columns.append([None] * len(groups))
        elif many != isinstance(b, (list, tuple)):
            raise TypeError(f"{name} must be {'a list' if many else 'one array or None'}, "
                            f"as {names[0]} is")
        elif many and len(b) != len(groups):
            raise ValueError(f"{name} has {len(b)} entries but {names[0]} has {len(groups)}")
        else:
            columns.append(list(b) if many else [b])
    result = []
    for i, (param, grad, copy) in enumerate(groups):
        def label(name):
            return f"{name}[{i}]" if many else name
        states = []
        for name, column in zip(names[2:], columns):
            a, shape = column[i], state_shape(name, param.shape)
            of_param = f"{label(names[0])} of shape {param.shape}"
            if shape is None:
                if a is not None:
                    raise ValueError(f"{label(name)} must be None: {of_param} has none")
            elif a is None:
                raise TypeError(f"{label(name)} is required for {of_param}")
            else:
                a = check_array(label(name), a, writes, buffer_dtypes(2, param.dtype))
                if a.shape != shape:
                    raise ValueError(f"{label(name)} has shape {a.shape}, expected {shape} "
                                     f"for {of_param}")
            states.append(a)
        result.append((param, grad, *states, copy))
    check_no_shared_memory(names + ["param_copy"], result, writes, label_all=many)
    return result


def check_no_shared_memory(names, groups, writes=True, label_all=True):
    """Sorted by start, a byte range overlaps an earlier one iff it starts before the
    furthest end seen so far; only pairs that include a written buffer count."""
    spans = sorted(
        (*byte_bounds(a), writes and r != 1, f"{names[r]}[{i}]" if label_all else names[r])
        for i, group in enumerate(groups)
        for r, a in enumerate(group)
        if a is not None and a.size
    )
    written_end = any_end = (0, None)
    for start, end, written, name in spans:
        if start < written_end[0]:
            raise ValueError(f"{name} shares memory with {written_end[1]}: give each its "
                             "own buffer")
        if written and start < any_end[0]:
            raise ValueError(f"{name} shares memory with {any_end[1]}: give each its own "
                             "buffer")
        any_end = max(any_end, (end, name), key=lambda e: e[0])
        if written:
            written_end = max(written_end, (end, name), key=lambda e: e[0])


# -- hyperparameters ---------------------------------------------------------------------------

def check_real(name, value, low=None, high=None, *, high_open=False, low_open=False):
    """A real number (int, float, NumPy scalar) as a Python float, inside the given bounds;
    TypeError for anything else (a string, a bool, an array), ValueError out of range or
    NaN. A Python float is what keeps float32 arithmetic float32 (a NumPy float64 scalar
    would promote it)."""
    if type(value) is not float:    # (a float, the common case, skips the type checks)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {type(value).__name__} "
                            f"{value!r}"[:200])
        value = float(value)
    if value != value:
        raise ValueError(f"{name} is NaN")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value!r}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high:g}, got {value!r}")
    return value


def check_nonnegative(name, value):
    return check_real(name, value, 0.0)


def check_unit_interval(name, value):
    """A decay rate or momentum: in [0, 1)."""
    return check_real(name, value, 0.0, 1.0, high_open=True)


def check_flag(name, value):
    """A switch: a bool (or a NumPy bool, or the ints 0 and 1)."""
    if value is True or value is False:
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}"[:200])


def check_int(name, value, low=None):
    """A whole number (int or NumPy integer, not a bool) as a Python int."""
    if type(value) is int and (low is None or value >= low):
        return value
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} "
                        f"{value!r}"[:200]) from None
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def check_step(step):
    """The 1-based step number, below 2**62 (so it stays an int64 and beta**step stays a
    float computation)."""
    step = check_int("step", step, 1)
    if step >= 2**62:
        raise ValueError(f"step is too large: {step}")
    return step


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, "
                         f"got {value!r}"[:200])
    return value


def check_threads(threads):
    """None means the default (FASTOPTIM_NUM_THREADS, else every core); otherwise a count
    >= 1. Returns 0 for None, else the count."""
    if threads is None:
        return 0
    threads = check_int("threads", threads, 1)
    return min(threads, 1 << 16)


def check_seed(seed):
    """The stochastic-rounding seed: an integer, taken modulo 2**64."""
    return check_int("seed", seed) % 2**64


def check_dtype_name(name, value):
    """A dtype given by name or as a dtype, among the storage dtypes."""
    if isinstance(value, str):
        if value not in DTYPE_NAMES:
            raise ValueError(f"{name} must be one of {', '.join(DTYPE_NAMES)}, got {value!r}")
        return DTYPE_NAMES[value]
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise TypeError(f"{name} must be a dtype or its name, got {value!r}"[:200]) from None
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"{name} must be one of {', '.join(DTYPE_NAMES)}, got {dtype}")
    return dtype


def check_axis(ndim, axis):
    """The time axis of an ndim-dimensional series, made non-negative; ValueError if absent."""
    axis = operator.index(axis)
    if ndim == 0:
        raise ValueError("series has no axis: give an array with at least one dimension")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for an array of {ndim} dimensions")
    return axis % ndim
