"""Adam over low-precision storage: each layout of params, gradients, state and param copy
against float32 Adam, its own data-movement limit and torch's fused bfloat16 Adam.

Used by the "low precision" section of ``python -m fastoptim bench`` (``--full`` or
``--low-precision``) and by bench/bench_low_precision.py (``make_step``).

Method. For each size, every layout gets its own params and gradients (the same float32
draws, stored in the layout's dtypes) and its own state; one untimed step creates
everything. The limit of a layout is fastoptim.kernels.movement_loop over the layout's own
buffers (the param, both moments and the param copy updated, a zero gradient of the
gradient's dtype read): its memory traffic with no arithmetic. All of them, and torch's
fused Adam on bfloat16 tensors, are timed in the interleaved rounds of
fastoptim.cli.bench.measure.
"""
import gc
from functools import partial
from typing import NamedTuple, Optional

import numpy as np

import fastoptim
from fastoptim._checks import DTYPE_NAMES

SIZES = (1_000_000, 30_000_000)     # in cache, memory-bound
LR = 1e-3


class Layout(NamedTuple):
    """Adam with params, gradient, moments and param copy stored in these dtypes (names).
    A copy means master weights: float32 params updated, the copy written rounded."""
    key: str
    label: str
    param: str
    grad: str
    state: str
    copy: Optional[str] = None
    rounding: str = "nearest"

    def bytes_per_element(self):
        """Read and written per element by one step: param and both moments read and
        written, the gradient read, the copy written."""
        size = {name: DTYPE_NAMES[name].itemsize for name in DTYPE_NAMES}
        return (2 * size[self.param] + size[self.grad] + 4 * size[self.state]
                + (size[self.copy] if self.copy else 0))


LAYOUTS = (
    Layout("float32", "float32", "float32", "float32", "float32"),
    Layout("bf16_moments", "float32 params, bfloat16 moments", "float32", "float32",
           "bfloat16"),
    Layout("bf16", "all bfloat16", "bfloat16", "bfloat16", "bfloat16"),
    Layout("bf16_stochastic", "all bfloat16, stochastic rounding", "bfloat16", "bfloat16",
           "bfloat16", rounding="stochastic"),
    Layout("master", "float32 master, bfloat16 grad and copy", "float32", "bfloat16",
           "float32", copy="bfloat16"),
)
BY_KEY = {layout.key: layout for layout in LAYOUTS}
TORCH_KEY = "torch_fused_bf16"     # torch.optim.Adam(fused=True) on bfloat16 tensors

# the goals: (label, layout, size, compared with, at least this many times faster)
TARGETS = (
    ("float32 params + bfloat16 moments vs float32 Adam", "bf16_moments", 30_000_000,
     "float32", 1.25),
    ("all-bfloat16 Adam vs torch fused bfloat16", "bf16", 30_000_000, TORCH_KEY, 1.0),
    ("all-bfloat16 Adam vs torch fused bfloat16", "bf16", 1_000_000, TORCH_KEY, 1.5),
    # "at most 1.05x the time of float32 Adam"
    ("float32 master + bfloat16 grad and copy vs float32 Adam", "master", 30_000_000,
     "float32", 1 / 1.05),
)


class Step(NamedTuple):
    step: object        # one Adam step
    limit: object       # movement_loop over the same buffers
    optimizer: object


def make_step(layout, n, *, threads=None, seed=0):
    """The Adam step of ``layout`` (a Layout or its key) on n random elements, state made,
    and the movement limit over its buffers."""
    from fastoptim import kernels

    layout = BY_KEY.get(layout, layout)
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(n, dtype=np.float32)
    grad = rng.standard_normal(n, dtype=np.float32).astype(DTYPE_NAMES[layout.grad])
    stored = param.astype(DTYPE_NAMES[layout.copy or layout.param])
    opt = fastoptim.Adam(stored, lr=LR, master_weights=layout.copy is not None,
                         state_dtype=layout.state, rounding=layout.rounding, backend="c",
                         threads=threads)
    step = partial(opt.step, grad)
    step()
    # adding zeros leaves the buffers as they are; filled, so its pages are real memory
    zeros = np.empty_like(grad)
    zeros.fill(0)
    updated = [opt.params[0], opt.state[0]["exp_avg"], opt.state[0]["exp_avg_sq"]]
    if layout.copy:
        updated.append(stored)
    limit = partial(kernels.movement_loop, updated, (zeros,), threads=threads)
    return Step(step, limit, opt)


def make_torch_step(torch, n, seed=0):
    """torch.optim.Adam(fused=True) on one bfloat16 tensor of n elements (the same draws as
    make_step), state made; None when this torch has no fused CPU Adam."""
    rng = np.random.default_rng(seed)
    param = torch.from_numpy(rng.standard_normal(n, dtype=np.float32)).to(torch.bfloat16)
    grad = torch.from_numpy(rng.standard_normal(n, dtype=np.float32)).to(torch.bfloat16)
    param.grad = grad
    try:
        opt = torch.optim.Adam([param], lr=LR, fused=True)
        opt.step()
    except (RuntimeError, TypeError, ValueError):
        return None
    return opt.step


def rows(ctx, sizes=None):
    """One row per layout and size (a section of fastoptim.cli.bench)."""
    from fastoptim.cli.bench import human, measure

    result = []
    for n in sizes or ctx.plan.low_precision_sizes:
        ctx.progress(f"low precision: Adam layouts n={human(n)}")
        steps = {}
        for layout in LAYOUTS:
            made = make_step(layout, n, threads=ctx.threads)
            steps[layout.key] = made.step
            steps["limit " + layout.key] = made.limit
        if ctx.torch is not None:
            torch_step = make_torch_step(ctx.torch, n)
            if torch_step is not None:
                steps[TORCH_KEY] = torch_step
        timings = measure(steps, ctx.plan.budget)
        del steps
        gc.collect()
        for layout in LAYOUTS:
            t, limit = timings[layout.key], timings["limit " + layout.key]
            torch_time = timings.get(TORCH_KEY)
            result.append({
                "layout": layout.key, "label": layout.label, "n": n,
                "dtypes": {"param": layout.param, "grad": layout.grad, "state": layout.state,
                           "copy": layout.copy, "rounding": layout.rounding},
                "bytes_per_element": layout.bytes_per_element(),
                "ns_per_element": t.median * 1e9 / n,
                "ns_per_element_quartiles": {"fastoptim": t.scaled(1e9 / n),
                                             "limit": limit.scaled(1e9 / n)},
                "pct_of_limit": 100.0 * limit.median / t.median,
                "speedup": {"float32": timings["float32"].median / t.median,
                            TORCH_KEY: (torch_time.median / t.median
                                        if torch_time and layout.param == "bfloat16"
                                        else None)},
            })
        if TORCH_KEY in timings:
            result.append({"layout": TORCH_KEY, "label": "torch fused, all bfloat16", "n": n,
                           "ns_per_element": timings[TORCH_KEY].median * 1e9 / n,
                           "ns_per_element_quartiles": {
                               "torch": timings[TORCH_KEY].scaled(1e9 / n)}})
    return result


def targets(rows):
    """The issue's goals met or not: one dict per goal whose layouts were measured."""
    found = {(r["layout"], r["n"]): r for r in rows}
    result = []
    for label, key, n, versus, goal in TARGETS:
        row = found.get((key, n))
        speedup = row and row["speedup"].get(versus)
        if speedup:
            result.append({"goal": label, "n": n, "speedup": speedup, "at_least": goal,
                           "met": speedup >= goal})
    return result


def format_rows(result):
    from fastoptim.cli.bench import _times, _with_spread, human

    lines = ["Low precision: Adam over bfloat16/float16 storage (ns per element, ± half the "
             "interquartile range)",
             "  B/el: bytes read or written per element by one step; limit: movement_loop "
             "over the layout's buffers",
             "  (a param copy is read and written there, only written by the step). × float32:"
             " float32 Adam's time / this",
             "  layout's; × torch: torch.optim.Adam(fused=True) on bfloat16 tensors / this "
             "(above 1: fastoptim is faster).",
             f"  {'layout':<38} {'n':>5} {'B/el':>4} {'limit':>9} {'fastoptim':>9} "
             f"{'%limit':>6} {'× float32':>9} {'× torch':>8}"]
    for r in result:
        if r["layout"] == TORCH_KEY:
            lines.append(f"  {r['label']:<38} {human(r['n']):>5} "
                         f"{BY_KEY['bf16'].bytes_per_element():>4} {'':>9} "
                         f"{_with_spread(r['ns_per_element_quartiles']['torch']):>9}")
            continue
        q, x = r["ns_per_element_quartiles"], r["speedup"]
        lines.append(f"  {r['label']:<38} {human(r['n']):>5} {r['bytes_per_element']:>4} "
                     f"{_with_spread(q['limit']):>9} {_with_spread(q['fastoptim']):>9} "
                     f"{r['pct_of_limit']:>5.0f}% {_times(x['float32']):>9} "
                     f"{_times(x[TORCH_KEY]):>8}")
    for t in targets(result):
        lines.append(f"  goal: {t['goal']} at {human(t['n'])}: {_times(t['speedup'])} "
                     f"(at least {_times(t['at_least'])}: {'met' if t['met'] else 'NOT met'})")
    return lines


def verdict(result):
    from fastoptim.cli.bench import human

    met = targets(result)
    if not met:
        return []
    missed = [f"{t['goal']} at {human(t['n'])}" for t in met if not t["met"]]
    return [f"low precision: {len(met) - len(missed)} of {len(met)} goals met"
            + (f" (not: {'; '.join(missed)})" if missed else "")]
