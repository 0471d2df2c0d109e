"""Every kernel once: its buffers, its per-step scalars, its argument checks.

A kernel function here takes ``run`` (the backend's runner: the C driver in
fastoptim.kernels, the NumPy loops in fastoptim.reference) followed by the public
signature; fastoptim.kernels and fastoptim.reference bind ``run`` and export the same
names. So both backends check the same arguments with the same messages and receive the
same scalars -- computed here once per call, in Python double precision, then rounded
once to the compute dtype by the runner -- and differ only in the loops.

Every optimizer kernel also takes the common options (see ``prologue``, ``RUN_OPTIONS``):
maximize, L2 or decoupled weight decay, a gradient factor (clipping coefficient times one
over the loss scale), a low-precision copy of the updated params, the rounding of
low-precision stores, and threads.
"""
import math
from typing import NamedTuple

from fastoptim._checks import (
    ROUNDINGS,
    check_choice,
    check_flag,
    check_int,
    check_nonnegative,
    check_real,
    check_seed,
    check_step,
    check_threads,
    check_unit_interval,
)


class Role(NamedTuple):
    name: str
    optional: bool = False


class Kernel(NamedTuple):
    """A C loop (csrc/kernels.c's registry entry of the same name) and its NumPy twin."""
    name: str                   # the registry name, e.g. "adam_step"
    roles: tuple                # Role per buffer, in argument order; role 1 is only read
    scalars: type               # NamedTuple of the scalars, in the C struct's order
    sums: int = 0               # reducing kernels: sums returned per array
    # a kernel whose state buffers are not of the param's shape (Adafactor): (buffer name,
    # param shape) -> the buffer's shape, None when such a param has none; the runners
    # hand it to their run_factored
    state_shape: object = None


def _roles(*names):
    return tuple(Role(n.rstrip("?"), n.endswith("?")) for n in names)


# -- the prologue every optimizer shares (csrc/loops/common.h) ---------------------------------

PROLOGUE = ("maximize", "grad_factor", "weight_decay", "param_decay")


def prologue(lr, weight_decay, decoupled_weight_decay, maximize, grad_factor):
    """The four prologue scalars: negate the gradient (maximize); multiply it by grad_factor;
    L2 decay g + wd*p; or decoupled decay p*(1 - lr*wd) first."""
    weight_decay = check_nonnegative("weight_decay", weight_decay)
    decoupled = check_flag("decoupled_weight_decay", decoupled_weight_decay)
    grad_factor = check_real("grad_factor", grad_factor)
    return (float(check_flag("maximize", maximize)), grad_factor,
            0.0 if decoupled else weight_decay,
            1.0 - lr * weight_decay if decoupled else 1.0)


# the options every stepping kernel takes besides its hyperparameters, with their defaults:
# the low-precision copy of the updated params, how low-precision stores round (the seed of
# stochastic rounding, and the index of the first array in its key), and threads
RUN_OPTIONS = dict(param_copy=None, rounding="nearest", seed=0, param_index=0, threads=None)


def run_options(step, options):
    """The runner's keyword arguments from a kernel call's options."""
    for name in options:
        if name not in RUN_OPTIONS:
            raise TypeError(f"unexpected keyword argument {name!r}")
    get = options.get
    rounding = get("rounding", "nearest")
    if type(rounding) is not str or rounding != "nearest":
        check_choice("rounding", rounding, ROUNDINGS)
    return dict(step=step, param_copy=get("param_copy"), stochastic=rounding == "stochastic",
                seed=check_seed(get("seed", 0)),
                param_index=check_int("param_index", get("param_index", 0), 0),
                threads=check_threads(get("threads")))


def scalars_type(name, fields):
    return NamedTuple(name, [(f, float) for f in PROLOGUE + tuple(fields.split())])


# -- SGD and momentum --------------------------------------------------------------------------

SGD = Kernel("sgd_step", _roles("param", "grad"), scalars_type("SGDScalars", "lr"))


def sgd_step(run, param, grad, *, lr, step=1, weight_decay=0.0, decoupled_weight_decay=False,
             maximize=False, grad_factor=1.0, **options):
    """p <- p - lr*g  (``step`` only keys stochastic rounding)"""
    lr = check_nonnegative("lr", lr)
    step = check_step(step)
    s = SGD.scalars(*prologue(lr, weight_decay, decoupled_weight_decay, maximize, grad_factor),
                    lr)
    run(SGD, (param, grad), s, **run_options(step, options))


MOMENTUM_FORMS = {"torch": 0, "ewma": 1, "velocity": 2}    # FO_MOMENTUM_* in fastoptim.h

MOMENTUM = Kernel("momentum_step", _roles("param", "grad", "momentum_buffer"),
                  scalars_type("MomentumScalars",
                               "form nesterov first_step momentum grad_weight step_size"))


def check_momentum_form(form, dampening, nesterov, bias_correction):
    check_choice("form", form, tuple(MOMENTUM_FORMS))
    if dampening != 0 and form != "torch":
        raise ValueError(f"dampening applies to form='torch' only, got form={form!r}")
    if bias_correction and form != "ewma":
        raise ValueError(f"bias_correction applies to form='ewma' only, got form={form!r}")
    if nesterov and dampening != 0:
        raise ValueError("nesterov requires dampening == 0")


def momentum_step(run, param, grad, momentum_buffer, *, lr, momentum, step, dampening=0.0,
                  nesterov=False, form="torch", bias_correction=False, first_step=None,
                  weight_decay=0.0, decoupled_weight_decay=False, maximize=False,
                  grad_factor=1.0, **options):
    """Momentum in one of three forms (``momentum`` is mu, or beta for form="ewma").

    torch:    b <- g at step 1, else b <- mu*b + (1-d)*g;  p <- p - lr*(g + mu*b if nesterov
              else b)
    ewma:     v <- beta*v + (1-beta)*g;  p <- p - s*d, d = v or, with nesterov, the look-ahead
              beta*v + (1-beta)*g;  s = lr, or lr/(1-beta^t) with bias_correction
    velocity: v0 = v;  v <- mu*v0 - lr*g;  p <- p + v;  nesterov (CS231n, the corrected
              Deep Learning from Scratch): p <- p - mu*v0 + (1+mu)*v

    ``first_step`` (torch form: b <- g) defaults to step == 1; torch.optim.SGD, which
    counts no steps, sets it when the buffer is new.
    """
    lr = check_nonnegative("lr", lr)
    momentum = check_unit_interval("momentum", momentum)
    dampening = check_unit_interval("dampening", dampening)
    nesterov = check_flag("nesterov", nesterov)
    bias_correction = check_flag("bias_correction", bias_correction)
    check_momentum_form(form, dampening, nesterov, bias_correction)
    step = check_step(step)
    first_step = step == 1 if first_step is None else check_flag("first_step", first_step)
    if form == "torch":
        grad_weight, step_size = 1.0 - dampening, lr
    elif form == "ewma":
        grad_weight = 1.0 - momentum
        step_size = lr / (1.0 - momentum ** step) if bias_correction else lr
    else:
        grad_weight, step_size = lr, 1.0 + momentum
    s = MOMENTUM.scalars(
        *prologue(lr, weight_decay, decoupled_weight_decay, maximize, grad_factor),
        MOMENTUM_FORMS[form], float(nesterov), float(first_step), momentum, grad_weight,
        step_size)
    run(MOMENTUM, (param, grad, momentum_buffer), s,
        **run_options(step, options))


# -- AdaGrad, RMSProp, Adadelta ----------------------------------------------------------------

ADAGRAD = Kernel("adagrad_step", _roles("param", "grad", "sum"),
                 scalars_type("AdaGradScalars", "clr eps eps_in_sqrt"))


def adagrad_step(run, param, grad, state_sum, *, lr, step, lr_decay=0.0, eps=1e-10,
                 eps_in_sqrt=False, weight_decay=0.0, decoupled_weight_decay=False,
                 maximize=False, grad_factor=1.0, **options):
    """clr = lr / (1 + (t-1)*lr_decay);  s <- s + g*g;  p <- p - clr*g / den,
    den = sqrt(s) + eps (torch), or sqrt(s + eps) with eps_in_sqrt (the lectures, optax)"""
    lr = check_nonnegative("lr", lr)
    lr_decay = check_nonnegative("lr_decay", lr_decay)
    eps = check_nonnegative("eps", eps)
    step = check_step(step)
    clr = lr / (1.0 + (step - 1) * lr_decay)
    s = ADAGRAD.scalars(*prologue(lr, weight_decay, decoupled_weight_decay, maximize,
                                  grad_factor),
                        clr, eps, float(check_flag("eps_in_sqrt", eps_in_sqrt)))
    run(ADAGRAD, (param, grad, state_sum), s, **run_options(step, options))


RMSPROP = Kernel("rmsprop_step",
                 _roles("param", "grad", "square_avg", "grad_avg?", "momentum_buffer?"),
                 scalars_type("RMSPropScalars", "alpha one_minus_alpha eps lr momentum "
                                                "eps_in_sqrt"))


def rmsprop_step(run, param, grad, square_avg, grad_avg=None, momentum_buffer=None, *, lr,
                 step=1, alpha=0.99, eps=1e-8, eps_in_sqrt=False, momentum=0.0,
                 weight_decay=0.0, decoupled_weight_decay=False, maximize=False,
                 grad_factor=1.0, **options):
    """v <- a*v + (1-a)*g*g;  centered (grad_avg given): ga <- a*ga + (1-a)*g, d = v - ga*ga,
    else d = v;  den = sqrt(d) + eps, or sqrt(d + eps) with eps_in_sqrt;  with
    momentum_buffer (momentum > 0): b <- mu*b + g/den, p <- p - lr*b;  else p <- p - lr*g/den"""
    lr = check_nonnegative("lr", lr)
    alpha = check_unit_interval("alpha", alpha)
    eps = check_nonnegative("eps", eps)
    momentum = check_unit_interval("momentum", momentum)
    if (momentum_buffer is None) != (momentum == 0):
        raise ValueError("momentum_buffer is required when momentum > 0, and only then")
    step = check_step(step)
    s = RMSPROP.scalars(*prologue(lr, weight_decay, decoupled_weight_decay, maximize,
                                  grad_factor),
                        alpha, 1.0 - alpha, eps, lr, momentum,
                        float(check_flag("eps_in_sqrt", eps_in_sqrt)))
    run(RMSPROP, (param, grad, square_avg, grad_avg, momentum_buffer), s,
        **run_options(step, options))


ADADELTA = Kernel("adadelta_step", _roles("param", "grad", "square_avg", "acc_delta"),
                  scalars_type("AdadeltaScalars", "rho one_minus_rho eps lr"))


def adadelta_step(run, param, grad, square_avg, acc_delta, *, lr=1.0, step=1, rho=0.9,
                  eps=1e-6, weight_decay=0.0, decoupled_weight_decay=False, maximize=False,
                  grad_factor=1.0, **options):
    """v <- rho*v + (1-rho)*g*g;  delta = sqrt(u + eps) / sqrt(v + eps) * g;
    u <- rho*u + (1-rho)*delta*delta;  p <- p - lr*delta  (torch.optim.Adadelta)"""
    lr = check_nonnegative("lr", lr)
    rho = check_real("rho", rho, 0.0, 1.0)
    eps = check_nonnegative("eps", eps)
    step = check_step(step)
    s = ADADELTA.scalars(*prologue(lr, weight_decay, decoupled_weight_decay, maximize,
                                   grad_factor),
                         rho, 1.0 - rho, eps, lr)
    run(ADADELTA, (param, grad, square_avg, acc_delta), s,
        **run_options(step, options))


# -- the Adam family ---------------------------------------------------------------------------

ADAM_DENOMINATORS = {"torch": 0, "eps_root": 1, "eps_hat": 2}     # FO_ADAM_DEN_*

ADAM = Kernel("adam_step",
              _roles("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq?"),
              scalars_type("AdamScalars", "beta1 one_minus_beta1 beta2 one_minus_beta2 "
                                          "step_size rsqrt_bc2 inv_bc2 eps eps_root "
                                          "denominator"))


def _betas(beta1, beta2):
    return check_unit_interval("beta1", beta1), check_unit_interval("beta2", beta2)


def adam_step(run, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, lr, step,
              beta1=0.9, beta2=0.999, eps=1e-8, eps_root=0.0, eps_hat=False,
              weight_decay=0.0, decoupled_weight_decay=False, maximize=False,
              grad_factor=1.0, **options):
    """Adam (torch.optim.Adam; AdamW with decoupled_weight_decay); amsgrad when
    max_exp_avg_sq is given.

    m <- b1*m + (1-b1)*g;  v <- b2*v + (1-b2)*g*g;  amsgrad: v <- vmax <- max(vmax, v)
    p <- p - (lr/bc1)*m / (sqrt(v)*(1/sqrt(bc2)) + eps);  bc1 = 1 - b1^t, bc2 = 1 - b2^t
    eps_root > 0 (optax): den = sqrt(v*(1/bc2) + eps_root) + eps
    eps_hat (Kingma & Ba's efficient form, Keras): p <- p - lr_t*m / (sqrt(v) + eps),
    lr_t = lr*sqrt(bc2)/bc1
    """
    lr = check_nonnegative("lr", lr)
    beta1, beta2 = _betas(beta1, beta2)
    eps = check_nonnegative("eps", eps)
    eps_root = check_nonnegative("eps_root", eps_root)
    eps_hat = check_flag("eps_hat", eps_hat)
    if eps_hat and eps_root:
        raise ValueError("eps_hat and eps_root are two different denominators: give one")
    step = check_step(step)
    bias_correction1 = 1.0 - beta1 ** step
    bias_correction2 = 1.0 - beta2 ** step
    if eps_hat:
        denominator, step_size = "eps_hat", lr * math.sqrt(bias_correction2) / bias_correction1
    else:
        denominator, step_size = ("eps_root" if eps_root else "torch"), lr / bias_correction1
    s = ADAM.scalars(*prologue(lr, weight_decay, decoupled_weight_decay, maximize, grad_factor),
                     beta1, 1.0 - beta1, beta2, 1.0 - beta2, step_size,
                     1.0 / math.sqrt(bias_correction2), 1.0 / bias_correction2, eps, eps_root,
                     ADAM_DENOMINATORS[denominator])
    run(ADAM, (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq), s,
        **run_options(step, options))


def adamw_step(run, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, lr, step,
               weight_decay=1e-2, **hyperparameters):
    """AdamW: adam_step with decoupled weight decay p <- p*(1 - lr*wd) first (default 1e-2)."""
    adam_step(run, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr=lr, step=step,
              weight_decay=weight_decay, decoupled_weight_decay=True, **hyperparameters)


ADAMAX = Kernel("adamax_step", _roles("param", "grad", "exp_avg", "exp_inf"),
                scalars_type("AdamaxScalars", "beta1 one_minus_beta1 beta2 eps step_size"))


def adamax_step(run, param, grad, exp_avg, exp_inf, *, lr=2e-3, step, beta1=0.9, beta2=0.999,
                eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False, maximize=False,
                grad_factor=1.0, **options):
    """m <- b1*m + (1-b1)*g;  u <- max(b2*u, |g| + eps);  p <- p - (lr/bc1)*m / u
    (torch.optim.Adamax)"""
    lr = check_nonnegative("lr", lr)
    beta1, beta2 = _betas(beta1, beta2)
    eps = check_nonnegative("eps", eps)
    step = check_step(step)
    s = ADAMAX.scalars(*prologue(lr, weight_decay, decoupled_weight_decay, maximize,
                                 grad_factor),
                       beta1, 1.0 - beta1, beta2, eps, lr / (1.0 - beta1 ** step))
    run(ADAMAX, (param, grad, exp_avg, exp_inf), s,
        **run_options(step, options))


NADAM = Kernel("nadam_step", _roles("param", "grad", "exp_avg", "exp_avg_sq"),
               scalars_type("NAdamScalars", "beta1 one_minus_beta1 beta2 one_minus_beta2 "
                                            "rsqrt_bc2 eps grad_coef avg_coef"))


def nadam_momentum(beta1, momentum_decay, step):
    """NAdam's momentum schedule mu_t = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay))."""
    return beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))


def nadam_step(run, param, grad, exp_avg, exp_avg_sq, *, lr=2e-3, step, mu_product,
               beta1=0.9, beta2=0.999, eps=1e-8, momentum_decay=4e-3, weight_decay=0.0,
               decoupled_weight_decay=False, maximize=False, grad_factor=1.0, **options):
    """NAdam (torch.optim.NAdam). ``mu_product`` is the product of mu_1 .. mu_t, this step's
    included (the optimizer keeps it; torch's state["mu_product"]).

    m <- b1*m + (1-b1)*g;  v <- b2*v + (1-b2)*g*g;  den = sqrt(v)/sqrt(bc2) + eps;
    p <- p - (lr*(1-mu_t)/(1-prod) * g + lr*mu_{t+1}/(1-prod*mu_{t+1}) * m) / den
    """
    lr = check_nonnegative("lr", lr)
    beta1, beta2 = _betas(beta1, beta2)
    eps = check_nonnegative("eps", eps)
    momentum_decay = check_nonnegative("momentum_decay", momentum_decay)
    mu_product = check_real("mu_product", mu_product, 0.0, 1.0, high_open=True)
    step = check_step(step)
    mu = nadam_momentum(beta1, momentum_decay, step)
    mu_next = nadam_momentum(beta1, momentum_decay, step + 1)
    s = NADAM.scalars(*prologue(lr, weight_decay, decoupled_weight_decay, maximize,
                                grad_factor),
                      beta1, 1.0 - beta1, beta2, 1.0 - beta2,
                      1.0 / math.sqrt(1.0 - beta2 ** step), eps,
                      lr * (1.0 - mu) / (1.0 - mu_product),
                      lr * mu_next / (1.0 - mu_product * mu_next))
    run(NADAM, (param, grad, exp_avg, exp_avg_sq), s,
        **run_options(step, options))


RADAM = Kernel("radam_step", _roles("param", "grad", "exp_avg", "exp_avg_sq"),
               scalars_type("RAdamScalars", "beta1 one_minus_beta1 beta2 one_minus_beta2 "
                                            "step_size eps rectified"))


def radam_step(run, param, grad, exp_avg, exp_avg_sq, *, lr=1e-3, step, beta1=0.9,
               beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False,
               maximize=False, grad_factor=1.0, **options):
    """RAdam (torch.optim.RAdam). m, v as Adam; rho_inf = 2/(1-b2) - 1,
    rho_t = rho_inf - 2t*b2^t/bc2; when rho_t > 5: r = sqrt((rho_t-4)(rho_t-2)rho_inf /
    ((rho_inf-4)(rho_inf-2)rho_t)) and p <- p - (lr*r*sqrt(bc2)/bc1)*m / (sqrt(v) + eps);
    else p <- p - (lr/bc1)*m"""
    lr = check_nonnegative("lr", lr)
    beta1, beta2 = _betas(beta1, beta2)
    eps = check_nonnegative("eps", eps)
    step = check_step(step)
    bias_correction1 = 1.0 - beta1 ** step
    bias_correction2 = 1.0 - beta2 ** step
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * (beta2 ** step) / bias_correction2
    rectified = rho_t > 5.0
    if rectified:
        rect = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                         / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
        step_size = lr * rect * math.sqrt(bias_correction2) / bias_correction1
    else:
        step_size = lr / bias_correction1
    s = RADAM.scalars(*prologue(lr, weight_decay, decoupled_weight_decay, maximize,
                                grad_factor),
                      beta1, 1.0 - beta1, beta2, 1.0 - beta2, step_size, eps, float(rectified))
    run(RADAM, (param, grad, exp_avg, exp_avg_sq), s,
        **run_options(step, options))


LAMB = Kernel("lamb_pass", _roles("param", "grad", "exp_avg", "exp_avg_sq"),
              scalars_type("LAMBScalars", "beta1 one_minus_beta1 beta2 one_minus_beta2 "
                                          "inv_bc1 rsqrt_bc2 eps decay apply "
                                          "step_size"),
              sums=2)


def lamb_step(run, param, grad, exp_avg, exp_avg_sq, *, lr=1e-3, step, beta1=0.9,
              beta2=0.999, eps=1e-6, weight_decay=0.0, bias_correction=True,
              max_trust_ratio=None, maximize=False, grad_factor=1.0, **options):
    """LAMB (You et al. 2019), per array (layer):

    m' = b1*m + (1-b1)*g;  v' = b2*v + (1-b2)*g*g;  u = m'/bc1 / (sqrt(v')/sqrt(bc2) + eps)
    + wd*p (bias_correction=False: bc1 = bc2 = 1);  ratio = |p| / |u|, 1 when either norm
    is 0, at most max_trust_ratio when given;  p <- p - lr*ratio*u;  m <- m';  v <- v'.
    Two passes: the first only reads (the norms, in the fixed reduction order), the second
    writes, so an interrupted step changes nothing.
    """
    lr = check_nonnegative("lr", lr)
    beta1, beta2 = _betas(beta1, beta2)
    eps = check_nonnegative("eps", eps)
    weight_decay = check_nonnegative("weight_decay", weight_decay)
    bias_correction = check_flag("bias_correction", bias_correction)
    if max_trust_ratio is not None:
        max_trust_ratio = check_nonnegative("max_trust_ratio", max_trust_ratio)
    step = check_step(step)
    pro = prologue(lr, 0.0, False, maximize, grad_factor)
    inv_bc1 = 1.0 / (1.0 - beta1 ** step) if bias_correction else 1.0
    rsqrt_bc2 = 1.0 / math.sqrt(1.0 - beta2 ** step) if bias_correction else 1.0
    common = (beta1, 1.0 - beta1, beta2, 1.0 - beta2, inv_bc1, rsqrt_bc2, eps, weight_decay)
    buffers = (param, grad, exp_avg, exp_avg_sq)
    opts = run_options(step, options)
    norms = run(LAMB, buffers, LAMB.scalars(*pro, *common, 0.0, 0.0), **opts, writes=False)
    step_sizes = []
    for update_sq, param_sq in norms:
        update_norm, param_norm = math.sqrt(update_sq), math.sqrt(param_sq)
        ratio = param_norm / update_norm if update_norm > 0 and param_norm > 0 else 1.0
        if max_trust_ratio is not None and not ratio <= max_trust_ratio:
            ratio = max_trust_ratio if ratio == ratio else ratio
        step_sizes.append(LAMB.scalars(*pro, *common, 1.0, lr * ratio))
    run(LAMB, buffers, step_sizes, **opts)


def adafactor_state_shape(name, shape):
    """The shape of Adafactor's state buffer ``name`` for a param of ``shape``, or None when
    such a param has none (torch.optim.Adafactor's layout): a param of 2 or more dimensions
    keeps row_var (..., rows, 1) and col_var (..., 1, cols), its leading dimensions being
    batch dimensions; any other keeps variance, of its own shape."""
    shape = tuple(shape)
    factored = len(shape) >= 2
    if name == "row_var":
        return shape[:-1] + (1,) if factored else None
    if name == "col_var":
        return shape[:-2] + (1, shape[-1]) if factored else None
    return None if factored else shape


def matrix_shape(shape):
    """A param as Adafactor sees it: (batch, rows, cols) -- its matrices, for 2 or more
    dimensions -- or (1, 1, size)."""
    if len(shape) >= 2:
        return math.prod(shape[:-2]), shape[-2], shape[-1]
    return 1, 1, math.prod(shape)


ADAFACTOR = Kernel("adafactor_pass",
                   _roles("param", "grad", "row_var?", "col_var?", "variance?"),
                   scalars_type("AdafactorScalars", "beta2 one_minus_beta2 eps1 machine_eps1 "
                                                    "step_size"),
                   sums=2, state_shape=adafactor_state_shape)


def adafactor_step(run, param, grad, row_var=None, col_var=None, variance=None, *, lr=1e-2,
                   step, beta2_decay=-0.8, eps1=None, eps2=1e-3, d=1.0, weight_decay=0.0,
                   maximize=False, grad_factor=1.0, **options):
    """Adafactor (Shazeer & Stern 2018) as torch.optim.Adafactor, per array. A param of 2 or
    more dimensions keeps row_var and col_var (factored: its leading dimensions are batch
    dimensions), any other variance; see adafactor_state_shape.

    b2 = 1 - t^beta2_decay;  rho = min(lr, 1/sqrt(t));  alpha = max(eps2, RMS(p))*rho;
    p <- p*(1 - lr*wd);  factored: R <- b2*R + (1-b2)*mean(g*g over columns), C likewise over
    rows, den = max(sqrt(R)*sqrt(C / max(mean(R), eps1)), eps1);  else v <- b2*v +
    (1-b2)*g*g, den = max(sqrt(v), eps1);  u = g/den;  p <- p - alpha/max(1, RMS(u)/d)*u.
    eps1=None: the machine epsilon of the param's dtype. RMS(x) = |x|/sqrt(size).

    Two calls of the runner: the first only reads (the row and column sums, |p|, |u|, in
    the fixed reduction order), the second writes, so an interrupted step changes nothing.
    An empty param (and its state) is left as it is.
    """
    lr = check_nonnegative("lr", lr)
    beta2_decay = check_real("beta2_decay", beta2_decay, high=0.0)
    eps1 = None if eps1 is None else check_nonnegative("eps1", eps1)
    eps2 = check_nonnegative("eps2", eps2)
    d = check_real("d", d, 1.0)
    step = check_step(step)
    one_minus_beta2 = float(step) ** beta2_decay
    rho = min(lr, 1.0 / math.sqrt(step))
    pro = prologue(lr, weight_decay, True, maximize, grad_factor)
    common = (1.0 - one_minus_beta2, one_minus_beta2, 0.0 if eps1 is None else eps1,
              float(eps1 is None))
    buffers = (param, grad, row_var, col_var, variance)
    opts = run_options(step, options)
    sums, factor_sums = run(ADAFACTOR, buffers, ADAFACTOR.scalars(*pro, *common, 0.0),
                            **opts, writes=False)
    step_sizes = []
    for (param_sq, update_sq), a in zip(sums.tolist(), param if isinstance(param, (list, tuple))
                                        else [param]):
        step_size = 0.0
        if a.size:      # torch's expressions
            alpha = max(eps2, math.sqrt(param_sq) / a.size ** 0.5) * rho
            step_size = alpha / max(1.0, math.sqrt(update_sq) / (a.size ** 0.5 * d))
        step_sizes.append((*pro, *common, step_size))
    run(ADAFACTOR, buffers, step_sizes, factor_sums=factor_sums, **opts)


# -- sign-based --------------------------------------------------------------------------------

LION = Kernel("lion_step", _roles("param", "grad", "exp_avg"),
              scalars_type("LionScalars", "beta1 one_minus_beta1 beta2 one_minus_beta2 lr"))


def lion_step(run, param, grad, exp_avg, *, lr=1e-4, step=1, beta1=0.9, beta2=0.99,
              weight_decay=0.0, maximize=False, grad_factor=1.0, **options):
    """Lion (Chen et al. 2023): p <- p*(1 - lr*wd);  c = b1*m + (1-b1)*g;  p <- p - lr*sign(c);
    m <- b2*m + (1-b2)*g"""
    lr = check_nonnegative("lr", lr)
    beta1 = check_real("beta1", beta1, 0.0, 1.0)
    beta2 = check_real("beta2", beta2, 0.0, 1.0)
    step = check_step(step)
    s = LION.scalars(*prologue(lr, weight_decay, True, maximize, grad_factor),
                     beta1, 1.0 - beta1, beta2, 1.0 - beta2, lr)
    run(LION, (param, grad, exp_avg), s, **run_options(step, options))


RPROP = Kernel("rprop_step", _roles("param", "grad", "prev", "step_size"),
               scalars_type("RpropScalars", "eta_minus eta_plus step_size_min step_size_max"))


def rprop_step(run, param, grad, prev, step_size, *, step=1, etas=(0.5, 1.2),
               step_sizes=(1e-6, 50.0), lr=1e-2, weight_decay=0.0,
               decoupled_weight_decay=False, maximize=False, grad_factor=1.0, **options):
    """Rprop (torch.optim.Rprop): f = eta_plus where g*prev > 0, eta_minus where < 0, else 1;
    s <- clamp(s*f, step_sizes);  g' = 0 where f == eta_minus, else g;  p <- p - sign(g')*s;
    prev <- g'.  (``lr`` is used only by decoupled weight decay; the step sizes are state.)"""
    eta_minus, eta_plus = _pair("etas", etas)
    low, high = _pair("step_sizes", step_sizes)
    if not 0.0 < eta_minus < 1.0 < eta_plus:
        raise ValueError(f"etas must satisfy 0 < etaminus < 1 < etaplus, got {etas!r}")
    if not 0.0 <= low <= high:
        raise ValueError(f"step_sizes must satisfy 0 <= min <= max, got {step_sizes!r}")
    lr = check_nonnegative("lr", lr)
    step = check_step(step)
    s = RPROP.scalars(*prologue(lr, weight_decay, decoupled_weight_decay, maximize,
                                grad_factor),
                      eta_minus, eta_plus, low, high)
    run(RPROP, (param, grad, prev, step_size), s,
        **run_options(step, options))


def _pair(name, value):
    try:
        first, second = value
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair of numbers, got {value!r}"[:200]) from None
    return check_real(f"{name}[0]", first), check_real(f"{name}[1]", second)


# -- averaged iterates -------------------------------------------------------------------------

ASGD = Kernel("asgd_step", _roles("param", "grad", "ax"),
              scalars_type("ASGDScalars", "eta shrink mu"))


def asgd_step(run, param, grad, ax, *, eta, mu, step=1, lambd=1e-4, weight_decay=0.0,
              decoupled_weight_decay=False, maximize=False, grad_factor=1.0, **options):
    """ASGD (torch.optim.ASGD), with this step's eta and mu (state; the optimizer updates
    them after the step: eta = lr / (1 + lambd*lr*t)^alpha, mu = 1 / max(1, t - t0)).
    p <- p*(1 - lambd*eta);  p <- p - eta*g;  ax <- ax + (p - ax)*mu, or p when mu == 1"""
    eta = check_nonnegative("eta", eta)
    mu = check_nonnegative("mu", mu)
    lambd = check_nonnegative("lambd", lambd)
    step = check_step(step)
    s = ASGD.scalars(*prologue(eta, weight_decay, decoupled_weight_decay, maximize,
                               grad_factor),
                     eta, 1.0 - lambd * eta, mu)
    run(ASGD, (param, grad, ax), s, **run_options(step, options))


SCHEDULEFREE_ADAMW = Kernel(
    "schedulefree_adamw_step", _roles("param", "grad", "z", "exp_avg_sq"),
    scalars_type("ScheduleFreeAdamWScalars", "beta2 one_minus_beta2 inv_bc2 eps decay ckp1 "
                                             "y_step lr"))


def schedulefree_adamw_step(run, param, grad, z, exp_avg_sq, *, lr, step, ckp1, beta1=0.9,
                            beta2=0.999, eps=1e-8, weight_decay=0.0, maximize=False,
                            grad_factor=1.0, **options):
    """Schedule-Free AdamW (Defazio et al. 2024; schedulefree.AdamWScheduleFree), in train
    mode: param holds y. ``lr`` is this step's (warmed-up) rate, ``ckp1`` the weight of z in
    the new average (weight / weight_sum).

    v <- b2*v + (1-b2)*g*g;  d = g / (sqrt(v/bc2) + eps) + wd*y;  y <- y + ckp1*(z - y);
    y <- y + lr*(b1*(1 - ckp1) - 1)*d;  z <- z - lr*d
    """
    lr = check_nonnegative("lr", lr)
    beta1 = check_real("beta1", beta1, 0.0, 1.0, high_open=True)
    beta2 = check_unit_interval("beta2", beta2)
    eps = check_nonnegative("eps", eps)
    weight_decay = check_nonnegative("weight_decay", weight_decay)
    ckp1 = check_real("ckp1", ckp1, 0.0, 1.0)
    step = check_step(step)
    s = SCHEDULEFREE_ADAMW.scalars(*prologue(lr, 0.0, False, maximize, grad_factor),
                                   beta2, 1.0 - beta2, 1.0 / (1.0 - beta2 ** step), eps,
                                   weight_decay, ckp1, lr * (beta1 * (1.0 - ckp1) - 1.0), lr)
    run(SCHEDULEFREE_ADAMW, (param, grad, z, exp_avg_sq), s,
        **run_options(step, options))


INTERPOLATE = Kernel("interpolate_step", _roles("param", "target"),
                     NamedTuple("InterpolateScalars", [("weight", float)]))


def interpolate_step(run, param, target, *, weight, step=1, **options):
    """p <- p + weight*(target - p)  (Schedule-Free's switch between y and x)"""
    weight = check_real("weight", weight)
    run(INTERPOLATE, (param, target), INTERPOLATE.scalars(weight),
        **run_options(check_step(step), options))


# -- the EWMA state ----------------------------------------------------------------------------

EWMA = Kernel("ewma_step", _roles("average", "value"),
              NamedTuple("EWMAScalars", [("beta", float), ("one_minus_beta", float)]))


def ewma_step(run, average, value, *, beta, threads=None):
    """v <- beta*v + (1-beta)*x (the state of an exponentially weighted moving average)."""
    beta = check_unit_interval("beta", beta)
    run(EWMA, (average, value), EWMA.scalars(beta, 1.0 - beta),
        **run_options(1, {"threads": threads}))


# -- reductions --------------------------------------------------------------------------------

NORM_KERNELS = {
    2.0: Kernel("sum_squares", _roles("x"), NamedTuple("NoScalars", []), sums=2),
    1.0: Kernel("sum_abs", _roles("x"), NamedTuple("NoScalars", []), sums=2),
    math.inf: Kernel("max_abs", _roles("x"), NamedTuple("NoScalars", []), sums=2),
}


def norms(run, x, *, norm_type=2.0, threads=None):
    """Per array of x (one array or a list): (s, f) with s the sum of squares (norm_type=2),
    of absolute values (1) or the largest absolute value (inf), and f 0.0 when every element
    is finite, else NaN or inf. Sums run in the fixed block/lane order, so the result is the
    same for any thread count and in both backends."""
    norm_type = check_real("norm_type", norm_type)
    if norm_type not in NORM_KERNELS:
        raise ValueError(f"norm_type must be 1, 2 or inf, got {norm_type!r}")
    kernel = NORM_KERNELS[norm_type]
    return run(kernel, (x,), kernel.scalars(), writes=False,
               **run_options(1, {"threads": threads}))


# -- the registry ------------------------------------------------------------------------------

# every kernel function, by its public name, and the C loop it runs
FUNCTIONS = {
    "sgd_step": (sgd_step, SGD),
    "momentum_step": (momentum_step, MOMENTUM),
    "adagrad_step": (adagrad_step, ADAGRAD),
    "rmsprop_step": (rmsprop_step, RMSPROP),
    "adadelta_step": (adadelta_step, ADADELTA),
    "adam_step": (adam_step, ADAM),
    "adamw_step": (adamw_step, ADAM),
    "adamax_step": (adamax_step, ADAMAX),
    "nadam_step": (nadam_step, NADAM),
    "radam_step": (radam_step, RADAM),
    "lamb_step": (lamb_step, LAMB),
    "adafactor_step": (adafactor_step, ADAFACTOR),
    "lion_step": (lion_step, LION),
    "rprop_step": (rprop_step, RPROP),
    "asgd_step": (asgd_step, ASGD),
    "schedulefree_adamw_step": (schedulefree_adamw_step, SCHEDULEFREE_ADAMW),
    "interpolate_step": (interpolate_step, INTERPOLATE),
    "ewma_step": (ewma_step, EWMA),
    "norms": (norms, NORM_KERNELS[2.0]),
}

KERNELS = {k.name: k for k in [spec for _, spec in FUNCTIONS.values()]
           + list(NORM_KERNELS.values())}
