"""ZeRO on PyTorch's own distributed engine with fastoptim.torch.Adam as the local optimizer.

Two processes on the gloo backend, over loopback only, train a small model with
DistributedDataParallel (each rank gets half of every batch; allreduce averages the grads)
and ZeroRedundancyOptimizer(optimizer_class=fastoptim.torch.Adam), which shards the Adam
state so that each rank updates only its own params and then broadcasts them. The result
must equal one process training with fastoptim.torch.Adam on the full batch.

Tolerance: float64, and only the gradients differ in rounding -- the mean of two half-batch
means (allreduce) against one full-batch mean. After 6 steps the params differed by at most
~2e-16 relative (measured); the tolerance, 1e-12, is far below what a lost or doubled
update, a wrong shard or a rank left with stale params produces (~1e-3).
"""
import os
import socket
import time
import warnings

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

import fastoptim.torch as fot  # noqa: E402

with warnings.catch_warnings():  # torch.distributed.optim imports deprecated torch.jit APIs
    warnings.simplefilter("ignore", DeprecationWarning)
    from torch.distributed.optim import ZeroRedundancyOptimizer

WORLD_SIZE = 2
STEPS = 6
LR = 1e-2
BATCHES = 3  # the dataset is 3 batches of 16; step t uses batch t % 3
TOLERANCE = dict(rtol=1e-12, atol=1e-14)
DEADLINE_S = 120


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8), torch.nn.Tanh(),
        torch.nn.Linear(8, 1)).double()


def make_data():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(BATCHES * 16, 6, generator=g, dtype=torch.float64)
    y = torch.cos(x[:, :3].sum(1, keepdim=True)) * x[:, 3:4]
    return x, y


def batch(t, rank=0, world_size=1):
    """Step t's batch, or this rank's contiguous share of it."""
    share = 16 // world_size
    start = 16 * (t % BATCHES) + rank * share
    return slice(start, start + share)


def train_single_process():
    model = make_model()
    opt = fot.Adam(model.parameters(), lr=LR)
    x, y = make_data()
    for t in range(STEPS):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x[batch(t)]), y[batch(t)]).backward()
        opt.step()
    return model, opt


def loopback_interface():
    """The loopback interface's name ("lo" on Linux, "lo0" on macOS), so that gloo's
    connections between ranks stay on this machine."""
    for _, name in socket.if_nameindex():
        if name.startswith("lo"):
            return name
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, port, out_dir):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    interface = loopback_interface()
    if interface:
        os.environ["GLOO_SOCKET_IFNAME"] = interface
    torch.set_num_threads(1)  # two processes share the machine
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        model = DistributedDataParallel(make_model())
        opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=fot.Adam, lr=LR)
        x, y = make_data()
        for t in range(STEPS):
            opt.zero_grad()
            rows = batch(t, rank, WORLD_SIZE)
            torch.nn.functional.mse_loss(model(x[rows]), y[rows]).backward()
            opt.step()
        opt.consolidate_state_dict(to=0)
        result = {
            "params": [p.detach().clone() for p in model.module.parameters()],
            "local_optimizer": type(opt.optim).__qualname__,
            "local_params": [p.shape for g in opt.optim.param_groups for p in g["params"]],
            "local_state_sizes": [s["exp_avg"].numel() for s in opt.optim.state.values()],
        }
        if rank == 0:
            result["optimizer"] = opt.state_dict()
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_workers(out_dir):
    context = mp.start_processes(worker, args=(free_port(), str(out_dir)), nprocs=WORLD_SIZE,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {WORLD_SIZE} ranks did not finish in {DEADLINE_S} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()


def test_zero_with_fastoptim_adam_matches_one_process(tmp_path):
    run_workers(tmp_path)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    model, opt = train_single_process()
    expected = [p.detach() for p in model.parameters()]

    for rank, result in enumerate(results):
        # ZeRO built a fastoptim.torch.Adam on each rank, over a true share of the params
        assert result["local_optimizer"] == "Adam"
        assert 0 < len(result["local_params"]) < len(expected)
        assert sum(result["local_state_sizes"]) < sum(p.numel() for p in expected)
        assert len(result["params"]) == len(expected)
        for i, (got, want) in enumerate(zip(result["params"], expected)):
            torch.testing.assert_close(got, want, **TOLERANCE,
                                       msg=lambda m: f"rank {rank}, param {i}: {m}")
    # the shards together hold every param exactly once
    shapes = sorted(tuple(s) for r in results for s in r["local_params"])
    assert shapes == sorted(tuple(p.shape) for p in expected)
    # the consolidated checkpoint is torch.optim.Adam's layout, equal to the single run's
    consolidated, single = results[0]["optimizer"]["state"], opt.state_dict()["state"]
    assert consolidated.keys() == single.keys()
    for index, state in single.items():
        assert list(consolidated[index]) == list(state)
        assert torch.equal(consolidated[index]["step"], state["step"])
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(consolidated[index][key], state[key], **TOLERANCE)
    # and the run really moved the params
    assert not torch.allclose(expected[0], make_model()[0].weight, rtol=1e-3, atol=1e-4)
