"""The "models" section of `python -m fastoptim bench --vs torch`: one optimizer step of real
models' parameter lists with fastoptim.torch against torch.optim (fused and default), and
the cost each extra tensor adds to a step, for every adapter.

Models: 200 × Linear(64, 64) (400 tensors, 0.8M parameters: per-tensor overhead dominates),
12 × Linear(1024, 1024) (24 tensors, 12.6M: memory-bound), and a small channels_last conv
net (the usual fast CPU layout). Each variant has its own model (the same initial values)
and the same fixed gradients, takes one untimed step (state creation), then the variants
are timed in interleaved rounds, twice: steps back to back, and each step right after a
torch matmul (a training step follows the backward pass, whose OpenMP threads may still
spin on the cores). The result is the median with the interquartile range.

The per-tensor cost is the slope of the step time over models of 100, 200 and 400 tiny
tensors (64 elements each: the arithmetic is negligible), for each adapter, next to
fastoptim's own list form on the same arrays.
"""
import gc
import statistics
import time

import numpy as np

import fastoptim
import fastoptim.torch as fot  # without torch, its ImportError says how to install it

torch = fot.torch

MODELS = {
    "200 × Linear(64, 64)": lambda: torch.nn.Sequential(
        *[torch.nn.Linear(64, 64) for _ in range(200)]),
    "12 × Linear(1024, 1024)": lambda: torch.nn.Sequential(
        *[torch.nn.Linear(1024, 1024) for _ in range(12)]),
    "conv net, channels_last": lambda: torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3), torch.nn.Conv2d(64, 128, 3), torch.nn.Conv2d(128, 128, 3),
        torch.nn.Conv2d(128, 256, 3), torch.nn.Flatten(), torch.nn.Linear(256, 10),
    ).to(memory_format=torch.channels_last),
}
VARIANTS = {"fastoptim.torch": None, "torch fused": dict(fused=True),
            "torch default": {}}
# the adapters whose per-tensor cost is measured, with torch.optim's arguments
ADAPTERS = {"Adam": {}, "AdamW": {}, "SGD": dict(momentum=0.9), "RMSprop": {},
            "Adagrad": {}, "Adadelta": {}, "Adamax": {}, "NAdam": {}, "RAdam": {},
            "Rprop": {}, "ASGD": {}, "Lion": {}, "LAMB": {}}
TENSOR_COUNTS = (100, 200, 400)


def _interleaved(steps, repeats, before=None):
    """Quartiles (ms) of each step over rounds that visit every variant in turn. Without
    ``before`` a variant takes three steps per visit and the last two are timed: back to
    back, as in a loop that only steps. With it, every timed step follows one untimed call
    of ``before`` (a torch matmul: as after the backward pass)."""
    samples = {name: [] for name in steps}
    names = list(steps)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            for k in range(1 if before else 3):
                if before:
                    before()
                start = time.perf_counter()
                steps[name]()
                if before or k:
                    samples[name].append(time.perf_counter() - start)
    return {name: np.percentile(s, [25, 50, 75]) * 1e3 for name, s in samples.items()}


def _torch_matmul():
    """A parallel torch op, such as the backward pass ends with: its OpenMP threads may
    still spin on the cores when the step starts."""
    a = torch.ones(256, 256)
    return lambda: torch.mm(a, a)


def _optimizer(variant, name, params, args):
    if VARIANTS[variant] is None:
        return getattr(fot, name)(params, **args)
    return getattr(torch.optim, name)(params, **args, **VARIANTS[variant])


def model_rows(ctx):
    """Milliseconds per Adam step of each model with each variant."""
    repeats = ctx.plan.adapter_repeats
    rows = []
    for label, make in MODELS.items():
        ctx.progress(f"models: {label}")
        torch.manual_seed(0)
        template = make()
        steps = {}
        for variant in VARIANTS:
            model = make()
            model.load_state_dict(template.state_dict())
            params = list(model.parameters())
            for p, q in zip(params, template.parameters()):
                p.grad = torch.randn_like(q).to(memory_format=torch.preserve_format)
            try:
                opt = _optimizer(variant, "Adam", params, dict(lr=1e-3))
                opt.step()
            except RuntimeError:        # no fused Adam for this device or dtype
                continue
            steps[variant] = opt.step
        n = sum(p.numel() for p in template.parameters())
        tensors = len(list(template.parameters()))
        for timing, before in (("back to back", None), ("after a torch op", _torch_matmul())):
            ms = _interleaved(steps, repeats, before)
            ours = ms["fastoptim.torch"][1]
            rows.append({"model": label, "timing": timing, "tensors": tensors, "elements": n,
                         "ms_per_step_quartiles": {k: list(v) for k, v in ms.items()},
                         "speedup": {k: v[1] / ours for k, v in ms.items()
                                     if k != "fastoptim.torch"}})
        del steps, template
        gc.collect()
    return {"rows": rows, "per_tensor": per_tensor_rows(ctx)}


def per_tensor_rows(ctx, numel=64):
    """µs each extra tensor adds to a step: the slope over TENSOR_COUNTS tiny tensors."""
    repeats = ctx.plan.adapter_repeats
    ctx.progress("models: the cost of each extra tensor, every adapter")
    out = {}
    for name, args in ADAPTERS.items():
        steps = {}
        for k in TENSOR_COUNTS:
            params = [torch.nn.Parameter(torch.randn(numel)) for _ in range(k)]
            for p in params:
                p.grad = torch.randn(numel)
            opt = fot.ScheduleFreeAdamW(params) if name == "ScheduleFreeAdamW" else \
                getattr(fot, name)(params, **args)
            opt.step()
            steps[("adapter", k)] = opt.step
            arrays = [p.detach().numpy() for p in params]
            grads = [p.grad.numpy() for p in params]
            native = getattr(fastoptim, name)(arrays, **args)
            steps[("fastoptim", k)] = (lambda o, g: lambda: o.step(g))(native, grads)
        ms = _interleaved(steps, repeats)
        out[name] = {kind: _slope(TENSOR_COUNTS, [ms[kind, k][1] * 1e3 for k in TENSOR_COUNTS])
                     for kind in ("adapter", "fastoptim")}
    return out


def _slope(xs, ys):
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    return (sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
            / sum((x - mean_x) ** 2 for x in xs))


def _cell(q):
    median, spread = q[1], (q[2] - q[0]) / 2 / q[1] if q[1] else 0.0
    return f"{median:.2f}±{spread * 100:.0f}%"


def format_models(models):
    lines = ["Models: one Adam step (ms, ± half the interquartile range); × = that variant's "
             "time / fastoptim.torch's.",
             "  back to back: steps following steps; after a torch op: each step follows a "
             "torch matmul (as after backward),",
             "  whose OpenMP threads may still spin on the cores"]
    header = f"  {'model':<26}{'timing':<18}{'tensors':>8}{'elements':>11}" + "".join(
        f"{v:>18}" for v in VARIANTS) + "".join(f"{'× ' + v:>16}" for v in VARIANTS
                                                 if v != "fastoptim.torch")
    lines.append(header)
    for r in models["rows"]:
        q = r["ms_per_step_quartiles"]
        lines.append(f"  {r['model']:<26}{r['timing']:<18}{r['tensors']:>8}"
                     f"{r['elements']:>11,}" + "".join(
            f"{_cell(q[v]) if v in q else '-':>18}" for v in VARIANTS) + "".join(
            f"{r['speedup'][v]:>15.2f}×" if v in r["speedup"] else f"{'-':>16}"
            for v in VARIANTS if v != "fastoptim.torch"))
    lines += ["", "  µs each extra tensor adds to a step (slope over "
              f"{', '.join(map(str, TENSOR_COUNTS))} tensors of 64 elements):",
              f"  {'optimizer':<12}{'fastoptim.torch':>17}{'fastoptim':>11}{'ratio':>8}"]
    for name, slopes in models["per_tensor"].items():
        ratio = slopes["adapter"] / slopes["fastoptim"] if slopes["fastoptim"] > 0 else None
        lines.append(f"  {name:<12}{slopes['adapter']:>17.2f}{slopes['fastoptim']:>11.2f}"
                     + (f"{ratio:>7.1f}×" if ratio else f"{'-':>8}"))
    return lines


def verdict_models(models):
    phrases = []
    for r in models["rows"]:
        fused = r["speedup"].get("torch fused")
        if fused:
            phrases.append(f"fastoptim.torch.Adam on {r['model']} ({r['timing']}): "
                           f"{fused:.2f}× torch fused")
    adam = models["per_tensor"].get("Adam")
    if adam:
        phrases.append(f"each extra tensor adds {adam['adapter']:.2f} µs to a fastoptim.torch "
                       f"step ({adam['fastoptim']:.2f} µs to fastoptim's own)")
    return phrases



