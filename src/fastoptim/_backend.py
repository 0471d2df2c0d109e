"""Choosing a backend: the compiled kernels (fastoptim.kernels) or the NumPy reference.

Every front end (the optimizer classes, fastoptim.torch, the EWMA) asks here, so the rule
lives in one place: ``"c"`` needs the extension, ``"numpy"`` is the reference, ``"auto"``
takes the compiled kernels and falls back to the reference with one warning when the
extension is not built. FASTOPTIM_BACKEND=numpy makes ``"auto"`` pick the reference, to
run a program against the oracle without editing it.
"""
import os
import sys
import warnings

BACKENDS = ("auto", "c", "numpy")
_warned_fallback = False


def resolve_backend(backend):
    """The kernel module for a backend name."""
    global _warned_fallback
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto" and os.environ.get("FASTOPTIM_BACKEND") == "numpy":
        backend = "numpy"
    from fastoptim import reference
    if backend == "numpy":
        return reference
    try:
        from fastoptim import kernels
    except ImportError as exc:
        if backend == "c":
            raise ImportError(
                "backend='c' needs the compiled extension fastoptim._kernels, which is not "
                "built; reinstall with `pip install .` (a C compiler is required)") from exc
        if not _warned_fallback:
            warnings.warn("fastoptim: the compiled kernels are not built; using the NumPy "
                          "reference (same results, slower)", RuntimeWarning,
                          stacklevel=_first_frame_outside_fastoptim())
            _warned_fallback = True
        return reference
    return kernels


def backend_name(module):
    """"c" or "numpy": the name of a module resolve_backend returned."""
    from fastoptim import reference
    return "numpy" if module is reference else "c"


def _first_frame_outside_fastoptim():
    """The stacklevel of the user's line that led here, however deep the class chain."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_globals.get("__name__", "").startswith("fastoptim."):
        frame, level = frame.f_back, level + 1
    return level
