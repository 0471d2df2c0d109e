"""fastoptim.schedules: each schedule against its formula (written out here, separately from
the code), the warm-up convention, argument checks, reprs, and use as an optimizer's lr."""
import math

import numpy as np
import pytest

import fastoptim
from fastoptim import schedules
from fastoptim.schedules import (
    Schedule,
    cosine_decay,
    exponential_decay,
    inverse_sqrt_decay,
    inverse_time_decay,
    piecewise_constant,
    step_decay,
    warmup,
)

COUNTS = list(range(0, 60)) + [99, 100, 101, 1000, 10**6]


def values(schedule, counts=COUNTS):
    return [schedule(e) for e in counts]


# -- each schedule against its formula -----------------------------------------------------


@pytest.mark.parametrize("lr0,decay_rate", [(0.1, 1.0), (0.5, 0.01), (2.0, 0.0)])
def test_inverse_time_decay(lr0, decay_rate):
    expected = [lr0 / (1 + decay_rate * e) for e in COUNTS]
    assert values(inverse_time_decay(lr0, decay_rate)) == pytest.approx(expected, rel=1e-15)
    # the lectures' example: lr0 = 0.2, decay_rate = 1 gives 0.2, 0.1, 0.067, 0.05
    assert values(inverse_time_decay(0.2, 1.0), range(4)) == \
        pytest.approx([0.2, 0.1, 0.2 / 3, 0.05], rel=1e-15)


@pytest.mark.parametrize("lr0,base", [(0.1, 0.95), (1.0, 0.5), (0.3, 1.0)])
def test_exponential_decay(lr0, base):
    expected = [lr0 * math.exp(e * math.log(base)) for e in COUNTS]
    assert values(exponential_decay(lr0, base)) == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert exponential_decay(lr0, base)(0) == lr0
    assert exponential_decay(1.0).base == 0.95   # the lectures' default


def test_exponential_decay_halves_each_count():
    lr = 0.8
    schedule = exponential_decay(0.8, base=0.5)
    for e in range(40):
        assert schedule(e) == lr
        lr /= 2   # exact in binary


@pytest.mark.parametrize("lr0,k", [(0.1, 1.0), (1.0, 3.0)])
def test_inverse_sqrt_decay(lr0, k):
    counts = [e for e in COUNTS if e >= 1]
    expected = [lr0 * k * e ** -0.5 for e in counts]
    assert values(inverse_sqrt_decay(lr0, k), counts) == pytest.approx(expected, rel=1e-15)
    assert inverse_sqrt_decay(lr0, k)(4) == pytest.approx(lr0 * k / 2)


def test_inverse_sqrt_decay_refuses_zero_with_advice():
    schedule = inverse_sqrt_decay(0.1)
    with pytest.raises(ValueError, match="infinite at e = 0") as info:
        schedule(0)
    assert "e + 1" in str(info.value) and "warmup" in str(info.value)
    assert schedule(1) == 0.1


@pytest.mark.parametrize("lr0,drop,every", [(0.1, 0.5, 10), (1.0, 0.1, 1), (0.3, 0.9, 7)])
def test_step_decay_is_a_staircase(lr0, drop, every):
    schedule = step_decay(lr0, drop, every=every)
    lr = lr0
    for e in range(80):
        if e > 0 and e % every == 0:
            lr *= drop      # one drop at each multiple of `every`, none in between
        assert schedule(e) == pytest.approx(lr, rel=1e-12), e
    assert schedule(10**6) == pytest.approx(lr0 * drop ** (10**6 // every), rel=1e-12,
                                            abs=1e-300)


def test_step_decay_defaults():
    schedule = step_decay(0.4, every=3)
    assert values(schedule, range(10)) == [0.4] * 3 + [0.2] * 3 + [0.1] * 3 + [0.05]


def test_piecewise_constant():
    schedule = piecewise_constant([10, 25], [0.1, 0.01, 0.001])
    expected = {0: 0.1, 9: 0.1, 10: 0.01, 24: 0.01, 25: 0.001, 1000: 0.001}
    assert {e: schedule(e) for e in expected} == expected
    assert schedule(9.5) == 0.1 and schedule(24.999) == 0.01   # fractional epochs
    assert values(piecewise_constant([], [0.3]), range(5)) == [0.3] * 5


@pytest.mark.parametrize("lr0,total,lr_min", [(0.1, 100, 0.0), (1.0, 7, 0.1), (0.5, 1, 0.5)])
def test_cosine_decay(lr0, total, lr_min):
    schedule = cosine_decay(lr0, total, lr_min)
    for e in COUNTS:
        angle = math.pi * min(e, total) / total
        expected = lr_min + 0.5 * (lr0 - lr_min) * (1 + math.cos(angle))
        assert schedule(e) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert schedule(0) == pytest.approx(lr0)
    assert schedule(total) == pytest.approx(lr_min)
    assert schedule(total + 5) == pytest.approx(lr_min)
    if total % 2 == 0:
        assert schedule(total // 2) == pytest.approx((lr0 + lr_min) / 2)


def test_cosine_decay_never_increases():
    lrs = values(cosine_decay(0.1, 50), range(80))
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


# -- warm-up -------------------------------------------------------------------------------


def test_warmup_ramps_linearly_then_hands_over_the_same_count():
    seen = []

    def schedule(e):
        seen.append(e)
        return 1.0 + e

    wrapped = warmup(schedule, steps=4)
    target = 1.0 + 4               # the wrapped schedule at e = steps, where it takes over
    ramp = [wrapped(e) for e in range(4)]
    assert ramp == pytest.approx([target * 1 / 5, target * 2 / 5, target * 3 / 5,
                                  target * 4 / 5])
    assert ramp[0] > 0             # the first step is not wasted at lr = 0
    seen.clear()
    assert wrapped(4) == 5.0 and wrapped(10) == 11.0
    assert seen == [4, 10]         # it sees e itself, not e - steps


def test_warmup_of_a_decay_schedule_is_continuous_and_increasing():
    base = cosine_decay(0.1, 1000)
    wrapped = warmup(base, 100)
    lrs = values(wrapped, range(101))
    assert all(a < b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == base(100)
    assert wrapped(500) == base(500)


def test_warmup_makes_inverse_sqrt_usable_from_zero():
    wrapped = warmup(inverse_sqrt_decay(0.1), steps=16)
    assert wrapped(0) == pytest.approx(0.1 / 4 / 17)
    assert wrapped(16) == pytest.approx(0.1 / 4)
    assert wrapped(100) == pytest.approx(0.01)


def test_warmup_of_a_constant_and_of_zero_steps():
    assert values(warmup(0.3, 2), range(4)) == pytest.approx([0.1, 0.2, 0.3, 0.3])
    base = exponential_decay(0.1, 0.9)
    assert values(warmup(base, 0)) == values(base)


# -- argument checks -----------------------------------------------------------------------


@pytest.mark.parametrize("make,error,match", [
    (lambda: inverse_time_decay(-0.1, 1.0), ValueError, "lr0 must be >= 0"),
    (lambda: inverse_time_decay(0.1, -1.0), ValueError, "decay_rate must be >= 0"),
    (lambda: inverse_time_decay(float("nan"), 1.0), ValueError, "lr0 must be finite"),
    (lambda: inverse_time_decay("0.1", 1.0), TypeError, "lr0 must be a real number"),
    (lambda: exponential_decay(0.1, 1.5), ValueError, "base must be in"),
    (lambda: exponential_decay(0.1, 0.0), ValueError, "base must be in"),
    (lambda: inverse_sqrt_decay(-1.0), ValueError, "lr0"),
    (lambda: inverse_sqrt_decay(0.1, k=0), ValueError, "k must be > 0"),
    (lambda: step_decay(0.1, every=0), ValueError, "every must be >= 1"),
    (lambda: step_decay(0.1, every=-3), ValueError, "every must be >= 1"),
    (lambda: step_decay(0.1, every=2.5), TypeError, "every must be an int"),
    (lambda: step_decay(0.1, drop=1.5, every=2), ValueError, "drop must be in"),
    (lambda: step_decay(0.1, drop=0.0, every=2), ValueError, "drop must be in"),
    (lambda: piecewise_constant([10, 20], [0.1, 0.01]), ValueError, "one rate more"),
    (lambda: piecewise_constant([10], [0.1, 0.01, 0.001]), ValueError, "one rate more"),
    (lambda: piecewise_constant([20, 10], [0.1, 0.01, 0.001]), ValueError,
     "strictly increasing"),
    (lambda: piecewise_constant([10, 10], [0.1, 0.01, 0.001]), ValueError,
     "strictly increasing"),
    (lambda: piecewise_constant([0, 10], [0.1, 0.01, 0.001]), ValueError, "must be > 0"),
    (lambda: piecewise_constant([10], [0.1, -0.01]), ValueError, "values must be >= 0"),
    (lambda: cosine_decay(0.1, 0), ValueError, "total must be > 0"),
    (lambda: cosine_decay(0.1, 100, lr_min=0.2), ValueError, "lr_min must be <= lr0"),
    (lambda: cosine_decay(0.1, 100, lr_min=-0.1), ValueError, "lr_min must be >= 0"),
    (lambda: warmup(cosine_decay(0.1, 10), -1), ValueError, "steps must be >= 0"),
    (lambda: warmup(cosine_decay(0.1, 10), 1.5), TypeError, "steps must be an int"),
    (lambda: warmup(-0.1, 5), ValueError, "schedule must be >= 0"),
    (lambda: warmup(inverse_sqrt_decay(0.1), 0), ValueError, "infinite at e = 0"),
    (lambda: warmup(lambda e: -1.0, 3), ValueError, "must be >= 0"),
])
def test_refuses_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("e,error", [(-1, ValueError), (-0.5, ValueError),
                                     (float("nan"), ValueError), (True, TypeError),
                                     ("3", TypeError), (None, TypeError)])
def test_refuses_bad_counts(e, error):
    for schedule in (exponential_decay(0.1), step_decay(0.1, every=2), warmup(0.1, 3)):
        with pytest.raises(error, match="count"):
            schedule(e)


def test_accepts_numpy_counts_and_returns_python_floats():
    schedule = step_decay(0.1, every=2)
    assert schedule(np.int64(4)) == schedule(4) == pytest.approx(0.025)
    assert type(schedule(np.int32(3))) is float
    assert type(piecewise_constant([2], [1, 2])(5)) is float


# -- reprs -----------------------------------------------------------------------------------


ALL = [
    inverse_time_decay(0.1, 0.5),
    exponential_decay(0.1),
    inverse_sqrt_decay(0.1, k=2.0),
    step_decay(0.1, 0.5, every=10),
    piecewise_constant([10, 20], [0.1, 0.01, 0.001]),
    cosine_decay(0.1, 100, lr_min=0.001),
    warmup(cosine_decay(0.1, 100), 10),
]


@pytest.mark.parametrize("schedule", ALL, ids=lambda s: type(s).__name__)
def test_repr_is_the_expression_that_makes_it(schedule):
    text = repr(schedule)
    assert text.startswith(type(schedule).__name__ + "(")
    rebuilt = eval(text, vars(schedules))
    assert isinstance(rebuilt, Schedule)
    counts = range(1, 120)
    assert values(rebuilt, counts) == values(schedule, counts)


def test_repr_examples():
    assert repr(step_decay(0.1, every=10)) == "step_decay(lr0=0.1, drop=0.5, every=10)"
    assert repr(warmup(exponential_decay(0.1), 5)) == \
        "warmup(schedule=exponential_decay(lr0=0.1, base=0.95), steps=5)"


# -- as an optimizer's lr --------------------------------------------------------------------


def test_schedule_as_optimizer_lr(backend):
    """SGD evaluates lr at the 0-based step count: e = 0, 1, 2, ... before each step."""
    schedule = step_decay(0.1, 0.5, every=2)
    p = np.zeros(3)
    opt = fastoptim.SGD(p, lr=schedule, backend=backend)
    grad = np.array([1.0, -2.0, 4.0])
    expected = np.zeros(3)
    for e, lr in enumerate([0.1, 0.1, 0.05, 0.05, 0.025]):
        assert opt.current_lr() == lr
        opt.step(grad)
        expected = expected - lr * grad
        np.testing.assert_array_equal(p, expected, err_msg=f"after step {e + 1}")
    assert repr(schedule) in repr(opt)


def test_warmup_cosine_drives_adam(backend):
    schedule = warmup(cosine_decay(1e-2, 20), 5)
    p = np.ones(4, np.float32)
    opt = fastoptim.Adam(p, lr=schedule, backend=backend)
    used = []
    for _ in range(25):
        used.append(opt.current_lr())
        opt.step(np.full_like(p, 0.5))
    assert used == [schedule(e) for e in range(25)]
    assert used[0] < used[4] and used[-1] == 0.0
    assert (p < 1).all()
