"""Gradient clipping by total norm, with torch.nn.utils.clip_grad_norm_'s semantics.

The norms come from the reduction kernels (fastoptim.kernels.norms): one read pass, summed
in float64 in the fixed block/lane order, so the total is the same for any thread count and
in both backends, and more accurate than a float32 sum. Optimizers take ``max_grad_norm=``
to apply the same factor inside their update pass without writing the gradients.
"""
import math

import numpy as np

from fastoptim._backend import resolve_backend
from fastoptim._checks import FLOAT32, FLOAT64, check_flag, check_nonnegative, check_real

__all__ = ["clip_grad_norm", "grad_norm", "clip_coefficient", "total_norm"]


def total_norm(per_array, norm_type):
    """The norm of all arrays from their per-array sums (sums of squares for 2, of absolute
    values for 1, maxima for inf), added in array order."""
    if norm_type == math.inf:
        return max((float(x) for x in per_array), default=0.0,
                   key=lambda x: math.inf if x != x else x)
    total = 0.0
    for x in per_array:
        total += float(x)
    return math.sqrt(total) if norm_type == 2.0 else total


def clip_coefficient(norm, max_norm):
    """min(1, max_norm / (norm + 1e-6)): what clipping multiplies the gradients by (NaN when
    the norm is NaN, as torch)."""
    coefficient = max_norm / (norm + 1e-6)
    return coefficient if coefficient < 1.0 or coefficient != coefficient else 1.0


def grad_norm(grads, norm_type=2.0, *, backend="auto", threads=None):
    """(total norm, all finite) of an array or a list of arrays (float32, float64, bfloat16,
    float16), norm_type 2, 1 or inf: one read pass, nothing written."""
    sums = resolve_backend(backend).norms(grads, norm_type=norm_type, threads=threads)
    return total_norm(sums[:, 0], float(norm_type)), all(f == 0 for f in sums[:, 1])


def clip_grad_norm(grads, max_norm, norm_type=2.0, *, error_if_nonfinite=False,
                   backend="auto", threads=None):
    """Scale ``grads`` (an array or a list of arrays) in place so their total norm is at most
    ``max_norm``, as torch.nn.utils.clip_grad_norm_: every gradient is multiplied by
    min(1, max_norm / (norm + 1e-6)). Returns the total norm before clipping (a float).

    norm_type: 2, 1 or inf (the norm of all elements of all arrays together).
    error_if_nonfinite: raise RuntimeError (and write nothing) when the norm is NaN or inf;
    otherwise, as torch, the gradients are scaled by the non-finite coefficient.
    """
    max_norm = check_nonnegative("max_norm", max_norm)
    norm_type = check_real("norm_type", norm_type)
    error_if_nonfinite = check_flag("error_if_nonfinite", error_if_nonfinite)
    arrays = [grads] if isinstance(grads, np.ndarray) else list(grads)
    norm, _ = grad_norm(arrays, norm_type, backend=backend, threads=threads)
    if error_if_nonfinite and not math.isfinite(norm):
        raise RuntimeError(f"the total norm of order {norm_type:g} of the gradients is "
                           f"{norm}, so they cannot be clipped (nothing was changed); pass "
                           "error_if_nonfinite=False to scale them by it anyway")
    coefficient = clip_coefficient(norm, max_norm)
    if coefficient != 1.0:
        with np.errstate(invalid="ignore", over="ignore"):    # a NaN coefficient spreads
            _scale(arrays, coefficient)
    return norm


def _scale(arrays, coefficient):
    for g in arrays:
        if g.dtype in (FLOAT32, FLOAT64):
            np.multiply(g, g.dtype.type(coefficient), out=g)
        else:   # bfloat16/float16: the product in float32, rounded once
            np.copyto(g, (g.astype(FLOAT32) * np.float32(coefficient)).astype(g.dtype))
