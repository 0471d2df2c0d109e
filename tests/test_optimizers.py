"""The optimizer classes: both backends give the same bits through every class and option,
lists of mixed shapes and dtypes, a single array, lr as a number or a schedule, backend
selection and fallback, defaults equal to torch.optim's, and the README example.

(Bad input and its error messages are tested in test_validation.py.)
"""
import inspect
import pydoc
import re
import sys
import warnings

import numpy as np
import pytest

import fastoptim as fo
import fastoptim._backend as _backend
from conftest import assert_same_bits, kernels, needs_kernels

try:
    import fastoptim.torch as fot
except ImportError:     # torch is not installed: the NumPy front end alone
    fot = None

# every class with its stateful options (lr raised so that the params visibly move)
CONFIGS = [
    (fo.SGD, dict(lr=0.05)),
    (fo.SGD, dict(lr=0.05, weight_decay=0.1, maximize=True)),
    (fo.SGD, dict(lr=0.05, momentum=0.9, dampening=0.2)),
    (fo.Momentum, dict(lr=0.05)),
    (fo.Momentum, dict(lr=0.05, form="ewma", bias_correction=True)),
    (fo.Momentum, dict(lr=0.05, form="ewma", nesterov=True, weight_decay=0.1)),
    (fo.Momentum, dict(lr=0.05, form="velocity")),
    (fo.Momentum, dict(lr=0.05, form="velocity", nesterov=True, maximize=True)),
    (fo.Nesterov, dict(lr=0.05)),
    (fo.Nesterov, dict(lr=0.05, form="ewma", bias_correction=True, maximize=True)),
    (fo.AdaGrad, dict(lr=0.05)),
    (fo.AdaGrad, dict(lr=0.05, lr_decay=0.1, initial_accumulator_value=0.3, weight_decay=0.1)),
    (fo.RMSProp, dict(lr=0.05)),
    (fo.RMSProp, dict(lr=0.05, centered=True)),
    (fo.RMSProp, dict(lr=0.05, centered=True, momentum=0.9, maximize=True, weight_decay=0.1)),
    (fo.Adam, dict(lr=0.05)),
    (fo.Adam, dict(lr=0.05, amsgrad=True, weight_decay=0.1)),
    (fo.Adam, dict(lr=0.05, eps_root=1e-8, maximize=True)),
    (fo.AdamW, dict(lr=0.05)),
    (fo.AdamW, dict(lr=0.05, amsgrad=True, eps_root=1e-8, weight_decay=0.1)),
]
CONFIG_IDS = [f"{cls.__name__}({','.join(f'{k}={v}' for k, v in kw.items())})"
              for cls, kw in CONFIGS]

# several arrays of different shapes and both dtypes in one optimizer
LAYOUT = [((5,), np.float32), ((2, 3), np.float64), ((4, 1, 2), np.float32), ((), np.float64)]
STEPS = 5


def make_problem(seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(shape).astype(dtype) for shape, dtype in LAYOUT]
    grads = [[rng.standard_normal(shape).astype(dtype) for shape, dtype in LAYOUT]
             for _ in range(STEPS)]
    return params, grads


def run(cls, kwargs, backend, params, grads):
    """Step a fresh optimizer over copies of params; return (params, optimizer)."""
    params = [p.copy() for p in params]
    opt = cls(params, backend=backend, **kwargs)
    for g in grads:
        opt.step(g)
    return params, opt


@needs_kernels
@pytest.mark.parametrize("cls,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_c_and_numpy_backends_give_identical_bits(cls, kwargs):
    params, grads = make_problem()
    fast, fast_opt = run(cls, kwargs, "c", params, grads)
    slow, slow_opt = run(cls, kwargs, "numpy", params, grads)
    assert (fast_opt.backend, slow_opt.backend) == ("c", "numpy")
    assert fast_opt.step_count == slow_opt.step_count == STEPS
    for i, (a, b, p0) in enumerate(zip(fast, slow, params)):
        assert a.dtype == p0.dtype and a.shape == p0.shape
        assert not np.array_equal(a, p0), f"param {i} did not move"
        assert_same_bits(a, b, f"param {i}")
        assert list(fast_opt.state[i]) == list(slow_opt.state[i])
        for name, value in fast_opt.state[i].items():
            assert value.dtype == p0.dtype and value.shape == p0.shape, name
            assert_same_bits(value, slow_opt.state[i][name], f"state[{i}][{name!r}]")


@pytest.mark.parametrize("cls,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_a_list_steps_each_array_as_its_own_optimizer_would(cls, kwargs, backend):
    # the arrays of one optimizer are independent: state is per array, nothing is mixed up
    # across shapes or dtypes, and a single-array optimizer takes a bare array
    params, grads = make_problem(seed=1)
    together, _ = run(cls, kwargs, backend, params, grads)
    for i, p0 in enumerate(params):
        alone = p0.copy()
        opt = cls(alone, backend=backend, **kwargs)
        for g in grads:
            opt.step(g[i])
        assert_same_bits(together[i], alone, f"param {i}")


@pytest.mark.parametrize("cls,kwargs", CONFIGS[::3], ids=CONFIG_IDS[::3])
def test_single_array_and_list_of_one_agree(cls, kwargs, backend):
    rng = np.random.default_rng(2)
    p0 = rng.standard_normal(6)
    grads = [rng.standard_normal(6) for _ in range(STEPS)]
    single, listed = p0.copy(), p0.copy()
    opt_single = cls(single, backend=backend, **kwargs)
    opt_list = cls([listed], backend=backend, **kwargs)
    for k, g in enumerate(grads):
        opt_single.step(g if k % 2 else [g])  # a bare array or a list of one, either way
        opt_list.step([g])
    assert opt_single.params[0] is single  # updated in place, not copied
    assert len(opt_single.state) == len(opt_list.state) == 1
    assert not np.array_equal(single, p0)
    assert_same_bits(single, listed)
    for name, value in opt_single.state[0].items():
        assert_same_bits(value, opt_list.state[0][name], name)


# -- learning rate ---------------------------------------------------------------------------

@pytest.mark.parametrize("cls,kwargs", [(fo.SGD, {}), (fo.Momentum, {}), (fo.AdaGrad, {}),
                                        (fo.RMSProp, dict(centered=True)),
                                        (fo.Adam, dict(amsgrad=True)), (fo.AdamW, {})],
                         ids=lambda x: getattr(x, "__name__", ""))
def test_lr_schedule_is_evaluated_at_the_zero_based_step(cls, kwargs, backend):
    params, grads = make_problem(seed=3)
    calls = []

    def schedule(t):
        calls.append(t)
        return 0.1 * 0.5 ** t

    scheduled = [p.copy() for p in params]
    opt = cls(scheduled, lr=schedule, backend=backend, **kwargs)
    assert opt.current_lr() == 0.1
    manual = [p.copy() for p in params]
    by_hand = cls(manual, lr=1.0, backend=backend, **kwargs)
    for k, g in enumerate(grads):
        opt.step(g)
        by_hand.lr = 0.1 * 0.5 ** k
        by_hand.step(g)
    assert calls[-STEPS:] == list(range(STEPS))
    assert opt.current_lr() == 0.1 * 0.5 ** STEPS
    for i, (a, b) in enumerate(zip(scheduled, manual)):
        assert_same_bits(a, b, f"param {i}")


def test_lr_schedule_sgd_by_hand(backend):
    p = np.array([1.0, -2.0])
    g = np.array([0.5, 4.0])
    opt = fo.SGD(p, lr=lambda t: 0.1 * 0.5 ** t, backend=backend)
    for _ in range(3):
        opt.step(g)
    total = 0.1 + 0.05 + 0.025
    np.testing.assert_allclose(p, [1.0 - total * 0.5, -2.0 - total * 4.0], rtol=1e-15)


def test_lr_can_be_changed_between_steps(backend):
    # dyadic values: p = p0 - 0.5*g1 - 0.25*g2 - 0*g3 exactly
    p = np.array([1.0, -2.0, 0.5], dtype=np.float32)
    opt = fo.SGD(p, lr=0.5, backend=backend)
    opt.step(np.array([0.25, 1.0, -4.0], dtype=np.float32))
    opt.lr = 0.25
    assert opt.lr == 0.25
    opt.step(np.array([2.0, -1.0, 0.5], dtype=np.float32))
    opt.lr = 0
    opt.step(np.array([3.0, 3.0, 3.0], dtype=np.float32))
    np.testing.assert_array_equal(p, [1.0 - 0.125 - 0.5, -2.0 - 0.5 + 0.25,
                                      0.5 + 2.0 - 0.125])
    assert opt.step_count == 3


# -- backend selection -----------------------------------------------------------------------

@pytest.fixture
def extension_missing(monkeypatch):
    """Make `from fastoptim import kernels` fail as if the extension were not built. Once
    imported, the submodule is also an attribute of the package, which `from ... import`
    finds before sys.modules: both must go."""
    monkeypatch.setitem(sys.modules, "fastoptim.kernels", None)
    monkeypatch.delattr(fo, "kernels", raising=False)
    monkeypatch.setattr(_backend, "_warned_fallback", False)
    monkeypatch.delenv("FASTOPTIM_BACKEND", raising=False)


def test_auto_falls_back_to_numpy_with_one_warning(extension_missing):
    params, grads = make_problem(seed=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fallback, opt = run(fo.Adam, dict(amsgrad=True), "auto", params, grads)
        second = fo.SGD(np.zeros(3), backend="auto")
        third = fo.RMSProp(np.zeros(3))  # auto is the default
    fallback_warnings = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(fallback_warnings) == 1, [str(w.message) for w in caught]
    assert "reference" in str(fallback_warnings[0].message)
    assert opt.backend == second.backend == third.backend == "numpy"
    reference, _ = run(fo.Adam, dict(amsgrad=True), "numpy", params, grads)
    for a, b in zip(fallback, reference):
        assert_same_bits(a, b)


def test_backend_c_without_the_extension_raises_import_error(extension_missing):
    with pytest.raises(ImportError, match="backend='c'"):
        fo.Adam(np.zeros(3), backend="c")


def test_env_var_makes_auto_pick_numpy(monkeypatch):
    monkeypatch.setenv("FASTOPTIM_BACKEND", "numpy")
    monkeypatch.setattr(_backend, "_warned_fallback", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # choosing the reference this way is not a fallback
        opt = fo.Adam(np.zeros(3), backend="auto")
    assert opt.backend == "numpy"
    if kernels is not None:  # an explicit choice wins over the variable
        assert fo.Adam(np.zeros(3), backend="c").backend == "c"


@needs_kernels
def test_auto_picks_the_compiled_kernels_when_built(monkeypatch):
    monkeypatch.delenv("FASTOPTIM_BACKEND", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fo.SGD(np.zeros(3)).backend == "c"


@pytest.mark.parametrize("name", ["C", "cython", "torch", ""])
def test_unknown_backend_is_a_value_error(name):
    with pytest.raises(ValueError, match="backend"):
        fo.SGD(np.zeros(3), backend=name)


# -- defaults --------------------------------------------------------------------------------

# torch.optim arguments that are implementation switches, not hyperparameters
TORCH_SWITCHES = {"params", "foreach", "fused", "capturable", "differentiable"}

# (front end, our class, torch.optim's class, where we differ on purpose: name -> our default,
# or None for a name we do not take)
DEFAULT_PAIRS = [
    ("fastoptim", "SGD", "SGD", {}),
    ("fastoptim", "Momentum", "SGD", {"momentum": 0.9}),  # the class exists to have momentum
    ("fastoptim", "Nesterov", "SGD", {"momentum": 0.9, "nesterov": None,
                                      "dampening": None}),  # fixed
    ("fastoptim", "AdaGrad", "Adagrad", {}),
    ("fastoptim", "RMSProp", "RMSprop", {}),
    ("fastoptim", "Adam", "Adam", {}),
    ("fastoptim", "AdamW", "AdamW", {}),
] + [(front_end, name, name, {}) for front_end in ("fastoptim", "fastoptim.torch")
     for name in ("Adadelta", "Adamax", "NAdam", "RAdam", "Rprop", "ASGD")] + [
    ("fastoptim.torch", name, name, {})
    for name in ("SGD", "Adagrad", "RMSprop", "Adam", "AdamW")]


def defaults(cls):
    return {name: p.default for name, p in inspect.signature(cls).parameters.items()
            if p.default is not inspect.Parameter.empty}


def front_end_class(front_end, name):
    if front_end == "fastoptim.torch":
        fot = pytest.importorskip("fastoptim.torch")
        return getattr(fot, name)
    return getattr(fo, name)


@pytest.mark.parametrize("front_end,ours,theirs,differences", DEFAULT_PAIRS,
                         ids=[f"{p[0]}.{p[1]}" for p in DEFAULT_PAIRS])
def test_defaults_match_torch_optim(front_end, ours, theirs, differences):
    torch = pytest.importorskip("torch")
    torch_defaults = {name: value for name, value in defaults(getattr(torch.optim, theirs)).items()
                      if name not in TORCH_SWITCHES}
    our_defaults = defaults(front_end_class(front_end, ours))
    for name, torch_value in torch_defaults.items():
        if name in differences:
            expected = differences[name]
            if expected is None:
                assert name not in our_defaults, f"{ours} should not take {name}"
            else:
                assert our_defaults[name] == expected, name
            continue
        assert name in our_defaults, f"{ours} lacks torch.optim.{theirs}'s {name}"
        assert our_defaults[name] == torch_value, (
            f"{ours}({name}={our_defaults[name]!r}) but torch.optim.{theirs} has {torch_value!r}")


# a value for each hyperparameter that no default has, so that a value given by position
# can only land under one name
DISTINCT = {"lr": 0.0123, "momentum": 0.55, "dampening": 0.0, "weight_decay": 0.0456,
            "nesterov": True, "lr_decay": 0.0078, "initial_accumulator_value": 0.31,
            "eps": 3.3e-7, "alpha": 0.77, "centered": True, "rho": 0.66, "betas": (0.81, 0.977),
            "amsgrad": True, "momentum_decay": 0.0061, "decoupled_weight_decay": True,
            "etas": (0.4, 1.3), "step_sizes": (2e-6, 40.0), "lambd": 2.2e-4, "t0": 123.0}
TORCH_TWINS = [(ours, theirs) for _, ours, theirs, differences in DEFAULT_PAIRS
               if not differences]


def positional_names(cls):
    """The arguments after params that may be given by position, up to torch's first
    implementation switch (torch.optim.Adagrad(params, lr, ..., eps, foreach) takes foreach
    by position too; fastoptim takes the switches by keyword only)."""
    names = []
    for name, p in list(inspect.signature(cls).parameters.items())[1:]:
        if p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD or name in TORCH_SWITCHES:
            break
        names.append(name)
    return names


@pytest.mark.parametrize("ours,theirs", TORCH_TWINS, ids=[t[0] for t in TORCH_TWINS])
def test_positional_arguments_are_torch_optims(ours, theirs):
    """fastoptim.X(params, lr, ...) and fastoptim.torch.X take by position what torch.optim.X
    takes, in the same order: given the same positional values, each lands under the same
    name in all three."""
    torch = pytest.importorskip("torch")
    fot = pytest.importorskip("fastoptim.torch")
    names = positional_names(getattr(torch.optim, theirs))
    values = [DISTINCT[name] for name in names]
    tensor = torch.zeros(3, requires_grad=True)
    torch_group = getattr(torch.optim, theirs)([tensor], *values).param_groups[0]
    assert {name: torch_group[name] for name in names} == dict(zip(names, values))
    numpy_opt = getattr(fo, ours)(np.zeros(3), *values)
    torch_front_end = getattr(fot, theirs)
    assert positional_names(getattr(fo, ours)) == names
    assert positional_names(torch_front_end) == names
    assert {name: getattr(numpy_opt, name) for name in names} == dict(zip(names, values))
    group = torch_front_end([tensor], *values).param_groups[0]
    assert {name: group[name] for name in names} == dict(zip(names, values))
    with pytest.raises(TypeError, match=f"fastoptim.{type(numpy_opt).__name__}.*positional"):
        getattr(fo, ours)(np.zeros(3), *values, None)


def test_extra_defaults_keep_torch_behaviour():
    # the names beyond torch.optim default to what torch does
    assert defaults(fo.Momentum)["form"] == "torch"
    assert defaults(fo.Momentum)["bias_correction"] is False
    assert defaults(fo.Adam)["eps_root"] == 0.0
    assert defaults(fo.AdamW)["eps_root"] == 0.0


# -- help() -------------------------------------------------------------------------------

HELP_CLASSES = sorted({cls for cls in vars(fo.optimizers).values()
                       if isinstance(cls, type) and issubclass(cls, fo.Optimizer)
                       and cls.rule is not None}, key=lambda c: c.__name__)
HELP_CLASSES += [getattr(fot, name) for name in fot.__all__] if fot else []


@pytest.mark.parametrize("cls", HELP_CLASSES,
                         ids=[f"{c.__module__.removesuffix('.optimizers')}.{c.__name__}"
                              for c in HELP_CLASSES])
def test_help_names_every_argument(cls):
    """help() shows the text made from the rule: what the optimizer is for, its formula,
    and every argument of the signature by name and default, each hyperparameter with a
    line that says what it does."""
    doc = inspect.getdoc(cls)
    shown = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    assert cls.rule.summary.split(":")[0] in shown and cls.rule.summary in doc
    assert all(line in doc for line in cls.rule.formula.splitlines())
    for name, parameter in list(inspect.signature(cls).parameters.items())[1:]:
        assert re.search(rf"\b{name}={re.escape(repr(parameter.default))}", doc), (
            f"help({cls.__module__}.{cls.__name__}) does not name {name}")
    for h in cls.rule.hyperparameters:
        described = re.search(rf"^    {h.name}={re.escape(repr(h.default))}: (.+)$", doc, re.M)
        assert described and described.group(1).strip(), h.name


# -- the README example ----------------------------------------------------------------------

def test_readme_example_moves_every_element_by_minus_lr(backend):
    # p = 0, g = 1: m_hat = 1 and v_hat = 1, so p = -lr/(1 + eps). In float32, 1 + 1e-8 is 1
    # (half an ulp of 1 is 6e-8), and step_size*m = f32(0.01)*f32(0.1) rounds to f32(1e-3),
    # so every element lands exactly on float32(-1e-3) -- a 10**7-element array also runs
    # split across threads, which must not change a bit.
    p = np.zeros(10**7, np.float32)
    opt = fo.Adam(p, lr=1e-3, backend=backend)
    opt.step(np.ones_like(p))
    assert p.dtype == np.float32
    assert np.all(p == np.float32(-1e-3))
    assert np.all(opt.state[0]["exp_avg"] == np.float32(0.1))
    assert np.all(opt.state[0]["exp_avg_sq"] == np.float32(1 - 0.999))
