"""Build the C/Cython extension fastoptim._kernels.

Flags: -O3 with no FMA contraction and no errno from sqrt (so it vectorizes), never
-ffast-math or -march=native (the loops pick AVX-512/AVX2 at run time through
target_clones; see csrc/simd.h and docs/design.md). Threads come from a small pthreads
pool (csrc/pool.c), or torch's OpenMP team found with dlsym once fastoptim.torch is imported.
FASTOPTIM_EXTRA_CFLAGS adds flags for a special build, e.g. the sanitizer build.
"""
import glob
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# -fno-trapping-math changes no result (the flags an operation raises are never read); it
# lets GCC vectorize loops that choose between two computed values (the EWMA scan's rows)
BASE_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-std=c11",
              "-pthread"]
EXTRA_FLAGS = os.environ.get("FASTOPTIM_EXTRA_CFLAGS", "").split()

extension = Extension(
    "fastoptim._kernels",
    sources=["src/fastoptim/_kernels.pyx", "csrc/kernels.c", "csrc/driver.c", "csrc/pool.c",
             "csrc/convert.c", "csrc/movement.c", "csrc/adafactor.c"],
    include_dirs=["csrc", np.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
    extra_compile_args=BASE_FLAGS + EXTRA_FLAGS,
    extra_link_args=["-pthread"] + EXTRA_FLAGS,
    libraries=["dl"] if os.name == "posix" else [],    # dlsym (pool.c; in libc since glibc 2.34)
    depends=sorted(glob.glob("csrc/*.h") + glob.glob("csrc/loops/*.h")),
)

setup(
    ext_modules=cythonize([extension], compiler_directives={"language_level": "3"}),
)
