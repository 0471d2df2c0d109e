"""The compiled backend, fastoptim._kernels, under the name the rest of the package uses.

Importing this module raises ImportError when the extension is not built; the optimizer
classes then fall back to fastoptim.reference (backend="auto").
"""
from fastoptim._kernels import (  # noqa: F401
    adagrad_step,
    adam_step,
    adamw_step,
    build_info,
    ewma_scan,
    ewma_step,
    momentum_step,
    movement_loop,  # not a kernel: the benchmark's data-movement limit
    rmsprop_step,
    set_parallel_threshold,
    sgd_step,
)
from fastoptim.reference import __all__  # the same names, by construction  # noqa: F401
