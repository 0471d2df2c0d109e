"""Adafactor: the compiled kernel against the NumPy reference (bits, every shape class and
thread count), a step computed by hand, torch.optim.Adafactor (trajectories, the torch
adapter over a training loop, checkpoints both ways), refusals and interruptions that
change nothing.

Tolerance against torch: as tests/test_against_torch.py, max|fastoptim - torch| <= 256
machine epsilons of the array's own scale. torch computes the same formula with other
roundings (lerp for the averages, rsqrt(row_var @ col_var / mean) where the kernel takes
sqrt(row) * sqrt(col / mean), its own norms); over the cases below, 40 steps and 5 seeds,
the worst measured was 62 eps (float32, the displacement of the params), the state 4 eps.
"""
import functools
import math
import os
import signal

import numpy as np
import pytest

import fastoptim as fo
from conftest import DTYPES, assert_same_bits, kernels, needs_kernels
from fastoptim import _bind, _kernel_specs, reference
from test_threads import parallel_threshold

ULPS = 256

# 1-D around the lane count and a reduction block, matrices with rows around a block and
# several row blocks, batches, empty ones and a scalar
SHAPES = [(), (1,), (17,), (2049,), (1, 1), (5, 3), (3, 2047), (2, 2049), (70, 33),
          (2, 3, 5), (3, 1, 16), (0,), (0, 4), (3, 0), (2, 0, 3)]
OPTIONS = [
    {},
    dict(eps1=1e-3, d=2.0, beta2_decay=-0.5),
    dict(weight_decay=0.1, maximize=True, grad_factor=0.5),
]


def state_for(param, dtype=None, value=0.0):
    """row_var, col_var, variance for param (None where it has none), filled with value."""
    dtype = dtype or param.dtype
    return [None if shape is None else np.full(shape, value, dtype)
            for shape in (_kernel_specs.adafactor_state_shape(name, param.shape)
                          for name in ("row_var", "col_var", "variance"))]


def run_steps(module, param, grads, state=None, *, threads=None, lr=0.01, **options):
    """Steps 1, 2, ... of module.adafactor_step on copies; returns [param, state...]."""
    many = isinstance(param, list)
    params = [p.copy() for p in param] if many else param.copy()
    if state is None:
        state = ([state_for(p) for p in params] if many else state_for(params))
    state = [[s if s is None else s.copy() for s in st] for st in state] if many else \
        [s if s is None else s.copy() for s in state]
    columns = [list(c) for c in zip(*state)] if many else state
    for step, grad in enumerate(grads, start=1):
        module.adafactor_step(params, grad, *columns, lr=lr, step=step, threads=threads,
                              **options)
    return [params] + [c for c in columns if c is not None]


def random(shape, dtype, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return np.array(rng.standard_normal(shape) * scale, dtype=dtype)


def assert_all_same_bits(actual, desired, what):
    for i, (a, d) in enumerate(zip(actual, desired)):
        if isinstance(a, list):
            assert_all_same_bits(a, d, f"{what}[{i}]")
        else:
            assert_same_bits(a, d, f"{what}: buffer {i}")


# -- the compiled kernel is the reference, bit for bit -----------------------------------------

@needs_kernels
@pytest.mark.parametrize("options", OPTIONS, ids=["default", "eps1-d-decay", "wd-max-factor"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_fast_equals_reference_bit_for_bit(shape, dtype, options):
    param = random(shape, dtype, 1)
    grads = [random(shape, dtype, 2 + t, scale=10.0 ** (t - 1)) for t in range(3)]
    fast = run_steps(kernels, param, grads, **options)
    slow = run_steps(reference, param, grads, **options)
    assert_all_same_bits(fast, slow, f"{shape} {np.dtype(dtype)}")
    if param.size:
        assert not np.array_equal(fast[0], param), "the step did not move the param"
    else:   # an empty param and its state are left as they are
        for a, b in zip(fast, [param] + [s for s in state_for(param) if s is not None]):
            assert_same_bits(a, b, "empty")


@needs_kernels
def test_list_of_mixed_params_is_one_call_per_param():
    shapes_dtypes = [((5,), np.float32), ((3, 4), np.float64), ((0,), np.float32),
                     ((2, 3, 2049), np.float32), ((2, 2, 2), np.float64), ((), np.float32)]
    params = [random(s, d, i) for i, (s, d) in enumerate(shapes_dtypes)]
    grads = [[random(p.shape, p.dtype, 10 + 7 * t + i) for i, p in enumerate(params)]
             for t in range(3)]
    alone = [run_steps(kernels, p, [g[i] for g in grads]) for i, p in enumerate(params)]
    for module in (kernels, reference):
        together = run_steps(module, params, grads)
        for i, single in enumerate(alone):
            # row_var, col_var, variance: None where a param has none
            mine = [together[0][i]] + [c[i] for c in together[1:] if c[i] is not None]
            assert_all_same_bits(mine, single, f"{module.__name__} param[{i}]")


@needs_kernels
@pytest.mark.parametrize("threads", [2, 3, 7])
def test_thread_count_never_changes_a_bit(threads):
    """Tiles of ~100 elements: columns split, row blocks on different threads, batches."""
    params = [random(s, np.float32, i) for i, s in enumerate(
        [(300, 70), (40, 5000), (3, 70, 33), (9000,), (5, 3)])]
    grads = [[random(p.shape, p.dtype, 20 + 9 * t + i) for i, p in enumerate(params)]
             for t in range(2)]
    one = run_steps(kernels, params, grads, threads=1)
    with parallel_threshold(100):
        many = run_steps(kernels, params, grads, threads=threads)
    assert_all_same_bits(many, one, f"threads={threads}")


LOW_PRECISION = [np.dtype(np.float16)]
try:
    import ml_dtypes
    LOW_PRECISION.append(np.dtype(ml_dtypes.bfloat16))
except ImportError:
    pass


@needs_kernels
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_low_precision_params_and_state(dtype, rounding):
    """16-bit params, state in float32 or 16 bits, or float32 masters with a 16-bit copy:
    widened, computed in float32 and rounded once, as the reference does."""
    for shape in [(7, 2049), (3, 5, 4), (40,)]:
        param = random(shape, dtype, 3)
        grads = [random(shape, dtype, 4 + t) for t in range(2)]
        for state_dtype in (np.float32, dtype):
            state = state_for(param, state_dtype)
            fast = run_steps(kernels, param, grads, state, rounding=rounding, seed=5)
            slow = run_steps(reference, param, grads, state, rounding=rounding, seed=5)
            assert_all_same_bits(fast, slow, f"{shape} {dtype} state {state_dtype}")
        master = param.astype(np.float32)
        copies = [np.zeros(shape, dtype) for _ in range(2)]
        fast = run_steps(kernels, master, grads, param_copy=copies[0], rounding=rounding)
        slow = run_steps(reference, master, grads, param_copy=copies[1], rounding=rounding)
        assert_all_same_bits(fast + copies[:1], slow + copies[1:], f"{shape} master")


@pytest.mark.parametrize("dtype,epsilon", [(np.float32, 2.0**-23), (np.float64, 2.0**-52)])
def test_eps1_none_is_the_machine_epsilon_of_the_params_dtype(kernel_module, dtype, epsilon):
    """Gradients far below eps1, so that the eps1 floor is what divides them."""
    param = random((6, 5), dtype, 1)
    grads = [random((6, 5), dtype, 2, scale=epsilon / 1000)]
    implied = run_steps(kernel_module, param, grads)
    explicit = run_steps(kernel_module, param, grads, eps1=epsilon)
    other = run_steps(kernel_module, param, grads, eps1=2 * epsilon)
    assert_all_same_bits(implied, explicit, "eps1=None")
    assert not np.array_equal(implied[0], other[0])


# -- a step computed by hand -------------------------------------------------------------------

def hand_adafactor(p, grads, *, lr, beta2_decay, eps1, eps2, d, weight_decay, maximize):
    """torch.optim.Adafactor's algorithm on nested lists, in Python floats, one matrix (a
    list of rows) or one vector (a flat list). Returns the params and each step's clipping
    denominator."""
    denoms = []
    matrix = isinstance(p[0], list)
    rows = p if matrix else [p]
    n = sum(len(r) for r in rows)
    R = [0.0] * len(rows)
    C = [0.0] * len(rows[0])
    V = [[0.0] * len(r) for r in rows]
    for t, g in enumerate(grads, start=1):
        g = g if matrix else [g]
        g = [[-x for x in r] for r in g] if maximize else g
        one_minus_beta2 = t ** beta2_decay
        rho = min(lr, 1 / math.sqrt(t))
        alpha = max(eps2, math.sqrt(sum(x * x for r in rows for x in r) / n)) * rho
        rows = [[x * (1 - lr * weight_decay) for x in r] for r in rows]
        if matrix:
            for i, r in enumerate(g):
                R[i] += one_minus_beta2 * (sum(x * x for x in r) / len(r) - R[i])
            for j in range(len(C)):
                C[j] += one_minus_beta2 * (sum(r[j] ** 2 for r in g) / len(g) - C[j])
            mean_r = max(sum(R) / len(R), eps1)
            estimate = [[R[i] * C[j] / mean_r for j in range(len(C))] for i in range(len(R))]
        else:
            V = [[v + one_minus_beta2 * (x * x - v) for v, x in zip(V[0], g[0])]]
            estimate = V
        u = [[x / math.sqrt(max(e, eps1 * eps1)) for x, e in zip(gr, er)]
             for gr, er in zip(g, estimate)]
        denom = max(1.0, math.sqrt(sum(x * x for r in u for x in r) / n) / d)
        denoms.append(denom)
        rows = [[x - alpha / denom * y for x, y in zip(pr, ur)] for pr, ur in zip(rows, u)]
    return (rows if matrix else rows[0]), denoms


@pytest.mark.parametrize("case", [
    dict(lr=0.01, beta2_decay=-0.8, eps1=1e-30, eps2=1e-3, d=1.0, weight_decay=0.0,
         maximize=False),
    # decayed, maximized, eps1 and eps2 active, rho = 1/sqrt(t) below lr at step 2
    dict(lr=0.8, beta2_decay=-0.5, eps1=0.05, eps2=5.0, d=1.0, weight_decay=0.2,
         maximize=True),
])
@pytest.mark.parametrize("shape", [(2, 3), (4,)])
def test_matches_a_step_computed_by_hand(kernel_module, shape, case):
    p = np.array([0.5, -1.25, 2.0, 0.75, -0.1, 1.5][:math.prod(shape)]).reshape(shape)
    # the second gradient 10x the first: u's RMS exceeds d = 1, the update is clipped
    grads = [np.array([0.3, -0.02, 1.1, -0.7, 0.5, 0.04][:p.size]).reshape(shape),
             np.array([-4.0, 9.0, 0.1, 2.0, -13.0, 6.0][:p.size]).reshape(shape)]
    expected, denoms = hand_adafactor(p.tolist(), [g.tolist() for g in grads], **case)
    assert denoms[1] > 1
    fast = run_steps(kernel_module, p, grads, **case)[0]
    np.testing.assert_allclose(fast, np.array(expected), rtol=1e-13, atol=1e-15)


# -- torch.optim.Adafactor -----------------------------------------------------------------------

TORCH_CASES = [
    dict(lr=0.01),
    dict(lr=0.05, weight_decay=0.1, maximize=True),
    dict(lr=0.02, eps=(1e-3, 1e-3), d=2.0, beta2_decay=-0.5),
]


def assert_close_to_scale(actual, expected, dtype, what):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    error, scale = np.max(np.abs(actual - expected)), np.max(np.abs(expected))
    assert error <= ULPS * np.finfo(dtype).eps * scale, (
        f"{what}: max error {error:.3g} is {error / scale:.3g} of the scale {scale:.3g}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kwargs", TORCH_CASES, ids=lambda kw: "-".join(kw))
def test_trajectory_matches_torch(kwargs, dtype, backend):
    torch = pytest.importorskip("torch")
    shapes = [(7,), (3, 5), (2, 3, 4)]
    rng = np.random.default_rng(2024)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    initial = [p.copy() for p in params]
    tensors = [torch.tensor(p.copy()) for p in params]
    opt = fo.Adafactor(params, backend=backend, **kwargs)
    theirs = torch.optim.Adafactor(tensors, foreach=False, **kwargs)
    for t in range(1, 41):
        grads = [(rng.standard_normal(s) * rng.choice([1e-3, 1.0, 30.0], size=s)).astype(dtype)
                 for s in shapes]
        opt.step(grads)
        for tensor, grad in zip(tensors, grads):
            tensor.grad = torch.tensor(grad)
        theirs.step()
    for i, tensor in enumerate(tensors):
        state = theirs.state[tensor]
        assert list(opt.state[i]) == [k for k in state if k != "step"]
        assert_close_to_scale(params[i], tensor.numpy(), dtype, f"param {i}")
        assert_close_to_scale(params[i] - initial[i], tensor.numpy() - initial[i], dtype,
                              f"displacement of param {i}")
        for name, value in opt.state[i].items():
            assert value.shape == tuple(state[name].shape) and value.dtype == dtype
            assert_close_to_scale(value, state[name].numpy(), dtype, f"{name} of param {i}")
    assert opt.step_count == 40 == int(theirs.state[tensors[0]]["step"])


def _torch_run(module, dtype, kwargs, seed=0):
    """A small model with a matrix, a batch of matrices and vectors, two param groups."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    model.register_parameter("batch", torch.nn.Parameter(0.1 * torch.randn(2, 3, 8)))
    model = model.to(dtype)
    groups = [{"params": list(model[0].parameters()) + [model.batch]},
              {"params": list(model[2].parameters()), "lr": kwargs.get("lr", 1e-2) * 0.5}]
    opt = module.Adafactor(groups, foreach=False, **kwargs)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.7)
    return model, opt, scheduler


def _train(model, opt, scheduler, steps, first=0):
    import torch
    dtype = next(model.parameters()).dtype
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=g, dtype=torch.float64).to(dtype)
    y = torch.sin(x.sum(1, keepdim=True))
    for t in range(first, first + steps):
        batch = slice(16 * (t % 4), 16 * (t % 4) + 16)
        opt.zero_grad()
        extra = (model.batch.sum(0) @ x[batch].T).pow(2).mean()
        loss = torch.nn.functional.mse_loss(model(x[batch]), y[batch]) + 1e-3 * extra
        loss.backward()
        opt.step()
        scheduler.step()


def _assert_runs_close(ours, theirs, dtype, exact=False):
    import torch
    tolerance = {torch.float32: dict(rtol=2e-5, atol=2e-6),
                 torch.float64: dict(rtol=1e-12, atol=1e-13)}[dtype]
    for (name, a), b in zip(ours[0].named_parameters(), theirs[0].parameters()):
        if exact:
            assert torch.equal(a, b), name
        else:
            torch.testing.assert_close(a, b, **tolerance, msg=lambda m: f"{name}: {m}")
    a, b = ours[1].state_dict(), theirs[1].state_dict()
    for group_a, group_b in zip(a["param_groups"], b["param_groups"]):
        assert {k: group_a[k] for k in group_b} == group_b
    assert a["state"].keys() == b["state"].keys()
    for index, state in b["state"].items():
        assert list(a["state"][index]) == list(state), f"state names of param {index}"
        for key, value in state.items():
            got = a["state"][index][key]
            assert got.shape == value.shape and got.dtype == value.dtype, (index, key)
            if exact or key == "step":
                assert torch.equal(got, value), (index, key)
            else:
                torch.testing.assert_close(got, value, **tolerance)


@pytest.mark.parametrize("kwargs", TORCH_CASES, ids=lambda kw: "-".join(kw))
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_torch_adapter_matches_torch_optim_over_a_training_loop(kwargs, dtype_name):
    torch = pytest.importorskip("torch")
    import fastoptim.torch as fot
    dtype = getattr(torch, dtype_name)
    ours, theirs = _torch_run(fot, dtype, kwargs), _torch_run(torch.optim, dtype, kwargs)
    _train(*ours, 20)
    _train(*theirs, 20)
    _assert_runs_close(ours, theirs, dtype)
    assert ours[1].state[ours[0][0].weight]["row_var"].shape == (16, 1)
    assert ours[1].state[ours[0].batch]["col_var"].shape == (2, 1, 8)


@pytest.mark.parametrize("direction", ["torch->fastoptim", "fastoptim->torch"])
def test_checkpoints_move_between_torch_optim_and_the_adapter(direction, tmp_path):
    torch = pytest.importorskip("torch")
    import fastoptim.torch as fot
    dtype, kwargs = torch.float64, dict(lr=0.02, weight_decay=0.05)
    source, target = (torch.optim, fot) if direction == "torch->fastoptim" else (fot, torch.optim)
    straight = _torch_run(torch.optim, dtype, kwargs)
    _train(*straight, 12)
    first = _torch_run(source, dtype, kwargs)
    _train(*first, 6)
    torch.save({"model": first[0].state_dict(), "opt": first[1].state_dict(),
                "sched": first[2].state_dict()}, tmp_path / "ckpt.pt")
    second = _torch_run(target, dtype, kwargs, seed=7)
    saved = torch.load(tmp_path / "ckpt.pt")
    second[0].load_state_dict(saved["model"])
    second[1].load_state_dict(saved["opt"])
    second[2].load_state_dict(saved["sched"])
    _train(*second, 6, first=6)
    _assert_runs_close(second, straight, dtype)


def test_torch_adapter_round_trip_resumes_bit_identically(tmp_path):
    torch = pytest.importorskip("torch")
    import fastoptim.torch as fot
    straight = _torch_run(fot, torch.float32, dict(lr=0.02))
    _train(*straight, 10)
    run = _torch_run(fot, torch.float32, dict(lr=0.02))
    _train(*run, 5)
    torch.save({"model": run[0].state_dict(), "opt": run[1].state_dict(),
                "sched": run[2].state_dict()}, tmp_path / "ckpt.pt")
    resumed = _torch_run(fot, torch.float32, dict(lr=0.02), seed=3)
    saved = torch.load(tmp_path / "ckpt.pt")
    for obj, key in zip(resumed, ("model", "opt", "sched")):
        obj.load_state_dict(saved[key])
    _train(*resumed, 5, first=5)
    _assert_runs_close(resumed, straight, torch.float32, exact=True)


def test_torch_adapter_refuses_a_matrix_whose_rows_are_not_in_memory_order():
    torch = pytest.importorskip("torch")
    import fastoptim.torch as fot
    weight = torch.nn.Parameter(torch.randn(5, 4).t())     # dense, but transposed
    before = weight.detach().clone()
    opt = fot.Adafactor([weight])
    weight.grad = torch.ones_like(weight)
    with pytest.raises(ValueError, match="param 0 of param group 0 is not contiguous"):
        opt.step()
    assert torch.equal(weight, before) and not opt.state


# -- the NumPy front end's state and checkpoints -------------------------------------------------

def test_optimizer_state_has_torchs_names_and_shapes_and_checkpoints(tmp_path, backend):
    params = [random((4, 3), np.float32, 0), random((5,), np.float32, 1),
              random((2, 3, 4), np.float32, 2)]
    grads = [[random(p.shape, p.dtype, 10 + t + i) for i, p in enumerate(params)]
             for t in range(6)]
    opt = fo.Adafactor([p.copy() for p in params], backend=backend, lr=0.05)
    assert [{k: v.shape for k, v in st.items()} for st in opt.state] == [
        {"row_var": (4, 1), "col_var": (1, 3)}, {"variance": (5,)},
        {"row_var": (2, 3, 1), "col_var": (2, 1, 4)}]
    for g in grads[:3]:
        opt.step(g)
    opt.save(tmp_path / "adafactor.npz")
    saved_params = [p.copy() for p in opt.params]
    for g in grads[3:]:
        opt.step(g)
    resumed = fo.Adafactor(saved_params, backend=backend, lr=0.05)
    resumed.load(tmp_path / "adafactor.npz")
    for g in grads[3:]:
        resumed.step(g)
    assert resumed.step_count == opt.step_count == 6
    assert_all_same_bits(resumed.params, opt.params, "params")
    for a, b in zip(resumed.state, opt.state):
        assert_all_same_bits(list(a.values()), list(b.values()), "state")


def test_load_state_dict_refuses_a_factor_of_the_wrong_shape():
    opt = fo.Adafactor([random((4, 3), np.float32, 0)])
    state = opt.state_dict()
    state["state"][0]["row_var"] = np.zeros((4,), np.float32)
    with pytest.raises(ValueError, match=r"state\[0\]\['row_var'\] is float32\[4\], expected "
                                         r"float32\[4, 1\]"):
        opt.load_state_dict(state)
    state["state"][0] = {"variance": np.zeros((4, 3), np.float32)}
    with pytest.raises(ValueError, match="holds"):
        opt.load_state_dict(state)


# -- refusals and interruptions change nothing ---------------------------------------------------

def _buffers():
    return [random((4, 3), np.float32, 0), random((4, 3), np.float32, 1),
            np.full((4, 1), 0.5, np.float32), np.full((1, 3), 0.25, np.float32), None]


BAD_CALLS = [
    ("row_var", ValueError, lambda b: b.__setitem__(2, np.zeros((4,), np.float32))),
    ("col_var", ValueError, lambda b: b.__setitem__(3, np.zeros((1, 4), np.float32))),
    ("row_var is required", TypeError, lambda b: b.__setitem__(2, None)),
    ("variance must be None", ValueError,
     lambda b: b.__setitem__(4, np.zeros((4, 3), np.float32))),
    ("row_var has dtype float64", TypeError,
     lambda b: b.__setitem__(2, np.zeros((4, 1), np.float64))),
    ("grad has shape", ValueError, lambda b: b.__setitem__(1, np.zeros((3, 4), np.float32))),
    ("shares memory with col_var", ValueError, lambda b: b.__setitem__(3, b[0][:1])),
    ("read-only", ValueError, lambda b: b[2].setflags(write=False)),
]
BAD_HYPERPARAMETERS = [
    ("d must be >= 1", dict(d=0.5)),
    ("beta2_decay must be <= 0", dict(beta2_decay=0.2)),
    ("eps1 must be >= 0", dict(eps1=-1e-3)),
    ("eps2 must be >= 0", dict(eps2=-1.0)),
    ("lr must be >= 0", dict(lr=-1.0)),
    ("step must be >= 1", dict(step=0)),
]


@pytest.mark.parametrize("message,error,spoil", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_buffers_are_refused_before_anything_is_written(kernel_module, message, error,
                                                             spoil):
    buffers = _buffers()
    spoil(buffers)
    before = [None if b is None else b.copy() for b in buffers]
    with pytest.raises(error, match=message):
        kernel_module.adafactor_step(*buffers, lr=0.1, step=1)
    for b, old in zip(buffers, before):
        if b is not None:
            assert_same_bits(b, old, "a buffer of the refused call")


@pytest.mark.parametrize("message,kwargs", BAD_HYPERPARAMETERS,
                         ids=[c[0] for c in BAD_HYPERPARAMETERS])
def test_bad_hyperparameters_are_refused(kernel_module, message, kwargs):
    buffers = _buffers()
    before = [b.copy() for b in buffers if b is not None]
    with pytest.raises(ValueError, match=message):
        kernel_module.adafactor_step(*buffers, **{"lr": 0.1, "step": 1, **kwargs})
    assert_all_same_bits([b for b in buffers if b is not None], before, "refused")


@pytest.mark.parametrize("kwargs,message", [
    (dict(d=0.9), "d must be >= 1"), (dict(eps=(-1.0, 1e-3)), r"eps\[0\] must be >= 0"),
    (dict(eps=(None, None)), r"eps\[1\] must be a real number"),
    (dict(beta2_decay=0.5), "beta2_decay must be <= 0")])
def test_the_optimizer_refuses_bad_hyperparameters(kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        fo.Adafactor(np.zeros((3, 2), np.float32), **kwargs)


def test_an_interruption_between_the_passes_changes_nothing(kernel_module):
    """The first runner call only reads: stop the step right after it."""
    def measure_then_stop(kernel, buffers, scalars, **options):
        result = kernel_module.run(kernel, buffers, scalars, **options)
        if not options.get("writes", True):
            raise KeyboardInterrupt
        return result

    buffers = _buffers()
    before = [b.copy() for b in buffers if b is not None]
    with pytest.raises(KeyboardInterrupt):
        _kernel_specs.adafactor_step(measure_then_stop, *buffers, lr=0.1, step=1)
    assert_all_same_bits([b for b in buffers if b is not None], before, "interrupted")


@pytest.mark.skipif(os.name != "posix", reason="needs os.kill")
def test_ctrl_c_during_a_step_is_delivered_after_it(monkeypatch, backend):
    """Ctrl-C between the passes of opt.step: the step finishes (params, state and the
    step count agree), then KeyboardInterrupt."""
    module = kernels if backend == "c" else reference

    def ctrl_c_between_passes(kernel, buffers, scalars, **options):
        result = module.run(kernel, buffers, scalars, **options)
        if not options.get("writes", True):
            os.kill(os.getpid(), signal.SIGINT)
        return result

    param, grad = random((4, 3), np.float32, 0), random((4, 3), np.float32, 1)
    expected = fo.Adafactor(param.copy(), backend=backend)
    expected.step(grad)
    opt = fo.Adafactor(param.copy(), backend=backend)
    monkeypatch.setattr(module, "adafactor_step",
                        _bind.bind(_kernel_specs.adafactor_step, ctrl_c_between_passes))
    with pytest.raises(KeyboardInterrupt):
        opt.step(grad)
    assert opt.step_count == 1
    assert_same_bits(opt.params[0], expected.params[0], "param")
    assert_all_same_bits(list(opt.state[0].values()), list(expected.state[0].values()),
                         "state")


def test_check_finite_refuses_nan_and_changes_nothing(backend):
    param = random((4, 3), np.float32, 0)
    opt = fo.Adafactor(param.copy(), backend=backend, check_finite=True)
    grad = random((4, 3), np.float32, 1)
    grad[2, 1] = np.nan
    with pytest.raises(FloatingPointError):
        opt.step(grad)
    assert opt.step_count == 0 and np.array_equal(opt.params[0], param)
    assert not opt.state[0]["row_var"].any() and not opt.state[0]["col_var"].any()


def test_max_grad_norm_clips_the_gradient_inside_the_step(kernel_module):
    """max_grad_norm is grad_factor: the same step as the gradient scaled beforehand."""
    backend = "c" if kernel_module is kernels else "numpy"
    param, grad = random((6, 5), np.float64, 0), random((6, 5), np.float64, 1)
    factor = 0.5 / (np.linalg.norm(grad) + 1e-6)
    clipped = fo.Adafactor(param.copy(), backend=backend, max_grad_norm=0.5, eps=(1.0, 1e-3))
    clipped.step(grad)
    scaled = functools.partial(kernel_module.adafactor_step, lr=0.01, step=1, eps1=1.0)
    expected = param.copy()
    scaled(expected, grad * factor, *state_for(expected))
    np.testing.assert_allclose(clipped.params[0], expected, rtol=1e-12)
