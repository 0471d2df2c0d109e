"""fastoptim.ewma against pandas' ewm().mean() on one long series and on DataFrames.

    python -m fastoptim.cli.bench_ewma            # the four shapes below, ~10 seconds
    python -m fastoptim.cli.bench_ewma --quick    # a tenth of the rows

Method. For each shape (T steps x K series) the same random walk is a pandas Series (K = 1)
or DataFrame (pandas stores its columns contiguously: time is the last axis in memory),
and both libraries average it, returning a new Series/DataFrame. "ndarray" is fastoptim on
the same values as a C-ordered (T, K) NumPy array (time the first axis in memory); "out="
is fastoptim on the Series/DataFrame writing into the same array every call, which takes
away the new result's pages (the kernel zeroes each one on first touch: on this project's
machine that alone takes about as long as a copy). Each
implementation is called once, then timed in rounds that interleave them; the figure is
the median round, per element. The chain limit (one series only) is a compiled loop doing
just m = a*m + b*x per step into a new array -- a multiply and an add, each waiting for
the one before: the time no one-pass scan of a single series can beat. It needs a C
compiler ($CC or cc) and is left out without one.
"""
import argparse
import ctypes
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

SHAPES = ((10**7, 1), (10**4, 10**3), (10**3, 10**4), (10**5, 100))
BETA = 0.9


def bench_ewma_shapes(shapes=SHAPES, dtype="float64", *, beta=BETA, threads=None,
                      seconds=0.5, rounds=7, progress=None, measure=None):
    """One row (a dict) per shape: ns per element of pandas, fastoptim on the pandas object
    and on a NumPy array, the chain limit for one series, and the ratios.

    measure(steps) -> {name: seconds per call} may replace the built-in timer (the main
    job passes its own); threads caps fastoptim's threads (pandas uses one)."""
    measure = measure or (lambda steps: _median_seconds(steps, seconds, rounds))
    progress = progress or (lambda what: print(what, file=sys.stderr))
    chain = chain_loop() if dtype == "float64" else None
    rows = []
    for length, width in shapes:
        progress(f"ewma {dtype} {shape_name((length, width))}")
        values = (100 + np.cumsum(np.random.default_rng(length).standard_normal(
            (length, width)), axis=0)).astype(dtype)
        ns = {name: s / values.size * 1e9
              for name, s in measure(make_steps(values, beta, threads, chain)).items()}
        rows.append({
            "shape": (length, width), "dtype": dtype, "beta": beta,
            "threads": threads, "ns_per_element": ns,
            "speedup_vs_pandas": {name: ns["pandas"] / ns[name]
                                  for name in ("fastoptim", "ndarray", "out")},
            "pct_of_chain_limit": (100 * ns["chain_limit"] / ns["fastoptim"]
                                   if "chain_limit" in ns else None),
        })
        del values
        gc.collect()
    return rows


def make_steps(values, beta, threads, chain):
    """What is timed on one (T, K) array of values."""
    import pandas as pd

    from fastoptim import ewma
    length, width = values.shape
    frame = pd.Series(values[:, 0]) if width == 1 else pd.DataFrame(values)
    array = values[:, 0].copy() if width == 1 else values
    into = np.empty_like(frame.to_numpy())     # laid out as the frame's values, as out= wants
    steps = {
        "pandas": lambda: frame.ewm(alpha=1 - beta).mean(),
        "fastoptim": lambda: ewma(frame, beta, backend="c", threads=threads),
        "ndarray": lambda: ewma(array, beta, backend="c", threads=threads),
        "out": lambda: ewma(frame, beta, backend="c", threads=threads, out=into),
    }
    if width == 1 and chain is not None:   # into a new array, as the others return one
        steps["chain_limit"] = lambda: chain(np.empty_like(array), array, beta, 1 - beta,
                                             length)
    return steps


def format_ewma_rows(rows):
    """The rows as a text table."""
    if not rows:
        return "EWMA vs pandas: no rows"
    first = rows[0]
    threads = first["threads"] or "all"
    lines = [
        f"EWMA: fastoptim.ewma(x, beta={first['beta']}) vs pandas x.ewm(alpha="
        f"{1 - first['beta']:g}).mean(), {first['dtype']}; fastoptim threads: {threads}, "
        "pandas: 1",
        "ns/el: median time per element.  Series/DataFrame in and out for both; ndarray: "
        "fastoptim on a (T, K) C-ordered array; out=: into the same array each call.",
        "x pandas: pandas' time / fastoptim's.  chain: one multiply + one add per step, "
        "serial (one series); % chain: chain time / fastoptim time.",
        "",
        f"{'T x K':<11} {'pandas':>8} {'fastoptim':>10} {'x pandas':>9} {'ndarray':>8} "
        f"{'x pandas':>9} {'out=':>6} {'x pandas':>9} {'chain':>6} {'% chain':>8}",
    ]
    for r in rows:
        ns, x = r["ns_per_element"], r["speedup_vs_pandas"]
        chain = ns.get("chain_limit")
        pct = r["pct_of_chain_limit"]
        lines.append(
            f"{shape_name(r['shape']):<11} {ns['pandas']:>8.2f} {ns['fastoptim']:>10.2f} "
            f"{x['fastoptim']:>8.1f}x {ns['ndarray']:>8.2f} {x['ndarray']:>8.1f}x "
            f"{ns['out']:>6.2f} {x['out']:>8.1f}x "
            f"{'-' if chain is None else f'{chain:.2f}':>6} "
            f"{'-' if pct is None else f'{pct:.0f}%':>8}")
    return "\n".join(lines)


def shape_name(shape):
    def short(n):
        for unit, suffix in ((10**6, "M"), (10**3, "k")):
            if n >= unit and n % unit == 0:
                return f"{n // unit}{suffix}"
        return str(n)
    return f"{short(shape[0])} x {short(shape[1])}"


def _median_seconds(steps, seconds, rounds):
    """Median seconds per call of each callable, timed in rounds that interleave them (the
    order rotating), so noise from a shared machine hits all alike."""
    for step in steps.values():
        step()      # page faults, imports, lazy initialization
    names = list(steps)
    samples = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                start = time.perf_counter()
                steps[name]()
                samples[name].append(time.perf_counter() - start)
            if sum(map(sum, samples.values())) > seconds * len(names) * rounds:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: statistics.median(s) for name, s in samples.items()}


CHAIN_SOURCE = """
#include <stdint.h>
void chain(double *out, const double *x, double a, double b, int64_t n)
{
    double m = 0;
    for (int64_t t = 0; t < n; t++) {
        m = a * m + b * x[t];
        out[t] = m;
    }
}
"""


def chain_loop():
    """The bare recurrence compiled with the project's floating-point flags, as a callable
    (out, x, a, b, n), or None without a C compiler."""
    compiler = os.environ.get("CC", "cc")
    directory = tempfile.mkdtemp(prefix="fastoptim-chain-")
    source, library = os.path.join(directory, "chain.c"), os.path.join(directory, "chain.so")
    with open(source, "w") as f:
        f.write(CHAIN_SOURCE)
    try:
        subprocess.run([compiler, "-O3", "-ffp-contract=off", "-shared", "-fPIC", source, "-o",
                        library], check=True, capture_output=True)
        function = ctypes.CDLL(library).chain
    except (OSError, subprocess.CalledProcessError):
        return None
    pointer = ctypes.POINTER(ctypes.c_double)
    function.argtypes = [pointer, pointer, ctypes.c_double, ctypes.c_double, ctypes.c_int64]

    def chain(out, x, a, b, n):
        function(out.ctypes.data_as(pointer), x.ctypes.data_as(pointer), a, b, n)
    return chain


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastoptim.cli.bench_ewma",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the rows per shape")
    parser.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    shapes = [(t // 10, k) for t, k in SHAPES] if args.quick else SHAPES
    rows = bench_ewma_shapes(shapes, args.dtype, threads=args.threads)
    print(format_ewma_rows(rows))


if __name__ == "__main__":
    main()
