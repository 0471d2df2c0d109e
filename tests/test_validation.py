"""Every bad input is refused with an error that names the argument, before anything is
written: params and state stay exactly as they were (issue 3)."""
import numpy as np
import pytest

import fastoptim as fo
from conftest import assert_same_bits
from test_state import assert_unchanged, make_params, snapshot


def good_grads(params, value=0.5):
    return [np.full_like(p, value) for p in params]


# -- construction ------------------------------------------------------------------------

def ro(a):
    a.flags.writeable = False
    return a


BAD_CONSTRUCTIONS = [
    ("integer params", lambda: fo.SGD(np.zeros(4, np.int64)), TypeError, "params"),
    ("integer params", lambda: fo.SGD(np.zeros(4, np.int32)), TypeError, "params"),
    ("complex params", lambda: fo.SGD(np.zeros(4, np.complex64)), TypeError, "params"),
    ("big-endian params", lambda: fo.SGD(np.zeros(4, ">f8")), TypeError, "params"),
    ("a list", lambda: fo.SGD([np.zeros(2), [0.0, 1.0]]), TypeError, r"params\[1\]"),
    ("non-contiguous params", lambda: fo.SGD(np.zeros(8)[::2]), ValueError, "params"),
    ("read-only params", lambda: fo.Adam(ro(np.zeros(4))), ValueError, "params"),
    ("params sharing memory", lambda: (lambda a: fo.Adam([a[:6], a[4:]]))(np.zeros(10)),
     ValueError, "params"),
    ("the same array twice", lambda: (lambda a: fo.SGD([a, a]))(np.zeros(3)), ValueError,
     "params"),
    ("no params", lambda: fo.SGD([]), ValueError, "params"),
    ("lr < 0", lambda: fo.SGD(np.zeros(3), lr=-0.1), ValueError, "lr"),
    ("lr NaN", lambda: fo.SGD(np.zeros(3), lr=float("nan")), ValueError, "lr"),
    ("beta1 = 1", lambda: fo.Adam(np.zeros(3), betas=(1.0, 0.9)), ValueError, r"betas\[0\]"),
    ("beta2 < 0", lambda: fo.AdamW(np.zeros(3), betas=(0.9, -0.1)), ValueError, r"betas\[1\]"),
    ("alpha = 1", lambda: fo.RMSProp(np.zeros(3), alpha=1.0), ValueError, "alpha"),
    ("momentum = 1", lambda: fo.Momentum(np.zeros(3), momentum=1.0), ValueError, "momentum"),
    ("RMSProp momentum < 0", lambda: fo.RMSProp(np.zeros(3), momentum=-0.5), ValueError,
     "momentum"),
    ("eps < 0", lambda: fo.Adam(np.zeros(3), eps=-1e-8), ValueError, "eps"),
    ("AdaGrad eps < 0", lambda: fo.AdaGrad(np.zeros(3), eps=-1.0), ValueError, "eps"),
    ("eps_root < 0", lambda: fo.Adam(np.zeros(3), eps_root=-1.0), ValueError, "eps_root"),
    ("weight_decay < 0", lambda: fo.SGD(np.zeros(3), weight_decay=-1), ValueError,
     "weight_decay"),
    ("nesterov without momentum", lambda: fo.SGD(np.zeros(3), nesterov=True), ValueError,
     "nesterov"),
    ("nesterov with dampening",
     lambda: fo.SGD(np.zeros(3), momentum=0.9, nesterov=True, dampening=0.1), ValueError,
     "nesterov"),
    ("dampening outside the torch form",
     lambda: fo.Momentum(np.zeros(3), form="ewma", dampening=0.1), ValueError, "dampening"),
    ("unknown form", lambda: fo.Momentum(np.zeros(3), form="heavy-ball"), ValueError, "form"),
    ("unknown backend", lambda: fo.Adam(np.zeros(3), backend="gpu"), ValueError, "backend"),
    ("threads = 0", lambda: fo.Adam(np.zeros(3), threads=0), ValueError, "threads"),
    ("unknown on_nonfinite", lambda: fo.Adam(np.zeros(3), on_nonfinite="ignore"), ValueError,
     "on_nonfinite"),
]


@pytest.mark.parametrize("make,error,name", [c[1:] for c in BAD_CONSTRUCTIONS],
                         ids=[c[0] for c in BAD_CONSTRUCTIONS])
def test_bad_construction_is_refused(make, error, name):
    with pytest.raises(error, match=name):
        make()


# -- steps ---------------------------------------------------------------------------------

def optimizers(backend):
    """One optimizer of each kind, with state, holding three arrays (float32 and float64),
    after one good step so that its state is not all zeros."""
    opts = [fo.Momentum(make_params(), lr=0.1, backend=backend),
            fo.AdaGrad(make_params(), lr=0.1, backend=backend),
            fo.RMSProp(make_params(), lr=0.1, centered=True, momentum=0.5, backend=backend),
            fo.Adam(make_params(), lr=0.1, amsgrad=True, backend=backend),
            fo.AdamW(make_params(), lr=0.1, backend=backend)]
    for opt in opts:
        opt.step(good_grads(opt.params))
    return opts


def replace(grads, i, value):
    grads = list(grads)
    grads[i] = value
    return grads


BAD_STEPS = [
    # (case, make bad grads from (opt, good grads), error, text in the message); the kernel
    # names each buffer by its argument and index: grad[2], param[0], exp_avg[1], ...
    ("wrong dtype", lambda o, g: replace(g, 2, g[2].astype(np.float64)), TypeError,
     r"grad\[2\]"),
    ("integer grad", lambda o, g: replace(g, 2, np.ones((2, 2, 2), np.int32)), TypeError,
     r"grad\[2\]"),
    ("shape mismatch", lambda o, g: replace(g, 1, np.ones((3, 5))), ValueError, r"grad\[1\]"),
    ("same size, other shape", lambda o, g: replace(g, 1, np.ones(15)), ValueError,
     r"grad\[1\]"),
    ("non-contiguous grad", lambda o, g: replace(g, 2, np.ones((2, 2, 4), np.float32)[..., ::2]),
     ValueError, r"grad\[2\]"),
    ("not an array", lambda o, g: replace(g, 2, [1.0] * 8), TypeError, r"grad\[2\]"),
    ("too few grads", lambda o, g: g[:2], ValueError, "grads"),
    ("too many grads", lambda o, g: g + g[:1], ValueError, "grads"),
    ("single array for three params", lambda o, g: g[0], ValueError, "grads"),
    ("grad is its own param", lambda o, g: replace(g, 2, o.params[2]), ValueError,
     r"grad\[2\] shares memory with param\[2\]|param\[2\] shares memory with grad\[2\]"),
    ("grad is another param", lambda o, g: replace(g, 2, o.params[0][:8].reshape(2, 2, 2)),
     ValueError, r"grad\[2\] shares memory with param\[0\]|param\[0\] shares memory with grad\[2\]"),
    ("grad is a state buffer", lambda o, g: replace(g, 1, next(iter(o.state[1].values()))),
     ValueError, r"\w+\[1\] shares memory with grad\[1\]"),
    ("grad overlaps another param's state",
     lambda o, g: replace(g, 2, next(iter(o.state[1].values())).reshape(-1).view(np.float32)
                          [:8].reshape(2, 2, 2)),
     ValueError, r"grad\[2\] shares memory with \w+\[1\]|\w+\[1\] shares memory with grad\[2\]"),
]


@pytest.mark.parametrize("make_bad,error,name", [c[1:] for c in BAD_STEPS],
                         ids=[c[0] for c in BAD_STEPS])
def test_bad_step_changes_nothing(make_bad, error, name, backend):
    for opt in optimizers(backend):
        snap = snapshot(opt)
        with pytest.raises(error, match=name):
            opt.step(make_bad(opt, good_grads(opt.params)))
        assert_unchanged(opt, snap)


def test_read_only_grads_are_fine(backend):
    opt = fo.Adam(make_params(), lr=0.1, backend=backend)
    grads = [ro(g) for g in good_grads(opt.params)]
    opt.step(grads)
    assert opt.step_count == 1


def test_negative_lr_from_a_schedule_changes_nothing(backend):
    for opt in optimizers(backend):
        opt.lr = lambda t: 0.1 - 0.2 * t
        snap = snapshot(opt)
        with pytest.raises(ValueError, match="lr"):
            opt.step(good_grads(opt.params))
        assert_unchanged(opt, snap)


def test_setting_a_negative_lr_is_refused():
    opt = fo.Adam(np.zeros(3), lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1.0
    assert opt.lr == 0.1


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_finite_raises_and_changes_nothing(bad, backend):
    for opt in optimizers(backend):
        opt.check_finite = True
        grads = good_grads(opt.params)
        grads[2].flat[-1] = bad
        snap = snapshot(opt)
        with pytest.raises(FloatingPointError, match="NaN or inf"):
            opt.step(grads)
        assert_unchanged(opt, snap)


def test_check_finite_skip_reports_and_changes_nothing(backend):
    for opt in optimizers(backend):
        opt.check_finite, opt.on_nonfinite = True, "skip"
        grads = good_grads(opt.params)
        grads[1][0, 0] = np.nan
        snap = snapshot(opt)
        assert opt.step(grads) is False
        assert opt.skipped_steps == 1
        assert_unchanged(opt, snap)
        assert opt.step(good_grads(opt.params)) is True
        assert opt.step_count == snap[2] + 1


def test_without_check_finite_nan_flows_through(backend):
    opt = fo.SGD(np.zeros(3), lr=0.1, backend=backend)
    opt.step(np.array([np.nan, 1.0, 2.0]))
    assert np.isnan(opt.params[0][0])
    assert_same_bits(opt.params[0][1:], np.array([-0.1, -0.2]))


# -- the kernels themselves ------------------------------------------------------------------

def test_kernels_refuse_bad_buffers_before_writing(kernel_module):
    p, g = np.ones(4), np.ones(4)
    m, v = np.zeros(4), np.zeros(4)
    cases = [
        (dict(exp_avg=m, exp_avg_sq=m), ValueError,
         "exp_avg_sq shares memory with exp_avg|exp_avg shares memory with exp_avg_sq"),
        (dict(exp_avg=m, exp_avg_sq=np.zeros(5)), ValueError, "exp_avg_sq has shape"),
        (dict(exp_avg=m, exp_avg_sq=np.zeros(4, np.float32)), TypeError, "exp_avg_sq has dtype"),
        (dict(exp_avg=ro(np.zeros(4)), exp_avg_sq=v), ValueError, "exp_avg is read-only"),
        (dict(exp_avg=p, exp_avg_sq=v), ValueError,
         "exp_avg shares memory with param|param shares memory with exp_avg"),
    ]
    for bufs, error, message in cases:
        with pytest.raises(error, match=message):
            kernel_module.adam_step(p, g, bufs["exp_avg"], bufs["exp_avg_sq"], lr=0.1, step=1)
        assert_same_bits(p, np.ones(4))
        assert not m.any() and not v.any()
    with pytest.raises(ValueError, match="step"):
        kernel_module.adam_step(p, g, m, v, lr=0.1, step=0)
    with pytest.raises(ValueError, match="momentum_buffer"):
        kernel_module.rmsprop_step(p, g, v, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="form"):
        kernel_module.momentum_step(p, g, m, lr=0.1, momentum=0.9, step=1, form="x")
    with pytest.raises(ValueError, match="threads"):
        kernel_module.sgd_step(p, g, lr=0.1, threads=0)
    assert_same_bits(p, np.ones(4))


def test_maximize_negates_a_nan_grad_as_numpy_does(kernel_module):
    """maximize flips the sign bit of every grad element, NaN included (docs/design.md: NumPy's
    -grad): the C kernels negate with an integer XOR so the compiler cannot fold
    p - lr*(-g) into p + lr*g, which would keep the NaN's sign."""
    for dtype, uint in ((np.float32, np.uint32), (np.float64, np.uint64)):
        p = np.array([1.0, 2.0], dtype)
        kernel_module.sgd_step(p, np.array([np.nan, -np.nan], dtype), lr=0.05, maximize=True)
        sign = np.array(1, uint) << (8 * np.dtype(dtype).itemsize - 1)
        assert np.isnan(p).all()
        assert (p.view(uint) & sign).tolist() == [sign, 0]   # -NaN from +NaN, +NaN from -NaN
