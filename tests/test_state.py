"""Resuming from state_dict or a checkpoint file continues the trajectory bit for bit;
a save is atomic; a bad state dict or file is refused with nothing changed."""
import os

import numpy as np
import pytest

import fastoptim as fo
from conftest import assert_same_bits

# every optimizer with each of its options that changes the state it keeps
STATEFUL = [
    (fo.SGD, {}),
    (fo.SGD, dict(momentum=0.9, dampening=0.1, weight_decay=0.01)),
    (fo.Momentum, dict(form="ewma", bias_correction=True)),
    (fo.Momentum, dict(form="velocity")),
    (fo.Nesterov, {}),
    (fo.AdaGrad, dict(lr_decay=0.01, initial_accumulator_value=0.1)),
    (fo.RMSProp, {}),
    (fo.RMSProp, dict(centered=True, momentum=0.9)),
    (fo.Adam, {}),
    (fo.Adam, dict(amsgrad=True, weight_decay=0.01)),
    (fo.AdamW, dict(amsgrad=True, eps_root=1e-8)),
]
IDS = [f"{cls.__name__}({','.join(f'{k}={v}' for k, v in kw.items())})" for cls, kw in STATEFUL]


def make_params(seed=0):
    """Several arrays of different shapes and both dtypes in one optimizer."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(37).astype(np.float32),
            rng.standard_normal((5, 3)),
            rng.standard_normal((2, 2, 2)).astype(np.float32)]


def grad_stream(params, steps, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(p.shape).astype(p.dtype) for p in params] for _ in range(steps)]


def snapshot(opt):
    return ([p.copy() for p in opt.params],
            [{k: v.copy() for k, v in st.items()} for st in opt.state], opt.step_count)


def assert_unchanged(opt, snap):
    params, state, step_count = snap
    for a, b in zip(opt.params, params):
        assert_same_bits(a, b, "param")
    for st, st0 in zip(opt.state, state):
        assert st.keys() == st0.keys()
        for k in st:
            assert_same_bits(st[k], st0[k], k)
    assert opt.step_count == step_count


def assert_same_run(a, b):
    assert a.step_count == b.step_count
    for p, q in zip(a.params, b.params):
        assert_same_bits(p, q, "param")
    for sa, sb in zip(a.state, b.state):
        for k in sa:
            assert_same_bits(sa[k], sb[k], k)


@pytest.mark.parametrize("cls,kw", STATEFUL, ids=IDS)
@pytest.mark.parametrize("via", ["state_dict", "file"])
def test_resume_is_bit_identical(cls, kw, via, backend, tmp_path):
    grads = grad_stream(make_params(), 8)
    straight = cls(make_params(), lr=0.01, backend=backend, **kw)
    for g in grads:
        straight.step(g)

    first = cls(make_params(), lr=0.01, backend=backend, **kw)
    for g in grads[:3]:
        first.step(g)
    resumed = cls([p.copy() for p in first.params], lr=0.5, backend=backend, **kw)
    if via == "file":
        first.save(tmp_path / "ckpt.npz")
        resumed.load(tmp_path / "ckpt.npz")
    else:
        resumed.load_state_dict(first.state_dict())
    assert resumed.lr == 0.01  # hyperparameters come back too
    for g in grads[3:]:
        resumed.step(g)
    assert_same_run(resumed, straight)


def test_state_dict_is_a_copy_of_plain_data():
    opt = fo.Adam(make_params(), lr=0.1)
    opt.step(grad_stream(opt.params, 1)[0])
    sd = opt.state_dict()
    assert sd["optimizer"] == "Adam" and sd["step_count"] == 1
    assert sd["hyperparameters"]["betas"] == [0.9, 0.999]
    sd["state"][0]["exp_avg"][:] = 7.0
    assert not np.any(opt.state[0]["exp_avg"] == 7.0)


def test_schedule_is_kept_across_a_load():
    def schedule(t):
        return 0.1 / (1 + t)

    opt = fo.SGD(make_params(), lr=schedule)
    for g in grad_stream(opt.params, 2):
        opt.step(g)
    sd = opt.state_dict()
    assert sd["hyperparameters"]["lr"] is None
    other = fo.SGD([p.copy() for p in opt.params], lr=schedule)
    other.load_state_dict(sd)
    assert other.lr is schedule and other.current_lr() == 0.1 / 3


def bad_state_dicts(good):
    def edited(**changes):
        sd = {**good, **changes}
        return sd

    state_wrong_shape = [dict(st) for st in good["state"]]
    state_wrong_shape[1] = {k: np.zeros((3, 5)) for k in state_wrong_shape[1]}
    state_wrong_dtype = [dict(st) for st in good["state"]]
    state_wrong_dtype[0] = {k: v.astype(np.float64) for k, v in state_wrong_dtype[0].items()}
    state_missing = [dict(st) for st in good["state"]]
    del state_missing[2]["exp_avg_sq"]
    return {
        "other optimizer": edited(optimizer="SGD"),
        "too few params": edited(state=good["state"][:2]),
        "wrong shape": edited(state=state_wrong_shape),
        "wrong dtype": edited(state=state_wrong_dtype),
        "missing buffer": edited(state=state_missing),
        "amsgrad without its buffer": edited(
            hyperparameters={**good["hyperparameters"], "amsgrad": True}),
        "beta out of range": edited(
            hyperparameters={**good["hyperparameters"], "betas": [1.5, 0.999]}),
        "negative step count": edited(step_count=-1),
        "not a dict": [],
    }


@pytest.mark.parametrize("case", list(bad_state_dicts(
    fo.Adam(make_params(), lr=0.1).state_dict())))
def test_bad_state_dict_is_refused_and_changes_nothing(case):
    source = fo.Adam(make_params(), lr=0.1)
    source.step(grad_stream(source.params, 1)[0])
    bad = bad_state_dicts(source.state_dict())[case]
    opt = fo.Adam(make_params(), lr=0.2)
    opt.step(grad_stream(opt.params, 2, seed=5)[1])
    snap = snapshot(opt)
    with pytest.raises((ValueError, TypeError)):
        opt.load_state_dict(bad)
    assert_unchanged(opt, snap)
    assert opt.lr == 0.2 and opt.betas == (0.9, 0.999) and opt.amsgrad is False


def test_bad_files_are_refused_and_change_nothing(tmp_path):
    opt = fo.Adam(make_params(), lr=0.1)
    opt.step(grad_stream(opt.params, 1)[0])
    opt.save(tmp_path / "good.npz")
    good = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.npz").write_bytes(os.urandom(2000))
    (tmp_path / "flipped.npz").write_bytes(good[:600] + bytes([good[600] ^ 0xFF]) + good[601:])
    np.savez(tmp_path / "foreign.npz", weights=np.zeros(3))
    np.save(tmp_path / "plain.npy", np.zeros(3))
    fo.SGD(make_params(), lr=0.1, momentum=0.9).save(tmp_path / "sgd.npz")
    snap = snapshot(opt)
    for name in ["truncated.npz", "garbage.npz", "flipped.npz", "foreign.npz", "plain.npy",
                 "sgd.npz"]:
        with pytest.raises(ValueError, match="checkpoint|SGD"):
            opt.load(tmp_path / name)
        assert_unchanged(opt, snap)
    with pytest.raises(FileNotFoundError):
        opt.load(tmp_path / "missing.npz")


def test_interrupted_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    opt = fo.Adam(make_params(), lr=0.1)
    opt.step(grad_stream(opt.params, 1)[0])
    opt.save(path)
    saved = snapshot(opt)
    opt.step(grad_stream(opt.params, 2)[1])

    def crash(src, dst):  # the process dies after the temporary file is complete
        raise KeyboardInterrupt("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        opt.save(path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ckpt.npz"], "the temporary file was left behind"
    restored = fo.Adam([p.copy() for p in saved[0]], lr=0.1)
    restored.load(path)
    assert restored.step_count == 1
    for st, st0 in zip(restored.state, saved[1]):
        for k in st:
            assert_same_bits(st[k], st0[k], k)


def test_save_failing_midway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    opt = fo.Adam(make_params(), lr=0.1)
    opt.save(path)
    before = path.read_bytes()
    opt.step(grad_stream(opt.params, 1)[0])

    def half_written(file, **arrays):
        file.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", half_written)
    with pytest.raises(OSError, match="disk full"):
        opt.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.npz"]
