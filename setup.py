"""Build the C/Cython extension fastoptim._kernels.

Flags follow DESIGN.md: -O3 with no FMA contraction and no errno from sqrt (so it
vectorizes), never -ffast-math or -march=native (the loops pick AVX-512/AVX2 at run time
through target_clones). OpenMP is used when the compiler has it; FASTOPTIM_NO_OPENMP=1
builds without it.
"""
import os
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

BASE_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-std=c11"]
# FASTOPTIM_EXTRA_CFLAGS adds flags for a special build, e.g. the sanitizer build.
EXTRA_FLAGS = os.environ.get("FASTOPTIM_EXTRA_CFLAGS", "").split()


class BuildExt(build_ext):
    """Probe the compiler once for OpenMP and add the flags to every extension."""

    def build_extensions(self):
        openmp = [] if os.environ.get("FASTOPTIM_NO_OPENMP") else self._openmp_flags()
        for ext in self.extensions:
            ext.extra_compile_args += BASE_FLAGS + openmp + EXTRA_FLAGS
            ext.extra_link_args += openmp + EXTRA_FLAGS
        super().build_extensions()

    def _openmp_flags(self):
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as f:
                f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
            try:
                objs = self.compiler.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
                self.compiler.link_executable(objs, os.path.join(tmp, "probe"),
                                              extra_postargs=["-fopenmp"])
            except Exception:
                print("fastoptim: the compiler has no OpenMP; building single-threaded")
                return []
        return ["-fopenmp"]


extension = Extension(
    "fastoptim._kernels",
    sources=["src/fastoptim/_kernels.pyx", "csrc/kernels.c", "csrc/parallel.c"],
    include_dirs=["csrc", np.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
    depends=["csrc/fastoptim.h", "csrc/loops/common.h", "csrc/loops/sgd.h",
             "csrc/loops/adaptive.h", "csrc/loops/adam.h", "csrc/loops/movement.h",
             "csrc/loops/scan.h", "csrc/loops/scan_body.h"],
)

setup(
    ext_modules=cythonize([extension], compiler_directives={"language_level": "3"}),
    cmdclass={"build_ext": BuildExt},
)
