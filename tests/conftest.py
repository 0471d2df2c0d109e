import numpy as np
import pytest

from fastoptim import reference

try:
    from fastoptim import kernels
except ImportError:  # the extension is not built: only the reference can be tested
    kernels = None

needs_kernels = pytest.mark.skipif(kernels is None, reason="fastoptim._kernels is not built")

DTYPES = (np.float32, np.float64)


def bits(a):
    """The raw bits of a float array, for exact comparison (NaN payloads included)."""
    a = np.ascontiguousarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def assert_same_bits(actual, expected, what="array"):
    actual_bits, expected_bits = bits(actual), bits(expected)
    differ = np.flatnonzero(actual_bits != expected_bits)
    if differ.size:
        i = differ[0]
        raise AssertionError(
            f"{what}: {differ.size} of {actual.size} elements differ in their bits; first at "
            f"{i}: {actual.flat[i]!r} vs {expected.flat[i]!r}")


@pytest.fixture(params=["c", "numpy"])
def backend(request):
    """Run a test once per backend (the compiled one skipped when it is not built)."""
    if request.param == "c" and kernels is None:
        pytest.skip("fastoptim._kernels is not built")
    return request.param


@pytest.fixture
def kernel_module(backend):
    return kernels if backend == "c" else reference
