"""What a newcomer meets in the first hour: torch's calling conventions, help texts that name
every argument, errors that say what is wrong, objects that pickle and copy."""
import copy
import pickle
import subprocess
import sys

import numpy as np
import pytest

import fastoptim as fo
from conftest import assert_same_bits
from fastoptim import optimizers, rules


def problem(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(50).astype(np.float32),
            [rng.standard_normal(50).astype(np.float32) for _ in range(4)])


@pytest.mark.parametrize("name", [n for n in optimizers.__all__ if n != "Optimizer"])
def test_help_names_every_argument(name):
    cls = getattr(fo, name)
    text = cls.__doc__
    for h in cls.rule.hyperparameters:
        assert f"{h.name}=" in text, h.name
    for option, _, _ in optimizers.OPTIONS:
        assert f"{option}=" in text, option
    import inspect
    assert list(inspect.signature(cls).parameters)[0] == "params"


def test_lr_and_the_rest_by_position_as_torch_allows():
    p, grads = problem()
    by_position = fo.Adam(p.copy(), 0.01, (0.8, 0.9), 1e-6, 0.1, True)
    by_name = fo.Adam(p.copy(), lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1,
                      amsgrad=True)
    for g in grads:
        by_position.step(g)
        by_name.step(g)
    assert_same_bits(by_position.params[0], by_name.params[0])
    with pytest.raises(TypeError, match="fastoptim.Adam"):
        fo.Adam(p, 0.01, (0.8, 0.9), 1e-6, 0.1, True, False)      # maximize is keyword only


def test_a_wrong_keyword_names_the_class_and_the_argument():
    with pytest.raises(TypeError, match=r"fastoptim\.Adam\(\).*momentum"):
        fo.Adam(np.zeros(3), momentum=0.9)


@pytest.mark.parametrize("lr, error, message", [
    ("0.1", TypeError, "lr must be a real number, got str"),
    ("abc", TypeError, "lr must be a real number, got str"),
    (True, TypeError, "lr must be a real number, got bool"),
    (float("nan"), ValueError, "lr is NaN"),
    (-1.0, ValueError, "lr must be >= 0"),
    (np.array([0.1, 0.2]), TypeError, "lr must be a real number, got ndarray"),
])
def test_bad_lr_is_refused_with_its_name(lr, error, message):
    with pytest.raises(error, match=message):
        fo.Adam(np.zeros(3), lr=lr)
    opt = fo.Adam(np.zeros(3))
    with pytest.raises(error, match=message):
        opt.lr = lr
    assert opt.lr == 1e-3


@pytest.mark.parametrize("grads, error, message", [
    (None, TypeError, "grads must be an array or a list of arrays.*NoneType"),
    ("x", TypeError, "grads must be an array or a list of arrays.*str"),
    ([np.zeros(3), np.zeros(3)], ValueError, "grads has 2 arrays but the optimizer holds 1"),
])
def test_bad_grads_say_what_is_wrong(grads, error, message):
    opt = fo.SGD(np.zeros(3))
    with pytest.raises(error, match=message):
        opt.step(grads)
    assert opt.step_count == 0


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("name", ["Adam", "NAdam", "ASGD", "ScheduleFreeAdamW", "RMSProp"])
def test_pickle_and_deepcopy_step_identically(name, backend):
    p, grads = problem(1)
    opt = getattr(fo, name)(p.copy(), backend=backend)
    if hasattr(opt, "train"):
        opt.train()
    opt.step(grads[0])
    clones = [pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)]
    for g in grads[1:]:
        for o in [opt] + clones:
            o.step(g)
    for clone in clones:
        assert clone.step_count == opt.step_count == 4
        assert clone.backend == backend
        assert_same_bits(clone.params[0], opt.params[0])
        for name_, array in opt.state[0].items():
            assert_same_bits(clone.state[0][name_], array, name_)
    assert clones[0].params[0] is not opt.params[0]


def test_torch_spellings_name_the_same_classes():
    assert fo.RMSprop is fo.RMSProp and fo.Adagrad is fo.AdaGrad


def test_repr_says_which_library():
    assert repr(fo.Adam(np.zeros(3), lr=0.1)).startswith("fastoptim.Adam(")
    torch = pytest.importorskip("torch")
    import fastoptim.torch as fot
    text = repr(fot.Adam([torch.nn.Parameter(torch.zeros(2))]))
    assert text.startswith("fastoptim.torch.Adam (")


def test_an_unusable_thread_count_in_the_environment_is_said_once():
    code = "import warnings; warnings.simplefilter('always'); import fastoptim.kernels"
    for value, warned in (("two", True), ("0", True), ("3", False), ("", False)):
        env = {"FASTOPTIM_NUM_THREADS": value, "PATH": "/usr/bin:/bin"}
        result = subprocess.run([sys.executable, "-c", code], env={**_base_env(), **env},
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert ("FASTOPTIM_NUM_THREADS" in result.stderr) == warned, (value, result.stderr)


def _base_env():
    import os
    return {k: v for k, v in os.environ.items() if k != "FASTOPTIM_NUM_THREADS"}


def test_every_rule_is_a_class_in_both_front_ends():
    torch = pytest.importorskip("torch")   # noqa: F841
    import fastoptim.torch as fot
    for rule in rules.RULES.values():
        assert getattr(fo, rule.name).rule is rule
        torch_class = getattr(fot, rule.torch_name or rule.name, None)
        if rule.name not in ("Momentum", "Nesterov"):     # torch.optim.SGD's settings
            assert torch_class is not None and torch_class.rule is rule, rule.name
