"""Binding the kernel functions of fastoptim._kernel_specs to a backend's runner.

fastoptim.kernels and fastoptim.reference call ``bind_all`` with their own ``run`` and so
export the same functions, with the same signatures and docstrings."""
import functools
import inspect

from fastoptim import _kernel_specs

__all__ = sorted(_kernel_specs.FUNCTIONS)


def bind(function, run):
    """``function`` with its first argument (the runner) fixed to ``run``."""
    @functools.wraps(function)
    def kernel(*args, **kwargs):
        return function(run, *args, **kwargs)

    signature = inspect.signature(function)
    kernel.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    return kernel


def bind_all(run):
    """{public name: bound kernel function} for every kernel."""
    return {name: bind(function, run) for name, (function, _) in _kernel_specs.FUNCTIONS.items()}
