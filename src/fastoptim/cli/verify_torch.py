"""`python -m fastoptim verify --against torch`: how far torch.optim is from the exact reference.

For each optimizer configuration below and each of torch's implementations of it (the
for-loop, foreach and fused, where torch has them), fastoptim.testing.compare_optimizer runs
torch side by side with fastoptim's NumPy reference on the same random problem. A cell is
the largest ULP distance of the params after the last step (free-running: the drift), and in
parentheses the largest error of a single step (torch re-synchronised to the reference after
every step). Configurations whose optimizer fastoptim or torch does not have are left out;
"-" marks an implementation torch does not offer for that optimizer or dtype.
"""
import functools
import sys
import time

import numpy as np

from fastoptim import testing

# The one list of what the table covers: (row label, the optimizer's name in torch.optim,
# looked up in fastoptim case-insensitively, hyperparameters for both). Optimizers fastoptim
# does not have yet are skipped, so new ones appear here as soon as fastoptim adds them.
# Adafactor is left out: torch's variant (beta2_decay, no first moment) is not the paper's.
CONFIGS = (
    ("SGD", "SGD", dict(lr=0.01)),
    ("SGD momentum", "SGD", dict(lr=1e-3, momentum=0.9)),
    ("SGD nesterov", "SGD", dict(lr=1e-3, momentum=0.9, nesterov=True)),
    ("Adagrad", "Adagrad", dict(lr=0.01)),
    ("RMSprop", "RMSprop", dict(lr=0.01)),
    ("RMSprop centered momentum", "RMSprop", dict(lr=1e-3, centered=True, momentum=0.9)),
    ("Adam", "Adam", dict(lr=1e-3)),
    ("Adam amsgrad", "Adam", dict(lr=1e-3, amsgrad=True)),
    ("AdamW", "AdamW", dict(lr=1e-3, weight_decay=1e-2)),
    ("Adadelta", "Adadelta", {}),
    ("Adamax", "Adamax", {}),
    ("NAdam", "NAdam", {}),
    ("RAdam", "RAdam", {}),
    ("Rprop", "Rprop", {}),
    ("ASGD", "ASGD", {}),
)
IMPLEMENTATIONS = (("for-loop", dict(foreach=False)), ("foreach", dict(foreach=True)),
                   ("fused", dict(fused=True)))
DTYPES = ("float32", "float64", "bfloat16", "float16")
DEFAULT_STEPS = 10
SEED = 0


def _torch_offers(torch_class, flags, hyperparameters, dtype):
    """Whether torch builds and steps this implementation for this dtype on the CPU."""
    import torch

    tensor = torch.zeros(3, dtype=getattr(torch, dtype), requires_grad=True)
    try:
        optimizer = torch_class([tensor], **hyperparameters, **flags)
        tensor.grad = torch.ones_like(tensor)
        optimizer.step()
    except (TypeError, ValueError, RuntimeError):
        return False
    return True


def _fastoptim_offers(reference_class, hyperparameters, dtype):
    """Whether fastoptim's reference takes params of this dtype."""
    try:
        array = np.zeros(3, testing.float_dtype(dtype))
        reference_class(array, backend="numpy", **hyperparameters)
    except TypeError:
        return False
    return True


def measure(dtypes, sizes, steps, progress=None):
    """Rows of {label, cells}: cells[(dtype, implementation)] is (drift, one-step max ULP of
    the params) or None where torch has no such implementation. Also the dtypes fastoptim
    supports and the labels skipped because fastoptim or torch lacks the optimizer.

    torch runs on one thread: element-wise updates give the same bits on any number, and
    small arrays on a shared machine go faster without waiting for a second thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _measure(torch, dtypes, sizes, steps, progress)
    finally:
        torch.set_num_threads(threads)


def _measure(torch, dtypes, sizes, steps, progress):
    rows, skipped, supported = [], [], set()
    for label, name, hyper in CONFIGS:
        torch_class = getattr(torch.optim, name, None)
        try:
            reference_class = testing.resolve_optimizer(name)
        except ValueError:
            reference_class = None
        if torch_class is None or reference_class is None:
            skipped.append(label)
            continue
        cells = {}
        for dtype in dtypes:
            if not _fastoptim_offers(reference_class, hyper, dtype):
                continue
            supported.add(dtype)
            for implementation, flags in IMPLEMENTATIONS:
                if progress:
                    progress(f"{label}, {dtype}, {implementation}")
                if not _torch_offers(torch_class, flags, hyper, dtype):
                    cells[dtype, implementation] = None
                    continue
                report = testing.compare_optimizer(
                    functools.partial(torch_class, **flags), reference_class, dtype=dtype,
                    sizes=sizes, steps=steps, seed=SEED, **hyper)
                cells[dtype, implementation] = (report.drift_free[-1],
                                                max(report.drift_resynced))
        rows.append({"label": label, "cells": cells})
    return rows, [d for d in dtypes if d in supported], skipped


def _cell(value):
    if value is None:
        return "-"
    drift, one_step = value
    return f"{testing._ulp_cell(drift)} ({testing._ulp_cell(one_step)})"


def format_table(rows, dtypes):
    """The table as text: one row per configuration, one column group per dtype."""
    names = [name for name, _ in IMPLEMENTATIONS]
    label_width = max([len("optimizer")] + [len(r["label"]) for r in rows])
    cells = {(r["label"], key): _cell(v) for r in rows for key, v in r["cells"].items()}
    width = max([10] + [len(c) for c in cells.values()])
    group = len(names) * (width + 2)
    lines = [" " * label_width + "".join(f"  {d:^{group - 2}}" for d in dtypes),
             f"{'optimizer':<{label_width}}"
             + "".join(f"  {n:>{width}}" for _ in dtypes for n in names)]
    for r in rows:
        lines.append(f"{r['label']:<{label_width}}" + "".join(
            f"  {cells.get((r['label'], (d, n)), '-'):>{width}}" for d in dtypes for n in names))
    return "\n".join(lines)


def verify_against_torch(sizes=testing.DEFAULT_SIZES, dtypes=DTYPES, steps=DEFAULT_STEPS,
                         out=None):
    """Print the table; return the exit status (0: printed; the numbers are information)."""
    import torch

    out = out or sys.stdout
    start = time.perf_counter()

    def progress(text):   # on a terminal only: a log would keep every line
        print(f"\rfastoptim verify --against torch: {text:<60}", end="", file=sys.stderr)

    tty = sys.stderr.isatty()

    available, notes = [], []
    for dtype in dtypes:
        try:
            testing.float_dtype(dtype)
            available.append(dtype)
        except TypeError as exc:      # bfloat16 without ml_dtypes
            notes.append(f"not shown: {dtype} ({exc})")
    rows, shown, skipped = measure(available, sizes, steps, progress if tty else None)
    if tty:
        print("\r" + " " * 96 + "\r", end="", file=sys.stderr)
    print(f"fastoptim verify --against torch: torch {torch.__version__} (CPU) against "
          "fastoptim's NumPy reference", file=out)
    print(f"{steps} steps from the same random start; {len(sizes)} params of sizes "
          f"{' '.join(map(str, sizes))}; seed {SEED}", file=out)
    print("max ULP distance of the params after the last step, and in parentheses the "
          "largest one-step error\n(torch re-synchronised to the reference after every "
          "step); -: torch has no such implementation\n", file=out)
    if shown:
        print(format_table(rows, shown), file=out)
    missing = [d for d in available if d not in shown]
    if missing:
        notes.append(f"not shown: {', '.join(missing)} (fastoptim's reference does not take "
                     "them)")
    if skipped:
        notes.append(f"not shown: {', '.join(skipped)} (fastoptim or torch does not have it)")
    if notes:
        print("\n" + "\n".join(notes), file=out)
    print(f"\n({time.perf_counter() - start:.0f} s)", file=out)
    return 0
