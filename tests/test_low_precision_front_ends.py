"""Low precision through the front ends: fastoptim.Adam and friends with bfloat16/float16
params, master weights, state dtypes, loss scaling and checkpoints; fastoptim.torch against
torch.optim's fused Adam on bfloat16/float16 models and with torch.amp.GradScaler; a small
model trained with bfloat16 weights and float32 masters."""
import json
import zipfile

import numpy as np
import pytest

import fastoptim as fo
from conftest import assert_same_bits
from fastoptim import checkpoint

ml_dtypes = pytest.importorskip("ml_dtypes")

F32, BF16, F16 = np.dtype(np.float32), np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16)
SHAPES = [(37,), (5, 3)]


def low_precision_problem(param_dtype, grad_dtype, steps=4, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(np.float32).astype(param_dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(np.float32).astype(grad_dtype) for s in SHAPES]
             for _ in range(steps)]
    return params, grads


# -- checkpoints -----------------------------------------------------------------------------------

def stepped(params, grads, **options):
    opt = fo.Adam([p.copy() for p in params], lr=1e-2, amsgrad=True, **options)
    for g in grads:
        opt.step(g)
    return opt


@pytest.mark.parametrize("options", [
    dict(), dict(master_weights=True), dict(master_weights=True, state_dtype="bfloat16"),
    dict(state_dtype="float16", rounding="stochastic", seed=3)],
    ids=["bfloat16", "master", "master bfloat16 state", "float16 state stochastic"])
def test_a_checkpoint_of_low_precision_state_resumes_bit_for_bit(options, tmp_path):
    params, grads = low_precision_problem(BF16, BF16)
    whole = stepped(params, grads, **options)
    first = stepped(params, grads[:2], **options)
    first.save(tmp_path / "ckpt.npz")
    resumed = fo.Adam([p.copy() for p in params], lr=1e-2, amsgrad=True, **options)
    resumed.load(tmp_path / "ckpt.npz")
    if options.get("master_weights"):    # the user's arrays come back from the masters
        for p, q in zip(resumed._copies, first._copies):
            assert_same_bits(p, q)
    else:                                # params are the user's to save, as with torch.optim
        for p, q in zip(resumed.params, first.params):
            p[...] = q
    for g in grads[2:]:
        resumed.step(g)
    for st, own in zip(resumed.state, whole.state):
        assert st.keys() == own.keys()
        for name in own:
            assert_same_bits(st[name], own[name], name)
    for p, q in zip(resumed.params, whole.params):
        assert_same_bits(p, q, "param")


def test_bfloat16_is_stored_as_its_bits_with_the_dtype_in_the_header(tmp_path):
    """.npy has no name for ml_dtypes' bfloat16 (np.save writes raw 'V2' bytes), so its
    arrays are stored as uint16 bits and the header says which members are bfloat16."""
    params, grads = low_precision_problem(BF16, BF16, steps=1)
    opt = stepped(params, grads, state_dtype="bfloat16")
    opt.save(tmp_path / "ckpt.npz")
    with np.load(tmp_path / "ckpt.npz") as npz:
        meta = json.loads(str(npz["__meta__"]))
        exp_avg = npz["state/1/exp_avg"]
    assert meta["bits"]["state/1/exp_avg"] == "bfloat16"
    assert exp_avg.dtype == np.uint16
    assert (exp_avg == opt.state[1]["exp_avg"].view(np.uint16)).all()
    back = checkpoint.read(tmp_path / "ckpt.npz",
                           expected=[{k: (a.dtype, a.shape) for k, a in st.items()}
                                     for st in opt.state])
    assert_same_bits(back["state"][1]["exp_avg"], opt.state[1]["exp_avg"])
    # a float32 checkpoint has no such key: files older readers can read stay as they were
    fo.Adam(np.zeros(3, np.float32)).save(tmp_path / "plain.npz")
    with np.load(tmp_path / "plain.npz") as npz:
        assert "bits" not in json.loads(str(npz["__meta__"]))


@pytest.mark.parametrize("change, member", [
    (lambda bits: bits.update({"state/0/exp_avg": "float64"}), None),     # not a bits dtype
    (lambda bits: bits.update({"state/0/exp_avg": "bfloat17"}), None),
    (lambda bits: bits.update({"state/9/exp_avg": "bfloat16"}), None),    # no such member
    (None, np.zeros(37, np.float32)),                                     # not uint16 bits
    (None, np.zeros(37, np.int16)),
], ids=["float64", "unknown dtype", "no such member", "float32 member", "int16 member"])
def test_a_bad_bits_entry_is_refused(tmp_path, change, member):
    params, grads = low_precision_problem(BF16, BF16, steps=1)
    stepped(params, grads).save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    if change is not None:
        change(meta["bits"])
    if member is not None:
        arrays["state/0/exp_avg"] = member
    np.savez(tmp_path / "bad.npz", __meta__=np.array(json.dumps(meta)), **arrays)
    with pytest.raises(ValueError, match="not a readable fastoptim checkpoint.*bits"):
        checkpoint.read(tmp_path / "bad.npz")
    assert zipfile.is_zipfile(tmp_path / "bad.npz")


# -- fastoptim's own optimizers ----------------------------------------------------------------------

def widened(arrays):
    return [a.astype(np.float32) for a in arrays]


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bfloat16", "float16"])
def test_master_weights_follow_the_float32_run_and_round_the_users_arrays(dtype):
    """With master_weights=True the update is the float32 one, on float32 copies of the
    params (bit for bit a float32 Adam fed the same gradients widened), and the user's own
    arrays are written in place with the masters rounded to nearest-even (ml_dtypes' and
    NumPy's own casts)."""
    params, grads = low_precision_problem(dtype, dtype)
    users = [p.copy() for p in params]
    opt = fo.Adam(users, lr=1e-2, weight_decay=0.1, master_weights=True)
    twin = fo.Adam(widened(params), lr=1e-2, weight_decay=0.1)
    for g in grads:
        opt.step(g)
        twin.step(widened(g))
        for user, master, float32 in zip(users, opt.params, twin.params):
            assert master.dtype == F32 and user.dtype == dtype
            assert_same_bits(master, float32, "master")
            assert_same_bits(user, float32.astype(dtype), "the user's array")
    for st, own in zip(opt.state, twin.state):
        assert {k: a.dtype for k, a in st.items()} == {"exp_avg": F32, "exp_avg_sq": F32,
                                                       "master_param": F32}
        assert_same_bits(st["exp_avg_sq"], own["exp_avg_sq"])
    assert all((u != p).any() for u, p in zip(users, params))


def test_stochastic_copies_are_a_neighbour_of_the_master_and_match_the_reference():
    params, grads = low_precision_problem(BF16, BF16)
    runs = {}
    for backend in ("c", "numpy"):
        users = [p.copy() for p in params]
        opt = fo.Adam(users, lr=1e-2, master_weights=True, state_dtype="bfloat16",
                      rounding="stochastic", seed=17, backend=backend)
        for g in grads:
            opt.step(g)
        runs[backend] = users, opt
    (users, opt), (ref_users, ref_opt) = runs["c"], runs["numpy"]
    rounded_up_or_down = 0
    for user, ref_user, master in zip(users, ref_users, opt.params):
        assert_same_bits(user, ref_user)
        nearest = master.astype(BF16).astype(np.float64)
        u, m = user.astype(np.float64), master.astype(np.float64)
        other_side = (u - m) * (nearest - m) <= 0         # nearest, or the neighbour across m
        assert ((u == nearest) | (other_side & (np.abs(u - nearest) > 0))).all()
        gap = np.abs(np.spacing(nearest.astype(np.float32)).astype(np.float64)) * 2**16
        assert (np.abs(u - m) < gap).all()                # one bfloat16 unit at most
        rounded_up_or_down += int((u != nearest).sum())
    assert rounded_up_or_down > 0                         # not simply nearest-even
    for st, ref in zip(opt.state, ref_opt.state):
        for name in st:
            assert_same_bits(st[name], ref[name], name)


def test_state_dtype_and_master_weights_choose_the_buffers():
    p32, pbf = np.zeros(4, np.float32), np.zeros(4, BF16)
    assert fo.Adam(p32, state_dtype="bfloat16").state[0]["exp_avg"].dtype == BF16
    assert fo.Adam(p32, state_dtype=np.float16).state[0]["exp_avg"].dtype == F16
    assert fo.Adam(pbf).state[0]["exp_avg"].dtype == BF16          # the params', as torch
    assert fo.Adam(pbf, master_weights=True).state[0]["exp_avg"].dtype == F32
    assert fo.Adam(np.zeros(4, F16), master_weights=True, state_dtype="float16"
                   ).state[0]["exp_avg_sq"].dtype == F16
    with pytest.raises(TypeError, match="master_weights.*params\\[0\\] is float32"):
        fo.Adam(p32, master_weights=True)
    with pytest.raises(TypeError, match="state_dtype float64 does not go with params\\[0\\]"):
        fo.Adam(p32, state_dtype="float64")
    with pytest.raises(ValueError, match="state_dtype must be one of"):
        fo.Adam(p32, state_dtype="int8")
    with pytest.raises(ValueError, match="rounding must be one of"):
        fo.Adam(pbf, rounding="up")


def test_a_state_dict_of_bfloat16_state_resumes_and_a_wrong_dtype_is_refused():
    params, grads = low_precision_problem(F32, BF16)
    whole = stepped(params, grads, state_dtype="bfloat16")
    first = stepped(params, grads[:2], state_dtype="bfloat16")
    resumed = fo.Adam(first.params, lr=1e-2, amsgrad=True, state_dtype="bfloat16")
    resumed.load_state_dict(first.state_dict())
    for g in grads[2:]:
        resumed.step(g)
    for st, own in zip(resumed.state, whole.state):
        for name in own:
            assert_same_bits(st[name], own[name], name)
    # float32 state into an optimizer told to keep bfloat16: refused, nothing changes
    wrong = stepped(params, grads[:1]).state_dict()
    before = [{k: a.copy() for k, a in st.items()} for st in resumed.state]
    with pytest.raises(ValueError, match="state\\[0\\]\\['exp_avg'\\] is float32.*expected "
                                         "bfloat16"):
        resumed.load_state_dict(wrong)
    for st, old in zip(resumed.state, before):
        for name in old:
            assert_same_bits(st[name], old[name], name)
    assert resumed.step_count == 4


@pytest.mark.parametrize("scale", [2.0**16, 2.0**-3, 1024.0])
@pytest.mark.parametrize("param_dtype, grad_dtype, options", [
    (F32, F32, {}), (F32, BF16, dict(state_dtype="bfloat16")), (BF16, BF16, {}),
    (F16, F16, dict(master_weights=True)), (F16, F16, dict(rounding="stochastic"))],
    ids=["float32", "bfloat16 grads", "bfloat16", "float16 master", "float16 stochastic"])
def test_grad_scale_of_a_power_of_two_equals_dividing_the_gradients(param_dtype, grad_dtype,
                                                                    options, scale):
    """Gradients that carry a loss scale s (as a GradScaler hands them over): dividing them
    by a power of two in float32 is exact, and so is multiplying by its inverse (the
    kernel's grad_factor), so step(grads, grad_scale=s) equals the step on the float32
    gradients divided beforehand, bit for bit."""
    params, grads = low_precision_problem(param_dtype, grad_dtype)
    scaled = fo.Adam([p.copy() for p in params], lr=1e-2, **options)
    divided = fo.Adam([p.copy() for p in params], lr=1e-2, **options)
    for g in grads:
        assert scaled.step(g, grad_scale=scale)
        divided.step([x.astype(np.float32) / np.float32(scale) for x in g])
    for a, b in zip(scaled.params, divided.params):
        assert_same_bits(a, b, "param")
    for st, own in zip(scaled.state, divided.state):
        for name in own:
            assert_same_bits(st[name], own[name], name)


@pytest.mark.parametrize("bad", [0.0, -2.0, float("nan"), "2"])
def test_a_bad_grad_scale_is_refused_before_anything_changes(bad):
    params, grads = low_precision_problem(BF16, BF16, steps=1)
    opt = fo.Adam([p.copy() for p in params], master_weights=True)
    with pytest.raises((TypeError, ValueError), match="grad_scale"):
        opt.step(grads[0], grad_scale=bad)
    assert opt.step_count == 0
    assert all((st["exp_avg"] == 0).all() for st in opt.state)
    for copy, p in zip(opt._copies, params):
        assert_same_bits(copy, p)


# -- fastoptim.torch ---------------------------------------------------------------------------------

def _torch():
    return pytest.importorskip("torch")


def ulp_within_one(a, b):
    """The share of elements of a and b at most one unit in the last place apart."""
    from fastoptim.testing import ulp_distance
    return float(np.mean(ulp_distance(a, b) <= 1))


@pytest.mark.parametrize("name, kwargs", [
    ("Adam", dict(lr=1e-3)),
    ("Adam", dict(lr=1e-3, betas=(0.8, 0.99), weight_decay=1e-2, amsgrad=True)),
    ("AdamW", dict(lr=1e-3, weight_decay=1e-2, maximize=True)),
], ids=["Adam", "Adam amsgrad weight_decay", "AdamW maximize"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_torch_adam_on_a_low_precision_model_matches_torch_fused_after_one_step(
        dtype, name, kwargs):
    """From the same params and state, one step: at least 99.9 % of the params and moments
    within one unit in the last place of torch.optim's fused kernel (torch computes the
    moments with lerp and fused multiply-adds, so a few elements near a cancellation land
    further apart in units of their tiny magnitude)."""
    torch = _torch()
    import fastoptim.torch as fot
    dtype = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)
    n = 100_000
    start = (torch.randn(n, generator=gen) * 0.01).to(dtype)      # updates of many units
    grad = torch.randn(n, generator=gen).to(dtype)
    state = {"step": torch.tensor(9.0),
             "exp_avg": (torch.randn(n, generator=gen) * 0.1).to(dtype),
             "exp_avg_sq": (torch.rand(n, generator=gen) * 0.01).to(dtype)}
    if kwargs.get("amsgrad"):
        state["max_exp_avg_sq"] = state["exp_avg_sq"] * 1.5
    results = []
    for make in (lambda ps: getattr(fot, name)(ps, **kwargs),
                 lambda ps: getattr(torch.optim, name)(ps, fused=True, **kwargs)):
        p = start.clone().requires_grad_()
        opt = make([p])
        opt.state[p] = {k: v.clone() for k, v in state.items()}
        p.grad = grad.clone()
        opt.step()
        results.append((p.detach(), opt.state[p]))
    (ours, our_state), (theirs, their_state) = results
    assert ours.dtype == dtype and our_state["exp_avg"].dtype == dtype
    assert float(our_state["step"]) == float(their_state["step"]) == 10
    assert (ours != start).float().mean() > 0.9                  # the step moved the params
    assert ulp_within_one(ours, theirs) >= 0.999
    for key in state:
        if key != "step":
            assert ulp_within_one(our_state[key], their_state[key]) >= 0.999, key


def torch_params(arrays):
    """Leaf tensors holding copies of NumPy arrays (bfloat16 through its bits)."""
    torch = _torch()
    tensors = []
    for a in arrays:
        if a.dtype == BF16:
            t = torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
        else:
            t = torch.from_numpy(a.copy())
        tensors.append(t.requires_grad_())
    return tensors


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("options", [
    dict(), dict(master_weights=True), dict(state_dtype="float32"),
    dict(master_weights=True, state_dtype="bfloat16", rounding="stochastic", seed=4),
    dict(rounding="stochastic", seed=9)],
    ids=["plain", "master", "float32 state", "master bfloat16 state stochastic", "stochastic"])
def test_the_torch_adapter_steps_as_fastoptims_own_optimizer(dtype, options):
    """fastoptim.torch.Adam with the low-precision options gives the bits of fastoptim.Adam
    with the same options: the same kernel, keys and rounding, on the tensors' memory."""
    import fastoptim.torch as fot
    from fastoptim.testing import as_numpy
    params, grads = low_precision_problem(dtype, dtype)
    arrays = [p.copy() for p in params]
    ours = fo.Adam(arrays, lr=1e-2, weight_decay=1e-2, **options)
    tensors = torch_params(params)
    adapter = fot.Adam(tensors, lr=1e-2, weight_decay=1e-2, **options)
    for g in grads:
        ours.step(g)
        for t, gt in zip(tensors, torch_params(g)):
            t.grad = gt.detach()
        adapter.step()
    for i, t in enumerate(tensors):
        assert_same_bits(as_numpy(t), arrays[i], f"param {i}")
        st = adapter.state[t]
        assert float(st["step"]) == len(grads)
        for name, a in ours.state[i].items():
            assert_same_bits(as_numpy(st[name]), a, f"state[{name!r}] of param {i}")
    state_dtype = {"float32": F32, "bfloat16": BF16}.get(options.get("state_dtype"))
    expected = state_dtype or (F32 if options.get("master_weights") else dtype)
    assert as_numpy(adapter.state[tensors[0]]["exp_avg"]).dtype == expected


def test_the_torch_adapter_checkpoint_of_low_precision_state_resumes_bit_for_bit(tmp_path):
    torch = _torch()
    import fastoptim.torch as fot
    params, grads = low_precision_problem(BF16, BF16)
    options = dict(lr=1e-2, master_weights=True, state_dtype="bfloat16",
                   rounding="stochastic", seed=2)

    def run(steps, resume_from=None):
        tensors = torch_params(params)
        opt = fot.Adam(tensors, **options)
        if resume_from is not None:
            saved = torch.load(resume_from)
            opt.load_state_dict(saved["opt"])
            for t, st in zip(tensors, saved["opt"]["state"].values()):
                # torch.optim casts loaded state to the param's dtype: not the masters
                assert {k: v.dtype for k, v in opt.state[t].items()} == \
                    {k: v.dtype for k, v in st.items()}
                assert opt.state[t]["master_param"].dtype == torch.float32
            with torch.no_grad():
                for t, s in zip(tensors, saved["params"]):
                    t.copy_(s)
        for g in steps:
            for t, gt in zip(tensors, torch_params(g)):
                t.grad = gt.detach()
            opt.step()
        return tensors, opt

    whole, whole_opt = run(grads)
    first, first_opt = run(grads[:2])
    torch.save({"opt": first_opt.state_dict(), "params": [t.detach() for t in first]},
               tmp_path / "ckpt.pt")
    resumed, resumed_opt = run(grads[2:], resume_from=tmp_path / "ckpt.pt")
    for a, b in zip(resumed, whole):
        assert torch.equal(a.detach().view(torch.int16), b.detach().view(torch.int16))
    for a, b in zip(resumed, whole):
        for key, value in whole_opt.state[b].items():
            got = resumed_opt.state[a][key]
            assert got.dtype == value.dtype
            assert torch.equal(got.view(torch.int16) if got.dtype == torch.bfloat16 else got,
                               value.view(torch.int16) if value.dtype == torch.bfloat16
                               else value), key


def gradscaler_run(torch, optimizer, steps=8, inf_at=3):
    """A float16 MLP trained with torch.amp.GradScaler on the CPU; at step ``inf_at`` a
    gradient is made infinite after backward, so that step must be skipped. Returns the
    model, the optimizer and, per step, the params and the scale after it."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 5)).to(torch.float16)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(32 * steps, 20, generator=gen), torch.randint(0, 5, (32 * steps,),
                                                                    generator=gen)
    opt = optimizer(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
    history = []
    for t in range(steps):
        opt.zero_grad()
        batch = slice(32 * t, 32 * t + 32)
        loss = torch.nn.functional.cross_entropy(model(x[batch].half()).float(), y[batch])
        scaler.scale(loss).backward()
        if t == inf_at:
            model[0].weight.grad[0, 0] = float("inf")
        before = [p.detach().clone() for p in model.parameters()]
        state_before = {k: v.clone() for k, v in opt.state[model[0].weight].items()}
        scaler.step(opt)
        scaler.update()
        if t == inf_at:         # skipped: nothing changed, the step counters neither
            assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
            for k, v in opt.state[model[0].weight].items():
                assert torch.equal(v, state_before[k]), k
            assert float(opt.state[model[0].weight]["step"]) == inf_at
        history.append(([p.detach().clone() for p in model.parameters()], scaler.get_scale()))
    return history


def test_a_float16_model_under_gradscaler_trains_as_with_torch_fused():
    """GradScaler hands the optimizer its scale and the found-inf flag (the protocol of
    torch's fused optimizers); both optimizers skip the same step and then agree."""
    torch = _torch()
    import fastoptim.torch as fot
    ours = gradscaler_run(torch, lambda ps: fot.Adam(ps, lr=1e-3))
    theirs = gradscaler_run(torch, lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True))
    for t, ((our_params, our_scale), (their_params, their_scale)) in enumerate(
            zip(ours, theirs)):
        assert our_scale == their_scale, t       # the same steps found inf, and grew
        for a, b in zip(our_params, their_params):
            assert a.dtype == torch.float16
            assert ulp_within_one(a, b) >= 0.999, t
    assert ours[3][1] == ours[2][1] / 2          # the skipped step halved the scale
    assert any(not torch.equal(a, b) for a, b in zip(ours[-1][0], ours[0][0]))


# -- training ----------------------------------------------------------------------------------------

def test_bfloat16_weights_with_float32_masters_reach_the_float32_accuracy():
    """The demo's 64-32-10 MLP on the digits (scikit-learn's, else the seeded synthetic
    ones), Adam, 20 epochs: with bfloat16 weights (forward and backward in float32 from the
    bfloat16 values) and float32 master weights the test accuracy is within 1.5 points of the
    float32 run."""
    from fastoptim.cli import demo
    from fastoptim.data import minibatches

    data = demo.load_dataset("auto", seed=0)
    _, X, y, X_test, y_test = data
    X, X_test = X.astype(np.float32), X_test.astype(np.float32)

    def accuracy(weights_dtype, **options):
        model = demo.MLP(64, 32, 10, seed=0)
        weights = [w.astype(np.float32).astype(weights_dtype) for w in model.params]
        opt = fo.Adam(weights, lr=3e-3, **options)
        order = np.random.default_rng(1)
        for _ in range(20):
            for xb, yb in minibatches(X, y, batch_size=64, seed=order):
                model.params = widened(weights)
                _, grads = model.loss_and_gradients(xb, yb)
                opt.step([g.astype(np.float32) for g in grads])
        model.params = widened(weights)
        return model.accuracy(X_test, y_test)

    float32 = accuracy(F32)
    bfloat16 = accuracy(BF16, master_weights=True)
    assert float32 > 0.9
    assert abs(bfloat16 - float32) <= 0.015, (bfloat16, float32)


def test_clipping_under_a_loss_scale_clips_the_unscaled_gradients():
    """max_grad_norm is applied to the norm of the gradients divided by the loss scale: with
    a power of two, the scaled step equals, bit for bit, the step on unscaled gradients
    (fastoptim's optimizers with grad_scale=, fastoptim.torch with GradScaler's
    grad_scale/found_inf attributes)."""
    torch = _torch()
    import fastoptim.torch as fot
    params, grads = low_precision_problem(F16, F16)
    scale = 2.0**12
    scaled = [[(g.astype(np.float32) * scale).astype(F16) for g in step] for step in grads]
    numpy_runs, torch_runs = [], []
    for step_grads, grad_scale in ((grads, None), (scaled, scale)):
        opt = fo.Adam([p.copy() for p in params], lr=1e-2, max_grad_norm=0.5,
                      master_weights=True)
        tensors = torch_params(params)
        adapter = fot.Adam(tensors, lr=1e-2, max_grad_norm=0.5, master_weights=True)
        for g in step_grads:
            opt.step(g, grad_scale=grad_scale)
            for t, gt in zip(tensors, torch_params(g)):
                t.grad = gt.detach()
            if grad_scale is not None:          # what GradScaler.step sets
                adapter.grad_scale = torch.tensor(grad_scale)
                adapter.found_inf = torch.tensor(0.0)
            adapter.step()
        numpy_runs.append(opt._copies)
        torch_runs.append([t.detach().numpy() for t in tensors])
    for a, b in zip(*numpy_runs):
        assert_same_bits(a, b, "fastoptim.Adam")
    for a, b in zip(*torch_runs):
        assert_same_bits(a, b, "fastoptim.torch.Adam")
    for a, b in zip(numpy_runs[0], torch_runs[0]):
        assert_same_bits(a, b, "the two front ends")
