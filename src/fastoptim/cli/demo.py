"""python -m fastoptim demo: the lectures' pictures, computed with fastoptim, drawn with matplotlib.

Writes three PNGs into ``--out`` (default ``./fastoptim-demo``, created; ``--out docs`` in a
checkout regenerates the README's pictures):

    paths.png     SGD, Momentum, Nesterov, AdaGrad, RMSProp and Adam on the anisotropic bowl
                  f(x, y) = x^2/20 + y^2 from (-7, 2), over its contour lines
    ewma.png      a year of noisy daily temperatures (synthetic, seeded) smoothed by
                  fastoptim.ewma for beta = 0.5, 0.9, 0.98; and beta = 0.98 without and with
                  bias correction
    training.png  loss per iteration and per epoch of a 64-32-10 MLP (NumPy forward and
                  backward) trained with each optimizer on mini-batches of scikit-learn's
                  handwritten digits, or of a seeded synthetic stand-in without scikit-learn

and prints each optimizer's final train/test accuracy. matplotlib is an optional extra
(``pip install "fastoptim[plot]"``); it is imported only here, and without it ``main``
prints that hint and returns 2. Everything is seeded: two runs draw the same pictures.
"""
import argparse
import os
import sys

import numpy as np

import fastoptim as fo
from fastoptim.data import minibatches

__all__ = ["main", "bowl", "bowl_gradient", "optimizer_path", "daily_temperatures",
           "synthetic_digits", "load_dataset", "MLP", "train", "train_all"]

# not docs/: run inside a checkout, that would overwrite the README's pictures
DEFAULT_OUT = "fastoptim-demo"
INSTALL_HINT = ('fastoptim demo needs matplotlib, an optional extra: '
                'pip install "fastoptim[plot]"  (or: pip install matplotlib)')

# -- 1. update paths on an anisotropic bowl ------------------------------------------------

PATH_START = (-7.0, 2.0)
PATH_STEPS = 30
# Learning rates that give the classic picture: SGD near the edge of stability in y
# (1 - 2*0.95 = -0.9, so y flips sign every step) and slow in x; Momentum/Nesterov with
# torch's b <- 0.9*b + g, the same trajectory as the velocity form (v = -lr*b).
PATH_OPTIMIZERS = (
    ("SGD", fo.SGD, {"lr": 0.95}),
    ("Momentum", fo.Momentum, {"lr": 0.1, "momentum": 0.9}),
    ("Nesterov", fo.Nesterov, {"lr": 0.1, "momentum": 0.9}),
    ("AdaGrad", fo.AdaGrad, {"lr": 1.5}),
    ("RMSProp", fo.RMSProp, {"lr": 0.1, "alpha": 0.99}),
    ("Adam", fo.Adam, {"lr": 0.3}),
)


def bowl(x, y):
    """f(x, y) = x^2/20 + y^2: curved twenty times more across y than along x."""
    return x * x / 20.0 + y * y


def bowl_gradient(p):
    """The analytic gradient (x/10, 2y) of ``bowl`` at p = [x, y]."""
    return np.array([p[0] / 10.0, 2.0 * p[1]])


def optimizer_path(cls, hyperparameters, steps=PATH_STEPS, start=PATH_START):
    """The (steps + 1, 2) array of points an optimizer visits on ``bowl`` from ``start``."""
    p = np.array(start, dtype=np.float64)
    opt = cls(p, **hyperparameters)
    path = [p.copy()]
    for _ in range(steps):
        opt.step(bowl_gradient(p))
        path.append(p.copy())
    return np.array(path)


def _hyper_text(hyperparameters):
    return ", ".join(f"{'wd' if k == 'weight_decay' else k}={v:g}"
                     for k, v in hyperparameters.items())


def plot_paths(Figure, filename, steps=PATH_STEPS):
    fig = Figure(figsize=(13, 7.6), layout="constrained")
    axes = fig.subplots(2, 3, sharex=True, sharey=True)
    xs, ys = np.meshgrid(np.linspace(-8.5, 4.5, 521), np.linspace(-3, 3, 241))
    levels = [0.02, 0.1, 0.25, 0.5, 0.9, 1.4, 2.0, 2.8, 3.8, 5.0, 6.5, 8.5]
    for ax, (name, cls, hyper) in zip(axes.flat, PATH_OPTIMIZERS):
        path = optimizer_path(cls, hyper, steps)
        ax.contour(xs, ys, bowl(xs, ys), levels=levels, colors="0.72", linewidths=0.8)
        ax.plot(path[:, 0], path[:, 1], "-o", color="tab:red", markersize=3.5, linewidth=1.3,
                label=f"{name} path")
        ax.plot(*path[0], "s", color="black", markersize=7, label="start (−7, 2)")
        ax.plot(0, 0, "*", color="tab:blue", markersize=13, label="minimum (0, 0)")
        end = np.round(path[-1], 2) + 0.0   # + 0.0: no "-0.00" in the title
        ax.set_title(f"{name} ({_hyper_text(hyper)})\nafter {steps} steps: "
                     f"({end[0]:.2f}, {end[1]:.2f}), f = {bowl(*path[-1]):.2g}", fontsize=11)
        ax.set_xlim(-8.5, 4.5)
        ax.set_ylim(-3, 3)
        ax.legend(loc="lower right", fontsize=8.5, framealpha=0.9)
    for ax in axes[-1]:
        ax.set_xlabel("x")
    for ax in axes[:, 0]:
        ax.set_ylabel("y")
    fig.suptitle(f"Update paths on f(x, y) = x²/20 + y² from (−7, 2), {steps} steps each "
                 "(fastoptim optimizers, float64, analytic gradient)", fontsize=13)
    fig.savefig(filename, dpi=100)


# -- 2. EWMA of daily temperatures ---------------------------------------------------------

EWMA_BETAS = (0.5, 0.9, 0.98)


def daily_temperatures(days=365, seed=0):
    """A seeded synthetic year (deg C) of a mild climate: a seasonal sine, coolest (about
    8 deg C) in mid-January and warmest in mid-July, plus daily noise."""
    rng = np.random.default_rng(seed)
    day = np.arange(1, days + 1)
    season = 16.0 - 8.0 * np.cos(2 * np.pi * (day - 15) / 365.0)
    return day, season + rng.normal(0.0, 3.0, days)


def plot_ewma(Figure, filename, seed=0):
    day, temperature = daily_temperatures(seed=seed)
    fig = Figure(figsize=(13, 5.2), layout="constrained")
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": (1.6, 1)})
    colors = {0.5: "tab:green", 0.9: "tab:red", 0.98: "tab:purple"}
    shown = day <= 120
    for ax, rows in ((left, slice(None)), (right, shown)):
        ax.scatter(day[rows], temperature[rows], s=7, color="tab:blue", alpha=0.45,
                   label="daily temperature")
    for beta in EWMA_BETAS:
        window = round(1 / (1 - beta))
        left.plot(day, fo.ewma(temperature, beta), color=colors[beta], linewidth=2,
                  label=f"β = {beta} (≈ last {window} days)")
    left.set_title("Exponentially weighted moving average, fastoptim.ewma (bias-corrected)")
    corrected = fo.ewma(temperature, 0.98)
    raw = fo.ewma(temperature, 0.98, bias_correction=False)
    right.plot(day[shown], raw[shown], color="tab:orange", linewidth=2,
               label=r"β = 0.98, no bias correction: $v_t$")
    right.plot(day[shown], corrected[shown], color="tab:purple", linewidth=2,
               label=r"β = 0.98, bias-corrected: $v_t\,/\,(1-\beta^t)$")
    right.set_xlim(0, 121)
    right.set_title("Start-up bias: v₀ = 0 drags the first weeks toward 0\n"
                    "(first 120 days)")
    for ax in (left, right):
        ax.set_xlabel("day of the year")
        ax.set_ylabel("temperature (°C)")
        ax.grid(alpha=0.3)
    left.legend(loc="upper left", fontsize=9.5)
    right.legend(loc="lower right", fontsize=9.5)
    fig.suptitle("A year of noisy daily temperatures (synthetic, seeded) and its EWMA",
                 fontsize=13)
    fig.savefig(filename, dpi=100)


# -- 3. a small MLP on handwritten digits --------------------------------------------------

TRAIN_OPTIMIZERS = (
    ("SGD", fo.SGD, {"lr": 0.1}),
    ("Momentum", fo.Momentum, {"lr": 0.05, "momentum": 0.9}),
    ("Nesterov", fo.Nesterov, {"lr": 0.05, "momentum": 0.9}),
    ("AdaGrad", fo.AdaGrad, {"lr": 0.05}),
    ("RMSProp", fo.RMSProp, {"lr": 0.002}),
    ("Adam", fo.Adam, {"lr": 0.003}),
    ("AdamW", fo.AdamW, {"lr": 0.003, "weight_decay": 0.01}),
)
# drawn dashed: each follows the solid curve of its close relative almost exactly
TRAIN_DASHED = ("Nesterov", "AdamW")
BATCH_SIZE = 64


def synthetic_digits(n=1797, seed=0):
    """A seeded stand-in for the digits, about as hard to learn: 10 classes of 8x8 images,
    each class a shared random stroke pattern with 12 of its 64 pixels flipped, each sample
    its class pattern with the ink faded at random and Gaussian noise, clipped to 0..16."""
    rng = np.random.default_rng(seed)
    shared = rng.random(64) < 0.35
    prototypes = np.array([shared ^ (rng.permutation(64) < 12) for _ in range(10)]) * 16.0
    y = rng.integers(0, 10, n)
    X = prototypes[y] * rng.uniform(0.4, 1.0, (n, 64)) + rng.normal(0.0, 8.0, (n, 64))
    return np.clip(X, 0.0, 16.0), y


def load_dataset(name="auto", seed=0, test_fraction=0.2):
    """(description, X_train, y_train, X_test, y_test), pixels scaled to [0, 1].

    name: "digits" (scikit-learn's 8x8 handwritten digits, shipped with scikit-learn: no
    download), "synthetic" (``synthetic_digits``), or "auto" (digits when scikit-learn is
    installed, else synthetic). The split is a seeded shuffle.
    """
    if name not in ("auto", "digits", "synthetic"):
        raise ValueError(f"dataset must be 'auto', 'digits' or 'synthetic', got {name!r}")
    X = None
    if name in ("auto", "digits"):
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            if name == "digits":
                raise
        else:
            X, y = load_digits(return_X_y=True)
            description = "scikit-learn handwritten digits (8×8)"
    if X is None:
        X, y = synthetic_digits(seed=seed)
        description = "synthetic digits (seeded; scikit-learn not installed)" \
            if name == "auto" else "synthetic digits (seeded)"
    X = np.ascontiguousarray(X, dtype=np.float64) / 16.0
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = int(round(len(X) * test_fraction))
    test, trn = order[:n_test], order[n_test:]
    return description, X[trn], np.asarray(y)[trn], X[test], np.asarray(y)[test]


class MLP:
    """inputs -> hidden (ReLU) -> classes (softmax), cross-entropy loss; float64.

    ``params`` is [W1, b1, W2, b2], the arrays an optimizer updates in place.
    """

    def __init__(self, n_inputs=64, n_hidden=32, n_classes=10, seed=0):
        rng = np.random.default_rng(seed)
        self.params = [
            rng.normal(0.0, np.sqrt(2.0 / n_inputs), (n_inputs, n_hidden)),   # He for ReLU
            np.zeros(n_hidden),
            rng.normal(0.0, np.sqrt(1.0 / n_hidden), (n_hidden, n_classes)),
            np.zeros(n_classes),
        ]

    def logits(self, X):
        W1, b1, W2, b2 = self.params
        return np.maximum(X @ W1 + b1, 0.0) @ W2 + b2

    def loss(self, X, y):
        return float(_cross_entropy(self.logits(X), y)[0])

    def accuracy(self, X, y):
        return float(np.mean(self.logits(X).argmax(axis=1) == y))

    def loss_and_gradients(self, X, y):
        """The mean cross-entropy over the batch and its gradient for each param."""
        W1, b1, W2, b2 = self.params
        pre = X @ W1 + b1
        hidden = np.maximum(pre, 0.0)
        loss, d_logits = _cross_entropy(hidden @ W2 + b2, y)
        d_pre = (d_logits @ W2.T) * (pre > 0)
        return loss, [X.T @ d_pre, d_pre.sum(axis=0), hidden.T @ d_logits,
                      d_logits.sum(axis=0)]


def _cross_entropy(logits, y):
    """Mean softmax cross-entropy and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(y))
    d_logits = np.exp(log_p)
    d_logits[rows, y] -= 1.0
    return -log_p[rows, y].mean(), d_logits / len(y)


def train(cls, hyperparameters, data, epochs=20, batch_size=BATCH_SIZE, seed=0):
    """Train a fresh MLP (same initial weights and batch order for every optimizer).

    Returns a dict: ``iteration_loss`` (mini-batch loss per step), ``epoch_loss`` (loss on
    the whole training set before training and after each epoch), ``train_accuracy``,
    ``test_accuracy``.
    """
    _, X, y, X_test, y_test = data
    model = MLP(X.shape[1], 32, int(max(y.max(), y_test.max())) + 1, seed=seed)
    opt = cls(model.params, **hyperparameters)
    order = np.random.default_rng(seed + 1)
    iteration_loss, epoch_loss = [], [model.loss(X, y)]
    for _ in range(epochs):
        for xb, yb in minibatches(X, y, batch_size=batch_size, seed=order):
            loss, grads = model.loss_and_gradients(xb, yb)
            opt.step(grads)
            iteration_loss.append(loss)
        epoch_loss.append(model.loss(X, y))
    return {
        "iteration_loss": np.array(iteration_loss),
        "epoch_loss": np.array(epoch_loss),
        "train_accuracy": model.accuracy(X, y),
        "test_accuracy": model.accuracy(X_test, y_test),
    }


def train_all(data, epochs, seed=0):
    return {name: train(cls, hyper, data, epochs=epochs, seed=seed)
            for name, cls, hyper in TRAIN_OPTIMIZERS}


def format_table(results, data):
    lines = [f"{'optimizer':<10} {'hyperparameters':<28} {'train loss':>10} "
             f"{'train acc':>9} {'test acc':>8}"]
    for name, _, hyper in TRAIN_OPTIMIZERS:
        r = results[name]
        lines.append(f"{name:<10} {_hyper_text(hyper):<28} "
                     f"{r['epoch_loss'][-1]:>10.4f} {r['train_accuracy']:>9.1%} "
                     f"{r['test_accuracy']:>8.1%}")
    description, X, _, X_test, _ = data
    return (f"MLP {X.shape[1]}-32-10 on {description}: {len(X)} train / {len(X_test)} test "
            f"rows, batch size {BATCH_SIZE}\n" + "\n".join(lines))


def plot_training(Figure, filename, results, data, epochs):
    fig = Figure(figsize=(13, 5.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    colors = dict(zip((n for n, _, _ in TRAIN_OPTIMIZERS),
                      ("tab:gray", "tab:blue", "tab:cyan", "tab:green", "tab:orange", "tab:red",
                       "tab:purple")))
    for name, _, hyper in TRAIN_OPTIMIZERS:
        r = results[name]
        smooth = fo.EWMA(0.9)
        smoothed = [smooth.update(loss) for loss in r["iteration_loss"]]
        style = "--" if name in TRAIN_DASHED else "-"
        left.plot(np.arange(1, len(smoothed) + 1), smoothed, style, color=colors[name],
                  linewidth=1.5, label=f"{name} ({_hyper_text(hyper)})")
        right.plot(np.arange(epochs + 1), r["epoch_loss"], style, marker="o",
                   color=colors[name], markersize=3.5, linewidth=1.5,
                   label=f"{name}: test accuracy {r['test_accuracy']:.1%}")
    left.set_title("Mini-batch loss per iteration (smoothed by fastoptim.EWMA, β = 0.9)")
    left.set_xlabel("iteration (one mini-batch step)")
    right.set_title("Training-set loss after each epoch")
    right.set_xlabel("epoch")
    right.xaxis.get_major_locator().set_params(integer=True)
    from matplotlib.ticker import FuncFormatter

    for ax in (left, right):
        ax.set_yscale("log")
        # plain numbers (0.1, 0.2, 0.5, 1, 2), not 10^-1 or 2x10^0
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_label_2_and_5))
        ax.set_ylabel("cross-entropy loss (log scale)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=9, loc="best")
    description, X, _, _, _ = data
    fig.suptitle(f"Training a {X.shape[1]}-32-10 ReLU MLP on {description}, mini-batches of "
                 f"{BATCH_SIZE}\n(the same initial weights and batch order for every optimizer)",
                 fontsize=12.5)
    fig.savefig(filename, dpi=100)


def _label_2_and_5(value, _):
    """Label the minor ticks 2 and 5 of each decade of a log axis, no others."""
    mantissa = value / 10.0 ** np.floor(np.log10(value))
    return f"{value:g}" if np.isclose(mantissa, 2) or np.isclose(mantissa, 5) else ""


# -- the command ---------------------------------------------------------------------------

def build_parser(prog="fastoptim demo"):
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Draw the lectures' pictures with fastoptim: optimizer paths on an "
                    "anisotropic bowl (paths.png), EWMA of a noisy year (ewma.png) and an "
                    "MLP trained on handwritten digits with each optimizer (training.png). "
                    'Needs matplotlib: pip install "fastoptim[plot]".')
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"folder for the PNGs, created if missing (default: ./{DEFAULT_OUT}"
                             "; --out docs in a checkout redraws the README's pictures)")
    parser.add_argument("--quick", action="store_true",
                        help="train for fewer epochs (for tests; the pictures are coarser)")
    parser.add_argument("--epochs", type=int, default=None, metavar="N",
                        help="training epochs per optimizer (default 20, --quick 4)")
    parser.add_argument("--dataset", choices=("auto", "digits", "synthetic"), default="auto",
                        help="training data: digits needs scikit-learn; auto falls back to "
                             "seeded synthetic digits without it (default auto)")
    parser.add_argument("--seed", type=int, default=0, help="seed for all random data (0)")
    return parser


def main(argv=None):
    """Run ``fastoptim demo``; returns the exit status (0, or 2 without matplotlib)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    epochs = args.epochs if args.epochs is not None else (4 if args.quick else 20)
    if epochs < 1:
        parser.error(f"--epochs must be >= 1, got {epochs}")
    try:
        import matplotlib  # noqa: F401  (first: a hidden/missing package fails here)

        # Figure alone, no pyplot: PNGs are drawn by the Agg canvas, with no display and no
        # change to the caller's global backend
        from matplotlib.figure import Figure
    except ImportError as exc:
        print(f"{INSTALL_HINT}\n({exc})", file=sys.stderr)
        return 2
    try:
        data = load_dataset(args.dataset, seed=args.seed)
    except ImportError as exc:
        print(f"fastoptim demo --dataset digits needs scikit-learn: pip install scikit-learn "
              f"({exc})", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    written = []

    def save(name, draw, *draw_args):
        filename = os.path.join(args.out, name)
        draw(Figure, filename, *draw_args)
        written.append(filename)

    save("paths.png", plot_paths)
    save("ewma.png", plot_ewma, args.seed)
    results = train_all(data, epochs, seed=args.seed)
    save("training.png", plot_training, results, data, epochs)
    print(format_table(results, data))
    print("\nwrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
