"""What a kernel accepts, and the error it raises otherwise.

Both backends use these checks: the NumPy reference calls them on every call; the
compiled kernels run an O(1) check in Cython and call these only to raise the precise
error when that check fails. Everything here runs before any buffer is written.
"""
import operator

import numpy as np
from numpy.lib.array_utils import byte_bounds

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
MOMENTUM_FORMS = ("torch", "ewma", "velocity")


def check_buffers(param, grad, state_names=(), state=(), names=("param", "grad")):
    """Check param (written), grad (read) and the state arrays (written; None = unused).

    All must be C-contiguous, aligned, native float32/float64 arrays of one dtype and one
    shape; the written ones must be writable, and no written buffer may share memory with
    another buffer. Returns the dtype.
    """
    named = [(names[0], param, True), (names[1], grad, False)]
    named += [(name, a, True) for name, a in zip(state_names, state) if a is not None]
    for name, a, written in named:
        check_array(name, a, written)
    for name, a, _ in named[1:]:
        if a.dtype != param.dtype:
            raise TypeError(f"{name} has dtype {a.dtype} but {names[0]} has dtype {param.dtype}")
        if a.shape != param.shape:
            raise ValueError(f"{name} has shape {a.shape} but {names[0]} has shape {param.shape}")
    for i, (name, a, written) in enumerate(named):
        for other, b, other_written in named[i + 1:]:
            if (written or other_written) and a.size and np.may_share_memory(a, b):
                raise ValueError(f"{other} shares memory with {name}: give each its own buffer")
    return param.dtype


def check_array(name, a, written):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64 in native byte order, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use numpy.ascontiguousarray)")
    if not a.flags.aligned:
        raise ValueError(f"{name} is not aligned to its dtype")
    if written and not a.flags.writeable:
        raise ValueError(f"{name} is read-only: it is updated in place")


def check_step(step):
    """The 1-based step count as a Python int (a NumPy integer would make beta**step a
    NumPy float64, which promotes float32 arithmetic)."""
    step = operator.index(step)
    if step < 1:
        raise ValueError(f"step must be >= 1 (the first step is 1), got {step}")
    return step


def check_threads(threads):
    """None means the default (all cores); otherwise a count >= 1. Returns 0 for None."""
    if threads is None:
        return 0
    if threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")
    return int(threads)


def check_momentum_form(form, dampening, nesterov, bias_correction):
    if form not in MOMENTUM_FORMS:
        raise ValueError(f"form must be one of {MOMENTUM_FORMS}, got {form!r}")
    if dampening != 0 and form != "torch":
        raise ValueError(f"dampening applies to form='torch' only, got form={form!r}")
    if bias_correction and form != "ewma":
        raise ValueError(f"bias_correction applies to form='ewma' only, got form={form!r}")


def check_rmsprop_momentum(momentum, momentum_buffer):
    if (momentum_buffer is None) != (momentum == 0):
        raise ValueError("momentum_buffer is required when momentum > 0, and only then")


def each_array(names, *buffers):
    """The buffers of one kernel call, checked, as a list of per-array tuples.

    Each buffer argument is an array (one array to update) or a list/tuple of arrays (many,
    e.g. an optimizer's whole parameter list), in the order of ``names``: (written, read,
    state...). An optional state buffer is None (unused for every array). In the list form
    array i is checked as check_buffers checks one, under the names "param[i]", ..., and no
    written buffer may share memory with any other buffer of the call.
    """
    first = buffers[0]
    if not isinstance(first, (list, tuple)):
        check_buffers(first, buffers[1], names[2:], buffers[2:], names=names[:2])
        return [buffers]
    count = len(first)
    columns = []
    for name, b in zip(names, buffers):
        if b is None and name not in names[:2]:
            columns.append([None] * count)
        elif not isinstance(b, (list, tuple)):
            raise TypeError(f"{name} must be a list of arrays, as {names[0]} is")
        elif len(b) != count:
            raise ValueError(f"{name} has {len(b)} arrays but {names[0]} has {count}")
        else:
            columns.append(b)
    groups = list(zip(*columns))
    for i, group in enumerate(groups):
        check_buffers(group[0], group[1], [f"{n}[{i}]" for n in names[2:]], group[2:],
                      names=(f"{names[0]}[{i}]", f"{names[1]}[{i}]"))
    check_no_shared_memory(names, groups)
    return groups


def check_no_shared_memory(names, groups):
    """Sorted by start, a byte range overlaps an earlier one iff it starts before the
    furthest end seen so far; only pairs that include a written buffer count."""
    spans = sorted(
        (*byte_bounds(a), r != 1, f"{names[r]}[{i}]")
        for i, group in enumerate(groups)
        for r, a in enumerate(group)
        if a is not None and a.size
    )
    written_end = any_end = (0, None)
    for start, end, written, name in spans:
        if start < written_end[0]:
            raise ValueError(f"{name} shares memory with {written_end[1]}")
        if written and start < any_end[0]:
            raise ValueError(f"{name} shares memory with {any_end[1]}")
        any_end = max(any_end, (end, name), key=lambda e: e[0])
        if written:
            written_end = max(written_end, (end, name), key=lambda e: e[0])


def check_axis(ndim, axis):
    """The time axis of an ndim-dimensional series, made non-negative; ValueError if absent."""
    axis = operator.index(axis)
    if ndim == 0:
        raise ValueError("series has no axis: give an array with at least one dimension")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for an array of {ndim} dimensions")
    return axis % ndim
