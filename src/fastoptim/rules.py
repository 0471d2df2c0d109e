"""One description per algorithm, read by both front ends (fastoptim.optimizers for NumPy
arrays, fastoptim.torch for torch tensors).

A rule says, once: what the algorithm is for; its hyperparameters (torch.optim's names,
defaults and positional order) and how each is checked; its state buffers, which
hyperparameters switch each on and their initial values; the per-optimizer scalars it
carries between steps (NAdam's mu_product, ASGD's eta and mu, Schedule-Free's weight sum);
whether it counts steps; and how hyperparameters, the learning rate and the step number
become one kernel call (fastoptim._kernel_specs). A front end adds only what is its own:
arrays and .npz checkpoints, or tensors, param groups and torch's state dict.
"""
import dataclasses
import inspect
from typing import Callable, NamedTuple, Optional, Tuple

from fastoptim._checks import (
    check_flag,
    check_int,
    check_nonnegative,
    check_real,
    check_unit_interval,
)
from fastoptim._kernel_specs import MOMENTUM_FORMS, adafactor_state_shape, check_momentum_form


class Hyper(NamedTuple):
    """A hyperparameter: its name, default, check (value -> normalized value, raising
    TypeError/ValueError that names it) and a one-line description."""
    name: str
    default: object
    check: Callable
    doc: str


class KernelCall(NamedTuple):
    """What one step runs: a kernel function of fastoptim.kernels/reference, the names of
    the state buffers it takes after (param, grad) in argument order (None: an optional
    buffer not used), its keyword arguments, and the scalars to keep after the step."""
    kernel: str
    buffers: Tuple[Optional[str], ...]
    kwargs: dict
    scalars: dict


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str                   # the class name in fastoptim (and in fastoptim.torch)
    summary: str                # what it is for, in a sentence
    formula: str                # the update, as the docstrings and README give it
    hyperparameters: Tuple[Hyper, ...]
    positional: int             # how many hyperparameters may be given by position (torch)
    state: Callable             # hyperparameters -> ((buffer name, initial value), ...)
    kernel: Callable            # (hyperparameters, lr, step, scalars) -> KernelCall
    scalars: Callable = lambda h: {}    # hyperparameters -> the scalars before step 1
    counts_steps: bool = True   # keeps torch's state["step"]
    check: Callable = lambda h: None    # checks that involve several hyperparameters
    torch_name: str = ""        # its name in torch.optim, when torch has it
    fixed: dict = dataclasses.field(default_factory=dict)   # hyperparameters it pins
    # (buffer name, param shape) -> the buffer's shape, None when such a param has none;
    # None: every buffer has its param's shape (Adafactor's row and column factors do not)
    state_shape: Optional[Callable] = None

    def buffers(self, h, shape):
        """The state buffers of a param of ``shape``: (name, initial value, shape) each."""
        shape = tuple(shape)
        found = ((name, initial, self.buffer_shape(name, shape)) for name, initial in self.state(h))
        return tuple(b for b in found if b[2] is not None)

    def buffer_shape(self, name, shape):
        """The shape of state buffer ``name`` for a param of ``shape`` (None: it has none)."""
        return tuple(shape) if self.state_shape is None else self.state_shape(name, tuple(shape))

    def defaults(self):
        return {h.name: h.default for h in self.hyperparameters}

    def signature(self, options):
        """A front end's constructor: params, the hyperparameters (the first ``positional``
        of them by position too, as in torch.optim), then ``options`` -- (name, default)
        pairs -- by keyword."""
        keyword = inspect.Parameter.KEYWORD_ONLY
        parameters = [inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        parameters += [inspect.Parameter(h.name, inspect.Parameter.POSITIONAL_OR_KEYWORD
                                         if i < self.positional else keyword, default=h.default)
                       for i, h in enumerate(self.hyperparameters)]
        parameters += [inspect.Parameter(name, keyword, default=default)
                       for name, default in options]
        return inspect.Signature(parameters)

    def bind(self, signature, owner, args, kwargs):
        """The constructor's arguments by name, defaults filled in; a TypeError that names
        the class for a wrong call (an unknown keyword, too many positional arguments)."""
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{owner}(): {exc}") from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def checked(self, values):
        """Every hyperparameter normalized and checked, then the cross checks; the pinned
        ones (``fixed``) added."""
        out = {h.name: h.check(values[h.name]) for h in self.hyperparameters}
        out.update(self.fixed)
        self.check(out)
        return out


# -- checks of single hyperparameters ------------------------------------------------------------

def _lr(value):
    return check_nonnegative("lr", value)


def _nonnegative(name):
    return lambda value: check_nonnegative(name, value)


def _unit(name):
    return lambda value: check_unit_interval(name, value)


def _flag(name):
    return lambda value: check_flag(name, value)


def _real(name, low=None, high=None):
    return lambda value: check_real(name, value, low, high)


def _pair(name, check):
    def check_pair(value):
        try:
            first, second = value
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a pair, got {value!r}"[:200]) from None
        return check(f"{name}[0]", first), check(f"{name}[1]", second)
    return check_pair


def _choice(name, choices):
    def check_choice(value):
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, "
                             f"got {value!r}"[:200])
        return value
    return check_choice


def _optional(check):
    return lambda value: None if value is None else check(value)


BETAS = Hyper("betas", (0.9, 0.999), _pair("betas", check_unit_interval),
              "decay rates of the first and second moment averages")
WEIGHT_DECAY = Hyper("weight_decay", 0.0, _nonnegative("weight_decay"),
                     "weight decay: L2 (g + wd*p), or decoupled (p*(1 - lr*wd)) with "
                     "decoupled_weight_decay")
MAXIMIZE = Hyper("maximize", False, _flag("maximize"), "maximize the objective (g <- -g)")
DECOUPLED = Hyper("decoupled_weight_decay", False, _flag("decoupled_weight_decay"),
                  "apply weight decay as p <- p*(1 - lr*wd) before the update (AdamW's way)")
EPS_IN_SQRT = Hyper("eps_in_sqrt", False, _flag("eps_in_sqrt"),
                    "eps inside the square root, sqrt(s + eps) (the lectures, optax) instead "
                    "of sqrt(s) + eps (torch)")


def _common(kwargs, h):
    """The prologue options every kernel takes from the hyperparameters."""
    kwargs.update(weight_decay=h.get("weight_decay", 0.0), maximize=h.get("maximize", False))
    if "decoupled_weight_decay" in h:
        kwargs["decoupled_weight_decay"] = h["decoupled_weight_decay"]
    return kwargs


# -- SGD, Momentum, Nesterov -----------------------------------------------------------------------

def _sgd_state(h):
    return (("momentum_buffer", 0.0),) if h["momentum"] > 0 else ()


def _sgd_kernel(h, lr, step, scalars):
    if h["momentum"] == 0:
        return KernelCall("sgd_step", (), _common(dict(lr=lr, step=step), h), {})
    kwargs = dict(lr=lr, step=step, momentum=h["momentum"], dampening=h["dampening"],
                  nesterov=h["nesterov"], form=h["form"], bias_correction=h["bias_correction"])
    return KernelCall("momentum_step", ("momentum_buffer",), _common(kwargs, h), {})


def _sgd_check(h):
    if h["nesterov"] and h["momentum"] <= 0:
        raise ValueError("nesterov requires momentum > 0")
    check_momentum_form(h["form"], h["dampening"], h["nesterov"], h["bias_correction"])


def _sgd_hyperparameters(momentum=0.0, nesterov=None):
    """SGD's, or with nesterov=True Nesterov's: no nesterov switch, no dampening."""
    look_ahead = () if nesterov else (
        Hyper("dampening", 0.0, _unit("dampening"), "dampening of the gradient (torch form)"),)
    switch = () if nesterov else (
        Hyper("nesterov", False, _flag("nesterov"), "Nesterov's look-ahead momentum"),)
    return (
        Hyper("lr", 1e-3, _lr, "learning rate"),
        Hyper("momentum", momentum, _unit("momentum"),
              "momentum mu (beta for form='ewma'); 0: plain SGD"),
        *look_ahead,
        WEIGHT_DECAY,
        *switch,
        MAXIMIZE,
        DECOUPLED,
        Hyper("form", "torch", _choice("form", tuple(MOMENTUM_FORMS)),
              "'torch' (torch.optim.SGD), 'ewma' (Ng: an average of gradients) or "
              "'velocity' (CS231n, Deep Learning from Scratch)"),
        Hyper("bias_correction", False, _flag("bias_correction"),
              "form='ewma': divide the average by 1 - beta^t"),
    )


SGD_FORMULA = """\
p <- p - lr*g;  with momentum mu, in one of three forms:
  torch:    b <- g at step 1, else b <- mu*b + (1-d)*g;  p <- p - lr*(g + mu*b if nesterov else b)
  ewma:     v <- beta*v + (1-beta)*g;  p <- p - s*v (nesterov: the look-ahead beta*v + (1-beta)*g),
            s = lr, or lr/(1-beta^t) with bias_correction
  velocity: v0 = v;  v <- mu*v0 - lr*g;  p <- p + v;  nesterov: p <- p - mu*v0 + (1+mu)*v"""

SGD = Rule(
    name="SGD", torch_name="SGD",
    summary="Plain (mini-batch) gradient descent, optionally with momentum: the baseline, "
            "and with momentum and a tuned schedule still hard to beat on vision models.",
    formula=SGD_FORMULA, hyperparameters=_sgd_hyperparameters(), positional=5,
    state=_sgd_state, kernel=_sgd_kernel, check=_sgd_check, counts_steps=False)

MOMENTUM = dataclasses.replace(
    SGD, name="Momentum", torch_name="",
    summary="SGD with momentum (default 0.9): averages gradients over ~1/(1-mu) steps, which "
            "damps the zigzag across steep directions and speeds travel along shallow ones.",
    hyperparameters=_sgd_hyperparameters(momentum=0.9))

NESTEROV = dataclasses.replace(
    SGD, name="Nesterov", torch_name="",
    summary="Momentum with Nesterov's look-ahead: the gradient's correction is applied one "
            "step early, which overshoots less than plain momentum.",
    hyperparameters=_sgd_hyperparameters(momentum=0.9, nesterov=True), positional=3,
    fixed={"nesterov": True, "dampening": 0.0})


# -- AdaGrad, RMSProp, Adadelta --------------------------------------------------------------------

def _adagrad_kernel(h, lr, step, scalars):
    kwargs = dict(lr=lr, step=step, lr_decay=h["lr_decay"], eps=h["eps"],
                  eps_in_sqrt=h["eps_in_sqrt"])
    return KernelCall("adagrad_step", ("sum",), _common(kwargs, h), {})


ADAGRAD = Rule(
    name="AdaGrad", torch_name="Adagrad",
    summary="Per-coordinate step sizes from the sum of all past squared gradients: large "
            "steps for rare features (sparse problems), but the steps only ever shrink.",
    formula="clr = lr / (1 + (t-1)*lr_decay);  s <- s + g*g;  p <- p - clr*g / (sqrt(s) + eps)"
            "  (eps_in_sqrt: sqrt(s + eps))",
    hyperparameters=(
        Hyper("lr", 1e-2, _lr, "learning rate"),
        Hyper("lr_decay", 0.0, _nonnegative("lr_decay"), "learning-rate decay per step"),
        WEIGHT_DECAY,
        Hyper("initial_accumulator_value", 0.0, _nonnegative("initial_accumulator_value"),
              "the starting value of the sum of squares"),
        Hyper("eps", 1e-10, _nonnegative("eps"), "added to the denominator"),
        MAXIMIZE, DECOUPLED, EPS_IN_SQRT),
    positional=5,
    state=lambda h: (("sum", h["initial_accumulator_value"]),),
    kernel=_adagrad_kernel)


def _rmsprop_state(h):
    return ((("square_avg", 0.0),) + ((("momentum_buffer", 0.0),) if h["momentum"] > 0 else ())
            + ((("grad_avg", 0.0),) if h["centered"] else ()))


def _rmsprop_kernel(h, lr, step, scalars):
    kwargs = dict(lr=lr, step=step, alpha=h["alpha"], eps=h["eps"], momentum=h["momentum"],
                  eps_in_sqrt=h["eps_in_sqrt"])
    buffers = ("square_avg", "grad_avg" if h["centered"] else None,
               "momentum_buffer" if h["momentum"] > 0 else None)
    return KernelCall("rmsprop_step", buffers, _common(kwargs, h), {})


RMSPROP = Rule(
    name="RMSProp", torch_name="RMSprop",
    summary="Per-coordinate step sizes from a moving average of squared gradients (Hinton): "
            "AdaGrad that forgets, the usual choice for recurrent nets and noisy objectives.",
    formula="v <- a*v + (1-a)*g*g;  centered: ga <- a*ga + (1-a)*g, den = sqrt(v - ga*ga) + eps,"
            " else sqrt(v) + eps (eps_in_sqrt: inside);  momentum: b <- mu*b + g/den, "
            "p <- p - lr*b;  else p <- p - lr*g/den",
    hyperparameters=(
        Hyper("lr", 1e-2, _lr, "learning rate"),
        Hyper("alpha", 0.99, _unit("alpha"), "decay rate of the average of squares"),
        Hyper("eps", 1e-8, _nonnegative("eps"), "added to the denominator"),
        WEIGHT_DECAY,
        Hyper("momentum", 0.0, _unit("momentum"), "momentum on the scaled gradient"),
        Hyper("centered", False, _flag("centered"),
              "divide by the variance estimate v - ga^2 instead of v"),
        MAXIMIZE, DECOUPLED, EPS_IN_SQRT),
    positional=6, state=_rmsprop_state, kernel=_rmsprop_kernel)


def _adadelta_kernel(h, lr, step, scalars):
    kwargs = dict(lr=lr, step=step, rho=h["rho"], eps=h["eps"])
    return KernelCall("adadelta_step", ("square_avg", "acc_delta"), _common(kwargs, h), {})


ADADELTA = Rule(
    name="Adadelta", torch_name="Adadelta",
    summary="RMSProp whose step is scaled by a running average of past updates, so it needs "
            "(almost) no learning rate (Zeiler 2012).",
    formula="v <- rho*v + (1-rho)*g*g;  delta = sqrt(u + eps)/sqrt(v + eps)*g;  "
            "u <- rho*u + (1-rho)*delta^2;  p <- p - lr*delta",
    hyperparameters=(
        Hyper("lr", 1.0, _lr, "scales the update"),
        Hyper("rho", 0.9, _real("rho", 0.0, 1.0), "decay rate of both averages"),
        Hyper("eps", 1e-6, _nonnegative("eps"), "inside both square roots"),
        WEIGHT_DECAY, MAXIMIZE, DECOUPLED),
    positional=4,
    state=lambda h: (("square_avg", 0.0), ("acc_delta", 0.0)),
    kernel=_adadelta_kernel)


# -- the Adam family ---------------------------------------------------------------------------------

def _adam_state(h):
    return (("exp_avg", 0.0), ("exp_avg_sq", 0.0)) + (
        (("max_exp_avg_sq", 0.0),) if h["amsgrad"] else ())


def _adam_kernel(h, lr, step, scalars):
    beta1, beta2 = h["betas"]
    kwargs = dict(lr=lr, step=step, beta1=beta1, beta2=beta2, eps=h["eps"],
                  eps_root=h["eps_root"], eps_hat=h["eps_hat"])
    buffers = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq" if h["amsgrad"] else None)
    return KernelCall("adam_step", buffers, _common(kwargs, h), {})


def _adam_check(h):
    if h["eps_hat"] and h["eps_root"]:
        raise ValueError("eps_hat and eps_root are two different denominators: give one")


def _adam_hyperparameters(weight_decay=0.0, decoupled=False):
    return (
        Hyper("lr", 1e-3, _lr, "learning rate"),
        BETAS,
        Hyper("eps", 1e-8, _nonnegative("eps"), "added to the denominator"),
        WEIGHT_DECAY._replace(default=weight_decay),
        Hyper("amsgrad", False, _flag("amsgrad"),
              "AMSGrad: divide by the largest second moment seen so far"),
        MAXIMIZE,
        DECOUPLED._replace(default=decoupled),
        Hyper("eps_root", 0.0, _nonnegative("eps_root"),
              "optax's eps inside the square root: sqrt(v/bc2 + eps_root) + eps"),
        Hyper("eps_hat", False, _flag("eps_hat"),
              "Kingma & Ba's efficient form: lr_t = lr*sqrt(bc2)/bc1, p - lr_t*m/(sqrt(v) + "
              "eps) (Keras, Deep Learning from Scratch)"),
    )


ADAM_FORMULA = """\
m <- b1*m + (1-b1)*g;  v <- b2*v + (1-b2)*g*g;  amsgrad: v <- vmax <- max(vmax, v)
p <- p - (lr/bc1)*m / (sqrt(v)/sqrt(bc2) + eps),  bc1 = 1 - b1^t, bc2 = 1 - b2^t
eps_root: den = sqrt(v/bc2 + eps_root) + eps;  eps_hat: p <- p - (lr*sqrt(bc2)/bc1)*m / (sqrt(v) + eps)"""

ADAM = Rule(
    name="Adam", torch_name="Adam",
    summary="Momentum plus RMSProp with bias correction (Kingma & Ba 2015): the default "
            "for most deep learning, robust to its hyperparameters.",
    formula=ADAM_FORMULA, hyperparameters=_adam_hyperparameters(), positional=5,
    state=_adam_state, kernel=_adam_kernel, check=_adam_check)

ADAMW = dataclasses.replace(
    ADAM, name="AdamW", torch_name="AdamW",
    summary="Adam with decoupled weight decay (Loshchilov & Hutter 2019): decay that does not "
            "pass through the adaptive scaling; the standard for transformers.",
    formula="p <- p*(1 - lr*wd) first, then Adam without L2:\n" + ADAM_FORMULA,
    hyperparameters=_adam_hyperparameters(weight_decay=1e-2, decoupled=True))


def _adamax_kernel(h, lr, step, scalars):
    beta1, beta2 = h["betas"]
    kwargs = dict(lr=lr, step=step, beta1=beta1, beta2=beta2, eps=h["eps"])
    return KernelCall("adamax_step", ("exp_avg", "exp_inf"), _common(kwargs, h), {})


ADAMAX = Rule(
    name="Adamax", torch_name="Adamax",
    summary="Adam with the infinity norm: divides by a decaying maximum of |g| instead of "
            "the root mean square, so one huge gradient does not shrink steps for long.",
    formula="m <- b1*m + (1-b1)*g;  u <- max(b2*u, |g| + eps);  p <- p - (lr/bc1)*m/u",
    hyperparameters=(
        Hyper("lr", 2e-3, _lr, "learning rate"), BETAS,
        Hyper("eps", 1e-8, _nonnegative("eps"), "added to |g|"),
        WEIGHT_DECAY, MAXIMIZE, DECOUPLED),
    positional=4,
    state=lambda h: (("exp_avg", 0.0), ("exp_inf", 0.0)),
    kernel=_adamax_kernel)


def _nadam_kernel(h, lr, step, scalars):
    beta1, beta2 = h["betas"]
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * h["momentum_decay"]))
    mu_product = scalars["mu_product"] * mu
    kwargs = dict(lr=lr, step=step, beta1=beta1, beta2=beta2, eps=h["eps"],
                  momentum_decay=h["momentum_decay"], mu_product=mu_product)
    return KernelCall("nadam_step", ("exp_avg", "exp_avg_sq"), _common(kwargs, h),
                      {"mu_product": mu_product})


NADAM = Rule(
    name="NAdam", torch_name="NAdam",
    summary="Adam with Nesterov momentum (Dozat 2016): the look-ahead step of Nesterov with "
            "Adam's scaling, often a little faster early in training.",
    formula="mu_t = b1*(1 - 0.5*0.96^(t*momentum_decay));  m, v as Adam;  "
            "den = sqrt(v/bc2) + eps;  p <- p - lr*(1-mu_t)/(1-prod mu)*g/den "
            "- lr*mu_{t+1}/(1-prod mu*mu_{t+1})*m/den",
    hyperparameters=(
        Hyper("lr", 2e-3, _lr, "learning rate"), BETAS,
        Hyper("eps", 1e-8, _nonnegative("eps"), "added to the denominator"),
        WEIGHT_DECAY,
        Hyper("momentum_decay", 4e-3, _nonnegative("momentum_decay"),
              "how fast mu_t approaches beta1"),
        DECOUPLED, MAXIMIZE),
    positional=6,
    state=lambda h: (("exp_avg", 0.0), ("exp_avg_sq", 0.0)),
    scalars=lambda h: {"mu_product": 1.0},
    kernel=_nadam_kernel)


def _radam_kernel(h, lr, step, scalars):
    beta1, beta2 = h["betas"]
    kwargs = dict(lr=lr, step=step, beta1=beta1, beta2=beta2, eps=h["eps"])
    return KernelCall("radam_step", ("exp_avg", "exp_avg_sq"), _common(kwargs, h), {})


RADAM = Rule(
    name="RAdam", torch_name="RAdam",
    summary="Rectified Adam (Liu et al. 2020): momentum SGD until the second-moment estimate "
            "is reliable, then Adam scaled by a variance rectification: a built-in warmup.",
    formula="m, v as Adam;  rho_t = rho_inf - 2t*b2^t/bc2;  rho_t > 5: p <- p - "
            "lr*r_t*sqrt(bc2)/bc1*m/(sqrt(v) + eps);  else p <- p - lr/bc1*m",
    hyperparameters=(
        Hyper("lr", 1e-3, _lr, "learning rate"), BETAS,
        Hyper("eps", 1e-8, _nonnegative("eps"), "added to the denominator"),
        WEIGHT_DECAY, DECOUPLED, MAXIMIZE),
    positional=5,
    state=lambda h: (("exp_avg", 0.0), ("exp_avg_sq", 0.0)),
    kernel=_radam_kernel)


def _lamb_kernel(h, lr, step, scalars):
    beta1, beta2 = h["betas"]
    kwargs = dict(lr=lr, step=step, beta1=beta1, beta2=beta2, eps=h["eps"],
                  weight_decay=h["weight_decay"], bias_correction=h["bias_correction"],
                  max_trust_ratio=h["max_trust_ratio"], maximize=h["maximize"])
    return KernelCall("lamb_step", ("exp_avg", "exp_avg_sq"), kwargs, {})


LAMB = Rule(
    name="LAMB",
    summary="Adam with a per-layer trust ratio |p|/|update| (You et al. 2019): keeps each "
            "layer's step proportional to its weights, for very large batches.",
    formula="u = (m/bc1) / (sqrt(v/bc2) + eps) + wd*p;  ratio = |p|/|u| (1 if either is 0, at "
            "most max_trust_ratio);  p <- p - lr*ratio*u  (per array)",
    hyperparameters=(
        Hyper("lr", 1e-3, _lr, "learning rate"), BETAS,
        Hyper("eps", 1e-6, _nonnegative("eps"), "added to the denominator"),
        Hyper("weight_decay", 0.0, _nonnegative("weight_decay"),
              "decoupled decay inside the update: u + wd*p"),
        Hyper("bias_correction", True, _flag("bias_correction"), "Adam's bias correction"),
        Hyper("max_trust_ratio", None, _optional(_nonnegative("max_trust_ratio")),
              "clamp the trust ratio (None: no clamp)"),
        MAXIMIZE),
    positional=6,
    state=lambda h: (("exp_avg", 0.0), ("exp_avg_sq", 0.0)),
    kernel=_lamb_kernel)


def _adafactor_kernel(h, lr, step, scalars):
    eps1, eps2 = h["eps"]
    kwargs = dict(lr=lr, step=step, beta2_decay=h["beta2_decay"], eps1=eps1, eps2=eps2,
                  d=h["d"], weight_decay=h["weight_decay"], maximize=h["maximize"])
    return KernelCall("adafactor_step", ("row_var", "col_var", "variance"), kwargs, {})


def _adafactor_eps(name, value):
    return None if value is None and name == "eps[0]" else check_nonnegative(name, value)


ADAFACTOR = Rule(
    name="Adafactor", torch_name="Adafactor",
    summary="Adam-like steps with a factored second moment (Shazeer & Stern 2018): a matrix "
            "keeps one average of g^2 per row and per column, so its state is rows + columns "
            "instead of rows x columns; steps are relative to the param's RMS and clipped.",
    formula="b2 = 1 - t^beta2_decay;  rho = min(lr, 1/sqrt(t));  alpha = max(eps2, RMS(p))*rho;"
            "  p <- p*(1 - lr*wd)\n"
            "matrices (2+ dims, leading ones are batch): R <- b2*R + (1-b2)*mean_cols(g^2), "
            "C <- b2*C + (1-b2)*mean_rows(g^2),\n"
            "  den = max(sqrt(R)*sqrt(C/max(mean(R), eps1)), eps1);  others: "
            "v <- b2*v + (1-b2)*g^2, den = max(sqrt(v), eps1)\n"
            "u = g/den;  p <- p - alpha/max(1, RMS(u)/d)*u  (eps1 None: the dtype's machine "
            "epsilon)",
    hyperparameters=(
        Hyper("lr", 1e-2, _lr, "the largest relative step size, min(lr, 1/sqrt(t)); also "
                               "the rate of the weight decay"),
        Hyper("beta2_decay", -0.8, _real("beta2_decay", high=0.0),
              "the second moment's decay rate is 1 - t^beta2_decay"),
        Hyper("eps", (None, 1e-3), _pair("eps", _adafactor_eps),
              "(eps1, eps2): the floor of the denominator (None: the param dtype's machine "
              "epsilon) and of RMS(p) in the step size"),
        Hyper("d", 1.0, _real("d", 1.0), "clipping threshold: an update of RMS above d is "
                                         "scaled down to d"),
        Hyper("weight_decay", 0.0, _nonnegative("weight_decay"),
              "decoupled: p <- p*(1 - lr*wd) first"),
        MAXIMIZE),
    positional=5,
    state=lambda h: (("row_var", 0.0), ("col_var", 0.0), ("variance", 0.0)),
    state_shape=adafactor_state_shape,
    kernel=_adafactor_kernel)


# -- sign-based ----------------------------------------------------------------------------------------

def _lion_kernel(h, lr, step, scalars):
    beta1, beta2 = h["betas"]
    kwargs = dict(lr=lr, step=step, beta1=beta1, beta2=beta2,
                  weight_decay=h["weight_decay"], maximize=h["maximize"])
    return KernelCall("lion_step", ("exp_avg",), kwargs, {})


LION = Rule(
    name="Lion",
    summary="EvoLved Sign Momentum (Chen et al. 2023): steps by the sign of an interpolated "
            "momentum, one state buffer (20 bytes per float32 element instead of Adam's 28); "
            "use a 3-10x smaller lr than AdamW.",
    formula="p <- p*(1 - lr*wd);  c = b1*m + (1-b1)*g;  p <- p - lr*sign(c);  "
            "m <- b2*m + (1-b2)*g",
    hyperparameters=(
        Hyper("lr", 1e-4, _lr, "learning rate"),
        Hyper("betas", (0.9, 0.99), _pair("betas", lambda n, v: check_real(n, v, 0.0, 1.0)),
              "interpolation weight of the update, decay rate of the momentum"),
        Hyper("weight_decay", 0.0, _nonnegative("weight_decay"),
              "decoupled: p <- p*(1 - lr*wd)"),
        MAXIMIZE),
    positional=4,
    state=lambda h: (("exp_avg", 0.0),),
    kernel=_lion_kernel, counts_steps=False)


def _rprop_kernel(h, lr, step, scalars):
    kwargs = dict(step=step, lr=lr, etas=h["etas"], step_sizes=h["step_sizes"])
    return KernelCall("rprop_step", ("prev", "step_size"), _common(kwargs, h), {})


def _rprop_check(h):
    eta_minus, eta_plus = h["etas"]
    if not 0.0 < eta_minus < 1.0 < eta_plus:
        raise ValueError(f"etas must satisfy 0 < etaminus < 1 < etaplus, got {h['etas']}")
    low, high = h["step_sizes"]
    if not 0.0 <= low <= high:
        raise ValueError(f"step_sizes must satisfy 0 <= min <= max, got {h['step_sizes']}")


RPROP = Rule(
    name="Rprop", torch_name="Rprop",
    summary="Resilient backpropagation: per-coordinate step sizes that grow while the "
            "gradient keeps its sign and shrink when it flips; for full-batch training.",
    formula="f = eta_plus if g*prev > 0, eta_minus if < 0, else 1;  s <- clamp(s*f, "
            "step_sizes);  g' = 0 where f = eta_minus;  p <- p - sign(g')*s;  prev <- g'",
    hyperparameters=(
        Hyper("lr", 1e-2, _lr, "the initial step size of every coordinate"),
        Hyper("etas", (0.5, 1.2), _pair("etas", check_real), "(shrink, grow) factors"),
        Hyper("step_sizes", (1e-6, 50.0), _pair("step_sizes", check_real),
              "(smallest, largest) step size"),
        MAXIMIZE,
        WEIGHT_DECAY._replace(doc="weight decay (not in torch.optim.Rprop): L2, or "
                                  "decoupled p*(1 - lr*wd) with lr the initial step size"),
        DECOUPLED),
    positional=3,
    state=lambda h: (("prev", 0.0), ("step_size", h["lr"])),
    kernel=_rprop_kernel, check=_rprop_check)


# -- averaged iterates ---------------------------------------------------------------------------------

def _asgd_kernel(h, lr, step, scalars):
    kwargs = dict(step=step, eta=scalars["eta"], mu=scalars["mu"], lambd=h["lambd"])
    after = {"eta": lr / ((1.0 + h["lambd"] * lr * step) ** h["alpha"]),
             "mu": 1.0 / max(1.0, step - h["t0"])}
    return KernelCall("asgd_step", ("ax",), _common(kwargs, h), after)


ASGD = Rule(
    name="ASGD", torch_name="ASGD",
    summary="Averaged SGD (Polyak & Juditsky): SGD whose iterates are averaged from step t0 "
            "on (state 'ax'); the average converges where SGD's iterates keep bouncing.",
    formula="p <- p*(1 - lambd*eta);  p <- p - eta*g;  ax <- ax + (p - ax)*mu (ax <- p while "
            "mu = 1);  then eta = lr/(1 + lambd*lr*t)^alpha, mu = 1/max(1, t - t0)",
    hyperparameters=(
        Hyper("lr", 1e-2, _lr, "learning rate"),
        Hyper("lambd", 1e-4, _nonnegative("lambd"), "decay term"),
        Hyper("alpha", 0.75, _real("alpha"), "power of the eta schedule"),
        Hyper("t0", 1e6, _real("t0"), "the step at which averaging starts"),
        WEIGHT_DECAY, MAXIMIZE, DECOUPLED),
    positional=5,
    state=lambda h: (("ax", 0.0),),
    scalars=lambda h: {"eta": h["lr"], "mu": 1.0},
    kernel=_asgd_kernel)


def _schedulefree_scalars(h):
    return {"k": 0, "weight_sum": 0.0, "lr_max": -1.0, "train_mode": False}


def _schedulefree_kernel(h, lr, step, scalars):
    k = scalars["k"]
    warmup = h["warmup_steps"]
    lr = lr * ((k + 1) / warmup if k < warmup else 1.0)
    lr_max = max(lr, scalars["lr_max"])
    weight = ((k + 1) ** h["r"]) * (lr_max ** h["weight_lr_power"])
    weight_sum = scalars["weight_sum"] + weight
    ckp1 = weight / weight_sum if weight_sum != 0 else 0.0
    beta1, beta2 = h["betas"]
    kwargs = dict(lr=lr, step=k + 1, ckp1=ckp1, beta1=beta1, beta2=beta2, eps=h["eps"],
                  weight_decay=h["weight_decay"], maximize=h["maximize"])
    return KernelCall("schedulefree_adamw_step", ("z", "exp_avg_sq"), kwargs,
                      {**scalars, "k": k + 1, "weight_sum": weight_sum, "lr_max": lr_max})


SCHEDULEFREE_ADAMW = Rule(
    name="ScheduleFreeAdamW",
    summary="Schedule-Free AdamW (Defazio et al. 2024): no learning-rate schedule to tune; "
            "gradients at an interpolation y of the SGD iterate z and its average x. Call "
            "train() before stepping and eval() before evaluating.",
    formula="v <- b2*v + (1-b2)*g*g;  d = g/(sqrt(v/bc2) + eps) + wd*y;  y <- y + c*(z - y);  "
            "y <- y + lr*(b1*(1-c) - 1)*d;  z <- z - lr*d;  c = w_t / sum w,  "
            "w_t = t^r * lr_max^weight_lr_power",
    hyperparameters=(
        Hyper("lr", 0.0025, _lr, "learning rate (after warmup)"), BETAS,
        Hyper("eps", 1e-8, _nonnegative("eps"), "added to the denominator"),
        Hyper("weight_decay", 0.0, _nonnegative("weight_decay"), "decay evaluated at y"),
        Hyper("warmup_steps", 0, lambda v: check_int("warmup_steps", v, 0),
              "linear warmup of lr over this many steps"),
        Hyper("r", 0.0, _real("r"), "power of t in the averaging weights"),
        Hyper("weight_lr_power", 2.0, _real("weight_lr_power"),
              "power of lr_max in the averaging weights"),
        MAXIMIZE),
    positional=8,
    state=lambda h: (("z", "param"), ("exp_avg_sq", 0.0)),
    scalars=_schedulefree_scalars,
    kernel=_schedulefree_kernel, counts_steps=False)


# -- the list --------------------------------------------------------------------------------------------

RULES = {rule.name: rule for rule in (
    SGD, MOMENTUM, NESTEROV, ADAGRAD, RMSPROP, ADADELTA, ADAM, ADAMW, ADAMAX, NADAM, RADAM,
    LAMB, LION, RPROP, ASGD, SCHEDULEFREE_ADAMW, ADAFACTOR)}



def schedulefree_weight(beta1, to_train):
    """The interpolation weight of Schedule-Free's train() (y from x: 1 - b1) and eval()
    (x from y: 1 - 1/b1), as in the reference implementation."""
    return 1.0 - beta1 if to_train else 1.0 - 1.0 / beta1
