"""fastoptim.torch on real models: dense layouts other than contiguous (channels_last conv
nets), plans that follow moved tensors, and refusals that leave every group untouched."""
import copy

import pytest

torch = pytest.importorskip("torch")

import fastoptim.torch as fot  # noqa: E402

TOLERANCE = dict(rtol=1e-5, atol=1e-6)     # float32 trajectories: torch's FMA and lerp


def conv_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 4))


def train(model, opt, steps=5):
    torch.manual_seed(1)
    x = torch.randn(16, 3, 6, 6).to(memory_format=torch.channels_last)
    y = torch.randn(16, 4)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("name, kwargs", [
    ("Adam", dict(lr=1e-2)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
    ("SGD", dict(lr=1e-2, momentum=0.9, nesterov=True)),
    ("RMSprop", dict(lr=1e-3, centered=True)),
    ("NAdam", dict(lr=1e-2)),
])
def test_channels_last_conv_net_trains_as_with_torch_optim(name, kwargs):
    ours, theirs = conv_net(), conv_net()
    for model in (ours, theirs):
        model.to(memory_format=torch.channels_last)
    weight = ours[0].weight
    assert not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last)
    opt = getattr(fot, name)(ours.parameters(), **kwargs)
    train(ours, opt)
    train(theirs, getattr(torch.optim, name)(theirs.parameters(), **kwargs))
    for (pname, a), b in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, **TOLERANCE, msg=lambda m: f"{pname}: {m}")
    # the params keep their layout, and the state was made in it
    assert ours[0].weight.is_contiguous(memory_format=torch.channels_last)
    state = opt.state[ours[0].weight]
    buffer = next(v for k, v in state.items() if k not in ("step", "mu_product"))
    assert buffer.stride() == ours[0].weight.stride()


def test_a_grad_in_another_layout_is_used_in_the_params():
    p = torch.nn.Parameter(torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last))
    q = torch.nn.Parameter(p.detach().clone().contiguous())
    grad = torch.randn(2, 3, 4, 5)                          # contiguous
    p.grad, q.grad = grad.clone(), grad.clone()
    fot.Adam([p], lr=0.1).step()
    fot.Adam([q], lr=0.1).step()
    assert torch.equal(p.detach().contiguous(), q.detach())


def test_a_contiguous_buffer_loaded_for_a_channels_last_param():
    """A checkpoint saved from a contiguous model loads into a channels_last one: the loaded
    buffers are used in the params' layout."""
    flat = conv_net()
    a = fot.Adam(flat.parameters(), lr=1e-2)
    train(flat, a, steps=2)
    cl = conv_net()
    cl.load_state_dict(flat.state_dict())
    cl.to(memory_format=torch.channels_last)
    b = fot.Adam(cl.parameters(), lr=1e-2)
    b.load_state_dict(copy.deepcopy(a.state_dict()))   # as from a file: its own tensors
    assert b.state[cl[0].weight]["exp_avg"].is_contiguous()      # as loaded
    train(flat, a, steps=2)
    train(cl, b, steps=2)
    for x, y in zip(flat.parameters(), cl.parameters()):
        torch.testing.assert_close(x, y, **TOLERANCE)
    assert b.state[cl[0].weight]["exp_avg"].stride() == cl[0].weight.stride()


# -- plans follow tensors that move ------------------------------------------------------------

def test_plan_follows_a_param_whose_memory_is_replaced():
    p = torch.nn.Parameter(torch.zeros(5))
    opt = fot.SGD([p], lr=1.0)
    p.grad = torch.ones(5)
    opt.step()
    p.data = torch.full((5,), 10.0)          # new memory behind the same Parameter
    opt.step()
    assert torch.equal(p.detach(), torch.full((5,), 9.0))


def test_plan_follows_a_replaced_state_tensor():
    p = torch.nn.Parameter(torch.zeros(4))
    opt = fot.SGD([p], lr=1.0, momentum=0.5)
    p.grad = torch.ones(4)
    opt.step()                                       # buffer = 1
    opt.state[p]["momentum_buffer"] = torch.full((4,), 4.0)
    opt.step()                                       # buffer = 0.5*4 + 1 = 3
    assert torch.equal(opt.state[p]["momentum_buffer"], torch.full((4,), 3.0))
    assert torch.equal(p.detach(), torch.full((4,), -4.0))


def test_step_counters_live_side_by_side_and_stay_torchs():
    params = [torch.nn.Parameter(torch.zeros(3)) for _ in range(4)]
    opt = fot.Adam(params, lr=0.1)
    for p in params:
        p.grad = torch.ones(3)
    opt.step()
    opt.step()
    steps = [opt.state[p]["step"] for p in params]
    assert all(s.dtype == torch.float32 and s.dim() == 0 and s.item() == 2.0 for s in steps)
    twin = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3)) for _ in range(4)], lr=0.1)
    twin.load_state_dict(opt.state_dict())           # torch.optim takes them as they are
    assert [s.item() for s in twin.state_dict()["state"][0].values() if s.dim() == 0] == [2.0]


def test_params_that_join_later_step_from_their_own_counters():
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))
    ours = fot.Adam([a, b], lr=0.1)
    twin_a, twin_b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))
    theirs = torch.optim.Adam([twin_a, twin_b], lr=0.1)
    for step in range(4):
        for x, y in ((a, twin_a), (b, twin_b)):
            g = torch.full((3,), float(step + 1))
            x.grad = g.clone() if (x is a or step >= 2) else None
            y.grad = g.clone() if (y is twin_a or step >= 2) else None
        ours.step()
        theirs.step()
    assert ours.state[a]["step"].item() == 4 and ours.state[b]["step"].item() == 2
    torch.testing.assert_close(a, twin_a, **TOLERANCE)
    torch.testing.assert_close(b, twin_b, **TOLERANCE)


# -- all or nothing, across groups ------------------------------------------------------------------

def two_groups(name="Adam"):
    good, other = torch.nn.Parameter(torch.linspace(-1, 1, 6)), torch.nn.Parameter(torch.ones(4))
    opt = getattr(fot, name)([{"params": [good]}, {"params": [other]}], lr=0.1)
    good.grad, other.grad = torch.full((6,), 0.5), torch.full((4,), 0.25)
    opt.step()
    return opt, good, other


def snapshot(opt):
    return {id(p): (p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()})
            for group in opt.param_groups for p in group["params"]}


def assert_unchanged(opt, before):
    after = snapshot(opt)
    assert after.keys() == before.keys()
    for key, (param, state) in before.items():
        assert torch.equal(after[key][0], param)
        assert after[key][1].keys() == state.keys()
        for k, v in state.items():
            assert torch.equal(after[key][1][k], v), k


@pytest.mark.parametrize("break_it, error, message", [
    (lambda opt, other: opt.param_groups[1].update(lr=-1.0), ValueError, "group 1.*lr"),
    (lambda opt, other: opt.param_groups[1].update(betas=(0.9, 1.5)), ValueError, "group 1"),
    (lambda opt, other: opt.param_groups[1].update(maximize="no"), TypeError, "maximize"),
    (lambda opt, other: opt.param_groups[1].update(eps="1e-8"), TypeError, "eps"),
    (lambda opt, other: opt.state[other]["step"].fill_(2.0 ** 62), ValueError, "step"),
    (lambda opt, other: setattr(other, "grad", other.detach()), ValueError, "shares memory"),
], ids=["lr", "betas", "maximize", "eps", "step", "aliased grad"])
def test_a_refusal_in_group_1_leaves_group_0_untouched(break_it, error, message):
    opt, good, other = two_groups()
    good.grad = torch.full((6,), -1.0)
    break_it(opt, other)
    before = snapshot(opt)
    with pytest.raises(error, match=message):
        opt.step()
    assert_unchanged(opt, before)
