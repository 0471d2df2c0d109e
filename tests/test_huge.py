"""Huge buffers (opt-in): SGD over a float32 array of more than 2**31 elements, so every
index, element count and byte offset past 2**31 must be 64-bit all the way from NumPy
through Cython into the C loops and the OpenMP split.

Needs ~8.6 GB of free memory and about a minute; runs only with ``-m huge`` or
FASTOPTIM_HUGE_TESTS=1:

    FASTOPTIM_HUGE_TESTS=1 python -m pytest tests/test_huge.py
    python -m pytest -m huge

The grad costs no memory: np.zeros gets pages that read as zero without being allocated,
and only a few pages of it are written (the elements checked below). With weight decay the
update still touches every element: g = grad + wd*p, p <- p - lr*g.
"""
import os

import numpy as np
import pytest

from conftest import kernels, needs_kernels

N = 2**31 + 2**20 + 7          # past 2**31, past 2**31 * 4 bytes, and an odd tail
LR, WD = 0.5, 1.0              # from p = 1 and grad = 0: p = 1 - 0.5*(0 + 1*1) = 0.5, exact

pytestmark = [pytest.mark.huge, needs_kernels]


@pytest.fixture(autouse=True)
def opted_in(request):
    marks = request.config.getoption("markexpr", "") or ""
    if "huge" not in marks and os.environ.get("FASTOPTIM_HUGE_TESTS") != "1":
        pytest.skip("huge buffers: run with -m huge or FASTOPTIM_HUGE_TESTS=1")
    need = N * 4 + 2 * 2**30
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    available = int(info["MemAvailable"].split()[0]) * 1024
    if available < need:
        pytest.skip(f"needs {need / 2**30:.1f} GiB free, {available / 2**30:.1f} GiB available")


def probes(n):
    """Indices around every 32-bit boundary a bug could sit on, the middle, and the end:
    byte offsets 2**31 (int) and 2**32 (unsigned) at elements 2**29 and 2**30, element index
    2**31, the chunk edge of a 2- and 3-thread split, the SIMD tail."""
    edges = [0, 2**29 - 1, 2**29, 2**30 - 1, 2**30, 2**31 - 1, 2**31, 2**31 + 1, n // 2,
             n // 2 + 1, n // 3, n // 3 + 64, n - 2**20, n - 65, n - 64, n - 9, n - 8]
    return np.array(sorted({i for i in edges if 0 <= i < n} | set(range(n - 7, n))), np.int64)


def check_every_element(p, expected, what, block=2**27):
    """All of p equals expected, in blocks (no 8 GB temporaries)."""
    for lo in range(0, p.size, block):
        chunk = p[lo:lo + block]
        bad = np.flatnonzero(chunk != expected)
        assert not bad.size, f"{what}: element {lo + bad[0]} is {chunk[bad[0]]!r}, not {expected!r}"


@pytest.mark.parametrize("threads", [1, None])
def test_sgd_updates_every_element_of_a_float32_array_past_2_31(threads):
    p = np.ones(N, np.float32)
    grad = np.zeros(N, np.float32)        # untouched pages: no memory
    at = probes(N)
    grad[at] = np.arange(1, at.size + 1, dtype=np.float32)   # a few distinct grads past 2**31
    kernels.sgd_step(p, grad, lr=LR, weight_decay=WD, threads=threads)

    # where grad was set: p = 1 - 0.5*(g + 1), exact in float32 for these small g
    expected_at = np.float32(1) - np.float32(LR) * (grad[at] + np.float32(WD))
    assert np.array_equal(p[at], expected_at), "a probed element past 2**31 was not updated right"
    assert p[-1] == np.float32(1 - LR * (at.size + 1))
    # everywhere else p = 0.5
    p[at] = 0.5
    check_every_element(p, np.float32(0.5), f"sgd_step threads={threads}")

    # the list form (fo_run_many) with the same huge array
    p[at] = 1.0
    kernels.sgd_step([p], [grad], lr=LR, weight_decay=0.0, threads=threads)
    assert np.array_equal(p[at], np.float32(1) - np.float32(LR) * grad[at])
    assert p[N // 5] == 0.5 and p[-8] == np.float32(1) - np.float32(LR) * grad[-8]
