"""fastoptim: gradient-descent optimizers as one-pass C kernels over NumPy buffers.

    >>> import numpy as np, fastoptim as fo
    >>> p = np.zeros(1000, np.float32)
    >>> opt = fo.Adam(p, lr=1e-3)
    >>> opt.step(np.ones_like(p))

The optimizer classes run fastoptim.kernels (compiled C) or fastoptim.reference (NumPy);
the two agree bit for bit. See README.md and docs/design.md for the formulas.
"""
from fastoptim import data, schedules
from fastoptim.moving_average import EWMA, ewma
from fastoptim.optimizers import (
    SGD,
    AdaGrad,
    Adam,
    AdamW,
    Momentum,
    Nesterov,
    Optimizer,
    RMSProp,
)

__version__ = "0.1.0"

__all__ = ["Optimizer", "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSProp", "Adam", "AdamW"]
__all__ += ["ewma", "EWMA", "data", "schedules"]
