"""Lion and Schedule-Free AdamW against published code, when it is installed: lion-pytorch
(the common PyTorch implementation of Chen et al.'s Lion; `pip install lion-pytorch`) and
schedulefree (the authors' own, Defazio et al.; `pip install schedulefree`). Both are small
pure-Python packages on top of torch; each test is skipped without its package.

Trajectories of both front ends (the NumPy classes, both backends, and fastoptim.torch) are
compared with the package's optimizer over the same gradients, float32 and float64, params
and state after every step, as test_against_torch.py compares with torch.optim: each array
within 256 eps of its own scale. Lion's update is lr*sign(c), so its params agree to the bit
unless a c within rounding of 0 changes its sign (none does in these runs); Schedule-Free is
also compared with schedulefree's simplified reference that keeps x, y and z explicitly, and
through train()/eval() switches.
"""
import numpy as np
import pytest

import fastoptim as fo
from conftest import DTYPES, assert_close_to_scale

torch = pytest.importorskip("torch")
import fastoptim.torch as fot  # noqa: E402

ULPS = 256
SHAPES = [(7,), (3, 5)]
STEPS = 30


class NumpyRun:
    """A fastoptim NumPy optimizer over copies of the params."""

    def __init__(self, cls, params, backend, **hyperparameters):
        self.params = [p.copy() for p in params]
        self.opt = cls(self.params, backend=backend, **hyperparameters)

    def step(self, grads):
        self.opt.step([g.copy() for g in grads])

    def arrays(self):
        return self.params

    def state(self, i, name):
        return self.opt.state[i][name]

    def train(self):
        self.opt.train()

    def eval(self):
        self.opt.eval()


class TorchRun:
    """A torch optimizer (fastoptim.torch's or the package's) over tensors copied from the
    params; every step gets fresh gradient tensors (schedulefree divides them in place)."""

    def __init__(self, cls, params, **hyperparameters):
        self.tensors = [torch.tensor(p.copy(), requires_grad=True) for p in params]
        self.opt = cls(self.tensors, **hyperparameters)

    def step(self, grads):
        for tensor, grad in zip(self.tensors, grads):
            tensor.grad = torch.tensor(grad.copy())
        self.opt.step()

    def arrays(self):
        return [t.detach().numpy() for t in self.tensors]

    def state(self, i, name):
        return self.opt.state[self.tensors[i]][name].numpy()

    def train(self):
        self.opt.train()

    def eval(self):
        self.opt.eval()


def make_ours(front_end, cls_name, params, **hyperparameters):
    if front_end == "fastoptim.torch":
        return TorchRun(getattr(fot, cls_name), params, **hyperparameters)
    return NumpyRun(getattr(fo, cls_name), params, backend=front_end, **hyperparameters)


FRONT_ENDS = ["c", "numpy", "fastoptim.torch"]


def problem(dtype, seed=7):
    """Params and STEPS gradients of mixed magnitudes."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[(rng.standard_normal(s) * rng.choice([1e-3, 1.0, 30.0], size=s)).astype(dtype)
              for s in SHAPES] for _ in range(STEPS)]
    return params, grads


def assert_same_run(ours, theirs, state_names, dtype, where):
    rtol = ULPS * np.finfo(dtype).eps
    for i, (a, b) in enumerate(zip(ours.arrays(), theirs.arrays())):
        assert a.dtype == b.dtype == dtype
        assert_close_to_scale(a, b, rtol, f"param {i} {where}")
        for name in state_names:
            assert_close_to_scale(ours.state(i, name), theirs.state(i, name), rtol,
                                  f"state {name!r} of param {i} {where}")


# -- Lion ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("hyper", [dict(lr=1e-2), dict(lr=1e-2, betas=(0.8, 0.95),
                                                       weight_decay=0.5)],
                         ids=["defaults", "betas-weight_decay"])
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_lion_matches_lion_pytorch(front_end, hyper, dtype):
    lion_pytorch = pytest.importorskip("lion_pytorch")
    params, grads = problem(dtype)
    initial = [p.copy() for p in params]
    ours = make_ours(front_end, "Lion", params, **hyper)
    theirs = TorchRun(lion_pytorch.Lion, params, **hyper)
    for t, grad in enumerate(grads, start=1):
        ours.step(grad)
        theirs.step(grad)
        assert_same_run(ours, theirs, ["exp_avg"], dtype, f"at step {t}")
    # and the params did move: steps of lr, in both directions
    assert max(np.abs(a - b).max() for a, b in zip(ours.arrays(), initial)) > 5 * hyper["lr"]


# -- Schedule-Free AdamW ---------------------------------------------------------------------

SCHEDULEFREE_HYPER = [
    dict(lr=1e-2),
    dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05, warmup_steps=5, r=0.5,
         weight_lr_power=1.0),
]


def schedulefree_class(implementation):
    schedulefree = pytest.importorskip("schedulefree")
    if implementation == "reference":   # x, y and z kept explicitly (state "x", "y", "z")
        return schedulefree.AdamWScheduleFreeReference
    foreach = implementation == "foreach"

    def make(params, **hyperparameters):
        return schedulefree.AdamWScheduleFree(params, foreach=foreach, **hyperparameters)
    return make


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("hyper", SCHEDULEFREE_HYPER, ids=["defaults", "all-options"])
@pytest.mark.parametrize("implementation", ["for-loop", "foreach", "reference"])
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_schedulefree_matches_the_authors_code(front_end, implementation, hyper, dtype,
                                              capsys):
    theirs_class = schedulefree_class(implementation)
    params, grads = problem(dtype)
    ours = make_ours(front_end, "ScheduleFreeAdamW", params, **hyper)
    theirs = TorchRun(theirs_class, params, **hyper)
    for run in (ours, theirs):
        run.train()
    for t, grad in enumerate(grads, start=1):
        ours.step(grad)
        theirs.step(grad)
        assert_same_run(ours, theirs, ["z", "exp_avg_sq"], dtype, f"at step {t} (y)")
        if t % 10 == 5:     # evaluate at x, then go on training from y
            for run in (ours, theirs):
                run.eval()
            assert_same_run(ours, theirs, [], dtype, f"at step {t} (x, eval mode)")
            for run in (ours, theirs):
                run.train()
    if front_end == "fastoptim.torch":    # the group's counters, as the authors' code has them
        for key in ("k", "weight_sum", "lr_max", "train_mode"):
            assert ours.opt.param_groups[0][key] == pytest.approx(
                theirs.opt.param_groups[0][key], rel=1e-12), key
    capsys.readouterr()     # the reference prints "Switching to train mode"


@pytest.mark.parametrize("direction", ["schedulefree->fastoptim", "fastoptim->schedulefree"])
def test_schedulefree_checkpoint_moves_between_the_authors_code_and_fastoptim(direction):
    """10 steps with one, state_dict() in eval mode (as the authors ask), load_state_dict
    into the other, 10 more steps: the same as 20 steps with the authors' code."""
    theirs_class = schedulefree_class("for-loop")
    dtype = np.float64
    hyper = SCHEDULEFREE_HYPER[1]
    params, grads = problem(dtype)
    straight = TorchRun(theirs_class, params, **hyper)
    straight.train()
    for grad in grads[:20]:
        straight.step(grad)

    first_class, second_class = ((theirs_class, fot.ScheduleFreeAdamW)
                                 if direction == "schedulefree->fastoptim"
                                 else (fot.ScheduleFreeAdamW, theirs_class))
    first = TorchRun(first_class, params, **hyper)
    first.train()
    for grad in grads[:10]:
        first.step(grad)
    first.eval()
    saved = first.opt.state_dict()
    second = TorchRun(second_class, [a.copy() for a in first.arrays()], **hyper)
    second.opt.load_state_dict(saved)
    second.train()
    for grad in grads[10:20]:
        second.step(grad)
    assert_same_run(second, straight, ["z", "exp_avg_sq"], dtype, "after 20 steps")
    assert second.opt.param_groups[0]["k"] == 20
