"""Trajectories of the optimizer classes against torch.optim (same hyperparameters,
foreach=False), float32 and float64, both backends: params and every state array.

Tolerance. torch evaluates the same formulas with different roundings: lerp for the first
moment, addcmul/addcdiv (p + (-lr)*(m/den) instead of p - (lr*m)/den), sqrt(v)/sqrt(bc2)
instead of sqrt(v)*(1/sqrt(bc2)), possibly FMA in its vectorized CPU loops. So the bits
differ, by a few units in the last place per step. Element-wise relative error is the wrong
measure: a state element near a zero crossing (exp_avg, grad_avg, a momentum buffer) keeps
an absolute error of a few ulp of its neighbours while its own value is ~0, which measured up
to 1.5e-3 relative in float32. So each array is compared relative to its own scale:

    max|fastoptim - torch| <= RTOL * max|torch|,   RTOL = 256 * machine epsilon

i.e. 3.1e-5 in float32 and 5.7e-14 in float64. Params are checked both as they are and as
the displacement p - p0 (much smaller than p, so a wrong step size cannot hide under p0).
Over all cases below, 40 steps, 10 seeds, the worst observed was 52 eps (float32) and 50 eps
(float64), both on the Adam displacement in the first steps, where a 1-2 ulp difference in p
(|p| ~ 2.5) is set against a displacement of ~lr. 256 eps leaves ~5x headroom, while a real
difference in the formulas shows far above it: changing torch's dampening 0.3 -> 0.301,
beta2 0.999 -> 0.9989, alpha 0.99 -> 0.9899 or lr_decay 0.05 -> 0.0501 fails both dtypes,
and eps 1e-8 -> 1.2e-8 fails float64 (in float32 such an eps is below resolution).

The optimizers added later (Adadelta, Adamax, NAdam, RAdam, Rprop, ASGD) keep the same
tolerance. Over 10 seeds the worst was 150 eps (Adadelta with weight decay, float64), ~45
for NAdam, under 70 for the others; Rprop agrees to the bit (its steps are products of the
etas and sign changes). torch rounds p twice in a NAdam step (one addcdiv for the gradient
term, one for the momentum term), so at lr=0.01 two or three ulps of p (|p| ~ 2.5) came to
476 eps of the first displacement; NAdam runs at lr=0.05, where the displacement is larger.
A wrong hyperparameter still shows far above: rho 0.9 -> 0.901 (Adadelta), beta2 0.999 ->
0.9989 (Adamax, RAdam) or etas[1] 1.2 -> 1.201 (Rprop) fail both dtypes, momentum_decay
0.004 -> 0.00401 (NAdam) and alpha 0.5 -> 0.501 (ASGD) fail float64 by 1e8 eps and more.
"""
import numpy as np
import pytest

import fastoptim as fo
from conftest import DTYPES, assert_close_to_scale

torch = pytest.importorskip("torch")

STEPS = 40
SHAPES = [(7,), (3, 5)]
ULPS = 256

T = torch.optim
# (id, fastoptim class, keyword arguments for both, extra keyword arguments for torch only)
CASES = [
    ("SGD", fo.SGD, T.SGD, dict(lr=0.05), {}),
    ("SGD-wd-maximize", fo.SGD, T.SGD, dict(lr=0.05, weight_decay=0.1, maximize=True), {}),
    ("SGD-momentum", fo.SGD, T.SGD, dict(lr=0.05, momentum=0.9), {}),
    ("Momentum", fo.Momentum, T.SGD, dict(lr=0.05, momentum=0.9), {}),
    ("Momentum-dampening-wd", fo.Momentum, T.SGD,
     dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.1), {}),
    ("Momentum-maximize", fo.Momentum, T.SGD, dict(lr=0.05, momentum=0.7, maximize=True), {}),
    ("Momentum-nesterov", fo.Momentum, T.SGD, dict(lr=0.05, momentum=0.9, nesterov=True), {}),
    ("Nesterov-wd", fo.Nesterov, T.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.1),
     dict(nesterov=True)),
    ("Nesterov-maximize", fo.Nesterov, T.SGD, dict(lr=0.05, momentum=0.8, maximize=True),
     dict(nesterov=True)),
    ("AdaGrad", fo.AdaGrad, T.Adagrad, dict(lr=0.1), {}),
    ("AdaGrad-lr_decay", fo.AdaGrad, T.Adagrad, dict(lr=0.1, lr_decay=0.05), {}),
    ("AdaGrad-initial-wd", fo.AdaGrad, T.Adagrad,
     dict(lr=0.1, initial_accumulator_value=0.5, weight_decay=0.1), {}),
    ("AdaGrad-all-maximize", fo.AdaGrad, T.Adagrad,
     dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.5, weight_decay=0.1,
          eps=1e-6, maximize=True), {}),
    ("RMSProp", fo.RMSProp, T.RMSprop, dict(lr=0.01), {}),
    ("RMSProp-centered", fo.RMSProp, T.RMSprop, dict(lr=0.01, alpha=0.9, centered=True), {}),
    ("RMSProp-momentum-maximize", fo.RMSProp, T.RMSprop,
     dict(lr=0.01, momentum=0.5, maximize=True), {}),
    ("RMSProp-centered-momentum-wd", fo.RMSProp, T.RMSprop,
     dict(lr=0.01, alpha=0.9, centered=True, momentum=0.9, weight_decay=0.1), {}),
    ("Adam", fo.Adam, T.Adam, dict(lr=0.01), {}),
    ("Adam-amsgrad", fo.Adam, T.Adam, dict(lr=0.01, amsgrad=True, betas=(0.8, 0.9)), {}),
    ("Adam-wd-maximize", fo.Adam, T.Adam,
     dict(lr=0.01, weight_decay=0.1, maximize=True, eps=1e-6), {}),
    ("Adam-amsgrad-wd-maximize", fo.Adam, T.Adam,
     dict(lr=0.01, amsgrad=True, weight_decay=0.1, maximize=True), {}),
    ("AdamW", fo.AdamW, T.AdamW, dict(lr=0.01), {}),
    ("AdamW-amsgrad", fo.AdamW, T.AdamW,
     dict(lr=0.01, amsgrad=True, weight_decay=0.1, betas=(0.8, 0.99)), {}),
    ("Adadelta", fo.Adadelta, T.Adadelta, dict(lr=0.5), {}),
    ("Adadelta-wd-maximize", fo.Adadelta, T.Adadelta,
     dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.1, maximize=True), {}),
    ("Adamax", fo.Adamax, T.Adamax, dict(lr=0.01), {}),
    ("Adamax-wd-maximize", fo.Adamax, T.Adamax,
     dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, maximize=True), {}),
    ("NAdam", fo.NAdam, T.NAdam, dict(lr=0.05), {}),
    ("NAdam-momentum_decay-wd-maximize", fo.NAdam, T.NAdam,
     dict(lr=0.05, betas=(0.8, 0.99), momentum_decay=0.01, weight_decay=0.1, maximize=True),
     {}),
    ("NAdam-decoupled", fo.NAdam, T.NAdam,
     dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True), {}),
    # rho_t crosses 5 at step 6 (beta2 = 0.999 and 0.9 alike): both of RAdam's branches run
    ("RAdam", fo.RAdam, T.RAdam, dict(lr=0.01), {}),
    ("RAdam-wd-maximize", fo.RAdam, T.RAdam,
     dict(lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1, maximize=True), {}),
    ("RAdam-decoupled", fo.RAdam, T.RAdam,
     dict(lr=0.01, betas=(0.9, 0.9), weight_decay=0.1, decoupled_weight_decay=True), {}),
    ("Rprop", fo.Rprop, T.Rprop, dict(lr=0.01), {}),
    ("Rprop-bounds-maximize", fo.Rprop, T.Rprop,
     dict(lr=0.01, etas=(0.3, 1.5), step_sizes=(1e-3, 0.05), maximize=True), {}),
    ("ASGD", fo.ASGD, T.ASGD, dict(lr=0.01), {}),
    # t0 = 10: averaging starts within the run, so mu < 1 is exercised too
    ("ASGD-t0-wd-maximize", fo.ASGD, T.ASGD,
     dict(lr=0.05, lambd=0.01, alpha=0.5, t0=10, weight_decay=0.1, maximize=True), {}),
]


@pytest.fixture
def torch_scalars_like(dtype):
    """torch keeps a param's per-step scalars (state "step", NAdam's mu_product, ASGD's eta
    and mu) in tensors of its default dtype, float32 unless changed, whatever the param's
    dtype; fastoptim's NumPy classes keep them as Python floats. So that float64 runs compare
    the same double arithmetic, they set torch's default dtype to float64 (a float32 scalar
    in torch moves a float64 NAdam or ASGD trajectory by ~1e-8 relative, far beyond
    rounding; fastoptim.torch's handling of that: test_torch_adapters.py)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_trajectory_matches_torch(case, dtype, backend, torch_scalars_like):
    _, fo_class, torch_class, kwargs, torch_only = case
    rtol = ULPS * np.finfo(dtype).eps
    rng = np.random.default_rng(2024)
    params = [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]
    initial = [p.copy() for p in params]
    tensors = [torch.tensor(p.copy()) for p in params]
    opt = fo_class(params, backend=backend, **kwargs)
    reference_opt = torch_class(tensors, foreach=False, **kwargs, **torch_only)
    assert opt.backend == backend

    for t in range(1, STEPS + 1):
        # gradients of mixed magnitude, so that eps and the adaptive scaling both matter
        grads = [(rng.standard_normal(s) * rng.choice([1e-3, 1.0, 30.0], size=s)).astype(dtype)
                 for s in SHAPES]
        opt.step(grads)
        for tensor, grad in zip(tensors, grads):
            tensor.grad = torch.tensor(grad)
        reference_opt.step()

        for i, tensor in enumerate(tensors):
            torch_state = reference_opt.state[tensor]
            # torch's per-param buffers are fastoptim's state arrays; its other numbers
            # (NAdam's mu_product, ASGD's eta and mu) are fastoptim's per-optimizer scalars
            expected_names = {k for k, v in torch_state.items()
                              if k != "step" and v is not None and v.shape == tensor.shape}
            torch_scalars = {k: v.item() for k, v in torch_state.items()
                             if k != "step" and v is not None and v.shape != tensor.shape}
            assert set(opt.state[i]) == expected_names, f"state names of param {i}"
            assert set(opt.scalars) == set(torch_scalars)
            where = f"param {i} at step {t}"
            for name, value in torch_scalars.items():
                assert opt.scalars[name] == pytest.approx(value, rel=rtol, abs=0), (
                    f"scalar {name!r} at step {t}")
            expected_param = tensor.numpy()
            assert params[i].dtype == expected_param.dtype
            assert_close_to_scale(params[i], expected_param, rtol, where)
            assert_close_to_scale(params[i] - initial[i], expected_param - initial[i], rtol,
                                  f"displacement of {where}")
            for name, value in opt.state[i].items():
                assert value.dtype == dtype
                assert_close_to_scale(value, torch_state[name].numpy(), rtol,
                                      f"state {name!r} of {where}")
            if "step" in torch_state:
                assert opt.step_count == int(torch_state["step"]) == t
