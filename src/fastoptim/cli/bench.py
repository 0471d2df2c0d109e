"""`python -m fastoptim bench`: each optimizer step against its data-movement limit, the
NumPy reference and torch.optim, side by side in one run.

Method. For one optimizer, dtype and size, every implementation updates the same param
array from the same grad array (torch through tensors that share their memory); each keeps
its own state. The limit is fastoptim.kernels.movement_loop over fastoptim's own buffers
(param and state updated, one read-only buffer): the traffic of the step with no math.
Each implementation is called once and timed briefly to size its samples, then timed in
rounds that interleave all of them (the order rotating each round), so noise from the
shared machine hits them alike; the result is the median of the rounds. Buffers are
freed between table cells.
"""
import gc
import importlib
import inspect
import itertools
import os
import platform
import statistics
import sys
import time
from datetime import datetime
from functools import partial
from typing import NamedTuple

import numpy as np

import fastoptim

DEFAULT_SIZES = (1_000, 10_000, 100_000, 1_000_000, 30_000_000)
QUICK_SIZES = (1_000, 100_000, 3_000_000)
DEFAULT_OPTIMIZERS = ("SGD", "Momentum", "AdaGrad", "RMSProp", "Adam", "AdamW")
QUICK_OPTIMIZERS = ("SGD", "Adam")
DTYPES = ("float32", "float64")
IMPLEMENTATIONS = ("fastoptim", "limit", "numpy", "torch_fused", "torch_foreach")

# The same update in both libraries: fastoptim class and arguments, torch.optim class and
# arguments (torch.optim's defaults otherwise, which fastoptim shares).
TWINS = {
    "SGD": ("SGD", dict(lr=1e-3), "SGD", dict(lr=1e-3)),
    "Momentum": ("Momentum", dict(lr=1e-3, momentum=0.9), "SGD", dict(lr=1e-3, momentum=0.9)),
    "Nesterov": ("Nesterov", dict(lr=1e-3, momentum=0.9),
                 "SGD", dict(lr=1e-3, momentum=0.9, nesterov=True)),
    "AdaGrad": ("AdaGrad", dict(lr=1e-2), "Adagrad", dict(lr=1e-2)),
    "RMSProp": ("RMSProp", dict(lr=1e-2), "RMSprop", dict(lr=1e-2)),
    "Adam": ("Adam", dict(lr=1e-3), "Adam", dict(lr=1e-3)),
    "AdamW": ("AdamW", dict(lr=1e-3, weight_decay=1e-2),
              "AdamW", dict(lr=1e-3, weight_decay=1e-2)),
}


class Budget(NamedTuple):
    seconds: float      # timed per implementation per table cell
    min_rounds: int
    max_rounds: int


FULL = Budget(0.2, 5, 21)
QUICK = Budget(0.08, 3, 9)


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
    fo_name, fo_kwargs, torch_name, torch_kwargs = TWINS[optimizer]
    cls = getattr(fastoptim, fo_name)
    rng = np.random.default_rng(n)
    params = [rng.standard_normal(n, dtype=dtype) for _ in range(arrays)]
    grads = [rng.standard_normal(n, dtype=dtype) for _ in range(arrays)]
    fast = cls(params, backend="c", threads=threads, **fo_kwargs)
    values = 1 + 2 * (1 + len(fast.state[0]))   # grad read; param and each state read + written
    steps = {}
    if "fastoptim" in which:
        steps["fastoptim"] = partial(fast.step, grads)
    if "limit" in which and arrays == 1:
        from fastoptim import kernels
        # adding zeros leaves fastoptim's buffers as they are; filled, not np.zeros, so its
        # pages are real memory and not the kernel's shared zero page
        zeros = np.empty_like(params[0])
        zeros.fill(0)
        steps["limit"] = partial(kernels.movement_loop, [params[0], *fast.state[0].values()],
                                 (zeros,), threads=threads)
    if "numpy" in which:
        steps["numpy"] = partial(cls(params, backend="numpy", **fo_kwargs).step, grads)
    if torch is not None and any(w.startswith("torch") for w in which):
        tensors = []
        for p, g in zip(params, grads):
            t = torch.from_numpy(p)
            t.grad = torch.from_numpy(g)
            tensors.append(t)
        for mode in ("fused", "foreach"):
            if "torch_" + mode not in which:
                continue
            try:
                opt = getattr(torch.optim, torch_name)(tensors, **torch_kwargs, **{mode: True})
                opt.step()
            except (TypeError, RuntimeError, ValueError):   # no such variant here
                continue
            steps["torch_" + mode] = opt.step
    return Problem(steps, values, fast, grads)


def measure(steps, budget):
    """Median seconds per call of each callable in ``steps``, timed in interleaved rounds."""
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
        return {name: statistics.median(s) for name, s in samples.items()}
    finally:
        if gc_enabled:
            gc.enable()


def _time_per_call(step, at_least):
    calls, start = 0, time.perf_counter()
    while True:
        step()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= at_least:
            return elapsed / calls


# -- the sections of the report --------------------------------------------------------------

def bench_rows(optimizers, dtypes, sizes, *, threads, torch, budget, progress):
    """One row per optimizer x dtype x size."""
    rows = []
    for optimizer, dtype, n in itertools.product(optimizers, dtypes, sizes):
        progress(f"{optimizer} {dtype} n={human(n)}")
        problem = make_problem(optimizer, dtype, n, threads=threads, torch=torch)
        seconds = measure(problem.steps, budget)
        values = problem.values_per_element
        del problem
        gc.collect()
        rows.append(_row(optimizer, dtype, n, values, seconds))
    return rows


def _row(optimizer, dtype, n, values, seconds):
    nbytes = values * np.dtype(dtype).itemsize * n
    fast = seconds["fastoptim"]
    per_element = {k: seconds[k] / n * 1e9 if k in seconds else None for k in IMPLEMENTATIONS}
    return {
        "optimizer": optimizer,
        "dtype": dtype,
        "n": n,
        "values_per_element": values,
        "bytes_per_step": nbytes,
        "ns_per_element": per_element,
        "gb_per_s": {k: nbytes / seconds[k] / 1e9 for k in ("fastoptim", "limit")},
        "pct_of_limit": 100.0 * seconds["limit"] / fast,
        "speedup": {k: seconds[k] / fast if k in seconds else None
                    for k in ("numpy", "torch_fused", "torch_foreach")},
    }


def bench_per_call(*, threads, torch, budget, progress, n=1_000):
    """Microseconds per call of one Adam step on a single small float32 array."""
    progress(f"per call: Adam float32 n={human(n)}")
    from fastoptim import kernels
    problem = make_problem("Adam", "float32", n, threads=threads, torch=torch)
    param, state = problem.fast.params[0], problem.fast.state[0]
    steps = dict(problem.steps)
    steps["kernel"] = partial(kernels.adam_step, param, problem.grads[0], state["exp_avg"],
                              state["exp_avg_sq"], lr=1e-3, step=1, threads=threads)
    seconds = measure(steps, budget)
    fast = seconds["fastoptim"]
    return {
        "optimizer": "Adam", "dtype": "float32", "n": n,
        "us_per_call": {k: s * 1e6 for k, s in seconds.items()},
        "speedup": {k: seconds[k] / fast for k in ("numpy", "torch_fused", "torch_foreach")
                    if k in seconds},
    }


def bench_many_arrays(*, threads, torch, budget, progress, arrays=100, n=10_000):
    """One Adam optimizer over ``arrays`` float32 arrays of ``n`` elements, against the same
    number of elements in one array: what each extra array costs."""
    progress(f"many arrays: Adam float32 {arrays} x {human(n)}")
    which = ("fastoptim", "numpy", "torch_fused", "torch_foreach")
    many = make_problem("Adam", "float32", n, arrays=arrays, threads=threads, torch=torch,
                        which=which)
    one = make_problem("Adam", "float32", n * arrays, threads=threads, torch=torch, which=which)
    steps = {(name, "many"): step for name, step in many.steps.items()}
    steps.update({(name, "one"): step for name, step in one.steps.items()})
    seconds = measure(steps, budget)
    result = {"optimizer": "Adam", "dtype": "float32", "arrays": arrays, "n": n, "rows": {}}
    for name in many.steps:
        t_many, t_one = seconds[(name, "many")], seconds[(name, "one")]
        result["rows"][name] = {
            "us_per_step": t_many * 1e6,
            "us_per_array": t_many / arrays * 1e6,
            "us_one_array": t_one * 1e6,
            "us_added_per_array": (t_many - t_one) / (arrays - 1) * 1e6,
        }
    fast = seconds[("fastoptim", "many")]
    result["speedup"] = {name: seconds[(name, "many")] / fast for name in many.steps
                         if name != "fastoptim"}
    return result


def find_ewma():
    """fastoptim.ewma(x, beta, ...) when this build has it, else None."""
    ewma = getattr(fastoptim, "ewma", None)
    if ewma is None:
        try:
            ewma = importlib.import_module("fastoptim.ewma")
        except ImportError:
            return None
    if not callable(ewma):      # the module rather than the function
        ewma = getattr(ewma, "ewma", None)
    return ewma if callable(ewma) else None


def bench_ewma(sizes, dtypes, *, budget, progress, beta=0.9):
    """The EWMA of a series (bias-corrected) against pandas ewm(adjust=True).mean()."""
    ewma = find_ewma()
    if ewma is None:
        return {"skipped": "fastoptim.ewma is not in this build"}
    try:
        import pandas
    except ImportError:
        pandas = None
    # the compiled scan, not a silent fallback (its NumPy twin loops over time in Python)
    backend_c = {"backend": "c"} if "backend" in inspect.signature(ewma).parameters else {}
    rows = []
    for dtype, n in itertools.product(dtypes, sizes):
        progress(f"ewma {dtype} n={human(n)}")
        x = np.random.default_rng(n).standard_normal(n, dtype=dtype)
        steps = {"fastoptim": partial(ewma, x, beta, **backend_c)}
        if pandas is not None:
            series = pandas.Series(x)
            steps["pandas"] = lambda: series.ewm(alpha=1 - beta, adjust=True).mean()
        try:
            seconds = measure(steps, budget)
        except TypeError as exc:    # a signature other than ewma(x, beta)
            return {"skipped": f"fastoptim.ewma(x, beta) failed: {exc}"}
        rows.append({
            "dtype": dtype, "n": n,
            "ns_per_element": {k: s / n * 1e9 for k, s in seconds.items()},
            "speedup_vs_pandas": seconds["pandas"] / seconds["fastoptim"] if pandas else None,
        })
        del steps, x
        gc.collect()
    return {"beta": beta, "rows": rows}


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


def header(threads, torch):
    from fastoptim import kernels
    info = kernels.build_info()
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average": _load_average(),
        "simd_target": info["simd_target"],
        "openmp": info["openmp"],
        "threads": threads or info["max_threads"],
        "parallel_threshold": info["parallel_threshold"],
        "torch_threads": torch.get_num_threads() if torch else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__ if torch else None,
        "fastoptim": fastoptim.__version__,
    }


def _load_average():
    """The 1-minute load average: near the thread count or above, other processes share the
    cores and distort every number, threaded ones most."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


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


def run(*, sizes, optimizers, dtypes, threads=None, budget=FULL, use_torch=True,
        ewma_sizes=(1_000_000, 10_000_000)):
    """Every section; returns the report as a dict (what --json prints)."""
    torch = None
    if use_torch:
        try:
            import torch
        except ImportError:
            torch = None
    if torch is not None and threads:
        torch.set_num_threads(threads)
    has_ewma = find_ewma() is not None
    total = (len(optimizers) * len(dtypes) * len(sizes) + 2
             + (len(ewma_sizes) * len(dtypes) if has_ewma else 0))
    progress = Progress(total)
    try:
        report = {"header": header(threads, torch),
                  "settings": {"sizes": list(sizes), "optimizers": list(optimizers),
                               "dtypes": list(dtypes), "seconds_per_cell": budget.seconds,
                               "torch": use_torch}}
        report["rows"] = bench_rows(optimizers, dtypes, sizes, threads=threads, torch=torch,
                                    budget=budget, progress=progress)
        report["per_call"] = bench_per_call(threads=threads, torch=torch, budget=budget,
                                            progress=progress)
        report["many_arrays"] = bench_many_arrays(threads=threads, torch=torch, budget=budget,
                                                  progress=progress)
        report["ewma"] = bench_ewma(ewma_sizes, dtypes, budget=budget, progress=progress)
        report["header"]["load_average_end"] = _load_average()
    finally:
        progress.close()
    return report


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
    return "-" if x is None else f"{x:.2f}x"


def format_report(report):
    h = report["header"]
    if h["torch"]:
        torch_part = f"torch {h['torch']} ({h['torch_threads']} threads)"
    else:
        torch_part = "torch not installed" if report["settings"]["torch"] else "torch left out"
    load = ""
    if h["load_average"] is not None:
        load = f"load average {h['load_average']:.2f} at start, {h['load_average_end']:.2f} at end"
        if max(h["load_average"], h["load_average_end"]) >= 0.5 * h["cores"]:
            load += ": other processes were using the cores (noisy, threaded timings most)"
    lines = [
        f"fastoptim {h['fastoptim']} bench, {h['date']}",
        f"CPU: {h['cpu']}, {h['cores']} cores; SIMD target: {h['simd_target']}; "
        f"threads: {h['threads']} (OpenMP {'on' if h['openmp'] else 'off'}, one thread below "
        f"{h['parallel_threshold']} elements per thread)",
        f"python {h['python']}, numpy {h['numpy']}, {torch_part}",
        load,
        "",
        "ns/el: median time of one opt.step(grad), per element. val: values read or written "
        "per element.",
        "limit: fastoptim.kernels.movement_loop over the same buffers: the step's memory "
        "traffic, no math.",
        "GB/s: val x itemsize x n / time.  %limit: limit time / fastoptim time.",
        "numpy: fastoptim's NumPy reference. fused, foreach: torch.optim with fused=True, "
        "foreach=True.",
        "x numpy, x fused, x foreach: that time / fastoptim's time (above 1: fastoptim is "
        "faster).",
        "",
    ]
    cols = [("optimizer", 9, "<"), ("dtype", 7, "<"), ("n", 5, ">"), ("val", 3, ">"),
            ("limit", 7, ">"), ("fastoptim", 9, ">"), ("GB/s", 6, ">"), ("%limit", 6, ">"),
            ("numpy", 7, ">"), ("x numpy", 7, ">"), ("fused", 7, ">"), ("x fused", 7, ">"),
            ("foreach", 7, ">"), ("x foreach", 9, ">")]

    def line(cells):
        return "  ".join(f"{c:{a}{w}}" for c, (_, w, a) in zip(cells, cols)).rstrip()

    lines.append(line(["", "", "", "", "ns/el", "ns/el", "", "", "ns/el", "", "ns/el", "",
                       "ns/el", ""]))
    lines.append(line([c[0] for c in cols]))
    previous = None
    for r in report["rows"]:
        if previous is not None and r["optimizer"] != previous:
            lines.append("")
        previous = r["optimizer"]
        ns, x = r["ns_per_element"], r["speedup"]
        lines.append(line([
            r["optimizer"], r["dtype"], human(r["n"]), str(r["values_per_element"]),
            _num(ns["limit"]), _num(ns["fastoptim"]), _num(r["gb_per_s"]["fastoptim"]),
            f"{r['pct_of_limit']:.0f}%", _num(ns["numpy"]), _times(x["numpy"]),
            _num(ns["torch_fused"]), _times(x["torch_fused"]),
            _num(ns["torch_foreach"]), _times(x["torch_foreach"]),
        ]))

    pc = report["per_call"]
    us = pc["us_per_call"]
    names = [("fastoptim", "fastoptim Adam.step (backend c)"),
             ("kernel", "fastoptim.kernels.adam_step, called directly"),
             ("limit", "movement_loop, called directly"),
             ("numpy", "fastoptim Adam.step (backend numpy)"),
             ("torch_fused", "torch.optim.Adam(fused=True).step"),
             ("torch_foreach", "torch.optim.Adam(foreach=True).step")]
    lines += ["", f"Per call: one Adam step on a single {pc['dtype']} array of "
              f"{pc['n']:,} elements"]
    for key, label in names:
        if key in us:
            vs = pc["speedup"].get(key)
            lines.append(f"  {label:<46} {_num(us[key]):>7} us"
                         + (f"   fastoptim {vs:.1f}x faster" if vs else ""))

    ma = report["many_arrays"]
    lines += ["", f"Many arrays: one Adam optimizer over {ma['arrays']} {ma['dtype']} arrays of "
              f"{ma['n']:,} elements, against one array of {ma['arrays'] * ma['n']:,}",
              f"  added per array = (us/step - one array) / {ma['arrays'] - 1}: what each "
              "extra array costs (below 0",
              "  when small arrays run faster than one big one, e.g. NumPy's temporaries "
              "staying in cache)",
              f"  {'':<14} {'us/step':>9} {'us/array':>9} {'one array':>10} "
              f"{'added per array':>16} {'x vs fastoptim':>15}"]
    for name, row in ma["rows"].items():
        vs = ma["speedup"].get(name)
        lines.append(f"  {name:<14} {_num(row['us_per_step']):>9} {_num(row['us_per_array']):>9} "
                     f"{_num(row['us_one_array']):>10} {_num(row['us_added_per_array']):>16} "
                     f"{_times(vs) if vs else '':>15}")

    ew = report["ewma"]
    lines.append("")
    if "skipped" in ew:
        lines.append(f"EWMA series scan: skipped ({ew['skipped']})")
    else:
        lines.append(f"EWMA series scan (beta={ew['beta']}, bias-corrected): fastoptim.ewma "
                     "against pandas Series.ewm(adjust=True).mean(), ns per element")
        for r in ew["rows"]:
            ns = r["ns_per_element"]
            lines.append(f"  {r['dtype']:<8} n={human(r['n']):<5} fastoptim "
                         f"{_num(ns['fastoptim']):>6}   pandas {_num(ns.get('pandas')):>6}   "
                         f"{_times(r['speedup_vs_pandas'])}")
    return "\n".join(lines)
