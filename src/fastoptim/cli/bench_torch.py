"""fastoptim.torch.Adam's step against torch.optim.Adam: default, foreach=True, fused=True.

Used by ``python -m fastoptim bench --vs torch`` (compare_with_torch) and by
bench/bench_torch_adapter.py (make_adam_step). Importing this module needs torch.

Method. For each size, every variant gets its own params (the same initial values), its
own state and the same fixed grads, and takes one untimed step first (state creation).
Then the variants are timed one step at a time with time.perf_counter, in rounds that
interleave them (the order rotating each round) so that noise from a shared machine hits
them alike; each variant's result is the median of its rounds, with their quartiles.
"""
import gc
import time

import fastoptim.torch as fot  # without torch, its ImportError says how to install it
from fastoptim.cli.bench import timing

torch = fot.torch

VARIANTS = ("fastoptim", "torch", "torch_foreach", "torch_fused")
# torch.optim.Adam's arguments per variant; "torch" is its default (for-loop on the CPU)
TORCH_OPTIONS = {"torch": {}, "torch_foreach": {"foreach": True}, "torch_fused": {"fused": True}}
# one large parameter, and a model-like list of tensors
DEFAULT_SIZES = ((1, 10_000_000), (100, 10_000))


def make_adam_step(variant, tensors, numel, dtype="float32", *, grads=None, seed=0):
    """A function running one Adam step (lr=1e-3) of ``variant`` over ``tensors`` params of
    ``numel`` elements each, its state already created. ``grads`` (a list of tensors) may be
    shared between variants: no variant writes its grads."""
    torch_dtype = getattr(torch, dtype)
    generator = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(numel, generator=generator, dtype=torch_dtype))
              for _ in range(tensors)]
    if grads is None:
        grads = [torch.randn(numel, generator=generator, dtype=torch_dtype)
                 for _ in range(tensors)]
    for p, g in zip(params, grads):
        p.grad = g
    if variant == "fastoptim":
        opt = fot.Adam(params, lr=1e-3)
    else:
        opt = torch.optim.Adam(params, lr=1e-3, **TORCH_OPTIONS[variant])
    opt.step()
    return opt.step


def compare_with_torch(sizes=DEFAULT_SIZES, repeats=20, *, dtype="float32", variants=VARIANTS):
    """Time each variant's Adam step for each size and return one dict per (size, variant).

    A size is ``(tensors, numel)`` (that many params of numel elements) or an int n (one
    param of n elements). Each row: optimizer, variant, tensors, numel, elements, dtype,
    repeats, median_s (seconds per step), seconds_quartiles ([median, first quartile, third
    quartile] of the rounds), ns_per_element, and speedup: how many times
    faster fastoptim.torch.Adam's step is than this variant's (1.0 on the fastoptim row;
    needs "fastoptim" in variants, else None). A variant this torch cannot run on this CPU
    (e.g. fused) is left out of the rows.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rows = []
    for size in sizes:
        tensors, numel = (1, size) if isinstance(size, int) else size
        generator = torch.Generator().manual_seed(1)
        grads = [torch.randn(numel, generator=generator, dtype=getattr(torch, dtype))
                 for _ in range(tensors)]
        steps = {}
        for variant in variants:
            try:
                steps[variant] = make_adam_step(variant, tensors, numel, dtype, grads=grads)
            except RuntimeError:  # e.g. no fused Adam for this device or dtype
                continue
        timings = _interleaved_timings(steps, repeats)
        del steps, grads
        gc.collect()
        base = timings["fastoptim"].median if "fastoptim" in timings else None
        for variant, t in timings.items():
            rows.append({
                "optimizer": "Adam", "variant": variant, "tensors": tensors, "numel": numel,
                "elements": tensors * numel, "dtype": dtype, "repeats": repeats,
                "median_s": t.median, "seconds_quartiles": t.scaled(1),
                "ns_per_element": t.median * 1e9 / (tensors * numel),
                "speedup": t.median / base if base else None,
            })
    return rows


def _interleaved_timings(steps, repeats):
    """{name: Timing} of one step per round, over ``repeats`` rounds."""
    names = list(steps)
    samples = {name: [] for name in names}
    for r in range(repeats):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            start = time.perf_counter()
            steps[name]()
            samples[name].append(time.perf_counter() - start)
    return {name: timing(samples[name]) for name in names}


def format_rows(rows):
    """The rows as a plain-text table; ± is half the interquartile range of the rounds."""
    lines = [f"{'size':>12} {'variant':>14} {'ms/step':>9} {'±':>5} {'ns/elem':>8} "
             f"{'fastoptim ×':>11}"]
    for row in rows:
        size = f"{row['tensors']}×{row['numel']:,}"
        median, q1, q3 = row["seconds_quartiles"]
        spread = f"{100 * (q3 - q1) / 2 / median:.0f}%"
        speedup = "" if row["speedup"] is None else f"{row['speedup']:.2f}"
        lines.append(f"{size:>12} {row['variant']:>14} {median * 1e3:9.3f} {spread:>5} "
                     f"{row['ns_per_element']:8.3f} {speedup:>11}")
    return "\n".join(lines)
