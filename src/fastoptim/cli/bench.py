"""`python -m fastoptim bench`: each optimizer step against its data-movement limit, the
NumPy reference and torch.optim, side by side in one run, ending with a short verdict.

Method. For one optimizer, dtype and size, every implementation updates the same param
array from the same grad array (torch through tensors that share their memory); each keeps
its own state. The limit is fastoptim.kernels.movement_loop over fastoptim's own buffers
(param and state updated, one read-only buffer): the traffic of the step with no math.
Each implementation is called once and timed briefly to size its samples, then timed in
rounds that interleave all of them (the order rotating each round), so noise from the
shared machine hits them alike; each result is the median of the rounds, with the
interquartile range of the rounds as its spread. Buffers are freed between table cells.

The report is a list of sections (SECTIONS, at the end of the measuring code): each has a
function that measures and returns plain data (what --json prints under its key), a
formatter for the text report and, optionally, phrases for the closing verdict. A new
section is one more entry there.
"""
import gc
import importlib
import itertools
import math
import os
import platform
import statistics
import sys
import time
from datetime import datetime
from functools import partial
from typing import Callable, NamedTuple, Optional

import numpy as np

import fastoptim
from fastoptim.cli import bench_low_precision

IMPLEMENTATIONS = ("fastoptim", "limit", "numpy", "torch_fused", "torch_foreach",
                   "torch_forloop")
DTYPES = ("float32", "float64")
TORCH_INSTALL = "pip install torch==2.13.0"   # pinned: an unpinned torch pulls CUDA (GBs)
PANDAS_INSTALL = "pip install pandas"


class Twin(NamedTuple):
    """The same update in both libraries: a fastoptim class and its arguments, the
    torch.optim class (None: torch has none) and its arguments; torch.optim's defaults
    otherwise, which fastoptim shares."""
    fastoptim: str
    fastoptim_args: dict
    torch: Optional[str]
    torch_args: dict
    in_default_run: bool = True
    # the params as near-square matrices of n elements, not vectors (Adafactor factors
    # matrices); the limit and "val" then count the state buffers of the param's size only
    matrix: bool = False


# One line per optimizer: what `bench` can time (--optimizers picks from these names).
TWINS = {
    "SGD": Twin("SGD", dict(lr=1e-3), "SGD", dict(lr=1e-3)),
    "Momentum": Twin("Momentum", dict(lr=1e-3, momentum=0.9),
                     "SGD", dict(lr=1e-3, momentum=0.9)),
    # the traffic and the arithmetic of Momentum: timed only on request
    "Nesterov": Twin("Nesterov", dict(lr=1e-3, momentum=0.9),
                     "SGD", dict(lr=1e-3, momentum=0.9, nesterov=True), in_default_run=False),
    "AdaGrad": Twin("AdaGrad", dict(lr=1e-2), "Adagrad", dict(lr=1e-2)),
    "RMSProp": Twin("RMSProp", dict(lr=1e-2), "RMSprop", dict(lr=1e-2)),
    "Adam": Twin("Adam", dict(lr=1e-3), "Adam", dict(lr=1e-3)),
    "AdamW": Twin("AdamW", dict(lr=1e-3, weight_decay=1e-2),
                  "AdamW", dict(lr=1e-3, weight_decay=1e-2)),
    # in the full run (--full), or by name (--optimizers)
    "Adadelta": Twin("Adadelta", {}, "Adadelta", {}, in_default_run=False),
    "Adamax": Twin("Adamax", {}, "Adamax", {}, in_default_run=False),
    "NAdam": Twin("NAdam", {}, "NAdam", {}, in_default_run=False),
    "RAdam": Twin("RAdam", {}, "RAdam", {}, in_default_run=False),
    "Rprop": Twin("Rprop", {}, "Rprop", {}, in_default_run=False),
    "ASGD": Twin("ASGD", {}, "ASGD", {}, in_default_run=False),
    "Lion": Twin("Lion", {}, None, {}, in_default_run=False),
    "ScheduleFreeAdamW": Twin("ScheduleFreeAdamW", {}, None, {}, in_default_run=False),
    "LAMB": Twin("LAMB", {}, None, {}, in_default_run=False),
    # on a matrix (its factored case)
    "Adafactor": Twin("Adafactor", dict(lr=1e-2), "Adafactor", dict(lr=1e-2),
                      in_default_run=False, matrix=True),
}
DEFAULT_OPTIMIZERS = tuple(name for name, twin in TWINS.items() if twin.in_default_run)
QUICK_OPTIMIZERS = ("SGD", "Adam")
# the optimizer the per-call, many-arrays and verdict lines are about
HEADLINE = ("Adam", "float32")


class Budget(NamedTuple):
    seconds: float      # timed per implementation per table cell
    min_rounds: int
    max_rounds: int


class Plan(NamedTuple):
    """What one run measures."""
    optimizers: tuple
    dtypes: tuple
    sizes: tuple
    budget: Budget
    ewma_shapes: tuple                          # (time steps, series) for the EWMA rows
    many_arrays_elements: int = 1_000_000       # split into 25, 50 and 100 arrays
    adapter_sizes: tuple = ((1, 10_000_000), (100, 10_000))    # --vs torch
    adapter_repeats: int = 20
    low_precision_sizes: tuple = ()     # --low-precision (and --full): Adam's layouts
    reduction_sizes: tuple = ()         # --reductions (and --full): norms, clipping


# default: about a minute on 2 cores; every optimizer in cache (1M) and memory-bound (30M)
PLANS = {
    "default": Plan(DEFAULT_OPTIMIZERS, ("float32",), (1_000_000, 30_000_000),
                    Budget(0.12, 5, 15), ((10**7, 1), (10**4, 10**3))),
    "quick": Plan(QUICK_OPTIMIZERS, DTYPES, (1_000, 100_000, 3_000_000), Budget(0.08, 3, 9),
                  ((10**6, 1),), 200_000, ((1, 1_000_000), (100, 10_000)), 7),
    "full": Plan(tuple(TWINS), DTYPES, (1_000, 1_000_000, 30_000_000),
                 Budget(0.2, 5, 21), ((10**7, 1), (10**4, 10**3), (10**3, 10**4), (10**5, 100)),
                 low_precision_sizes=bench_low_precision.SIZES,
                 reduction_sizes=(1_000_000, 30_000_000)),
}


# -- what is timed ---------------------------------------------------------------------------

class Problem(NamedTuple):
    steps: dict                 # implementation name -> a callable doing one step
    values_per_element: int     # values read or written per element by one step
    fast: object                # the fastoptim optimizer (backend "c")
    grads: list


def make_problem(optimizer, dtype, n, *, arrays=1, threads=None, torch=None,
                 which=IMPLEMENTATIONS):
    """One problem (``arrays`` params of ``n`` elements, random, seeded) and the step of each
    implementation in ``which`` over it. torch variants need ``torch`` (the module) and are
    left out where torch.optim has no such variant (no fused RMSprop)."""
    twin = TWINS[optimizer]
    cls = getattr(fastoptim, twin.fastoptim)
    rng = np.random.default_rng(n)
    shape = matrix_shape(n) if twin.matrix else (n,)
    params = [rng.standard_normal(shape, dtype=dtype) for _ in range(arrays)]
    grads = [rng.standard_normal(shape, dtype=dtype) for _ in range(arrays)]
    fast = _training(cls(params, backend="c", threads=threads, **twin.fastoptim_args))
    state = [a for a in fast.state[0].values() if a.size == n]  # the param-sized buffers
    values = 1 + 2 * (1 + len(state))   # grad read; param and each state read + written
    steps = {}
    if "fastoptim" in which:
        steps["fastoptim"] = partial(fast.step, grads)
    if "limit" in which and arrays == 1:
        from fastoptim import kernels
        # adding zeros leaves fastoptim's buffers as they are; filled, not np.zeros, so its
        # pages are real memory and not the kernel's shared zero page
        zeros = np.empty_like(params[0])
        zeros.fill(0)
        steps["limit"] = partial(kernels.movement_loop, [params[0], *state], (zeros,),
                                 threads=threads)
    if "numpy" in which:
        steps["numpy"] = partial(
            _training(cls(params, backend="numpy", **twin.fastoptim_args)).step, grads)
    if torch is not None and twin.torch and any(w.startswith("torch") for w in which):
        tensors = []
        for p, g in zip(params, grads):
            t = torch.from_numpy(p)
            t.grad = torch.from_numpy(g)
            tensors.append(t)
        for mode, flag in (("fused", dict(fused=True)), ("foreach", dict(foreach=True)),
                           ("forloop", dict(foreach=False))):
            if "torch_" + mode not in which:
                continue
            try:
                opt = getattr(torch.optim, twin.torch)(tensors, **twin.torch_args, **flag)
                opt.step()
            except (TypeError, RuntimeError, ValueError):   # no such variant here
                continue
            steps["torch_" + mode] = opt.step
    return Problem(steps, values, fast, grads)


def _training(optimizer):
    """Schedule-Free steps in train mode only."""
    if hasattr(optimizer, "train"):
        optimizer.train()
    return optimizer


def matrix_shape(n):
    """The most nearly square (rows, cols) of n elements, rows <= cols."""
    rows = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
    return rows, n // rows


class Timing(NamedTuple):
    """Seconds per call: the median of the rounds and their quartiles."""
    median: float
    q1: float
    q3: float
    rounds: int

    @property
    def spread(self):
        """Half the interquartile range, relative to the median (0.03: +-3 %)."""
        return (self.q3 - self.q1) / 2 / self.median

    def scaled(self, factor):
        """[median, q1, q3] times factor (for JSON: ns per element, us per call)."""
        return [self.median * factor, self.q1 * factor, self.q3 * factor]


def measure(steps, budget):
    """A Timing per callable in ``steps``, timed in interleaved rounds."""
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        estimate = {}
        for name, step in steps.items():
            step()      # page faults, lazy initialization
            estimate[name] = _time_per_call(step, budget.seconds / 10)
        slowest = max(estimate.values())
        rounds = int(min(budget.max_rounds, max(budget.min_rounds, budget.seconds / slowest)))
        calls = {name: max(1, round(budget.seconds / rounds / t)) for name, t in estimate.items()}
        samples = {name: [] for name in steps}
        names = list(steps)
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                step, k = steps[name], calls[name]
                if k > 1:
                    step()  # brings this implementation's buffers back into cache
                start = time.perf_counter()
                for _ in itertools.repeat(None, k):
                    step()
                samples[name].append((time.perf_counter() - start) / k)
        return {name: timing(s) for name, s in samples.items()}
    finally:
        if gc_enabled:
            gc.enable()


def timing(samples):
    """The Timing of a list of seconds per call."""
    q1, median, q3 = np.percentile(samples, [25, 50, 75])
    return Timing(float(median), float(q1), float(q3), len(samples))


def _time_per_call(step, at_least):
    calls, start = 0, time.perf_counter()
    while True:
        step()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= at_least:
            return elapsed / calls


class Context(NamedTuple):
    """What every section gets: the plan and the optional libraries found."""
    plan: Plan
    threads: Optional[int]
    torch: object           # the module, or None (not installed, or --no-torch)
    pandas: object          # the module, or None
    vs_torch: bool
    progress: Callable[[str], None]


# -- section: one optimizer step per optimizer x dtype x size --------------------------------

def step_rows(ctx):
    """One row per optimizer x dtype x size."""
    plan = ctx.plan
    rows = []
    for optimizer, dtype, n in itertools.product(plan.optimizers, plan.dtypes, plan.sizes):
        ctx.progress(f"{optimizer} {dtype} n={human(n)}")
        problem = make_problem(optimizer, dtype, n, threads=ctx.threads, torch=ctx.torch)
        timings = measure(problem.steps, plan.budget)
        values = problem.values_per_element
        del problem
        gc.collect()
        rows.append(_step_row(optimizer, dtype, n, values, timings))
    return rows


def _step_row(optimizer, dtype, n, values, timings):
    nbytes = values * np.dtype(dtype).itemsize * n
    fast = timings["fastoptim"].median
    return {
        "optimizer": optimizer,
        "dtype": dtype,
        "n": n,
        "values_per_element": values,
        "bytes_per_step": nbytes,
        "ns_per_element": {k: timings[k].median * (1e9 / n) if k in timings else None
                           for k in IMPLEMENTATIONS},
        # [median, first quartile, third quartile] of the rounds
        "ns_per_element_quartiles": {k: t.scaled(1e9 / n) for k, t in timings.items()},
        "gb_per_s": {k: nbytes / timings[k].median / 1e9 for k in ("fastoptim", "limit")},
        "pct_of_limit": 100.0 * timings["limit"].median / fast,
        "speedup": {k: timings[k].median / fast if k in timings else None
                    for k in ("numpy", "torch_fused", "torch_foreach", "torch_forloop")},
    }


STEP_LEGEND = [
    "ns/el: median time of one opt.step(grad) per element, ±: half the interquartile range "
    "of the rounds.",
    "val: values read or written per element. limit: fastoptim.kernels.movement_loop over the "
    "same buffers:",
    "the step's memory traffic with no math. GB/s: val × itemsize × n / time. %limit: limit "
    "time / fastoptim time.",
    "numpy: fastoptim's NumPy reference. fused, foreach, loop: torch.optim with fused=True, "
    "foreach=True, foreach=False.",
    "× numpy, × fused, × foreach: that time / fastoptim's time (above 1: fastoptim is "
    "faster).",
]


def format_step_rows(rows):
    cols = [("optimizer", 17, "<"), ("dtype", 7, "<"), ("n", 5, ">"), ("val", 3, ">"),
            ("limit", 9, ">"), ("fastoptim", 9, ">"), ("GB/s", 5, ">"), ("%limit", 6, ">"),
            ("numpy", 9, ">"), ("× numpy", 7, ">"), ("fused", 9, ">"), ("× fused", 7, ">"),
            ("foreach", 9, ">"), ("× foreach", 9, ">"), ("loop", 9, ">"), ("× loop", 7, ">")]

    def line(cells):
        return "  ".join(f"{c:{a}{w}}" for c, (_, w, a) in zip(cells, cols)).rstrip()

    lines = [*STEP_LEGEND, "",
             line(["", "", "", "", "ns/el", "ns/el", "", "", "ns/el", "", "ns/el", "",
                   "ns/el", "", "ns/el", ""]),
             line([c[0] for c in cols])]
    previous = None
    for r in rows:
        if previous is not None and r["optimizer"] != previous:
            lines.append("")
        previous = r["optimizer"]
        q, x = r["ns_per_element_quartiles"], r["speedup"]
        lines.append(line([
            r["optimizer"], r["dtype"], human(r["n"]), str(r["values_per_element"]),
            _with_spread(q.get("limit")), _with_spread(q.get("fastoptim")),
            _num(r["gb_per_s"]["fastoptim"]), f"{r['pct_of_limit']:.0f}%",
            _with_spread(q.get("numpy")), _times(x["numpy"]),
            _with_spread(q.get("torch_fused")), _times(x["torch_fused"]),
            _with_spread(q.get("torch_foreach")), _times(x["torch_foreach"]),
            _with_spread(q.get("torch_forloop")), _times(x["torch_forloop"]),
        ]))
    return lines


def verdict_step_rows(rows):
    phrases = []
    largest = max(r["n"] for r in rows)
    big = [r for r in rows if r["n"] == largest]
    if len(big) > 1:
        pct = [r["pct_of_limit"] for r in big]
        phrase = (f"at n={human(largest)} the steps run at {min(pct):.0f}–{max(pct):.0f} % of "
                  "their data-movement limit")
        fused = [r["speedup"]["torch_fused"] for r in big if r["speedup"]["torch_fused"]]
        if fused:
            phrase += f", {_times(min(fused))[:-1]}–{_times(max(fused))} torch fused"
        phrases.append(phrase)
    headline = [r for r in rows if (r["optimizer"], r["dtype"]) == HEADLINE] or \
        [r for r in rows if (r["optimizer"], r["dtype"]) == (rows[0]["optimizer"],
                                                              rows[0]["dtype"])]
    for r in sorted(headline, key=lambda r: -r["n"]):
        phrases.append(f"{r['optimizer']} {r['dtype']} {human(r['n'])}: "
                       f"{r['pct_of_limit']:.0f} % of the limit, {_versus(r['speedup'])}")
    return phrases


def _versus(speedup):
    """'1.03× torch fused' or the best comparison there is."""
    for key, label in (("torch_fused", "torch fused"), ("torch_foreach", "torch foreach"),
                       ("torch_forloop", "torch's for-loop"), ("numpy", "the NumPy reference")):
        if speedup.get(key):
            return f"{_times(speedup[key])} {label}"
    return "nothing to compare with"


# -- section: the cost of one call -----------------------------------------------------------

def per_call(ctx, n=1_000):
    """Microseconds per call of one step on a single small array."""
    optimizer, dtype = HEADLINE
    ctx.progress(f"per call: {optimizer} {dtype} n={human(n)}")
    from fastoptim import kernels
    problem = make_problem(optimizer, dtype, n, threads=ctx.threads, torch=ctx.torch)
    param, state = problem.fast.params[0], problem.fast.state[0]
    steps = dict(problem.steps)
    steps["kernel"] = partial(kernels.adam_step, param, problem.grads[0], state["exp_avg"],
                              state["exp_avg_sq"], lr=1e-3, step=1, threads=ctx.threads)
    timings = measure(steps, ctx.plan.budget)
    fast = timings["fastoptim"].median
    return {
        "optimizer": optimizer, "dtype": dtype, "n": n,
        "us_per_call": {k: t.median * 1e6 for k, t in timings.items()},
        "us_per_call_quartiles": {k: t.scaled(1e6) for k, t in timings.items()},
        "speedup": {k: timings[k].median / fast
                    for k in ("numpy", "torch_fused", "torch_foreach") if k in timings},
    }


PER_CALL_LABELS = {
    "fastoptim": "fastoptim Adam.step (backend c)",
    "kernel": "fastoptim.kernels.adam_step, called directly",
    "limit": "movement_loop, called directly",
    "numpy": "fastoptim Adam.step (backend numpy)",
    "torch_fused": "torch.optim.Adam(fused=True).step",
    "torch_foreach": "torch.optim.Adam(foreach=True).step",
}


def format_per_call(pc):
    lines = [f"Per call: one {pc['optimizer']} step on a single {pc['dtype']} array of "
             f"{pc['n']:,} elements (µs, ± half the interquartile range)"]
    for key, label in PER_CALL_LABELS.items():
        if key in pc["us_per_call"]:
            vs = pc["speedup"].get(key)
            lines.append(f"  {label:<46} {_with_spread(pc['us_per_call_quartiles'][key]):>11}"
                         + (f"   fastoptim {_times(vs)} faster" if vs else ""))
    return lines


def verdict_per_call(pc):
    us = {name: _num(value) for name, value in pc["us_per_call"].items()}
    return [_microseconds(f"one step on {pc['n']:,} elements costs", us)]


def _microseconds(phrase, us):
    """'<phrase> 1.05 µs (torch fused 72 µs)' from {implementation: µs as text}."""
    text = f"{phrase} {us['fastoptim']} µs"
    if "torch_fused" in us:
        text += f" (torch fused {us['torch_fused']} µs)"
    return text


# -- section: the cost of each extra array ---------------------------------------------------

MANY_ARRAY_COUNTS = (25, 50, 100)


def many_arrays(ctx, counts=MANY_ARRAY_COUNTS):
    """One optimizer over k arrays holding the plan's many_arrays_elements between them, for
    each k in counts, and over one array of them all. The cost of an extra array is the
    slope of the time per step against k (least squares): the elements stay the same, only
    the number of arrays they are split into grows, and every k keeps the arrays small (40k
    to 10k of 1M), so a difference in cache behaviour does not pass for a per-array cost (as
    it does against the one big array, where NumPy's temporaries leave the cache)."""
    optimizer, dtype = HEADLINE
    total = ctx.plan.many_arrays_elements
    ctx.progress(f"many arrays: {optimizer} {dtype}, {human(total)} elements in "
                 f"{', '.join(map(str, counts))} arrays")
    which = ("fastoptim", "numpy", "torch_fused", "torch_foreach")
    problems = {k: make_problem(optimizer, dtype, total // k, arrays=k, threads=ctx.threads,
                                torch=ctx.torch, which=which) for k in (1, *counts)}
    steps = {(name, k): step for k, p in problems.items() for name, step in p.steps.items()}
    timings = measure(steps, ctx.plan.budget)
    names = list(problems[counts[-1]].steps)
    del problems, steps
    gc.collect()
    rows = {}
    for name in names:
        slope = _slope(counts, [timings[name, k].median for k in counts])
        rows[name] = {
            "us_per_step": {str(k): timings[name, k].median * 1e6 for k in (1, *counts)},
            "us_per_step_quartiles": {str(k): timings[name, k].scaled(1e6)
                                      for k in (1, *counts)},
            # a negative slope means the per-array cost is lost in the noise: shown as 0
            "us_per_extra_array": max(0.0, slope * 1e6),
            "us_per_extra_array_fit": slope * 1e6,
        }
    most = str(counts[-1])
    fast = rows["fastoptim"]["us_per_step"][most]
    return {"optimizer": optimizer, "dtype": dtype, "elements": total, "counts": list(counts),
            "rows": rows,
            "speedup": {name: rows[name]["us_per_step"][most] / fast for name in names
                        if name != "fastoptim"}}


def _slope(xs, ys):
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    return (sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
            / sum((x - mean_x) ** 2 for x in xs))


def format_many_arrays(ma):
    counts = [str(k) for k in ma["counts"]]
    lines = [f"Many arrays: one {ma['optimizer']} optimizer over k {ma['dtype']} arrays holding "
             f"{ma['elements']:,} elements between them (µs per step)",
             f"  per extra array: the slope of µs/step over k = {', '.join(counts)} "
             "(least squares); ~0 when the fitted",
             "  slope is negative, i.e. the cost of an array is below the noise",
             "  " + f"{'':<14}" + f"{'1 array':>11}" + "".join(f"{k + ' arrays':>13}"
                                                           for k in counts)
             + f"{'per extra array':>17}{'× vs fastoptim':>16}"]
    for name, row in ma["rows"].items():
        vs = ma["speedup"].get(name)
        q = row["us_per_step_quartiles"]
        lines.append("  " + f"{name:<14}" + f"{_with_spread(q['1']):>11}"
                     + "".join(f"{_with_spread(q[k]):>13}" for k in counts)
                     + f"{_per_array(row):>17}"
                     + f"{_times(vs) if vs else '':>16}")
    return lines


def _per_array(row):
    """The cost of an extra array as text: '~0' when the fitted slope is negative."""
    return "~0" if row["us_per_extra_array_fit"] < 0 else _num(row["us_per_extra_array"])


def verdict_many_arrays(ma):
    return [_microseconds("each extra array adds", {
        name: _per_array(row) for name, row in ma["rows"].items()})]


# -- section: the EWMA against pandas ------------------------------------------------------

def ewma_rows(ctx):
    """fastoptim.ewma against pandas' ewm().mean(): one series, and many series at once
    (fastoptim.cli.bench_ewma: DataFrames in and out, and (T, K) arrays)."""
    from fastoptim.cli.bench_ewma import bench_ewma_shapes
    if ctx.pandas is None:
        return {"skipped": f"pandas not installed ({PANDAS_INSTALL})"}

    def seconds(steps):
        return {name: t.median for name, t in measure(steps, ctx.plan.budget).items()}
    return {"rows": bench_ewma_shapes(ctx.plan.ewma_shapes, "float64", threads=ctx.threads,
                                      progress=ctx.progress, measure=seconds)}


def format_ewma(ew):
    from fastoptim.cli.bench_ewma import format_ewma_rows
    if "skipped" in ew:
        return [f"EWMA against pandas: skipped, {ew['skipped']}"]
    return format_ewma_rows(ew["rows"]).splitlines()


def verdict_ewma(ew):
    if "skipped" in ew:
        return []
    from fastoptim.cli.bench_ewma import shape_name
    phrases = []
    for r in ew["rows"]:
        phrases.append(f"EWMA {shape_name(r['shape'])}: "
                       f"{_times(r['speedup_vs_pandas']['fastoptim'])} pandas")
    return ["; ".join(phrases)] if phrases else []


# -- section: the torch.optim adapter (--vs torch) -------------------------------------------

def adapter_rows(ctx):
    from fastoptim.cli import bench_torch
    ctx.progress("fastoptim.torch.Adam against torch.optim.Adam")
    return bench_torch.compare_with_torch(ctx.plan.adapter_sizes,
                                          repeats=ctx.plan.adapter_repeats)


def format_adapter(rows):
    from fastoptim.cli import bench_torch
    return ["fastoptim.torch.Adam (the torch.optim adapter) against torch.optim.Adam, float32; "
            "fastoptim × = how many times faster the adapter is",
            *bench_torch.format_rows(rows).splitlines()]


def verdict_adapter(rows):
    phrases = []
    for r in rows:
        if r["variant"] == "torch_fused" and r["speedup"]:
            phrases.append(f"fastoptim.torch.Adam {r['tensors']}×{human(r['numel'])}: "
                           f"{_times(r['speedup'])} torch.optim.Adam fused")
    return phrases


# -- section: Adam over bfloat16/float16 storage (--low-precision, --full) -------------------

def low_precision_rows(ctx):
    return bench_low_precision.rows(ctx)


# -- the sections, in report order ----------------------------------------------------------

class Section(NamedTuple):
    key: str                                    # its key in the report (and in --json)
    run: Callable[[Context], object]            # measures; returns plain data
    format: Callable[[object], list]            # the data as lines of text
    verdict: Optional[Callable[[object], list]] = None  # phrases for the closing paragraph
    items: Callable[[Context], int] = lambda ctx: 1     # progress lines it prints
    wanted: Callable[[Context], bool] = lambda ctx: True


SECTIONS = [
    Section("rows", step_rows, format_step_rows, verdict_step_rows,
            items=lambda ctx: len(ctx.plan.optimizers) * len(ctx.plan.dtypes)
            * len(ctx.plan.sizes)),
    Section("per_call", per_call, format_per_call, verdict_per_call),
    Section("many_arrays", many_arrays, format_many_arrays, verdict_many_arrays),
    Section("ewma", ewma_rows, format_ewma, verdict_ewma,
            items=lambda ctx: len(ctx.plan.ewma_shapes)),
    Section("torch_adapter", adapter_rows, format_adapter, verdict_adapter,
            wanted=lambda ctx: ctx.vs_torch),
    Section("low_precision", low_precision_rows, bench_low_precision.format_rows,
            bench_low_precision.verdict, items=lambda ctx: len(ctx.plan.low_precision_sizes),
            wanted=lambda ctx: bool(ctx.plan.low_precision_sizes)),
    Section("reductions", lambda ctx: _reductions().reduction_rows(ctx, ctx.plan.reduction_sizes),
            lambda data: _reductions().format_rows(data),
            lambda data: _reductions().verdict(data),
            items=lambda ctx: len(ctx.plan.reduction_sizes),
            wanted=lambda ctx: bool(ctx.plan.reduction_sizes)),
    Section("models", lambda ctx: _models().model_rows(ctx),
            lambda data: _models().format_models(data),
            lambda data: _models().verdict_models(data),
            items=lambda ctx: 4, wanted=lambda ctx: ctx.vs_torch),
]


def _reductions():
    from fastoptim.cli import bench_reductions  # imports this module: imported when asked for
    return bench_reductions


def _models():
    from fastoptim.cli import bench_models  # needs torch: imported only when asked for
    return bench_models


# -- the run ---------------------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def header(threads, torch, pandas, use_torch):
    from fastoptim import kernels
    info = kernels.build_info()
    threads = threads or info["max_threads"]
    missing = {}
    if use_torch and torch is None:
        missing["torch"] = TORCH_INSTALL
    if pandas is None:
        missing["pandas"] = PANDAS_INSTALL
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average": load_average(),
        "simd_target": info["simd_target"],
        "bfloat16_instruction": info.get("bfloat16_instruction", False),
        "threads": threads,
        "parallel_threshold": info.get("parallel_threshold"),
        "torch_threads": torch.get_num_threads() if torch else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__ if torch else None,
        "pandas": pandas.__version__ if pandas else None,
        "missing": missing,
        "fastoptim": fastoptim.__version__,
    }


def load_average():
    """The 1-minute load average (None where the system has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def busy_warning(load, cores, threads):
    """A warning when other processes hold cores this run's threads need, else None.

    A threaded step waits for its slowest thread; when a core is taken, that thread waits a
    scheduler time slice (milliseconds), which makes a microsecond step 10-60x slower."""
    if load is None or not cores or load <= cores - threads + 0.5:
        return None
    fits = max(1, int(cores - load))
    return (f"the machine is busy (load average {load:.2f} on {cores} cores) and this run uses "
            f"{threads} threads: timings can be many times too slow. Rerun when it is quiet, or "
            f"with --threads {fits}")


class Progress:
    """A one-line progress report on stderr (one line per item when it is not a terminal)."""

    def __init__(self, total, stream=None):
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.perf_counter()

    def __call__(self, what):
        self.done += 1
        line = (f"fastoptim bench [{self.done}/{self.total}] {what} "
                f"({time.perf_counter() - self.start:.0f} s)")
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _optional(module):
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def run(plan, *, threads=None, use_torch=True, vs_torch=False, sections=None, stream=None):
    """Every wanted section (of SECTIONS by default) for ``plan``; returns the report as a
    dict (what --json prints). Warnings (a busy machine, missing comparisons) go to
    ``stream`` (stderr) at once."""
    stream = stream or sys.stderr
    sections = SECTIONS if sections is None else sections
    torch = _optional("torch") if use_torch else None
    if torch is not None and threads:
        torch.set_num_threads(threads)
    pandas = _optional("pandas")
    report = {"header": header(threads, torch, pandas, use_torch),
              "settings": {**plan._asdict(), "budget": plan.budget._asdict(),
                           "torch": use_torch, "vs_torch": vs_torch}}
    h = report["header"]
    h["busy"] = busy_warning(h["load_average"], h["cores"], h["threads"])
    for line in _warnings(h):
        print(f"fastoptim bench: {line}", file=stream)
    ctx = Context(plan, threads, torch, pandas, vs_torch, progress=None)
    chosen = [s for s in sections if s.wanted(ctx)]
    progress = Progress(sum(s.items(ctx) for s in chosen), stream)
    ctx = ctx._replace(progress=progress)
    start = time.perf_counter()
    try:
        for section in chosen:
            report[section.key] = section.run(ctx)
    finally:
        progress.close()
    h["seconds"] = time.perf_counter() - start
    h["load_average_end"] = load_average()
    report["sections"] = [s.key for s in chosen]
    report["verdict"] = verdict(report, chosen)
    return report


def _warnings(h):
    lines = [h["busy"]] if h["busy"] else []
    for name, command in h["missing"].items():
        lines.append(f"{name} is not installed, so its columns stay empty: {command}")
    return lines


def verdict(report, sections):
    """The closing paragraph: each section's phrases, then how far to trust them."""
    phrases = [p for s in sections if s.verdict for p in s.verdict(report[s.key])]
    text = "; ".join(phrases) + "." if phrases else ""
    spreads = _all_spreads(report, sections)
    if spreads:
        text += (f" Timings spread ±{100 * statistics.median(spreads):.0f} % (median over all "
                 f"of half the interquartile range); × above 1: fastoptim is faster.")
    h = report["header"]
    if h["busy"]:
        text += f" Careful: {h['busy']}."
    if h["missing"]:
        text += " Not compared: " + ", ".join(f"{n} ({c})" for n, c in h["missing"].items()) + "."
    return text.strip()


def _all_spreads(report, sections):
    """(q3 - q1) / 2 / median of every timing in the report: the values of its keys ending
    in "quartiles", each [median, q1, q3] or a dict of them."""
    spreads = []

    def walk(node, quartiles=False):
        if quartiles and isinstance(node, list) and len(node) == 3:
            median, q1, q3 = node
            if median > 0:
                spreads.append((q3 - q1) / 2 / median)
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, quartiles or key.endswith("quartiles"))
        elif isinstance(node, list):
            for item in node:
                walk(item, quartiles)

    for s in sections:
        walk(report[s.key])
    return spreads


# -- the text report -------------------------------------------------------------------------

def human(n):
    """1000 -> 1k, 30000000 -> 30M."""
    for unit, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if n >= unit:
            return f"{n / unit:g}{suffix}"
    return str(n)


def _num(x):
    if x is None:
        return "-"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _times(x):
    """A ratio: 1.03×, 14.5×, 120×."""
    if x is None:
        return "-"
    return f"{x:.0f}×" if x >= 100 else f"{x:.1f}×" if x >= 10 else f"{x:.2f}×"


def _with_spread(quartiles):
    """'0.65±3%' from [median, q1, q3]; '-' when not measured."""
    if quartiles is None:
        return "-"
    median, q1, q3 = quartiles
    return f"{_num(median)}±{100 * (q3 - q1) / 2 / median:.0f}%"


def format_header(report):
    h = report["header"]
    if h["torch"]:
        torch_part = f"torch {h['torch']} ({h['torch_threads']} threads)"
    else:
        torch_part = "torch not installed" if report["settings"]["torch"] else "torch left out"
    pandas_part = f"pandas {h['pandas']}" if h["pandas"] else "pandas not installed"
    lines = [
        f"fastoptim {h['fastoptim']} bench, {h['date']}, {h['seconds']:.0f} s",
        f"CPU: {h['cpu']}, {h['cores']} cores; SIMD target: {h['simd_target']}"
        + ("; Adam rounds bfloat16 with AVX512-BF16" if h.get("bfloat16_instruction") else "")
        + f"; threads: {h['threads']}",
        f"python {h['python']}, numpy {h['numpy']}, {torch_part}, {pandas_part}",
    ]
    if h["load_average"] is not None:
        lines.append(f"load average {h['load_average']:.2f} at start, "
                     f"{h['load_average_end']:.2f} at end (this run adds up to {h['threads']})")
    lines += [f"WARNING: {line}" for line in _warnings(h)]
    return lines


def format_report(report, sections=None):
    """The report as text: the header, each section run (of SECTIONS by default), the
    verdict."""
    by_key = {s.key: s for s in (SECTIONS if sections is None else sections)}
    lines = format_header(report)
    for key in report["sections"]:
        lines += ["", *by_key[key].format(report[key])]
    lines += ["", "Verdict: " + report["verdict"]]
    return "\n".join(lines)
