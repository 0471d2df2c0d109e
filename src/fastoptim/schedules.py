"""Learning-rate schedules: small callable objects, lr = schedule(e).

e is a 0-based count of steps or of epochs, whichever the caller counts: an optimizer given
a schedule as ``lr`` calls it with its 0-based step count before each step; in an epoch
loop, call it yourself with the epoch number and set ``opt.lr`` to the result. A count is an
int >= 0 (a float such as a fractional epoch is accepted too). Each schedule checks its
arguments when it is made, and its repr is the expression that makes it.

    inverse_time_decay(lr0, decay_rate)   lr0 / (1 + decay_rate*e)
    exponential_decay(lr0, base=0.95)     lr0 * base^e
    inverse_sqrt_decay(lr0, k=1.0)        lr0 * k / sqrt(e)                  (e >= 1)
    step_decay(lr0, drop=0.5, every=N)    lr0 * drop^floor(e / every)
    piecewise_constant(boundaries, values)  values[i] for boundaries[i-1] <= e < boundaries[i]
    cosine_decay(lr0, total, lr_min=0)    lr_min + (lr0 - lr_min)*(1 + cos(pi*min(e, total)/total))/2
    warmup(schedule, steps)               a linear ramp for e < steps, then schedule(e)
"""
import bisect
import math
import numbers

__all__ = [
    "Schedule",
    "inverse_time_decay",
    "exponential_decay",
    "inverse_sqrt_decay",
    "step_decay",
    "piecewise_constant",
    "cosine_decay",
    "warmup",
]


class Schedule:
    """Base class: ``__call__`` checks the count e, then ``_at(e)`` gives the rate.

    Subclasses keep their arguments as attributes named as in their signature, listed in
    ``_fields``, so the repr can show them.
    """

    _fields = ()

    def __call__(self, e):
        return float(self._at(_check_count(e)))

    def _at(self, e):
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({args})"


class inverse_time_decay(Schedule):
    """lr0 / (1 + decay_rate*e)  (the lectures' 1/(1 + decay_rate*epoch_num) decay)."""

    _fields = ("lr0", "decay_rate")

    def __init__(self, lr0, decay_rate):
        self.lr0 = _check_nonnegative("lr0", lr0)
        self.decay_rate = _check_nonnegative("decay_rate", decay_rate)

    def _at(self, e):
        return self.lr0 / (1.0 + self.decay_rate * e)


class exponential_decay(Schedule):
    """lr0 * base^e, base in (0, 1]."""

    _fields = ("lr0", "base")

    def __init__(self, lr0, base=0.95):
        self.lr0 = _check_nonnegative("lr0", lr0)
        self.base = _check_real("base", base)
        if not 0.0 < self.base <= 1.0:
            raise ValueError(f"base must be in (0, 1] (a decay), got {self.base}")

    def _at(self, e):
        return self.lr0 * self.base ** e


class inverse_sqrt_decay(Schedule):
    """lr0 * k / sqrt(e), for e >= 1: infinite at e = 0, so e = 0 is refused.

    An optimizer counts from 0: wrap this in ``warmup(..., steps)`` (which hands it counts
    >= steps) or call it with the step number t = e + 1 yourself.
    """

    _fields = ("lr0", "k")

    def __init__(self, lr0, k=1.0):
        self.lr0 = _check_nonnegative("lr0", lr0)
        self.k = _check_positive("k", k)

    def _at(self, e):
        if e == 0:
            raise ValueError("inverse_sqrt_decay is infinite at e = 0: count from 1 (call it "
                             "with e + 1) or wrap it in warmup(schedule, steps)")
        return self.lr0 * self.k / math.sqrt(e)


class step_decay(Schedule):
    """lr0 * drop^floor(e / every): a staircase, dropping by ``drop`` every ``every`` counts."""

    _fields = ("lr0", "drop", "every")

    def __init__(self, lr0, drop=0.5, *, every):
        self.lr0 = _check_nonnegative("lr0", lr0)
        self.drop = _check_real("drop", drop)
        if not 0.0 < self.drop <= 1.0:
            raise ValueError(f"drop must be in (0, 1], got {self.drop}")
        if isinstance(every, bool) or not isinstance(every, numbers.Integral):
            raise TypeError(f"every must be an int >= 1, got {type(every).__name__}")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every = int(every)

    def _at(self, e):
        return self.lr0 * self.drop ** (e // self.every)


class piecewise_constant(Schedule):
    """values[0] for e < boundaries[0], values[i] for boundaries[i-1] <= e < boundaries[i],
    values[-1] from boundaries[-1] on: each boundary is the first count of the next piece.

    boundaries: increasing counts > 0; values: one rate more than there are boundaries.
    """

    _fields = ("boundaries", "values")

    def __init__(self, boundaries, values):
        boundaries = [_check_real("boundaries", b) for b in boundaries]
        values = [_check_nonnegative("values", v) for v in values]
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"values must hold one rate more than boundaries: got "
                             f"{len(values)} values for {len(boundaries)} boundaries")
        if boundaries and not boundaries[0] > 0:
            raise ValueError(f"boundaries must be > 0 (values[0] applies from e = 0), got "
                             f"{boundaries[0]}")
        for a, b in zip(boundaries, boundaries[1:]):
            if not a < b:
                raise ValueError(f"boundaries must be strictly increasing, got {a} then {b}")
        self.boundaries = boundaries
        self.values = values

    def _at(self, e):
        return self.values[bisect.bisect_right(self.boundaries, e)]


class cosine_decay(Schedule):
    """lr_min + (lr0 - lr_min) * (1 + cos(pi * min(e, total) / total)) / 2: from lr0 at e = 0
    down to lr_min at e = total, and lr_min after (SGDR without restarts)."""

    _fields = ("lr0", "total", "lr_min")

    def __init__(self, lr0, total, lr_min=0.0):
        self.lr0 = _check_nonnegative("lr0", lr0)
        self.total = _check_positive("total", total)
        self.lr_min = _check_nonnegative("lr_min", lr_min)
        if self.lr_min > self.lr0:
            raise ValueError(f"lr_min must be <= lr0, got lr_min={self.lr_min} > "
                             f"lr0={self.lr0}")

    def _at(self, e):
        progress = min(e, self.total) / self.total
        return self.lr_min + (self.lr0 - self.lr_min) * (1.0 + math.cos(math.pi * progress)) / 2


class warmup(Schedule):
    """A linear warm-up over the first ``steps`` counts, then ``schedule``.

    For e < steps: target * (e + 1) / (steps + 1), target = schedule(steps): a straight line
    that starts above 0 (the first step is not wasted) and meets the schedule where it takes
    over. For e >= steps: schedule(e) -- the wrapped schedule sees the same count e, not
    e - steps: it describes the whole run, and warm-up replaces its first ``steps`` values.
    ``schedule`` is a Schedule, any callable of e, or a constant rate.
    """

    _fields = ("schedule", "steps")

    def __init__(self, schedule, steps):
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
            raise TypeError(f"steps must be an int >= 0, got {type(steps).__name__}")
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if not callable(schedule):
            schedule = _check_nonnegative("schedule", schedule)
        self.schedule = schedule
        self.steps = int(steps)
        self._target = self._after(self.steps)   # also checks the schedule works there

    def _after(self, e):
        lr = float(self.schedule(e)) if callable(self.schedule) else self.schedule
        if not lr >= 0.0:
            raise ValueError(f"the wrapped schedule gave {lr} at e = {e}; a rate must be >= 0")
        return lr

    def _at(self, e):
        if e < self.steps:
            return self._target * (e + 1) / (self.steps + 1)
        return self._after(e)


def _check_count(e):
    if isinstance(e, bool) or not isinstance(e, numbers.Real):
        raise TypeError(f"a schedule takes a step or epoch count, got {type(e).__name__}")
    if not e >= 0:  # also refuses NaN
        raise ValueError(f"a schedule's count starts at 0, got {e}")
    return e


def _check_real(name, value):
    """value as an int (if integral, for a tidy repr) or a float; finite."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = int(value) if isinstance(value, numbers.Integral) else float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _check_nonnegative(name, value):
    value = _check_real(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _check_positive(name, value):
    value = _check_real(name, value)
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value
