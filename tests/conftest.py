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


def assert_close_to_scale(actual, expected, rtol, what):
    """max |actual - expected| <= rtol * max |expected|: an array compared at its own
    scale (an element near 0 keeps the absolute error of its neighbours)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    scale = np.max(np.abs(expected))
    error = np.max(np.abs(actual - expected))
    assert error <= rtol * scale, (
        f"{what}: max |fastoptim - other| = {error:.3g} is {error / scale:.3g} of the "
        f"array's scale {scale:.3g} (allowed {rtol:.3g})")


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
