"""fastoptim: gradient-descent optimizers as one-pass C kernels over NumPy buffers.

    >>> import numpy as np, fastoptim as fo
    >>> p = np.zeros(1000, np.float32)
    >>> opt = fo.Adam(p, lr=1e-3)
    >>> opt.step(np.ones_like(p))

The optimizer classes run fastoptim.kernels (compiled C) or fastoptim.reference (NumPy);
the two agree bit for bit. See README.md and docs/design.md for the formulas.
"""
from fastoptim import data, optimizers, schedules
from fastoptim.clipping import clip_grad_norm, grad_norm
from fastoptim.moving_average import EWMA, ewma
from fastoptim.optimizers import *  # noqa: F403  (the optimizer classes: optimizers.__all__)

__version__ = "0.2.0"

__all__ = optimizers.__all__ + ["clip_grad_norm", "grad_norm", "ewma", "EWMA", "data",
                                "schedules"]
