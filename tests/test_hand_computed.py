"""A few steps of every kernel, worked out by hand from the formulas of docs/design.md.

The expected values are plain Python floats, one element at a time, written from the
formula table (not from fastoptim.reference), and compared to both backends. The hand
arithmetic is float64 like the arrays but does not follow the kernels' operation order
(e.g. Adam is written with the textbook m_hat / (sqrt(v_hat) + eps)), so the tolerance is a
relative 1e-12 rather than equal bits; where the answer is known in closed form, the test
says so and checks it exactly or to that tolerance.
"""
import math

import numpy as np
import pytest

RTOL = 1e-12

P0 = [0.5, -1.25, 2.0]
GRADS = [[0.3, -0.7, 1.1], [-0.2, 0.4, 0.9], [0.6, 0.1, -1.5]]

# the (weight_decay, maximize) pairs every optimizer is checked with
GRAD_OPTIONS = [(0.0, False), (0.1, False), (0.0, True), (0.1, True)]
GRAD_IDS = ["plain", "wd", "maximize", "wd+maximize"]


def arr(values):
    return np.array(values, dtype=np.float64)


def assert_close(actual, expected, what):
    np.testing.assert_allclose(actual, arr(expected), rtol=RTOL, atol=0, err_msg=what)


def effective(g, p, weight_decay, maximize):
    """docs/design.md: maximize negates g first, then L2 decay adds wd*p."""
    if maximize:
        g = -g
    return g + weight_decay * p


# -- SGD -------------------------------------------------------------------------------------

@pytest.mark.parametrize("weight_decay,maximize", GRAD_OPTIONS, ids=GRAD_IDS)
def test_sgd(kernel_module, weight_decay, maximize):
    lr = 0.1
    p = list(P0)
    param = arr(P0)
    for t, grad in enumerate(GRADS, start=1):
        for i in range(3):
            p[i] = p[i] - lr * effective(grad[i], p[i], weight_decay, maximize)
        kernel_module.sgd_step(param, arr(grad), lr=lr, weight_decay=weight_decay,
                               maximize=maximize)
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


@pytest.mark.parametrize("weight_decay,maximize", GRAD_OPTIONS, ids=GRAD_IDS)
@pytest.mark.parametrize("form", TORCH_FORMS, ids=["heavy-ball", "dampening", "nesterov"])
def test_momentum_torch_form(kernel_module, form, weight_decay, maximize):
    lr, mu, d = 0.1, 0.9, form["dampening"]
    p, b = list(P0), [None] * 3
    param, buf = arr(P0), np.zeros(3)
    for t, grad in enumerate(GRADS, start=1):
        for i in range(3):
            g = effective(grad[i], p[i], weight_decay, maximize)
            b[i] = g if t == 1 else mu * b[i] + (1 - d) * g  # no dampening on step 1
            p[i] = p[i] - lr * (g + mu * b[i] if form["nesterov"] else b[i])
        kernel_module.momentum_step(param, arr(grad), buf, lr=lr, momentum=mu, step=t,
                                    form="torch", weight_decay=weight_decay,
                                    maximize=maximize, **form)
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

@pytest.mark.parametrize("weight_decay,maximize", GRAD_OPTIONS, ids=GRAD_IDS)
@pytest.mark.parametrize("bias_correction", [False, True], ids=["raw", "bias_corrected"])
@pytest.mark.parametrize("nesterov", [False, True], ids=["ewma", "ewma-nesterov"])
def test_momentum_ewma_form(kernel_module, nesterov, bias_correction, weight_decay, maximize):
    lr, beta = 0.1, 0.8
    p, v = list(P0), [0.0] * 3
    param, buf = arr(P0), np.zeros(3)
    for t, grad in enumerate(GRADS, start=1):
        correction = 1 - beta ** t if bias_correction else 1.0
        for i in range(3):
            g = effective(grad[i], p[i], weight_decay, maximize)
            v[i] = beta * v[i] + (1 - beta) * g
            # nesterov (reference.momentum_step's docstring; docs/design.md is silent): look one
            # EWMA step ahead with the same gradient
            direction = beta * v[i] + (1 - beta) * g if nesterov else v[i]
            p[i] = p[i] - lr * (direction / correction)
        kernel_module.momentum_step(param, arr(grad), buf, lr=lr, momentum=beta, step=t,
                                    form="ewma", nesterov=nesterov,
                                    bias_correction=bias_correction,
                                    weight_decay=weight_decay, maximize=maximize)
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

@pytest.mark.parametrize("weight_decay,maximize", GRAD_OPTIONS, ids=GRAD_IDS)
@pytest.mark.parametrize("nesterov", [False, True], ids=["velocity", "velocity-nesterov"])
def test_momentum_velocity_form(kernel_module, nesterov, weight_decay, maximize):
    lr, mu = 0.1, 0.9
    p, v = list(P0), [0.0] * 3
    param, buf = arr(P0), np.zeros(3)
    for t, grad in enumerate(GRADS, start=1):
        for i in range(3):
            g = effective(grad[i], p[i], weight_decay, maximize)
            if nesterov:  # Deep Learning from Scratch's corrected code: the *previous* v
                p[i] = p[i] + mu * mu * v[i] - (1 + mu) * lr * g
                v[i] = mu * v[i] - lr * g
            else:
                v[i] = mu * v[i] - lr * g
                p[i] = p[i] + v[i]
        kernel_module.momentum_step(param, arr(grad), buf, lr=lr, momentum=mu, step=t,
                                    form="velocity", nesterov=nesterov,
                                    weight_decay=weight_decay, maximize=maximize)
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


# -- AdaGrad ---------------------------------------------------------------------------------

@pytest.mark.parametrize("weight_decay,maximize", GRAD_OPTIONS, ids=GRAD_IDS)
@pytest.mark.parametrize("lr_decay,initial", [(0.0, 0.0), (0.1, 0.0), (0.0, 0.4), (0.25, 0.4)],
                         ids=["plain", "lr_decay", "initial_accumulator", "both"])
def test_adagrad(kernel_module, lr_decay, initial, weight_decay, maximize):
    lr, eps = 0.1, 1e-10
    p, s = list(P0), [initial] * 3
    param, state_sum = arr(P0), np.full(3, initial)
    for t, grad in enumerate(GRADS, start=1):
        clr = lr / (1 + (t - 1) * lr_decay)
        for i in range(3):
            g = effective(grad[i], p[i], weight_decay, maximize)
            s[i] = s[i] + g * g
            p[i] = p[i] - clr * g / (math.sqrt(s[i]) + eps)
        kernel_module.adagrad_step(param, arr(grad), state_sum, lr=lr, step=t,
                                   lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                                   maximize=maximize)
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

@pytest.mark.parametrize("weight_decay,maximize", GRAD_OPTIONS, ids=GRAD_IDS)
@pytest.mark.parametrize("centered", [False, True], ids=["plain", "centered"])
@pytest.mark.parametrize("momentum", [0.0, 0.5], ids=["no_momentum", "momentum"])
def test_rmsprop(kernel_module, centered, momentum, weight_decay, maximize):
    lr, alpha, eps = 0.01, 0.9, 1e-8
    p, v, ga, b = list(P0), [0.0] * 3, [0.0] * 3, [0.0] * 3
    param, square_avg = arr(P0), np.zeros(3)
    grad_avg = np.zeros(3) if centered else None
    momentum_buffer = np.zeros(3) if momentum else None
    for t, grad in enumerate(GRADS, start=1):
        for i in range(3):
            g = effective(grad[i], p[i], weight_decay, maximize)
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
                                   weight_decay=weight_decay, maximize=maximize)
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

