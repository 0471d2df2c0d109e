"""The NumPy backend: every kernel of fastoptim.kernels, name for name, in plain NumPy.

It is both the fallback when the extension is not built and the oracle the compiled
kernels are tested against, bit for bit. The rules that make that possible (DESIGN.md):

- per-step scalars (bias corrections, step sizes, 1 - beta, ...) are computed here in
  Python double precision, exactly as the Cython wrappers compute them in C double;
- a Python float meeting an array is rounded to the array's dtype first (NumPy 2, NEP 50),
  as the C kernels cast each scalar once -- so every hyperparameter is turned into a Python
  float first (a NumPy float64 scalar would instead promote a float32 array to float64);
- each element then sees the same IEEE operations in the same order as the C loop.

Every function updates its buffers in place and returns None. Each buffer argument is one
array, or a list of arrays (an optimizer's whole parameter list: one call steps them all,
with the per-step scalars computed once). ``threads`` is accepted for the same signature
and ignored.
"""
import math

import numpy as np

from fastoptim._checks import (
    check_momentum_form,
    check_rmsprop_momentum,
    check_step,
    check_threads,
    each_array,
)
from fastoptim.reference_ewma import ewma_scan  # its own module: the spec of the scan

__all__ = [
    "sgd_step",
    "momentum_step",
    "adagrad_step",
    "rmsprop_step",
    "adam_step",
    "adamw_step",
    "ewma_step",
    "ewma_scan",
]


def _effective_grad(param, grad, weight_decay, maximize):
    """g = -grad if maximize, then g + weight_decay * p (L2), without writing grad."""
    g = -grad if maximize else grad
    if weight_decay != 0:
        g = g + weight_decay * param
    return g


def sgd_step(param, grad, *, lr, weight_decay=0.0, maximize=False, threads=None):
    """p <- p - lr * g"""
    arrays = each_array(("param", "grad"), param, grad)
    check_threads(threads)
    lr, weight_decay = float(lr), float(weight_decay)
    for param, grad in arrays:
        param -= lr * _effective_grad(param, grad, weight_decay, maximize)


def momentum_step(param, grad, momentum_buffer, *, lr, momentum, step, dampening=0.0,
                  nesterov=False, form="torch", bias_correction=False, weight_decay=0.0,
                  maximize=False, threads=None):
    """Momentum in one of three forms (``momentum`` is mu, or beta for form="ewma").

    torch:    b <- g at step 1, else b <- mu*b + (1-d)*g;  p <- p - lr*(g + mu*b if nesterov else b)
    ewma:     v <- beta*v + (1-beta)*g;  p <- p - s*v, s = lr or lr/(1-beta^t) with
              bias_correction; nesterov uses beta*v + (1-beta)*g (one step ahead) for v
    velocity: v <- mu*v - lr*g;  p <- p + v;  nesterov: p <- p + mu*mu*v - (1+mu)*lr*g
    """
    check_momentum_form(form, dampening, nesterov, bias_correction)
    step = check_step(step)
    arrays = each_array(("param", "grad", "momentum_buffer"), param, grad, momentum_buffer)
    check_threads(threads)
    lr, momentum, dampening = float(lr), float(momentum), float(dampening)
    weight_decay = float(weight_decay)
    step_size = lr / (1.0 - momentum ** step) if form == "ewma" and bias_correction else lr
    for param, grad, buf in arrays:
        g = _effective_grad(param, grad, weight_decay, maximize)
        if form == "torch":
            if step == 1:
                buf[...] = g
            else:
                buf *= momentum
                buf += (1.0 - dampening) * g
            param -= lr * (g + momentum * buf if nesterov else buf)
        elif form == "ewma":
            buf *= momentum
            buf += (1.0 - momentum) * g
            param -= step_size * (momentum * buf + (1.0 - momentum) * g if nesterov else buf)
        else:
            buf *= momentum
            buf -= lr * g
            if nesterov:
                param += (momentum * momentum) * buf
                param -= ((1.0 + momentum) * lr) * g
            else:
                param += buf


def adagrad_step(param, grad, state_sum, *, lr, step, lr_decay=0.0, eps=1e-10,
                 weight_decay=0.0, maximize=False, threads=None):
    """clr = lr / (1 + (t-1)*lr_decay);  s <- s + g*g;  p <- p - clr*g / (sqrt(s) + eps)"""
    step = check_step(step)
    arrays = each_array(("param", "grad", "state_sum"), param, grad, state_sum)
    check_threads(threads)
    lr, lr_decay, eps, weight_decay = float(lr), float(lr_decay), float(eps), float(weight_decay)
    clr = lr / (1.0 + (step - 1) * lr_decay)
    for param, grad, state_sum in arrays:
        g = _effective_grad(param, grad, weight_decay, maximize)
        state_sum += g * g
        param -= clr * g / (np.sqrt(state_sum) + eps)


def rmsprop_step(param, grad, square_avg, grad_avg=None, momentum_buffer=None, *, lr,
                 alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0, maximize=False,
                 threads=None):
    """v <- a*v + (1-a)*g*g;  den = sqrt(v - ga*ga) + eps with ga <- a*ga + (1-a)*g when
    grad_avg is given (centered), else sqrt(v) + eps;  with momentum_buffer (momentum > 0):
    b <- mu*b + g/den, p <- p - lr*b;  else p <- p - lr*g/den"""
    check_rmsprop_momentum(momentum, momentum_buffer)
    arrays = each_array(("param", "grad", "square_avg", "grad_avg", "momentum_buffer"),
                        param, grad, square_avg, grad_avg, momentum_buffer)
    check_threads(threads)
    lr, alpha, eps, momentum = float(lr), float(alpha), float(eps), float(momentum)
    weight_decay = float(weight_decay)
    for param, grad, square_avg, grad_avg, momentum_buffer in arrays:
        g = _effective_grad(param, grad, weight_decay, maximize)
        square_avg *= alpha
        square_avg += (1.0 - alpha) * (g * g)
        if grad_avg is not None:
            grad_avg *= alpha
            grad_avg += (1.0 - alpha) * g
            den = np.sqrt(square_avg - grad_avg * grad_avg) + eps
        else:
            den = np.sqrt(square_avg) + eps
        if momentum_buffer is not None:
            momentum_buffer *= momentum
            momentum_buffer += g / den
            param -= lr * momentum_buffer
        else:
            param -= lr * g / den


def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, lr, step,
              beta1=0.9, beta2=0.999, eps=1e-8, eps_root=0.0, weight_decay=0.0,
              maximize=False, threads=None):
    """Adam with L2 weight decay (torch.optim.Adam); amsgrad when max_exp_avg_sq is given.

    m <- b1*m + (1-b1)*g;  v <- b2*v + (1-b2)*g*g;  amsgrad: v <- vmax <- max(vmax, v)
    p <- p - (lr/bc1)*m / den,  den = sqrt(v)*(1/sqrt(bc2)) + eps, or with eps_root > 0
    den = sqrt(v*(1/bc2) + eps_root) + eps;  bc1 = 1 - b1^t, bc2 = 1 - b2^t
    """
    _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, step, beta1, beta2, eps,
          eps_root, weight_decay, False, maximize, threads)


def adamw_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, lr, step,
               beta1=0.9, beta2=0.999, eps=1e-8, eps_root=0.0, weight_decay=1e-2,
               maximize=False, threads=None):
    """AdamW: p <- p * (1 - lr*wd) first (decoupled decay), then Adam without L2."""
    _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, step, beta1, beta2, eps,
          eps_root, weight_decay, True, maximize, threads)


def _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, step, beta1, beta2, eps,
          eps_root, weight_decay, decoupled, maximize, threads):
    step = check_step(step)
    arrays = each_array(("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
                        param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)
    check_threads(threads)
    lr, beta1, beta2, eps = float(lr), float(beta1), float(beta2), float(eps)
    eps_root, weight_decay = float(eps_root), float(weight_decay)
    bias_correction1 = 1.0 - beta1 ** step
    bias_correction2 = 1.0 - beta2 ** step
    step_size = lr / bias_correction1
    for param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq in arrays:
        if decoupled:
            param *= 1.0 - lr * weight_decay
            g = _effective_grad(param, grad, 0.0, maximize)
        else:
            g = _effective_grad(param, grad, weight_decay, maximize)
        exp_avg *= beta1
        exp_avg += (1.0 - beta1) * g
        exp_avg_sq *= beta2
        exp_avg_sq += (1.0 - beta2) * (g * g)
        v = exp_avg_sq
        if max_exp_avg_sq is not None:
            np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
            v = max_exp_avg_sq
        if eps_root != 0:
            den = np.sqrt(v * (1.0 / bias_correction2) + eps_root) + eps
        else:
            den = np.sqrt(v) * (1.0 / math.sqrt(bias_correction2)) + eps
        param -= step_size * exp_avg / den


def ewma_step(average, value, *, beta, threads=None):
    """v <- beta*v + (1-beta)*x (the state of an exponentially weighted moving average)."""
    arrays = each_array(("average", "value"), average, value)
    check_threads(threads)
    beta = float(beta)
    for average, value in arrays:
        average *= beta
        average += (1.0 - beta) * value
