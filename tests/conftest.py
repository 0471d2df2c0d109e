import contextlib

import numpy as np
import pytest

from fastoptim import reference
from fastoptim.testing import assert_same_bits, bits  # noqa: F401  (the tests' helpers)

try:
    from fastoptim import kernels
except ImportError:  # the extension is not built: only the reference can be tested
    kernels = None

needs_kernels = pytest.mark.skipif(kernels is None, reason="fastoptim._kernels is not built")

DTYPES = (np.float32, np.float64)


@pytest.fixture(params=["c", "numpy"])
def backend(request):
    """Run a test once per backend (the compiled one skipped when it is not built)."""
    if request.param == "c" and kernels is None:
        pytest.skip("fastoptim._kernels is not built")
    return request.param


@pytest.fixture
def kernel_module(backend):
    return kernels if backend == "c" else reference


@contextlib.contextmanager
def parallel_threshold(n):
    """Calls of fewer than n elements per thread stay on one thread, for the duration."""
    old = kernels.build_info()["parallel_threshold"]
    kernels.set_parallel_threshold(n)
    try:
        yield
    finally:
        kernels.set_parallel_threshold(old)
