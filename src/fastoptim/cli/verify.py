"""`python -m fastoptim verify`: the compiled kernels against the NumPy reference.

Every case of fastoptim._cases, in float32, float64, bfloat16 and float16 params (with
state in the param's dtype), at each size, runs the same steps on the same random data
through both backends; the table shows the largest distance in units
in the last place (ULP, fastoptim.testing.max_ulp) over every buffer and size: 0 everywhere
is the promise.
Exit status: 0 all identical, 1 any difference, 2 the extension is not built.
"""
import sys

import numpy as np

from fastoptim import reference
from fastoptim._cases import kernel_cases, run_case
from fastoptim._checks import DTYPE_NAMES
from fastoptim.testing import max_ulp

# a scalar-only call, SIMD tails, a cache-sized array, and one split across threads
DEFAULT_SIZES = (1, 7, 31, 1000, 2 * 65536 + 37)
DEFAULT_STEPS = 6
DTYPES = ("float32", "float64", "bfloat16", "float16")


def random_problem(n, dtype, steps, seed):
    dtype = DTYPE_NAMES.get(dtype, dtype)
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(n).astype(dtype)
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(steps)]
    return param, grads


def verify(sizes=DEFAULT_SIZES, dtypes=DTYPES, steps=DEFAULT_STEPS, threads=None, out=None):
    """Print the table; return the exit status."""
    out = out or sys.stdout
    try:
        from fastoptim import kernels
    except ImportError as exc:
        print(f"fastoptim verify: the compiled extension is not built ({exc}); "
              "install with `pip install .` (needs a C compiler)", file=sys.stderr)
        return 2

    cases = kernel_cases()
    info = kernels.build_info()
    print(f"fastoptim verify: {len(cases)} kernel cases x {', '.join(dtypes)}; sizes "
          f"{', '.join(str(n) for n in sizes)}; {steps} steps; SIMD {info['simd_target']}, "
          f"threads {threads or info['max_threads']}", file=out)
    print("max ULP difference of every buffer after the last step, compiled vs NumPy "
          "reference (0 = identical bits)\n", file=out)
    width = max(len(c.label) for c in cases)
    print(f"{'case':<{width}}  " + "  ".join(f"{d:>8}" for d in dtypes), file=out)

    failures = []
    for index, case in enumerate(cases):
        row = []
        for dtype in dtypes:
            worst = 0
            for n in sizes:
                param, grads = random_problem(n, dtype, steps, seed=1000 * index + n)
                fast = run_case(kernels, case, param, grads, threads=threads)
                slow = run_case(reference, case, param, grads)
                for name in fast:
                    ulp = max_ulp(fast[name], slow[name])
                    if ulp:
                        failures.append(f"{case.label}, {dtype}, n={n}: {name} differs by "
                                        f"up to {ulp} ULP")
                    worst = max(worst, ulp)
            row.append(worst)
        print(f"{case.label:<{width}}  " + "  ".join(f"{u:>8}" for u in row), file=out)

    total = len(cases) * len(dtypes)
    if failures:
        print("\nFAIL: differences from the reference:", file=out)
        for line in failures:
            print("  " + line, file=out)
        return 1
    print(f"\nOK: all {total} case x dtype combinations identical, bit for bit", file=out)
    return 0
