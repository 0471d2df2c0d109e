"""The compiled backend: every kernel function of fastoptim._kernel_specs running the C loops
of csrc/ (through fastoptim._kernels.run), under the names fastoptim.reference exports too.

Importing this module raises ImportError when the extension is not built; the optimizer
classes then fall back to fastoptim.reference (backend="auto").
"""
import os
import warnings

from fastoptim import _bind, _kernel_specs
from fastoptim._kernels import (  # noqa: F401
    DTYPE_CODES,
    REGISTRY,
    build_info,
    default_threads,
    ewma_scan,
    movement_loop,  # not a kernel: the benchmark's data-movement limit
    narrow,  # narrow and widen: the conversions alone, for their tests
    run,
    run_table,
    set_parallel_threshold,
    share_openmp_team,
    widen,
)

__all__ = _bind.__all__ + ["ewma_scan"]

globals().update(_bind.bind_all(run))


def _check_registry():
    """The C registry and the Python specs must describe the same kernels, roles and
    scalars: a mismatch would pass scalars to the wrong fields."""
    for name, kernel in _kernel_specs.KERNELS.items():
        if name not in REGISTRY:
            raise ImportError(f"fastoptim._kernels has no kernel {name!r}: rebuild it")
        _, roles, scalars, sums = REGISTRY[name]
        if (roles != tuple(r.name for r in kernel.roles) or scalars != kernel.scalars._fields
                or sums != kernel.sums):
            raise ImportError(f"fastoptim._kernels' {name} does not match fastoptim/"
                              f"_kernel_specs.py (roles {roles}, scalars {scalars}): rebuild it")
    missing = set(REGISTRY) - set(_kernel_specs.KERNELS)
    if missing:
        raise ImportError(f"kernels in C but not in fastoptim/_kernel_specs.py: {sorted(missing)}")


def _check_thread_variable():
    """An unusable FASTOPTIM_NUM_THREADS is ignored by the C side (every core is used);
    say so once instead of silently."""
    text = os.environ.get("FASTOPTIM_NUM_THREADS")
    if text is None or not text.strip():
        return
    try:
        if int(text) >= 1:
            return
    except ValueError:
        pass
    warnings.warn(f"FASTOPTIM_NUM_THREADS={text!r} is not a thread count >= 1; it is "
                  "ignored and every core is used", RuntimeWarning, stacklevel=3)


_check_registry()
_check_thread_variable()
