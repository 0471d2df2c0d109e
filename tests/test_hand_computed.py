"""A few steps of every kernel, worked out by hand from the formulas of docs/design.md and
of the papers and lectures they come from.

The expected values are plain Python floats, one element at a time, written from the
formulas (not from fastoptim.reference), and compared to both backends: through the kernel
functions, and through the optimizer classes where a class adds logic of its own (NAdam's
product of momenta, ASGD's eta and mu, Schedule-Free's averaging weights and train/eval
modes). Each optimizer is written in its source's own terms -- Adam with the textbook
m_hat / (sqrt(v_hat) + eps), Adadelta with Zeiler's RMS[dx]/RMS[g], Schedule-Free with the
paper's three sequences x, y, z -- so the hand arithmetic is float64 like the arrays but
does not follow the kernels' operation order, and the tolerance is a relative 1e-12 rather
than equal bits; where the answer is known in closed form, the test says so and checks it
exactly or to that tolerance.
"""
import math

import numpy as np
import pytest

import fastoptim as fo

RTOL = 1e-12

P0 = [0.5, -1.25, 2.0]
GRADS = [[0.3, -0.7, 1.1], [-0.2, 0.4, 0.9], [0.6, 0.1, -1.5]]
# eight steps of gradients with no pattern (RAdam switches branches at step 6)
LONG_GRADS = [[math.sin(1.7 * t + i) * (1 + i) for i in range(3)] for t in range(1, 9)]

# the (weight_decay, maximize) pairs every optimizer is checked with
GRAD_OPTIONS = [(0.0, False), (0.1, False), (0.0, True), (0.1, True)]
GRAD_IDS = ["plain", "wd", "maximize", "wd+maximize"]
# and with decoupled weight decay, where the optimizer has it (adam_step and adamw_step are
# the two forms of Adam)
OPTIONS = [o + (False,) for o in GRAD_OPTIONS] + [(0.1, False, True), (0.1, True, True)]
OPTION_IDS = GRAD_IDS + ["decoupled", "decoupled+maximize"]


def arr(values):
    return np.array(values, dtype=np.float64)


def assert_close(actual, expected, what):
    np.testing.assert_allclose(actual, arr(expected), rtol=RTOL, atol=0, err_msg=what)


def effective(g, p, weight_decay, maximize):
    """docs/design.md: maximize negates g first, then L2 decay adds wd*p."""
    if maximize:
        g = -g
    return g + weight_decay * p


def prologue(p, g, lr, weight_decay, maximize, decoupled):
    """The (p, g) an update starts from: with decoupled weight decay p <- p*(1 - lr*wd) first
    and no L2 term (AdamW's way), else g as effective() makes it."""
    if decoupled:
        p = p * (1 - lr * weight_decay)
        return p, effective(g, p, 0.0, maximize)
    return p, effective(g, p, weight_decay, maximize)


def decay_options(weight_decay, maximize, decoupled):
    """The kernels' and classes' keyword arguments for one of OPTIONS."""
    return dict(weight_decay=weight_decay, maximize=maximize, decoupled_weight_decay=decoupled)


def sign(x):
    return 0.0 if x == 0 else math.copysign(1.0, x)


def kernel_stepper(kernel, state, p0=P0, per_step=None, **kwargs):
    """stepper(t, grad) for check_steps: step t of a kernel function over fresh arrays (the
    param from p0, each state buffer filled with its initial value, in argument order);
    per_step(t) gives the keyword arguments that change with the step."""
    param = arr(p0)
    arrays = {name: np.full(len(p0), initial) for name, initial in state}

    def step(t, grad):
        extra = per_step(t) if per_step else {}
        kernel(param, arr(grad), *arrays.values(), step=t, **kwargs, **extra)
        return param, arrays
    return step


def class_stepper(cls, backend, p0=P0, **hyperparameters):
    """stepper(t, grad) for check_steps through an optimizer class (``step.optimizer``)."""
    param = arr(p0)
    opt = cls(param, backend=backend, **hyperparameters)

    def step(t, grad):
        opt.step(arr(grad))
        assert opt.step_count == t
        return param, opt.state[0]
    step.optimizer = opt
    return step


def check_steps(stepper, hand_step, state, grads=GRADS, p0=P0, after_step=None):
    """Step the kernel or class under test (stepper) and the hand computation side by side
    and compare the param and every state buffer after each step. hand_step(t, p, g, st)
    updates one element: p its param, g its raw gradient, st its state (a dict of floats,
    updated in place); it returns the new param. after_step(t, hand_params), if given,
    checks more after each step."""
    p = list(p0)
    hand = [dict(state) for _ in p0]
    for t, grad in enumerate(grads, start=1):
        for i in range(len(p)):
            p[i] = hand_step(t, p[i], grad[i], hand[i])
        param, arrays = stepper(t, grad)
        assert set(arrays) == {name for name, _ in state}
        for name, array in arrays.items():
            assert_close(array, [h[name] for h in hand], f"{name} after step {t}")
        assert_close(param, p, f"param after step {t}")
        if after_step:
            after_step(t, list(p))


# -- SGD -------------------------------------------------------------------------------------

@pytest.mark.parametrize("weight_decay,maximize,decoupled", OPTIONS, ids=OPTION_IDS)
def test_sgd(kernel_module, weight_decay, maximize, decoupled):
    lr = 0.1
    p = list(P0)
    param = arr(P0)
    for t, grad in enumerate(GRADS, start=1):
        for i in range(3):
            p[i], g = prologue(p[i], grad[i], lr, weight_decay, maximize, decoupled)
            p[i] = p[i] - lr * g
        kernel_module.sgd_step(param, arr(grad), lr=lr, weight_decay=weight_decay,
                               maximize=maximize, decoupled_weight_decay=decoupled)
        assert_close(param, p, f"param after step {t}")


def test_sgd_is_exactly_p_minus_lr_g(kernel_module):
    # dyadic numbers: every product and difference is exact, so the answer is too
    param = arr([1.0, -2.0, 0.5])
    grad = arr([0.25, 1.0, -4.0])
    kernel_module.sgd_step(param, grad, lr=0.5)
    np.testing.assert_array_equal(param, [0.875, -2.5, 2.5])
    np.testing.assert_array_equal(grad, [0.25, 1.0, -4.0])  # the grad is never written


def test_sgd_maximize_is_exact_ascent(kernel_module):
    param = arr([1.0, -2.0, 0.5])
    kernel_module.sgd_step(param, arr([0.25, 1.0, -4.0]), lr=0.5, maximize=True,
                           weight_decay=0.5)
    # g <- -g + 0.5*p = [-0.25 + 0.5, -1 - 1, 4 + 0.25]
    np.testing.assert_array_equal(param, [1.0 - 0.125, -2.0 + 1.0, 0.5 - 2.125])


# -- Momentum, form="torch" ------------------------------------------------------------------

TORCH_FORMS = [
    dict(dampening=0.0, nesterov=False),
    dict(dampening=0.3, nesterov=False),
    dict(dampening=0.0, nesterov=True),
]


@pytest.mark.parametrize("weight_decay,maximize,decoupled", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("form", TORCH_FORMS, ids=["heavy-ball", "dampening", "nesterov"])
def test_momentum_torch_form(kernel_module, form, weight_decay, maximize, decoupled):
    lr, mu, d = 0.1, 0.9, form["dampening"]
    p, b = list(P0), [None] * 3
    param, buf = arr(P0), np.zeros(3)
    for t, grad in enumerate(GRADS, start=1):
        for i in range(3):
            p[i], g = prologue(p[i], grad[i], lr, weight_decay, maximize, decoupled)
            b[i] = g if t == 1 else mu * b[i] + (1 - d) * g  # no dampening on step 1
            p[i] = p[i] - lr * (g + mu * b[i] if form["nesterov"] else b[i])
        kernel_module.momentum_step(param, arr(grad), buf, lr=lr, momentum=mu, step=t,
                                    form="torch", weight_decay=weight_decay,
                                    maximize=maximize, decoupled_weight_decay=decoupled,
                                    **form)
        assert_close(buf, b, f"momentum_buffer after step {t}")
        assert_close(param, p, f"param after step {t}")


def test_momentum_torch_first_step_is_sgd(kernel_module):
    # b = g on step 1 whatever the dampening, so the first step is plain SGD (dyadic: exact)
    param, buf = arr([1.0, -2.0, 0.5]), np.zeros(3)
    kernel_module.momentum_step(param, arr([0.25, 1.0, -4.0]), buf, lr=0.5, momentum=0.9,
                                step=1, dampening=0.5)
    np.testing.assert_array_equal(buf, [0.25, 1.0, -4.0])
    np.testing.assert_array_equal(param, [0.875, -2.5, 2.5])


# -- Momentum, form="ewma" -------------------------------------------------------------------

@pytest.mark.parametrize("weight_decay,maximize,decoupled", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("bias_correction", [False, True], ids=["raw", "bias_corrected"])
@pytest.mark.parametrize("nesterov", [False, True], ids=["ewma", "ewma-nesterov"])
def test_momentum_ewma_form(kernel_module, nesterov, bias_correction, weight_decay, maximize,
                            decoupled):
    lr, beta = 0.1, 0.8
    p, v = list(P0), [0.0] * 3
    param, buf = arr(P0), np.zeros(3)
    for t, grad in enumerate(GRADS, start=1):
        correction = 1 - beta ** t if bias_correction else 1.0
        for i in range(3):
            p[i], g = prologue(p[i], grad[i], lr, weight_decay, maximize, decoupled)
            v[i] = beta * v[i] + (1 - beta) * g
            # nesterov (docs/design.md): look one
            # EWMA step ahead with the same gradient
            direction = beta * v[i] + (1 - beta) * g if nesterov else v[i]
            p[i] = p[i] - lr * (direction / correction)
        kernel_module.momentum_step(param, arr(grad), buf, lr=lr, momentum=beta, step=t,
                                    form="ewma", nesterov=nesterov,
                                    bias_correction=bias_correction,
                                    weight_decay=weight_decay, maximize=maximize,
                                    decoupled_weight_decay=decoupled)
        assert_close(buf, v, f"momentum_buffer after step {t}")
        assert_close(param, p, f"param after step {t}")


def test_momentum_ewma_bias_corrected_constant_grad_steps_by_lr_g(kernel_module):
    # with a constant gradient the bias-corrected EWMA is g itself: every step is lr*g
    lr, beta, g = 0.1, 0.9, [0.3, -0.7, 1.1]
    param, buf = np.zeros(3), np.zeros(3)
    for t in range(1, 4):
        kernel_module.momentum_step(param, arr(g), buf, lr=lr, momentum=beta, step=t,
                                    form="ewma", bias_correction=True)
        assert_close(param, [-t * lr * gi for gi in g], f"param after step {t}")


# -- Momentum, form="velocity" ---------------------------------------------------------------

@pytest.mark.parametrize("weight_decay,maximize,decoupled", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("nesterov", [False, True], ids=["velocity", "velocity-nesterov"])
def test_momentum_velocity_form(kernel_module, nesterov, weight_decay, maximize, decoupled):
    lr, mu = 0.1, 0.9
    p, v = list(P0), [0.0] * 3
    param, buf = arr(P0), np.zeros(3)
    for t, grad in enumerate(GRADS, start=1):
        for i in range(3):
            p[i], g = prologue(p[i], grad[i], lr, weight_decay, maximize, decoupled)
            if nesterov:  # Deep Learning from Scratch's corrected code: the *previous* v
                p[i] = p[i] + mu * mu * v[i] - (1 + mu) * lr * g
                v[i] = mu * v[i] - lr * g
            else:
                v[i] = mu * v[i] - lr * g
                p[i] = p[i] + v[i]
        kernel_module.momentum_step(param, arr(grad), buf, lr=lr, momentum=mu, step=t,
                                    form="velocity", nesterov=nesterov,
                                    weight_decay=weight_decay, maximize=maximize,
                                    decoupled_weight_decay=decoupled)
        assert_close(buf, v, f"momentum_buffer after step {t}")
        assert_close(param, p, f"param after step {t}")


def _torch_vs_velocity(kernel_module, nesterov):
    lr, mu = 0.1, 0.9
    p_torch, b = arr(P0), np.zeros(3)
    p_velocity, v = arr(P0), np.zeros(3)
    for t, grad in enumerate(GRADS, start=1):
        kernel_module.momentum_step(p_torch, arr(grad), b, lr=lr, momentum=mu, step=t,
                                    form="torch", nesterov=nesterov)
        kernel_module.momentum_step(p_velocity, arr(grad), v, lr=lr, momentum=mu, step=t,
                                    form="velocity", nesterov=nesterov)
        assert_close(v, -lr * b, f"velocity vs -lr*buffer after step {t}")
        assert_close(p_velocity, p_torch, f"param after step {t}")


def test_velocity_form_is_torch_form_with_v_equal_minus_lr_b(kernel_module):
    # with a constant lr, v = -lr*b turns one recurrence into the other: same trajectory
    _torch_vs_velocity(kernel_module, nesterov=False)


def test_velocity_nesterov_is_torch_nesterov_with_v_equal_minus_lr_b(kernel_module):
    # the corrected velocity Nesterov (CS231n: p <- p - mu*v0 + (1+mu)*v) is torch's
    # Nesterov up to rounding, as the plain forms are
    _torch_vs_velocity(kernel_module, nesterov=True)


def test_velocity_nesterov_first_step_is_one_plus_mu(kernel_module):
    """The first step from v = 0 moves (1+mu)*lr*g, as CS231n, Keras and the corrected Deep
    Learning from Scratch do (the superseded book code moved (1+mu+mu^2)*lr*g)."""
    mu, lr, g = 0.9, 0.1, np.array([1.0, -2.0, 0.5])
    param, v = np.zeros(3), np.zeros(3)
    kernel_module.momentum_step(param, g, v, lr=lr, momentum=mu, step=1, form="velocity",
                                nesterov=True)
    assert_close(param, list(-(1 + mu) * lr * g), "velocity nesterov, step 1")
    torch_form, b = np.zeros(3), np.zeros(3)
    kernel_module.momentum_step(torch_form, g, b, lr=lr, momentum=mu, step=1, form="torch",
                                nesterov=True)
    assert_close(torch_form, list(-(1 + mu) * lr * g), "torch nesterov, step 1")


def textbook_nesterov(p0, grads, lr, mu, dtype):
    """Deep Learning from Scratch's Nesterov (common/optimizer.py), current code, written
    out with NumPy arrays in place as the book does: the param update uses the previous
    velocity, then the velocity is updated."""
    params, v = np.array(p0, dtype), np.zeros(len(p0), dtype)
    for grad in grads:
        grad = np.array(grad, dtype)
        params += mu * mu * v
        params -= (1 + mu) * lr * grad
        v *= mu
        v -= lr * grad
        yield params.copy(), v.copy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_velocity_nesterov_is_the_textbooks_code_and_torchs_nesterov(backend, dtype):
    """fastoptim.Nesterov(form="velocity") against the textbook's code and against
    fastoptim.Nesterov() (torch's form, v = -lr*b), over LONG_GRADS: equal up to rounding
    (a few ulp of p), while the superseded book code, which used the updated velocity in
    mu*mu*v, is off by mu^2*lr*g from the first step."""
    lr, mu = 0.1, 0.9
    tolerance = dict(rtol=64 * np.finfo(dtype).eps, atol=64 * np.finfo(dtype).eps)
    velocity, torch_form = np.array(P0, dtype), np.array(P0, dtype)
    velocity_opt = fo.Nesterov(velocity, lr=lr, momentum=mu, form="velocity", backend=backend)
    torch_opt = fo.Nesterov(torch_form, lr=lr, momentum=mu, backend=backend)
    textbook = textbook_nesterov(P0, LONG_GRADS, lr, mu, dtype)
    for t, (grad, (p, v)) in enumerate(zip(LONG_GRADS, textbook), start=1):
        velocity_opt.step(np.array(grad, dtype))
        torch_opt.step(np.array(grad, dtype))
        if t == 1:
            first_step = velocity - np.array(P0, dtype)
        np.testing.assert_allclose(velocity, p, **tolerance, err_msg=f"vs textbook, step {t}")
        np.testing.assert_allclose(velocity_opt.state[0]["momentum_buffer"], v, **tolerance)
        np.testing.assert_allclose(velocity, torch_form, **tolerance,
                                   err_msg=f"vs torch form, step {t}")
        np.testing.assert_allclose(v, -lr * torch_opt.state[0]["momentum_buffer"], **tolerance)
    g1 = np.array(LONG_GRADS[0])
    assert np.all(np.abs(first_step + (1 + mu + mu * mu) * lr * g1) > 0.5 * mu * mu * lr
                  * np.abs(g1)), "the superseded code's first step"


# -- AdaGrad ---------------------------------------------------------------------------------

@pytest.mark.parametrize("weight_decay,maximize,decoupled", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("lr_decay,initial", [(0.0, 0.0), (0.1, 0.0), (0.0, 0.4), (0.25, 0.4)],
                         ids=["plain", "lr_decay", "initial_accumulator", "both"])
def test_adagrad(kernel_module, lr_decay, initial, weight_decay, maximize, decoupled):
    lr, eps = 0.1, 1e-10
    p, s = list(P0), [initial] * 3
    param, state_sum = arr(P0), np.full(3, initial)
    for t, grad in enumerate(GRADS, start=1):
        clr = lr / (1 + (t - 1) * lr_decay)
        for i in range(3):
            p[i], g = prologue(p[i], grad[i], lr, weight_decay, maximize, decoupled)
            s[i] = s[i] + g * g
            p[i] = p[i] - clr * g / (math.sqrt(s[i]) + eps)
        kernel_module.adagrad_step(param, arr(grad), state_sum, lr=lr, step=t,
                                   lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                                   maximize=maximize, decoupled_weight_decay=decoupled)
        assert_close(state_sum, s, f"state_sum after step {t}")
        assert_close(param, p, f"param after step {t}")


def test_adagrad_first_step_is_exactly_lr_sign_g(kernel_module):
    # s = g*g, sqrt(s) = |g| exactly (correctly rounded sqrt of a correctly rounded square),
    # and lr = 1/4 keeps lr*g exact: each param moves by exactly lr against its gradient
    param, state_sum = np.zeros(3), np.zeros(3)
    kernel_module.adagrad_step(param, arr([3.0, -1e-3, 250.7]), state_sum, lr=0.25, step=1,
                               eps=0.0)
    np.testing.assert_array_equal(param, [-0.25, 0.25, -0.25])


# -- RMSProp ---------------------------------------------------------------------------------

@pytest.mark.parametrize("weight_decay,maximize,decoupled", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("centered", [False, True], ids=["plain", "centered"])
@pytest.mark.parametrize("momentum", [0.0, 0.5], ids=["no_momentum", "momentum"])
def test_rmsprop(kernel_module, centered, momentum, weight_decay, maximize, decoupled):
    lr, alpha, eps = 0.01, 0.9, 1e-8
    p, v, ga, b = list(P0), [0.0] * 3, [0.0] * 3, [0.0] * 3
    param, square_avg = arr(P0), np.zeros(3)
    grad_avg = np.zeros(3) if centered else None
    momentum_buffer = np.zeros(3) if momentum else None
    for t, grad in enumerate(GRADS, start=1):
        for i in range(3):
            p[i], g = prologue(p[i], grad[i], lr, weight_decay, maximize, decoupled)
            v[i] = alpha * v[i] + (1 - alpha) * g * g
            if centered:
                ga[i] = alpha * ga[i] + (1 - alpha) * g
                den = math.sqrt(v[i] - ga[i] ** 2) + eps
            else:
                den = math.sqrt(v[i]) + eps
            if momentum:
                b[i] = momentum * b[i] + g / den
                p[i] = p[i] - lr * b[i]
            else:
                p[i] = p[i] - lr * g / den
        kernel_module.rmsprop_step(param, arr(grad), square_avg, grad_avg, momentum_buffer,
                                   lr=lr, alpha=alpha, eps=eps, momentum=momentum,
                                   weight_decay=weight_decay, maximize=maximize,
                                   decoupled_weight_decay=decoupled)
        assert_close(square_avg, v, f"square_avg after step {t}")
        if centered:
            assert_close(grad_avg, ga, f"grad_avg after step {t}")
        if momentum:
            assert_close(momentum_buffer, b, f"momentum_buffer after step {t}")
        assert_close(param, p, f"param after step {t}")


def test_rmsprop_first_step_is_exact(kernel_module):
    # alpha = 3/4: v = g*g/4, sqrt(v) = |g|/2 exactly, so p moves by lr*2*sign(g) = 1/2
    param, square_avg = np.zeros(3), np.zeros(3)
    kernel_module.rmsprop_step(param, arr([3.0, -1e-3, 250.7]), square_avg, lr=0.25,
                               alpha=0.75, eps=0.0)
    np.testing.assert_array_equal(param, [-0.5, 0.5, -0.5])


# -- eps inside the square root (the lectures) -----------------------------------------------

# an eps large enough that sqrt(s + eps) and sqrt(s) + eps differ far beyond the tolerance
LECTURE_EPS = 1e-2


@pytest.mark.parametrize("weight_decay,maximize,decoupled", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("lr_decay", [0.0, 0.1], ids=["plain", "lr_decay"])
def test_adagrad_eps_in_sqrt_is_the_lectures_formula(kernel_module, lr_decay, weight_decay,
                                                     maximize, decoupled):
    """G <- G + g^2;  w <- w - eta*g/sqrt(G + eps)  (eta = lr/(1 + (t-1)*lr_decay))"""
    lr = 0.1

    def hand(t, w, g, st):
        w, g = prologue(w, g, lr, weight_decay, maximize, decoupled)
        st["sum"] += g * g
        return w - lr / (1 + (t - 1) * lr_decay) * g / math.sqrt(st["sum"] + LECTURE_EPS)

    check_steps(kernel_stepper(kernel_module.adagrad_step, [("sum", 0.0)], lr=lr,
                               lr_decay=lr_decay, eps=LECTURE_EPS, eps_in_sqrt=True,
                               **decay_options(weight_decay, maximize, decoupled)),
                hand, [("sum", 0.0)])


@pytest.mark.parametrize("weight_decay,maximize,decoupled", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("centered", [False, True], ids=["plain", "centered"])
@pytest.mark.parametrize("momentum", [0.0, 0.5], ids=["no_momentum", "momentum"])
def test_rmsprop_eps_in_sqrt_is_the_lectures_formula(backend, centered, momentum,
                                                     weight_decay, maximize, decoupled):
    """S <- beta*S + (1-beta)*g^2;  w <- w - alpha*g/sqrt(S + eps)  (Ng's RMSprop; centered:
    sqrt(S - ga^2 + eps); momentum: b <- mu*b + g/sqrt(...), w <- w - alpha*b), through
    the class"""
    lr, beta = 0.01, 0.9
    state = ([("square_avg", 0.0)] + ([("momentum_buffer", 0.0)] if momentum else [])
             + ([("grad_avg", 0.0)] if centered else []))

    def hand(t, w, g, st):
        w, g = prologue(w, g, lr, weight_decay, maximize, decoupled)
        st["square_avg"] = beta * st["square_avg"] + (1 - beta) * g * g
        variance = st["square_avg"]
        if centered:
            st["grad_avg"] = beta * st["grad_avg"] + (1 - beta) * g
            variance -= st["grad_avg"] ** 2
        scaled = g / math.sqrt(variance + LECTURE_EPS)
        if momentum:
            st["momentum_buffer"] = momentum * st["momentum_buffer"] + scaled
            return w - lr * st["momentum_buffer"]
        return w - lr * scaled

    check_steps(class_stepper(fo.RMSProp, backend, lr=lr, alpha=beta, eps=LECTURE_EPS,
                              momentum=momentum, centered=centered, eps_in_sqrt=True,
                              **decay_options(weight_decay, maximize, decoupled)),
                hand, state)


@pytest.mark.parametrize("kernel,extra", [("adagrad_step", {}), ("rmsprop_step", {})])
def test_eps_in_sqrt_is_not_eps_outside(kernel_module, kernel, extra):
    # the tests above can tell the two placements apart: one step differs far beyond RTOL
    params = []
    for eps_in_sqrt in (False, True):
        param, state = arr(P0), np.zeros(3)
        getattr(kernel_module, kernel)(param, arr(GRADS[0]), state, lr=0.1, step=1,
                                       eps=LECTURE_EPS, eps_in_sqrt=eps_in_sqrt)
        params.append(param)
    assert np.all(np.abs(params[0] - params[1]) > 1e3 * RTOL * np.abs(params[1]))



# -- Adadelta --------------------------------------------------------------------------------

@pytest.mark.parametrize("weight_decay,maximize,decoupled", OPTIONS, ids=OPTION_IDS)
def test_adadelta(kernel_module, weight_decay, maximize, decoupled):
    """Zeiler 2012, Algorithm 1, with torch's lr scaling the step: E[g^2] <- rho*E[g^2] +
    (1-rho)*g^2;  dx = -(RMS[dx]_{t-1}/RMS[g]_t)*g with RMS[y] = sqrt(E[y^2] + eps);
    E[dx^2] <- rho*E[dx^2] + (1-rho)*dx^2;  p <- p + lr*dx"""
    lr, rho, eps = 0.5, 0.8, 1e-3

    def hand(t, p, g, st):
        p, g = prologue(p, g, lr, weight_decay, maximize, decoupled)
        st["square_avg"] = rho * st["square_avg"] + (1 - rho) * g * g
        dx = -math.sqrt(st["acc_delta"] + eps) / math.sqrt(st["square_avg"] + eps) * g
        st["acc_delta"] = rho * st["acc_delta"] + (1 - rho) * dx * dx
        return p + lr * dx

    state = [("square_avg", 0.0), ("acc_delta", 0.0)]
    check_steps(kernel_stepper(kernel_module.adadelta_step, state, lr=lr, rho=rho, eps=eps,
                               **decay_options(weight_decay, maximize, decoupled)),
                hand, state)


# -- Adam, AdamW -----------------------------------------------------------------------------

# grads whose squares shrink in elements 0 and 2, so that amsgrad's max(vmax, v) matters
ADAM_GRADS = [[2.0, -0.3, 1.5], [0.1, 0.9, -0.2], [-0.4, 0.2, 0.05]]


def hand_adam(p, grads, *, lr, beta1, beta2, eps, eps_root, weight_decay, maximize,
              amsgrad, decoupled):
    """Yield (p, m, v, vmax) after each step, from the textbook form of Adam:
    m_hat = m/(1-b1^t), v_hat = v/(1-b2^t), p -= lr*m_hat/(sqrt(v_hat [+ eps_root]) + eps)."""
    p, m, v, vmax = list(p), [0.0] * len(p), [0.0] * len(p), [0.0] * len(p)
    for t, grad in enumerate(grads, start=1):
        for i in range(len(p)):
            if decoupled:
                p[i] = p[i] * (1 - lr * weight_decay)
                g = effective(grad[i], p[i], 0.0, maximize)
            else:
                g = effective(grad[i], p[i], weight_decay, maximize)
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            vmax[i] = max(vmax[i], v[i])
            m_hat = m[i] / (1 - beta1 ** t)
            v_hat = (vmax[i] if amsgrad else v[i]) / (1 - beta2 ** t)
            p[i] = p[i] - lr * m_hat / (math.sqrt(v_hat + eps_root) + eps)
        yield list(p), list(m), list(v), list(vmax)


@pytest.mark.parametrize("weight_decay,maximize", GRAD_OPTIONS, ids=GRAD_IDS)
@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
@pytest.mark.parametrize("eps_root", [0.0, 1e-3], ids=["eps", "eps_root"])
@pytest.mark.parametrize("decoupled", [False, True], ids=["adam_step", "adamw_step"])
def test_adam(kernel_module, decoupled, eps_root, amsgrad, weight_decay, maximize):
    hyper = dict(lr=0.05, beta1=0.8, beta2=0.6, eps=1e-8, eps_root=eps_root,
                 weight_decay=weight_decay, maximize=maximize)
    expected = hand_adam(P0, ADAM_GRADS, amsgrad=amsgrad, decoupled=decoupled, **hyper)
    kernel = kernel_module.adamw_step if decoupled else kernel_module.adam_step
    param, exp_avg, exp_avg_sq = arr(P0), np.zeros(3), np.zeros(3)
    max_exp_avg_sq = np.zeros(3) if amsgrad else None
    vmax_differs = False
    for t, (grad, (p, m, v, vmax)) in enumerate(zip(ADAM_GRADS, expected), start=1):
        kernel(param, arr(grad), exp_avg, exp_avg_sq, max_exp_avg_sq, step=t, **hyper)
        assert_close(exp_avg, m, f"exp_avg after step {t}")
        assert_close(exp_avg_sq, v, f"exp_avg_sq after step {t}")
        if amsgrad:
            assert_close(max_exp_avg_sq, vmax, f"max_exp_avg_sq after step {t}")
        assert_close(param, p, f"param after step {t}")
        vmax_differs |= vmax != v
    assert vmax_differs, "the test data never exercises amsgrad"


@pytest.mark.parametrize("eps,factor", [(0.0, lambda g: 1.0),
                                        (1e-8, lambda g: abs(g) / (abs(g) + 1e-8))],
                         ids=["eps=0", "eps=1e-8"])
def test_adam_first_step_moves_by_lr_sign_g(kernel_module, eps, factor):
    # after one step m_hat = g and v_hat = g*g, so p moves by lr*g/(|g| + eps): exactly
    # lr*sign(g) with eps = 0, slightly less for a gradient as small as eps
    lr, grad = 1e-3, [3.0, -1e-6, 250.0]
    param, exp_avg, exp_avg_sq = np.zeros(3), np.zeros(3), np.zeros(3)
    kernel_module.adam_step(param, arr(grad), exp_avg, exp_avg_sq, lr=lr, step=1, eps=eps)
    assert_close(param, [-lr * math.copysign(factor(g), g) for g in grad], "param")
    if eps == 1e-8:  # the eps is visible on the tiny gradient: 1e-6/(1e-6 + 1e-8) = 1/1.01
        assert abs(param[1] - lr / 1.01) < 1e-15


def test_adamw_decay_alone_scales_param(kernel_module):
    # a zero gradient leaves m = v = 0, so only the decoupled decay p*(1 - lr*wd) acts
    param, m, v = arr(P0), np.zeros(3), np.zeros(3)
    kernel_module.adamw_step(param, np.zeros(3), m, v, lr=0.5, step=1, weight_decay=0.5)
    np.testing.assert_array_equal(param, [x * 0.75 for x in P0])
    np.testing.assert_array_equal(m, [0.0, 0.0, 0.0])


@pytest.mark.parametrize("weight_decay,maximize", GRAD_OPTIONS, ids=GRAD_IDS)
@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
@pytest.mark.parametrize("cls", [fo.Adam, fo.AdamW], ids=["Adam", "AdamW"])
def test_adam_eps_hat_is_kingma_and_bas_efficient_form(backend, cls, amsgrad, weight_decay,
                                                       maximize):
    """Kingma & Ba, end of section 2 (and Deep Learning from Scratch's Adam): no bias-
    corrected moments, a corrected step size lr_t = lr*sqrt(1 - b2^t)/(1 - b1^t) and
    p <- p - lr_t*m/(sqrt(v) + eps_hat); the moments as the textbook updates them,
    m += (1-b1)*(g - m). eps = 1e-3 makes eps_hat differ visibly from torch's eps."""
    lr, b1, b2, eps = 0.05, 0.8, 0.6, 1e-3
    decoupled = cls is fo.AdamW
    state = [("exp_avg", 0.0), ("exp_avg_sq", 0.0)] + ([("max_exp_avg_sq", 0.0)] if amsgrad
                                                       else [])

    def hand(t, p, g, st):
        p, g = prologue(p, g, lr, weight_decay, maximize, decoupled)
        st["exp_avg"] += (1 - b1) * (g - st["exp_avg"])
        st["exp_avg_sq"] += (1 - b2) * (g * g - st["exp_avg_sq"])
        v = st["exp_avg_sq"]
        if amsgrad:
            v = st["max_exp_avg_sq"] = max(st["max_exp_avg_sq"], v)
        lr_t = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        return p - lr_t * st["exp_avg"] / (math.sqrt(v) + eps)

    check_steps(class_stepper(cls, backend, lr=lr, betas=(b1, b2), eps=eps, amsgrad=amsgrad,
                              eps_hat=True, weight_decay=weight_decay, maximize=maximize),
                hand, state, grads=ADAM_GRADS)


def test_adam_eps_hat_first_step(kernel_module):
    # after one step m = (1-b1)*g and v = (1-b2)*g^2, so lr_t*m/sqrt(v) = lr*sign(g): the
    # move is lr*|g|/(|g| + eps/sqrt(1-b2)) -- eps_hat acts on the raw sqrt(v) -- where
    # torch's eps (on sqrt(v/bc2)) gives lr*|g|/(|g| + eps)
    lr, b2, eps, grad = 0.1, 0.75, 0.5, [3.0, -0.5, 0.25]
    moved = {}
    for eps_hat in (False, True):
        param, m, v = np.zeros(3), np.zeros(3), np.zeros(3)
        kernel_module.adam_step(param, arr(grad), m, v, lr=lr, step=1, beta2=b2, eps=eps,
                                eps_hat=eps_hat)
        moved[eps_hat] = param
    sqrt_bc2 = math.sqrt(1 - b2)    # 1/2: every value below is exact in binary
    assert_close(moved[True], [-lr * g / (abs(g) + eps / sqrt_bc2) for g in grad], "eps_hat")
    assert_close(moved[False], [-lr * g / (abs(g) + eps) for g in grad], "torch's eps")


# -- Adamax ----------------------------------------------------------------------------------

@pytest.mark.parametrize("weight_decay,maximize,decoupled", OPTIONS, ids=OPTION_IDS)
def test_adamax(kernel_module, weight_decay, maximize, decoupled):
    """Kingma & Ba, section 7.1, with torch's eps: m <- b1*m + (1-b1)*g;
    u <- max(b2*u, |g| + eps);  p <- p - (lr/(1 - b1^t))*m/u"""
    lr, b1, b2, eps = 0.05, 0.8, 0.6, 1e-3
    kept_the_decayed_max = []

    def hand(t, p, g, st):
        p, g = prologue(p, g, lr, weight_decay, maximize, decoupled)
        st["exp_avg"] = b1 * st["exp_avg"] + (1 - b1) * g
        kept_the_decayed_max.append(b2 * st["exp_inf"] > abs(g) + eps)
        st["exp_inf"] = max(b2 * st["exp_inf"], abs(g) + eps)
        return p - lr / (1 - b1 ** t) * st["exp_avg"] / st["exp_inf"]

    check_steps(kernel_stepper(kernel_module.adamax_step, [("exp_avg", 0.0), ("exp_inf", 0.0)],
                               lr=lr, beta1=b1, beta2=b2, eps=eps,
                               **decay_options(weight_decay, maximize, decoupled)),
                hand, [("exp_avg", 0.0), ("exp_inf", 0.0)], grads=ADAM_GRADS)
    assert any(kept_the_decayed_max) and not all(kept_the_decayed_max)


# -- NAdam -----------------------------------------------------------------------------------

@pytest.mark.parametrize("weight_decay,maximize,decoupled", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("momentum_decay", [4e-3, 0.5], ids=["psi=0.004", "psi=0.5"])
@pytest.mark.parametrize("via", ["kernel", "class"])
def test_nadam(kernel_module, backend, via, momentum_decay, weight_decay, maximize,
               decoupled):
    """Dozat 2016 as torch.optim.NAdam writes it: mu_t = b1*(1 - 0.5*0.96^(t*psi));
    m_hat = mu_{t+1}*m/(1 - mu_1...mu_{t+1}) + (1 - mu_t)*g/(1 - mu_1...mu_t);
    p <- p - lr*m_hat/(sqrt(v/(1 - b2^t)) + eps). Through the kernel, given the product of
    the mu, and through the class, which keeps that product (its scalar mu_product)."""
    lr, b1, b2, eps = 0.05, 0.8, 0.6, 1e-3

    def mu(t):
        return b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))

    products = [math.prod(mu(k) for k in range(1, t + 1)) for t in range(1, len(ADAM_GRADS) + 2)]

    def hand(t, p, g, st):
        p, g = prologue(p, g, lr, weight_decay, maximize, decoupled)
        m = st["exp_avg"] = b1 * st["exp_avg"] + (1 - b1) * g
        v = st["exp_avg_sq"] = b2 * st["exp_avg_sq"] + (1 - b2) * g * g
        m_hat = mu(t + 1) * m / (1 - products[t]) + (1 - mu(t)) * g / (1 - products[t - 1])
        return p - lr * m_hat / (math.sqrt(v / (1 - b2 ** t)) + eps)

    hyper = dict(lr=lr, eps=eps, momentum_decay=momentum_decay,
                 **decay_options(weight_decay, maximize, decoupled))
    state = [("exp_avg", 0.0), ("exp_avg_sq", 0.0)]
    if via == "kernel":
        stepper = kernel_stepper(kernel_module.nadam_step, state, beta1=b1, beta2=b2,
                                 per_step=lambda t: {"mu_product": products[t - 1]}, **hyper)
        check_steps(stepper, hand, state, grads=ADAM_GRADS)
    else:
        stepper = class_stepper(fo.NAdam, backend, betas=(b1, b2), **hyper)

        def mu_product_kept(t, _):
            assert stepper.optimizer.scalars["mu_product"] == pytest.approx(products[t - 1],
                                                                            rel=RTOL)
        check_steps(stepper, hand, state, grads=ADAM_GRADS, after_step=mu_product_kept)


# -- RAdam -----------------------------------------------------------------------------------

@pytest.mark.parametrize("weight_decay,maximize,decoupled", OPTIONS, ids=OPTION_IDS)
def test_radam(kernel_module, weight_decay, maximize, decoupled):
    """Liu et al. 2020, Algorithm 2, with torch's eps: rho_inf = 2/(1-b2) - 1,
    rho_t = rho_inf - 2t*b2^t/(1-b2^t); while rho_t <= 5, SGD with the bias-corrected
    momentum p <- p - lr*m_hat; from then on p <- p - lr*r_t*m_hat*l_t with
    l_t = sqrt(1-b2^t)/(sqrt(v) + eps) and r_t the variance rectification term."""
    lr, b1, b2, eps = 0.05, 0.8, 0.999, 1e-3
    rho_inf = 2 / (1 - b2) - 1
    rectified_at = set()

    def hand(t, p, g, st):
        p, g = prologue(p, g, lr, weight_decay, maximize, decoupled)
        m = st["exp_avg"] = b1 * st["exp_avg"] + (1 - b1) * g
        v = st["exp_avg_sq"] = b2 * st["exp_avg_sq"] + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
        if rho <= 5:
            return p - lr * m_hat
        rectified_at.add(t)
        r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
        return p - lr * r * m_hat * math.sqrt(1 - b2 ** t) / (math.sqrt(v) + eps)

    state = [("exp_avg", 0.0), ("exp_avg_sq", 0.0)]
    check_steps(kernel_stepper(kernel_module.radam_step, state, lr=lr, beta1=b1, beta2=b2,
                               eps=eps, **decay_options(weight_decay, maximize, decoupled)),
                hand, state, grads=LONG_GRADS)
    # rho_5 = 4.996 and rho_6 = 5.994: both branches ran, switching where the paper says
    assert rectified_at == {6, 7, 8}



# -- Lion ------------------------------------------------------------------------------------

@pytest.mark.parametrize("weight_decay,maximize", GRAD_OPTIONS, ids=GRAD_IDS)
def test_lion(kernel_module, weight_decay, maximize):
    """Chen et al. 2023, Algorithm 2: c = b1*m + (1-b1)*g;  p <- p - lr*(sign(c) + wd*p);
    m <- b2*m + (1-b2)*g  (the decay is always decoupled)"""
    lr, b1, b2 = 0.1, 0.8, 0.6

    def hand(t, p, g, st):
        g = -g if maximize else g
        c = b1 * st["exp_avg"] + (1 - b1) * g
        st["exp_avg"] = b2 * st["exp_avg"] + (1 - b2) * g
        return p - lr * (sign(c) + weight_decay * p)

    check_steps(kernel_stepper(kernel_module.lion_step, [("exp_avg", 0.0)], lr=lr, beta1=b1,
                               beta2=b2, weight_decay=weight_decay, maximize=maximize),
                hand, [("exp_avg", 0.0)], grads=ADAM_GRADS)


def test_lion_sign_of_zero_is_zero(kernel_module):
    # b1 = b2 = 1/2 and dyadic values keep everything exact. Element 0: g = 0 from m = 0, so
    # c = 0 and only the decay moves p. Element 1: c = 0.5*1 + 0.5*(-1) = 0 on step 2
    # although m and g are not 0. Element 2: c = 1/2 > 0, a full step of lr.
    param, m = arr([1.0, 1.0, 1.0]), np.zeros(3)
    kernel_module.lion_step(param, arr([0.0, 2.0, 0.0]), m, lr=0.25, beta1=0.5, beta2=0.5,
                            weight_decay=0.5)
    np.testing.assert_array_equal(param, [0.875, 0.625, 0.875])   # p*(1 - 1/8) - lr*sign(c)
    np.testing.assert_array_equal(m, [0.0, 1.0, 0.0])
    kernel_module.lion_step(param, arr([0.0, -1.0, 1.0]), m, lr=0.25, beta1=0.5, beta2=0.5,
                            step=2)
    np.testing.assert_array_equal(param, [0.875, 0.625, 0.625])
    np.testing.assert_array_equal(m, [0.0, 0.0, 0.5])


# -- Rprop -----------------------------------------------------------------------------------

# element 0 keeps its sign (the step size grows to the upper bound), element 1 alternates
# (it shrinks to the lower bound, and every other gradient is dropped), element 2 is always
# 0, element 3 flips once
RPROP_P0 = [0.5, -1.25, 2.0, 0.75]
RPROP_GRADS = [[0.3, 0.7, 0.0, 0.2], [0.5, -0.4, 0.0, 0.1], [0.2, 0.6, 0.0, -0.3],
               [0.9, -0.8, 0.0, 0.4], [0.1, 0.5, 0.0, 0.6], [0.4, -0.2, 0.0, 0.2]]


@pytest.mark.parametrize("weight_decay,maximize,decoupled", OPTIONS, ids=OPTION_IDS)
def test_rprop(kernel_module, weight_decay, maximize, decoupled):
    """Riedmiller & Braun as torch.optim.Rprop has it: where g*prev > 0 the step size grows
    by eta_plus (at most the upper bound), where < 0 it shrinks by eta_minus (at least the
    lower bound) and this gradient is dropped (no move, prev = 0); p <- p - sign(g)*s"""
    lr, (eta_minus, eta_plus), (low, high) = 0.01, (0.5, 1.2), (0.004, 0.015)

    def hand(t, p, g, st):
        p, g = prologue(p, g, lr, weight_decay, maximize, decoupled)
        if g * st["prev"] > 0:
            st["step_size"] = min(st["step_size"] * eta_plus, high)
        elif g * st["prev"] < 0:
            st["step_size"] = max(st["step_size"] * eta_minus, low)
            g = 0.0
        st["prev"] = g
        return p - sign(g) * st["step_size"]

    state = [("prev", 0.0), ("step_size", lr)]
    check_steps(kernel_stepper(kernel_module.rprop_step, state, p0=RPROP_P0, lr=lr,
                               etas=(eta_minus, eta_plus), step_sizes=(low, high),
                               **decay_options(weight_decay, maximize, decoupled)),
                hand, state, grads=RPROP_GRADS, p0=RPROP_P0)


def test_rprop_bounds_and_dropped_gradients(kernel_module):
    """The cases of test_rprop, checked exactly where exact: the step size reaches each
    bound, a flipped gradient leaves its param where it was and prev at 0, a zero gradient
    moves nothing and keeps the step size."""
    param, prev, step_size = arr(RPROP_P0), np.zeros(4), np.full(4, 0.01)
    history = []
    for t, grad in enumerate(RPROP_GRADS, start=1):
        before = param.copy()
        kernel_module.rprop_step(param, arr(grad), prev, step_size, step=t, etas=(0.5, 1.2),
                                 step_sizes=(0.004, 0.015))
        history.append((before, param.copy(), prev.copy(), step_size.copy()))
    sizes = [h[3] for h in history]
    assert [s[0] for s in sizes][-2:] == [0.015, 0.015]     # 0.01*1.2^3 > 0.015: clamped
    assert sizes[1][1] == 0.005 and sizes[3][1] == 0.004    # 0.0025 < 0.004: clamped
    for t in (2, 4, 6):                                     # element 1 flips on even steps
        before, after, prev_after, _ = history[t - 1]
        assert after[1] == before[1] and prev_after[1] == 0.0
    assert history[2][1][3] == history[2][0][3] and history[2][2][3] == 0.0    # element 3
    assert all(h[1][2] == RPROP_P0[2] and h[3][2] == 0.01 for h in history)   # element 2



# -- ASGD ------------------------------------------------------------------------------------

def hand_asgd(p, g, st, eta, mu, lambd, options):
    """One ASGD step of one element (torch.optim.ASGD): decay by lambd*eta, an SGD step of
    size eta, then the average ax moves towards p by mu (ax <- p while mu == 1)."""
    p, g = prologue(p, g, eta, *options)
    p = p * (1 - lambd * eta)
    p = p - eta * g
    st["ax"] = p if mu == 1 else st["ax"] + mu * (p - st["ax"])
    return p


@pytest.mark.parametrize("weight_decay,maximize,decoupled", OPTIONS, ids=OPTION_IDS)
def test_asgd_step(kernel_module, weight_decay, maximize, decoupled):
    etas, mus, lambd = [0.1, 0.08, 0.06], [1.0, 1.0, 0.5], 0.2
    options = (weight_decay, maximize, decoupled)

    def hand(t, p, g, st):
        return hand_asgd(p, g, st, etas[t - 1], mus[t - 1], lambd, options)

    check_steps(kernel_stepper(kernel_module.asgd_step, [("ax", 0.0)], lambd=lambd,
                               per_step=lambda t: dict(eta=etas[t - 1], mu=mus[t - 1]),
                               **decay_options(*options)),
                hand, [("ax", 0.0)])


@pytest.mark.parametrize("weight_decay,maximize,decoupled", OPTIONS, ids=OPTION_IDS)
def test_asgd_class_schedules_eta_and_averages_from_t0(backend, weight_decay, maximize,
                                                       decoupled):
    """Through the class: after step t, eta = lr/(1 + lambd*lr*t)^alpha and
    mu = 1/max(1, t - t0). So ax follows p until step t0 + 2 and is then the plain mean of
    the iterates from that step on (Polyak-Ruppert averaging)."""
    lr, lambd, alpha, t0 = 0.1, 0.5, 0.75, 2
    schedule = {"eta": lr, "mu": 1.0}
    options = (weight_decay, maximize, decoupled)
    stepper = class_stepper(fo.ASGD, backend, lr=lr, lambd=lambd, alpha=alpha, t0=t0,
                            **decay_options(*options))
    iterates = []

    def hand(t, p, g, st):
        return hand_asgd(p, g, st, schedule["eta"], schedule["mu"], lambd, options)

    def after_step(t, p):
        schedule["eta"] = lr / (1 + lambd * lr * t) ** alpha
        schedule["mu"] = 1 / max(1, t - t0)
        opt = stepper.optimizer
        assert opt.scalars["eta"] == pytest.approx(schedule["eta"], rel=RTOL)
        assert opt.scalars["mu"] == schedule["mu"]
        iterates.append(p)
        first = min(t, t0 + 2)      # the iterates averaged so far
        mean = [sum(x[i] for x in iterates[first - 1:]) / (t - first + 1) for i in range(3)]
        assert_close(opt.state[0]["ax"], mean, f"ax after step {t}")

    check_steps(stepper, hand, [("ax", 0.0)], grads=LONG_GRADS, after_step=after_step)


# -- Schedule-Free AdamW ---------------------------------------------------------------------

def hand_schedulefree(p0, grads, *, lr, b1, b2, eps, weight_decay, warmup_steps, r,
                      weight_lr_power, maximize):
    """Defazio et al. 2024, Algorithm 1 (Schedule-Free AdamW), in its three sequences:
    the gradient is taken at y_t = (1-b1)*z_t + b1*x_t;  z_{t+1} = z_t - lr_t*(g/(sqrt(v/bc2)
    + eps) + wd*y_t);  x_{t+1} = (1 - c)*x_t + c*z_{t+1} with c = w_t/(w_1 + ... + w_t).
    As in the authors' code (schedulefree.AdamWScheduleFree) the second moment is bias-
    corrected inside the root, lr_t = lr*min(1, t/warmup_steps), and w_t = t^r *
    max(lr_1..lr_t)^weight_lr_power. lr may be a schedule (a function of t - 1, as the
    classes take it). Yields (x, y, z) after each step, y the next point."""
    x, z, v = list(p0), list(p0), [0.0] * len(p0)
    lr_max, weight_sum = 0.0, 0.0
    for t, grad in enumerate(grads, start=1):
        y = [(1 - b1) * zi + b1 * xi for zi, xi in zip(z, x)]
        lr_t = lr(t - 1) if callable(lr) else lr
        lr_t = lr_t * min(1.0, t / warmup_steps) if warmup_steps else lr_t
        lr_max = max(lr_max, lr_t)
        weight = t ** r * lr_max ** weight_lr_power
        weight_sum += weight
        c = weight / weight_sum
        for i, g in enumerate(grad):
            g = -g if maximize else g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            z[i] = z[i] - lr_t * (g / (math.sqrt(v[i] / (1 - b2 ** t)) + eps)
                                  + weight_decay * y[i])
            x[i] = (1 - c) * x[i] + c * z[i]
        yield list(x), [(1 - b1) * zi + b1 * xi for zi, xi in zip(z, x)], list(z)


SCHEDULEFREE_VARIANTS = [
    dict(lr=0.1, warmup_steps=0, r=0.0, weight_lr_power=2.0, weight_decay=0.0, maximize=False),
    dict(lr=0.1, warmup_steps=3, r=0.0, weight_lr_power=2.0, weight_decay=0.0, maximize=False),
    dict(lr=0.1, warmup_steps=3, r=1.0, weight_lr_power=0.0, weight_decay=0.0, maximize=False),
    dict(lr=0.1, warmup_steps=2, r=0.5, weight_lr_power=2.0, weight_decay=0.1, maximize=True),
    # a falling lr: the weights keep the largest lr so far, not the current one
    dict(lr=lambda k: 0.1 * 0.7 ** k, warmup_steps=2, r=0.0, weight_lr_power=2.0,
         weight_decay=0.0, maximize=False),
]


@pytest.mark.parametrize("variant", SCHEDULEFREE_VARIANTS,
                         ids=["plain", "warmup", "r=1,no_lr_weights", "all", "falling_lr"])
def test_schedulefree_adamw_is_the_papers_algorithm(backend, variant):
    """The class keeps y (train mode) or x (eval mode) in the param and z in its state; the
    paper keeps x and z and interpolates y. They agree after every step and every switch."""
    expected = hand_schedulefree(P0, LONG_GRADS[:6], b1=0.8, b2=0.6, eps=1e-3, **variant)
    param = arr(P0)
    opt = fo.ScheduleFreeAdamW(param, betas=(0.8, 0.6), eps=1e-3, backend=backend, **variant)
    with pytest.raises(RuntimeError, match="train"):
        opt.step(arr(LONG_GRADS[0]))    # a new optimizer is in eval mode: param is x
    opt.train()
    assert_close(param, P0, "y at the start (z = x)")
    for t, (grad, (x, y, z)) in enumerate(zip(LONG_GRADS, expected), start=1):
        opt.step(arr(grad))
        assert_close(param, y, f"y after step {t}")
        assert_close(opt.state[0]["z"], z, f"z after step {t}")
        if t in (2, 5):     # evaluate, twice (the second call changes nothing), train on
            opt.eval()
            assert_close(param, x, f"x after step {t}")
            opt.eval()
            assert_close(param, x, f"x after step {t}, eval() again")
            opt.train()
            assert_close(param, y, f"y after step {t}, back in train mode")
    assert opt.scalars["k"] == 6


# -- EWMA ------------------------------------------------------------------------------------

@pytest.mark.parametrize("beta", [0.5, 0.9])
def test_ewma_step(kernel_module, beta):
    xs = GRADS
    average = np.zeros(3)
    v = [0.0] * 3
    for t, x in enumerate(xs, start=1):
        for i in range(3):
            v[i] = beta * v[i] + (1 - beta) * x[i]
        kernel_module.ewma_step(average, arr(x), beta=beta)
        assert_close(average, v, f"average after step {t}")
        # the bias-corrected value is the weighted mean with weights beta^(t-k)
        # (pandas ewm(alpha=1-beta, adjust=True).mean())
        weights = [beta ** (t - k) for k in range(1, t + 1)]
        mean = [sum(w * xk[i] for w, xk in zip(weights, xs[:t])) / sum(weights)
                for i in range(3)]
        assert_close(average / (1 - beta ** t), mean, f"bias-corrected value at step {t}")


def test_ewma_step_is_exact_for_beta_half(kernel_module):
    average = arr([1.0, -2.0, 0.0])
    kernel_module.ewma_step(average, arr([3.0, 2.0, -0.5]), beta=0.5)
    np.testing.assert_array_equal(average, [2.0, 0.0, -0.25])

