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

# -- fastoptim.torch ---------------------------------------------------------------------------------

def _torch():
    return pytest.importorskip("torch")


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
