"""The "reductions" section of `python -m fastoptim bench` (--full, or --reductions): what
the gradient norm costs, alone and inside a step.

- the norm alone (fastoptim.grad_norm: one read pass, float64 sums in the fixed order)
  against the limit of reading the gradient once (fastoptim.kernels.movement_loop with no
  buffer updated) and against torch.linalg.vector_norm on the same memory;
- an Adam step with max_grad_norm= (a read pass for the norm, then the update pass) and with
  check_finite=True, against the plain step, on the same arrays.

Goals (issue 14): the norm at >= 90 % of its read limit at 30M; Adam with max_grad_norm
<= 1.2x plain Adam; check_finite <= 1.2x a plain step.
"""
from functools import partial

import numpy as np

import fastoptim
from fastoptim.cli.bench import human, measure


def reduction_rows(ctx, sizes=(1_000_000, 30_000_000)):
    from fastoptim import kernels
    rows = []
    for n in sizes:
        ctx.progress(f"reductions n={human(n)}")
        rng = np.random.default_rng(n)
        p = rng.standard_normal(n, dtype=np.float32)
        g = rng.standard_normal(n, dtype=np.float32)
        plain = fastoptim.Adam(p.copy(), threads=ctx.threads)
        clipped = fastoptim.Adam(p.copy(), threads=ctx.threads, max_grad_norm=1.0)
        checked = fastoptim.Adam(p.copy(), threads=ctx.threads, check_finite=True)
        steps = {
            "norm": partial(fastoptim.grad_norm, g, threads=ctx.threads),
            "read limit": partial(kernels.movement_loop, (), (g,), threads=ctx.threads),
            "adam": partial(plain.step, g),
            "adam max_grad_norm": partial(clipped.step, g),
            "adam check_finite": partial(checked.step, g),
        }
        if ctx.torch is not None:
            t = ctx.torch.from_numpy(g)
            steps["torch norm"] = partial(ctx.torch.linalg.vector_norm, t)
        timings = measure(steps, ctx.plan.budget)
        ns = {k: t.median * 1e9 / n for k, t in timings.items()}
        rows.append({
            "n": n, "ns_per_element": ns,
            "ns_per_element_quartiles": {k: t.scaled(1e9 / n) for k, t in timings.items()},
            "norm_pct_of_read_limit": 100 * ns["read limit"] / ns["norm"],
            "norm_vs_torch": ns["torch norm"] / ns["norm"] if "torch norm" in ns else None,
            "max_grad_norm_cost": ns["adam max_grad_norm"] / ns["adam"],
            "check_finite_cost": ns["adam check_finite"] / ns["adam"],
        })
        del steps, plain, clipped, checked, p, g
    return rows


def format_rows(rows):
    lines = ["Reductions (float32): the gradient norm alone and inside an Adam step, ns per "
             "element (± half the interquartile range)",
             f"  {'n':>5}{'read limit':>13}{'norm':>11}{'% limit':>9}{'torch norm':>13}"
             f"{'× torch':>9}{'adam':>11}{'+max_grad_norm':>16}{'+check_finite':>15}"]
    for r in rows:
        q = r["ns_per_element_quartiles"]

        def cell(key):
            if key not in q:
                return "-"
            return f"{q[key][0]:.3f}±{(q[key][2] - q[key][1]) / 2 / q[key][0] * 100:.0f}%"

        torch_x = f"{r['norm_vs_torch']:.2f}×" if r["norm_vs_torch"] else "-"
        lines.append(f"  {human(r['n']):>5}{cell('read limit'):>13}{cell('norm'):>11}"
                     f"{r['norm_pct_of_read_limit']:>8.0f}%{cell('torch norm'):>13}"
                     f"{torch_x:>9}{cell('adam'):>11}"
                     f"{r['max_grad_norm_cost']:>15.2f}×{r['check_finite_cost']:>14.2f}×")
    lines.append("  +max_grad_norm, +check_finite: that step's time / the plain Adam step's")
    return lines


def verdict(rows):
    r = max(rows, key=lambda r: r["n"])
    return [f"the norm of {human(r['n'])} floats runs at {r['norm_pct_of_read_limit']:.0f} % of "
            f"one read; max_grad_norm costs {r['max_grad_norm_cost']:.2f}× and check_finite "
            f"{r['check_finite_cost']:.2f}× a plain Adam step"]
