"""Robustness: what a hostile or unlucky user does to fastoptim, one test per finding of the
attack in issue 15 -- crashes and hangs, state that stops matching, silently different
results -- and the promises of the thread pool (fork, team size, thread-creation failure).

Anything that could crash or hang the interpreter on a regression runs in a child process
with a timeout, so a regression fails one test instead of the whole run.
"""
import contextlib
import copy
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import fastoptim as fo
from conftest import assert_same_bits, bits, kernels, needs_kernels
from fastoptim import checkpoint, reference
from fastoptim._cases import kernel_cases, takes_step
from fastoptim._kernel_specs import FUNCTIONS
from test_checkpoint import peak_bytes_while

posix_only = pytest.mark.skipif(os.name != "posix", reason="fork, signals and rlimits")


def run_child(code, timeout=60, args=()):
    """Run ``code`` in a fresh interpreter (``args`` in its sys.argv[1:]); its
    CompletedProcess. A hang fails the test with subprocess.TimeoutExpired instead of
    stalling the suite."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=timeout)


def child_lines(code, timeout=60):
    """The stdout lines of a child that must exit with status 0."""
    result = run_child(code, timeout)
    assert result.returncode == 0, (f"the child exited with {result.returncode}:\n"
                                    f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout.splitlines()


def buffers_of(opt):
    """Every array an optimizer holds (params, then state in order), as copies."""
    return [p.copy() for p in opt.params] + [a.copy() for st in opt.state for a in st.values()]


def torch_steps(param, opt, grads):
    """One step of a torch optimizer over one param per gradient."""
    for g in grads:
        param.grad = g
        opt.step()


def assert_same_buffers(actual, expected, what):
    assert len(actual) == len(expected), what
    for i, (a, b) in enumerate(zip(actual, expected)):
        assert_same_bits(a, b, f"{what}, buffer {i}")


# -- 1. None where a kernel needs an array ------------------------------------------------------

NONE_FOR_REQUIRED = r"""
import json
import numpy as np
from fastoptim import kernels, reference
from fastoptim._cases import kernel_cases, takes_step
from fastoptim._kernel_specs import FUNCTIONS

seen = set()
for case in kernel_cases():
    if case.kernel in seen or not case.state:
        continue
    seen.add(case.kernel)
    roles = FUNCTIONS[case.kernel][1].roles
    for position, name in enumerate(case.state):
        if name is None or roles[2 + position].optional:
            continue
        for module in (kernels, reference):
            for form in ("one array", "list", "list holding None"):
                label = f"{module.__name__} {case.kernel} {name}=None, {form}"
                print("TRYING", label, flush=True)      # a crash names its case
                p, g = np.ones(8, np.float32), np.ones(8, np.float32)
                state = [None if s is None else np.zeros(8, np.float32) for s in case.state]
                args = [p, g] + state
                if form != "one array":
                    args = [a if a is None else [a] for a in args]
                args[2 + position] = [None] if form == "list holding None" else None
                kwargs = dict(case.options)
                if takes_step(case.kernel):
                    kwargs["step"] = 1
                if case.per_step:
                    kwargs.update(case.per_step(1))
                try:
                    getattr(module, case.kernel)(*args, **kwargs)
                    outcome = "accepted"
                except Exception as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                unchanged = bool((p == 1).all() and all(s is None or (s == 0).all()
                                                        for s in state))
                print(json.dumps([label, roles[2 + position].name, outcome, unchanged]),
                      flush=True)
"""


@needs_kernels
@posix_only
def test_none_for_a_required_buffer_is_refused_by_both_backends():
    """Issue 15.1: adam_step(p, g, None, None, ...) segfaulted in C (a NULL buffer)."""
    result = run_child(NONE_FOR_REQUIRED)
    tried = [line for line in result.stdout.splitlines() if line.startswith("TRYING")]
    assert result.returncode == 0, (f"the child died ({result.returncode}) at "
                                    f"{tried[-1] if tried else '?'}: {result.stderr[-1500:]}")
    outcomes = [json.loads(line) for line in result.stdout.splitlines()
                if line.startswith("[")]
    assert len(outcomes) == len(tried) >= 60
    for label, role, outcome, unchanged in outcomes:
        assert outcome.startswith("TypeError: ") and re.search(rf"\b{role}\b", outcome), \
            f"{label}: {outcome}"
        assert unchanged, f"{label} wrote before refusing"


# -- 2, 3. the thread pool: fork, team size, thread-creation failure ----------------------------

FORK_CHILD = r"""
import os, sys, threading, warnings
import multiprocessing
import numpy as np
from fastoptim import kernels

warnings.simplefilter("ignore", DeprecationWarning)   # fork() of a threaded process
N = 1 << 20


def threaded_step():
    p = np.zeros(N, np.float32)
    kernels.sgd_step(p, np.ones_like(p), lr=1.0, threads=2)
    return bool((p == -1).all())


def in_child(body):
    pid = os.fork()
    if pid == 0:
        os._exit(0 if body() else 1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def pool_task(i):
    return threaded_step()


assert threaded_step()
print("after a threaded step:", in_child(threaded_step), flush=True)
with multiprocessing.get_context("fork").Pool(2) as pool:
    print("fork pool:", all(pool.map(pool_task, range(4))), flush=True)

# fork while another thread is inside threaded steps (the pool busy, its lock taken)
stop = threading.Event()


def keep_stepping():
    while not stop.is_set():
        threaded_step()


busy = threading.Thread(target=keep_stepping)
busy.start()
codes = [in_child(threaded_step) for _ in range(20)]
stop.set()
busy.join()
print("during threaded steps:", codes, flush=True)
"""


@needs_kernels
@posix_only
def test_a_forked_child_steps_with_threads():
    """Issue 15.2: after os.fork() following a threaded step, the child's next threaded step
    hung forever (also in a multiprocessing fork pool). The child, and a child forked while
    another thread is inside a threaded step, must step and exit."""
    lines = child_lines(FORK_CHILD, timeout=120)
    assert lines == ["after a threaded step: 0", "fork pool: True",
                     "during threaded steps: " + str([0] * 20)]


needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="torch is not installed")
# fastoptim.torch imported (threaded steps then run on torch's OpenMP team) and a torch op
# run first: that team exists, and its workers spin for a while
AFTER_TORCH = "import torch\nimport fastoptim.torch\n_a = torch.randn(256, 256)\n_a @ _a\n"


@needs_kernels
@posix_only
@needs_torch
def test_a_forked_child_steps_with_threads_next_to_torch():
    """The same next to torch, whose OpenMP team runs the parent's threaded steps and
    hangs in a forked child when used there: a child, a fork pool and children forked while
    another thread steps all step with threads (on fastoptim's own pool) and exit."""
    code = FORK_CHILD.replace("from fastoptim import kernels\n",
                              "from fastoptim import kernels\n" + AFTER_TORCH)
    assert child_lines(code, timeout=120) == [
        "after a threaded step: 0", "fork pool: True", "during threaded steps: " + str([0] * 20)]


@needs_kernels
@needs_torch
@pytest.mark.skipif(kernels is not None and kernels.build_info()["hardware_threads"] < 2,
                    reason="needs 2 cores")
def test_next_to_fastoptim_torch_steps_run_on_torchs_openmp_team():
    """torch's OpenMP workers spin after each parallel op; a pool of fastoptim's own would
    fight them for the cores. Once fastoptim.torch is imported the threaded steps run on
    torch's team: no worker of our own starts, and the bits are those of threads=1. A team
    larger than torch's (torch.set_num_threads(1)) runs on our own pool; without
    fastoptim.torch nothing is shared."""
    lines = child_lines(AFTER_TORCH + """
        import numpy as np
        from fastoptim import kernels
        g = np.linspace(-1, 1, 1 << 20, dtype=np.float32)
        runs = []
        for threads in (1, 2):
            p, m, v = np.ones_like(g), np.zeros_like(g), np.zeros_like(g)
            _a @ _a
            kernels.adam_step(p, g, m, v, lr=1e-3, step=1, threads=threads)
            runs.append(np.concatenate([p, m, v]).view(np.uint32))
        info = kernels.build_info()
        print(info["shared_openmp"], info["pool_workers"], bool((runs[0] == runs[1]).all()))
        torch.set_num_threads(1)
        kernels.sgd_step(p, g, lr=1.0, threads=2)
        print(kernels.build_info()["pool_workers"])
    """.replace("\n        ", "\n"))
    assert lines == ["True 0 True", "1"]
    assert child_lines("""
        import torch
        from fastoptim import kernels
        print(kernels.build_info()["shared_openmp"])
    """) == ["False"]


@needs_kernels
def test_any_thread_count_is_accepted_and_the_team_never_exceeds_the_cores():
    """Issue 15.3: threads=10**9 was accepted and a big step asked the runtime for 1525
    threads. It is accepted, gives the bits of threads=1, and the pool stays within the
    cores this process may use (the caller being one of them)."""
    p = np.linspace(-1, 1, 1 << 18, dtype=np.float32)
    one = p.copy()
    kernels.sgd_step(one, np.ones_like(p), lr=0.5, threads=1)
    old = kernels.build_info()["parallel_threshold"]
    kernels.set_parallel_threshold(1)      # so that only the cores limit the team
    try:
        kernels.sgd_step(p, np.ones_like(p), lr=0.5, threads=10**9)
    finally:
        kernels.set_parallel_threshold(old)
    assert_same_bits(p, one, "threads=10**9 vs threads=1")
    info = kernels.build_info()
    assert 0 <= info["pool_workers"] <= info["hardware_threads"] - 1


@needs_kernels
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_the_team_is_capped_by_the_cores_this_process_may_use():
    lines = child_lines("""
        import os
        import numpy as np
        from fastoptim import kernels
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        p = np.zeros(1 << 20, np.float32)
        kernels.set_parallel_threshold(1)
        kernels.sgd_step(p, np.ones_like(p), lr=1.0, threads=10**9)
        info = kernels.build_info()
        print(info["hardware_threads"], info["pool_workers"], bool((p == -1).all()))
    """)
    assert lines == ["1 0 True"]


THREADS_CANNOT_START = r"""
import resource
import numpy as np
from fastoptim import kernels


def mapped_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024


p = np.zeros(1 << 20, np.float32)
g = np.ones_like(p)
# a few MB of address space left: malloc still works, an 8 MB thread stack does not
resource.setrlimit(resource.RLIMIT_AS, (mapped_bytes() + (4 << 20), resource.RLIM_INFINITY))
for _ in range(3):
    kernels.sgd_step(p, g, lr=1.0, threads=2)
print(kernels.build_info()["pool_workers"], bool((p == -3).all()), flush=True)
"""


@needs_kernels
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and RLIMIT_AS")
def test_a_thread_that_cannot_be_created_leaves_the_step_to_the_caller():
    """Issue 15.3: when a thread could not be created, the OpenMP runtime printed "Thread
    creation failed" and exited the process. Under an address-space limit no worker can
    start, and the steps run on the calling thread."""
    assert child_lines(THREADS_CANNOT_START) == ["0 True"]


# -- 4. Ctrl-C during a step --------------------------------------------------------------------

@contextlib.contextmanager
def ctrl_c_after(monkeypatch, owner, name, call=1):
    """Within the block, the function ``owner.name`` (or ``owner[name]`` for a dict) raises
    SIGINT in this process right after its ``call``-th call returns. Python runs its handler
    at the first bytecode after the call, so this is a Ctrl-C pressed while that call ran,
    landed at a chosen moment."""
    original = owner[name] if isinstance(owner, dict) else getattr(owner, name)
    calls = []

    def interrupting(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append(1)
        if len(calls) == call:
            signal.raise_signal(signal.SIGINT)
        return result

    with monkeypatch.context() as patch:
        (patch.setitem if isinstance(owner, dict) else patch.setattr)(owner, name, interrupting)
        yield


@contextlib.contextmanager
def ctrl_c_when(condition, timeout=5.0):
    """Send SIGINT to this process once ``condition()`` holds (polled from another thread),
    or after ``timeout`` seconds."""
    done = threading.Event()

    def watch():
        deadline = time.monotonic() + timeout
        while not done.is_set() and not condition() and time.monotonic() < deadline:
            pass
        if not done.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
        watcher.join()
        time.sleep(0.05)    # the interrupt lands here when it missed every step
    finally:
        done.set()
        watcher.join()


def after_steps(make, grads, count):
    """A fresh optimizer from make() stepped with grads[:count], never interrupted."""
    opt = make()
    for g in grads[:count]:
        opt.step(g)
    return opt


def check_interrupted_run(make, grads, interruption):
    """Step through grads inside the context ``interruption``, which makes a Ctrl-C. After the
    KeyboardInterrupt, params, state and step_count must be those of step_count
    uninterrupted steps; a state_dict saved then, and the optimizer itself, must resume on
    the uninterrupted trajectory. Returns the step_count at the interrupt."""
    opt = make()
    with pytest.raises(KeyboardInterrupt):
        with interruption:
            for g in grads:
                opt.step(g)
    done = opt.step_count
    assert_same_buffers(buffers_of(opt), buffers_of(after_steps(make, grads, done)),
                        f"interrupted at step_count={done}")
    saved = opt.state_dict()
    resumed = make()
    for own, p in zip(resumed.params, opt.params):
        own[...] = p
    resumed.load_state_dict(saved)
    full = after_steps(make, grads, len(grads))
    for g in grads[done:]:
        opt.step(g)
        resumed.step(g)
    assert opt.step_count == resumed.step_count == len(grads)
    assert_same_buffers(buffers_of(opt), buffers_of(full), "resumed after the interrupt")
    assert_same_buffers(buffers_of(resumed), buffers_of(full), "resumed from a state_dict")
    return done


def adam_problem(backend, n, steps=2):
    """make() for an Adam (amsgrad) over two float32 arrays of n elements, and the grads."""
    rng = np.random.default_rng(4)
    start = [rng.standard_normal(n).astype(np.float32) for _ in range(2)]
    grads = [[rng.standard_normal(n).astype(np.float32) for _ in range(2)] for _ in range(steps)]

    def make():
        return fo.Adam([p.copy() for p in start], lr=1e-2, amsgrad=True, backend=backend)

    return make, grads


# where a Ctrl-C lands: right after the C kernel; after the reference's loop over the first
# array (its moments and param computed, the second array's not) or over both
CTRL_C_MOMENTS = {
    "c, after the kernel": ("c", lambda: kernels, "adam_step", 1),
    "numpy, after the first array's loop": ("numpy", lambda: reference.LOOPS, "adam_step", 1),
    "numpy, after the last array's loop": ("numpy", lambda: reference.LOOPS, "adam_step", 2),
}


@posix_only
@pytest.mark.parametrize("moment", list(CTRL_C_MOMENTS))
def test_ctrl_c_inside_a_step_leaves_params_state_and_count_in_agreement(moment, monkeypatch):
    """Issue 15.4: with the C backend a Ctrl-C surfaced after the kernel but before the step
    was counted; with the NumPy backend Adam was half applied (moments advanced, the param
    not). A Ctrl-C inside the step's computation now completes and counts the step."""
    backend, owner, name, call = CTRL_C_MOMENTS[moment]
    if backend == "c" and kernels is None:
        pytest.skip("fastoptim._kernels is not built")
    make, grads = adam_problem(backend, 1000)
    interruption = ctrl_c_after(monkeypatch, owner(), name, call)
    assert check_interrupted_run(make, grads, interruption) == 1


@posix_only
@pytest.mark.parametrize("backend", [pytest.param("c", marks=needs_kernels), "numpy"])
def test_ctrl_c_at_any_moment_keeps_the_trajectory(backend):
    """SIGINT from another thread at a range of moments across the steps: in the checks, the
    kernel, the counters or between steps."""
    make, grads = adam_problem(backend, 300_000 if backend == "c" else 30_000, steps=3)
    opt = make()
    began = time.perf_counter()
    opt.step(grads[0])
    duration = time.perf_counter() - began
    for fraction in (0.2, 0.9, 1.6):
        at = time.perf_counter() + fraction * duration
        check_interrupted_run(make, grads, ctrl_c_when(lambda at=at: time.perf_counter() >= at))


def test_a_reference_call_interrupted_writes_all_or_nothing(monkeypatch):
    """A kernel call of the reference itself (no optimizer around it): Ctrl-C while it
    computes leaves every array as it was; Ctrl-C while it writes lets it finish."""
    first, second = adam_arrays(), adam_arrays(dtype=np.float64)
    arrays = [[a, b] for a, b in zip(first, second)]
    before = [a.copy() for a in first + second]
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_after(monkeypatch, reference.LOOPS, "adam_step", 1):
            reference.adam_step(*arrays, lr=0.1, step=1)
    assert_same_buffers(list(first + second), before, "interrupted while computing")
    expected = [[a.copy() for a in column] for column in arrays]
    reference.adam_step(*expected, lr=0.1, step=1)
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_after(monkeypatch, reference, "_store", 1):
            reference.adam_step(*arrays, lr=0.1, step=1)
    assert_same_buffers([a for column in arrays for a in column],
                        [a for column in expected for a in column], "interrupted while writing")


SIGINT_SETTINGS = r"""
import signal, sys
import numpy as np
import fastoptim as fo
from fastoptim import reference

calls = []
signal.signal(signal.SIGINT, {"SIG_DFL": signal.SIG_DFL, "SIG_IGN": signal.SIG_IGN,
                              "own handler": lambda *_: calls.append(opt.step_count)}[sys.argv[1]])
original = reference.LOOPS["sgd_step"]


def interrupting(*args):
    result = original(*args)
    signal.raise_signal(signal.SIGINT)
    return result


reference.LOOPS["sgd_step"] = interrupting
opt = fo.SGD(np.ones(4), lr=0.5, backend="numpy")
opt.step(np.ones(4))
print(opt.step_count, opt.params[0][0], calls, flush=True)
"""


@posix_only
@pytest.mark.parametrize("setting, output", [("own handler", "1 0.5 [1]"),
                                             ("SIG_IGN", "1 0.5 []"), ("SIG_DFL", "")])
def test_ctrl_c_held_back_in_a_step_is_delivered_as_the_program_set_it(setting, output):
    """The program's own SIGINT handler runs once, after the step is counted; SIG_IGN
    ignores the interrupt; under SIG_DFL it ends the process, as it would without fastoptim
    (it was swallowed)."""
    result = run_child(SIGINT_SETTINGS, args=[setting])
    assert result.stdout.strip() == output, result.stderr[-1000:]
    assert result.returncode == (-signal.SIGINT if setting == "SIG_DFL" else 0)


@posix_only
def test_ctrl_c_inside_a_torch_step_leaves_params_state_and_counters_in_agreement(monkeypatch):
    torch = pytest.importorskip("torch")
    import fastoptim.torch as ft
    rng = np.random.default_rng(5)
    start = torch.from_numpy(rng.standard_normal(1000).astype(np.float32))
    grads = [torch.from_numpy(rng.standard_normal(1000).astype(np.float32)) for _ in range(3)]

    def make():
        p = torch.nn.Parameter(start.clone())
        return p, ft.Adam([p], lr=1e-2)

    def everything(p, opt):
        st = opt.state[p]
        return [p.detach().clone()] + [st[k].clone() for k in ("step", "exp_avg", "exp_avg_sq")]

    p, opt = make()
    torch_steps(p, opt, grads[:1])
    where = (kernels, "run_table") if kernels is not None else (reference.LOOPS, "adam_step")
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_after(monkeypatch, *where):
            torch_steps(p, opt, grads[1:])
    assert int(opt.state[p]["step"]) == 2
    q, twin = make()
    torch_steps(q, twin, grads[:2])
    for a, b in zip(everything(p, opt), everything(q, twin), strict=True):
        assert_same_bits(a.numpy(), b.numpy(), "torch step interrupted")
    torch_steps(p, opt, grads[2:])
    torch_steps(q, twin, grads[2:])
    for a, b in zip(everything(p, opt), everything(q, twin), strict=True):
        assert_same_bits(a.numpy(), b.numpy(), "torch step resumed")


# -- 5. checkpoints whose hyperparameters switch a state buffer on or off -----------------------

SWITCHES = [
    (fo.Adam, "amsgrad", False, True),
    (fo.AdamW, "amsgrad", False, True),
    (fo.RMSProp, "centered", False, True),
    (fo.RMSProp, "momentum", 0.0, 0.9),
    (fo.SGD, "momentum", 0.0, 0.9),
]
SWITCH_CASES = [(cls, name, a, b) for cls, name, off, on in SWITCHES
                for a, b in ((off, on), (on, off))]


def switch_problem(seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(40).astype(np.float32), rng.standard_normal((3, 5))]
    grads = [[rng.standard_normal(p.shape).astype(p.dtype) for p in params] for _ in range(4)]
    return params, grads


@pytest.mark.parametrize("cls, name, own, loaded", SWITCH_CASES,
                         ids=[f"{c.__name__}-{n}-{a}-to-{b}" for c, n, a, b in SWITCH_CASES])
@pytest.mark.parametrize("via", ["state_dict", "file"])
def test_loading_a_checkpoint_that_switches_a_buffer_continues_its_run(cls, name, own, loaded,
                                                                       via, tmp_path):
    """Issue 15.5: such a load raised KeyError halfway (hyperparameters already changed), or
    kept a stale buffer, or made every later step raise. The loaded optimizer must continue
    exactly as the one that saved it."""
    params, grads = switch_problem()
    source = cls([p.copy() for p in params], lr=0.01, **{name: loaded})
    for g in grads[:2]:
        source.step(g)
    target = cls([p.copy() for p in params], lr=0.01, **{name: own})
    target.step(grads[3])
    if via == "file":
        source.save(tmp_path / "ck.npz")
        target.load(tmp_path / "ck.npz")
    else:
        target.load_state_dict(source.state_dict())
    assert getattr(target, name) == loaded and target.step_count == 2
    assert [sorted(st) for st in target.state] == [sorted(st) for st in source.state]
    for own_p, p in zip(target.params, source.params):
        own_p[...] = p
    for g in grads[2:]:
        source.step(g)
        target.step(g)
    assert_same_buffers(buffers_of(target), buffers_of(source), "after the load")


@pytest.mark.parametrize("cls, name, own, loaded", SWITCH_CASES,
                         ids=[f"{c.__name__}-{n}-{a}-to-{b}" for c, n, a, b in SWITCH_CASES])
def test_a_checkpoint_whose_buffers_do_not_match_its_hyperparameters_changes_nothing(
        cls, name, own, loaded):
    """The hyperparameters say the buffer is on (off) but the state lacks (holds) it: refused
    before anything changes, and the next step is the one an untouched twin takes."""
    params, grads = switch_problem()
    source = cls([p.copy() for p in params], lr=0.01, **{name: own})
    source.step(grads[0])
    bad = source.state_dict()
    bad["hyperparameters"][name] = loaded
    target = cls([p.copy() for p in params], lr=0.02, **{name: own})
    twin = cls([p.copy() for p in params], lr=0.02, **{name: own})
    for opt in (target, twin):
        opt.step(grads[1])
    with pytest.raises(ValueError, match="state_dict state\\[0\\] holds"):
        target.load_state_dict(bad)
    assert getattr(target, name) == own and target.lr == 0.02 and target.step_count == 1
    target.step(grads[2])
    twin.step(grads[2])
    assert_same_buffers(buffers_of(target), buffers_of(twin), "after the refused load")


@pytest.mark.parametrize("own, loaded", [(False, True), (True, False)])
def test_fastoptim_torch_loading_a_state_dict_that_switches_amsgrad_continues_its_run(own,
                                                                                     loaded):
    torch = pytest.importorskip("torch")
    import fastoptim.torch as ft
    rng = np.random.default_rng(7)
    start, *grads = [torch.from_numpy(rng.standard_normal(32).astype(np.float32))
                     for _ in range(5)]

    p = torch.nn.Parameter(start.clone())
    source = ft.Adam([p], lr=0.01, amsgrad=loaded)
    torch_steps(p, source, grads[:2])
    q = torch.nn.Parameter(start.clone())
    target = ft.Adam([q], lr=0.01, amsgrad=own)
    torch_steps(q, target, grads[3:])
    target.load_state_dict(copy.deepcopy(source.state_dict()))
    assert target.param_groups[0]["amsgrad"] is loaded
    with torch.no_grad():
        q.copy_(p)
    torch_steps(p, source, grads[2:])
    torch_steps(q, target, grads[2:])
    assert_same_bits(q.detach().numpy(), p.detach().numpy(), "param")
    assert sorted(target.state[q]) == sorted(source.state[p])
    for key, value in source.state[p].items():
        assert_same_bits(target.state[q][key].numpy(), value.numpy(), key)


@pytest.mark.parametrize("options", [dict(master_weights=True), dict(state_dtype="bfloat16")])
@pytest.mark.parametrize("name", ["Adam", "NAdam"])
def test_fastoptim_torch_resumes_a_state_dict_in_the_dtypes_it_keeps(name, options):
    """torch.optim's load casts every state tensor but "step" to its param's dtype: float32
    master params and state of bfloat16 params came back as bfloat16 (and bfloat16 state of
    float32 params as float32), so the resumed run took other steps."""
    torch = pytest.importorskip("torch")
    import fastoptim.torch as ft
    dtype = torch.bfloat16 if options.get("master_weights") else torch.float32
    rng = np.random.default_rng(6)
    start, *grads = [torch.from_numpy(rng.standard_normal(64).astype(np.float32)).to(dtype)
                     for _ in range(5)]

    p = torch.nn.Parameter(start.clone())
    opt = getattr(ft, name)([p], lr=0.01, **options)
    torch_steps(p, opt, grads[:2])
    q = torch.nn.Parameter(p.detach().clone())
    resumed = getattr(ft, name)([q], lr=0.01, **options)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert {k: v.dtype for k, v in resumed.state[q].items()} == \
        {k: v.dtype for k, v in opt.state[p].items()}
    torch_steps(p, opt, grads[2:])
    torch_steps(q, resumed, grads[2:])
    assert_same_bits(q.detach().float().numpy(), p.detach().float().numpy(), "param")
    for key, value in opt.state[p].items():
        assert_same_bits(resumed.state[q][key].float().numpy(), value.float().numpy(), key)


# -- 6. the NumPy reference is all or nothing ---------------------------------------------------

def adam_arrays(n=6, dtype=np.float32):
    return (np.linspace(-1, 1, n).astype(dtype), np.linspace(1, 2, n).astype(dtype),
            np.full(n, 0.5, dtype), np.full(n, 0.25, dtype))


REFUSED_CALLS = {
    "beta2=1.0": lambda m, p, g, a, v: m.adam_step(p, g, a, v, lr=0.1, step=1, beta2=1.0),
    "adamw_step, exp_avg_sq None": lambda m, p, g, a, v: m.adamw_step(p, g, a, None, lr=0.1,
                                                                      step=1),
    "maximize an array": lambda m, p, g, a, v: m.adam_step(
        p, g, a, v, lr=0.1, step=1, maximize=np.array([True, False] * 3)),
    "list form, second array short": lambda m, p, g, a, v: m.adam_step(
        [p, p[:3].copy()], [g, g[:3].copy()], [a, a[:3].copy()], [v, v[:2].copy()], lr=0.1,
        step=1),
    "list form, second grad float64": lambda m, p, g, a, v: m.adam_step(
        [p, p.copy()], [g, g.astype(np.float64)], [a, a.copy()], [v, v.copy()], lr=0.1, step=1),
}


@pytest.mark.parametrize("case", list(REFUSED_CALLS))
def test_a_refused_call_writes_nothing(case, kernel_module):
    """Issue 15.6: the reference wrote part of a step, then raised."""
    p, g, m, v = adam_arrays()
    before = [a.copy() for a in (p, m, v)]
    with pytest.raises((TypeError, ValueError)):
        REFUSED_CALLS[case](kernel_module, p, g, m, v)
    assert_same_buffers([p, m, v], before, case)


def test_a_failure_inside_the_reference_loops_writes_nothing(monkeypatch):
    """The reference computes every array of a list before it writes any: a loop that fails
    on the second array leaves the first one as it was."""
    calls = []
    adam_loop = reference.LOOPS["adam_step"]

    def failing_on_the_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("no memory for the second array")
        return adam_loop(*args)

    monkeypatch.setitem(reference.LOOPS, "adam_step", failing_on_the_second)
    first, second = adam_arrays(), adam_arrays(dtype=np.float64)
    before = [a.copy() for a in first + second]
    with pytest.raises(MemoryError):
        reference.adam_step(*[[a, b] for a, b in zip(first, second)], lr=0.1, step=1)
    assert_same_buffers(list(first + second), before, "after a failed loop")


# -- 7. Optimizer.load refuses a checkpoint that does not fit before inflating it ---------------

def test_load_refuses_a_checkpoint_for_another_shape_or_optimizer_before_reading_arrays(
        tmp_path):
    """Issue 15.7 for Optimizer.load: a checkpoint of 2 x 8 MB for params of another shape,
    or for another optimizer, is refused having read no more than its headers."""
    fo.Adam(np.zeros(1 << 21, np.float32)).save(tmp_path / "adam.npz")
    fo.RMSProp(np.zeros(1 << 21, np.float32), centered=True).save(tmp_path / "rmsprop.npz")
    for file, opt, message in [
            ("adam.npz", fo.Adam(np.zeros(1000, np.float32)), "float32\\[2097152\\]"),
            ("adam.npz", fo.Adam(np.zeros(1 << 21)), "expected float64"),
            ("rmsprop.npz", fo.Adam(np.zeros(1 << 21, np.float32)), "for RMSProp, not Adam")]:
        before = buffers_of(opt)

        def load():
            with pytest.raises(ValueError, match="does not fit this optimizer.*" + message):
                opt.load(tmp_path / file)

        assert peak_bytes_while(load) < 2**20, (file, message)
        assert_same_buffers(buffers_of(opt), before, "after the refused load")


# -- 8. ndarray subclasses: one rule, both backends ---------------------------------------------

class Doubling(np.ndarray):
    """An ndarray subclass whose arithmetic differs: every ufunc result is doubled."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = [x.view(np.ndarray) if isinstance(x, Doubling) else x for x in inputs]
        return 2 * getattr(ufunc, method)(*inputs, **kwargs)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("kind", ["matrix", "Doubling"])
def test_ndarray_subclasses_step_as_plain_ndarrays_in_both_backends(kind):
    """Issue 15.8: np.matrix was accepted and the backends disagreed (matrix g*g is a matrix
    product). The rule: any ndarray subclass is stepped as a plain ndarray over the same
    memory, in both backends."""
    rng = np.random.default_rng(8)
    plain = [rng.standard_normal((4, 4)) for _ in range(2)] + [np.zeros((4, 4))] * 2
    expected = [a.copy() for a in plain]
    reference.adam_step(*expected, lr=0.1, step=1)
    modules = [reference] + ([kernels] if kernels is not None else [])
    for module in modules:
        for form in ("one array", "list"):
            arrays = [np.asmatrix(a.copy()) if kind == "matrix" else a.copy().view(Doubling)
                      for a in plain]
            args = arrays if form == "one array" else [[a] for a in arrays]
            module.adam_step(*args, lr=0.1, step=1)
            assert_same_buffers([np.asarray(a.view(np.ndarray)) for a in arrays], expected,
                                f"{module.__name__}, {kind}, {form}")
    opt = fo.Adam(np.asmatrix(plain[0].copy()), lr=0.1)
    opt.step(np.asmatrix(plain[1]))
    assert type(opt.params[0]) is np.ndarray
    assert_same_bits(opt.params[0], expected[0], "fastoptim.Adam over an np.matrix")


@pytest.mark.parametrize("role", [0, 1, 2])
def test_masked_arrays_are_refused_by_both_backends(role, kernel_module):
    p, g, m, v = adam_arrays()
    arrays = [p, g, m, v]
    before = [a.copy() for a in arrays]
    arrays[role] = np.ma.masked_array(arrays[role], mask=[0, 1] * 3)
    name = ["param", "grad", "exp_avg"][role]
    with pytest.raises(TypeError, match=f"{name} is a masked array"):
        kernel_module.adam_step(*arrays, lr=0.1, step=1)
    with pytest.raises(TypeError, match=f"{name}\\[0\\] is a masked array"):
        kernel_module.adam_step(*[[a] for a in arrays], lr=0.1, step=1)
    assert_same_buffers([p, g, m, v], before, "after the refusal")
    with pytest.raises(TypeError, match="params is a masked array"):
        fo.Adam(np.ma.masked_array(p.copy(), mask=[0, 1] * 3))


# -- 9. the caller's floating-point mode --------------------------------------------------------

@needs_kernels
def test_flush_to_zero_gives_the_same_bits_for_any_thread_count_and_the_reference():
    """Issue 15.9: after torch.set_flush_denormal(True) (flush-to-zero and denormals-are-zero
    in the calling thread), threads=1 and threads=2 gave different bits: the workers did not
    compute under the caller's mode. Every element here produces or reads subnormals, and
    the arrays are long (tens of milliseconds a step), so the worker surely takes tasks."""
    torch = pytest.importorskip("torch")
    tiny = np.finfo(np.float32).tiny
    n = 1 << 23
    p = np.empty(n, np.float32)
    p[0::2] = 1.5 * tiny
    p[1::2] = tiny / 4                          # subnormal: read as 0 under DAZ
    g = np.full(n, tiny, np.float32)

    def step(module, threads, size=n):
        arrays = [p[:size].copy(), g[:size], np.zeros(size, np.float32),
                  np.zeros(size, np.float32)]
        module.adam_step(*arrays, lr=float(tiny), step=1, beta1=0.5, eps=1.0,
                         threads=threads)
        module.sgd_step(arrays[0], arrays[1], lr=1.0, threads=threads)
        return [arrays[0], arrays[2], arrays[3]]

    def check(result, expected, what):
        """result: a step of all n elements; expected: the reference's step of the first two
        (even elements repeat the first one, odd ones the second)."""
        for a, e in zip(result, expected):
            differ = np.flatnonzero((bits(a).reshape(-1, 2) != bits(e)).any(axis=1))
            if differ.size:
                first = 2 * differ[0]
                assert_same_bits(a[first:first + 2], e, f"{what}: {differ.size} pairs differ, "
                                                        f"the first at element {first}")

    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU has no flush-to-zero mode")
    try:
        flushed_reference = step(reference, None, size=2)
        for threads in (1,) + (2,) * 6:     # repeated: on a busy machine a worker may
            check(step(kernels, threads), flushed_reference,     # take no task in a call
                  f"flush-to-zero, threads={threads}")
    finally:
        torch.set_flush_denormal(False)
    kept_reference = step(reference, None, size=2)
    assert any((a != b).any() for a, b in zip(flushed_reference, kept_reference)), \
        "flush-to-zero changed nothing: the test does not exercise it"
    for _ in range(4):
        check(step(kernels, 2), kept_reference, "without flush-to-zero, after it")


# -- 10. the arrays an optimizer steps cannot be swapped behind its back ------------------------

def test_replacing_a_param_or_a_state_array_is_refused_and_in_place_writes_are_followed():
    """Issue 15.10: replacing opt.state[i]["exp_avg"] or opt.params[0] had no effect on
    stepping. The rule: the lists are read-only (TypeError), the arrays are written in place."""
    p, g, m, v = adam_arrays()
    opt = fo.Adam(p.copy(), lr=0.1)
    with pytest.raises(TypeError):
        opt.params[0] = np.zeros_like(p)
    with pytest.raises(TypeError, match="exp_avg"):
        opt.state[0]["exp_avg"] = m.copy()
    with pytest.raises(TypeError, match="exp_avg"):
        del opt.state[0]["exp_avg"]
    assert sorted(opt.state[0]) == ["exp_avg", "exp_avg_sq"]
    opt.params[0][...] = p
    opt.state[0]["exp_avg"][...] = m
    opt.state[0]["exp_avg_sq"][...] = v
    opt.step(g)
    expected = [p.copy(), g, m.copy(), v.copy()]
    reference.adam_step(*expected, lr=0.1, step=1)
    assert_same_buffers(buffers_of(opt), [expected[0], expected[2], expected[3]],
                        "after in-place writes")


def test_fastoptim_torch_follows_a_replaced_state_tensor_or_param():
    """In fastoptim.torch the rule is torch.optim's: state[p] entries and group params may be
    replaced, and the next step uses the replacements."""
    torch = pytest.importorskip("torch")
    import fastoptim.torch as ft
    rng = np.random.default_rng(10)
    values = [torch.from_numpy(rng.standard_normal(16).astype(np.float32)) for _ in range(3)]

    def make():
        p = torch.nn.Parameter(values[0].clone())
        opt = ft.Adam([p], lr=0.1)
        p.grad = values[1].clone()
        opt.step()
        return p, opt

    p, opt = make()
    replacement = values[2].clone()
    opt.state[p]["exp_avg"] = replacement
    q, twin = make()
    with torch.no_grad():
        twin.state[q]["exp_avg"].copy_(values[2])
    for optimizer in (opt, twin):
        optimizer.step()
    assert opt.state[p]["exp_avg"] is replacement
    assert_same_bits(replacement.numpy(), twin.state[q]["exp_avg"].numpy(), "exp_avg")
    assert_same_bits(p.detach().numpy(), q.detach().numpy(), "param")

    new = torch.nn.Parameter(values[2].clone())
    new.grad = values[1].clone()
    old = p.detach().clone()
    opt.param_groups[0]["params"][0] = new
    opt.step()
    assert_same_bits(p.detach().numpy(), old.numpy(), "the replaced param")
    assert not torch.equal(new.detach(), values[2]) and int(opt.state[new]["step"]) == 1


# -- 11. fastoptim.torch: state dicts torch.optim would refuse ----------------------------------

def torch_state_dict_edits():
    def pop(key):
        return lambda sd: sd["state"][0].pop(key)

    def group(key, value):
        return lambda sd: sd["param_groups"][0].__setitem__(key, value)

    def state(key, value):
        return lambda sd: sd["state"][0].__setitem__(key, value)

    import torch
    return {
        "missing exp_avg_sq": (pop("exp_avg_sq"), "lacks \\['exp_avg_sq'\\]"),
        "maximize 'false'": (group("maximize", "false"), "maximize must be True or False"),
        "three betas": (group("betas", (0.9, 0.99, 0.5)), "betas must be a pair"),
        "lr a string": (group("lr", "0.1"), "lr must be a real number"),
        "amsgrad without its buffer": (group("amsgrad", True), "lacks \\['max_exp_avg_sq'\\]"),
        "exp_avg of another shape": (state("exp_avg", torch.zeros(3)), "exp_avg.*shape"),
        "exp_avg not a tensor": (state("exp_avg", [0.0] * 5), "not a tensor"),
    }


@pytest.mark.parametrize("case", ["missing exp_avg_sq", "maximize 'false'", "three betas",
                                  "lr a string", "amsgrad without its buffer",
                                  "exp_avg of another shape", "exp_avg not a tensor"])
def test_fastoptim_torch_refuses_a_bad_state_dict_and_changes_nothing(case):
    """Issue 15.11: a state dict missing exp_avg_sq loaded and stepped with fresh zeros;
    hyperparameters were not type-checked ("maximize": "false" turned maximize on; three
    betas loaded). Each is refused, and the optimizer -- its groups' very dicts included --
    is as before: its next step is the one an untouched twin takes."""
    torch = pytest.importorskip("torch")
    import fastoptim.torch as ft
    edit, message = torch_state_dict_edits()[case]

    def make():
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.randn(5))
        opt = ft.Adam([p], lr=0.1)
        p.grad = torch.ones(5)
        opt.step()
        return p, opt

    p, opt = make()
    q, twin = make()
    bad = copy.deepcopy(opt.state_dict())
    edit(bad)
    groups, group, state = opt.param_groups, opt.param_groups[0], opt.state
    with pytest.raises((TypeError, ValueError), match=message):
        opt.load_state_dict(bad)
    assert opt.param_groups is groups and opt.param_groups[0] is group and opt.state is state
    assert group == twin.param_groups[0] | {"params": [p]}
    p.grad = q.grad = torch.full((5,), 0.5)
    opt.step()
    twin.step()
    assert_same_bits(p.detach().numpy(), q.detach().numpy(), "param after the refused load")
    for key in ("step", "exp_avg", "exp_avg_sq"):
        assert_same_bits(opt.state[p][key].numpy(), twin.state[q][key].numpy(), key)


@pytest.mark.parametrize("key, value, message", [
    ("maximize", "false", "maximize must be True or False"),
    ("betas", [0.9, 0.99, 0.5], "betas must be a pair"),
    ("eps", "1e-8", "eps must be a real number"),
    ("amsgrad", 1.0, "amsgrad must be True or False"),
])
def test_checkpoint_hyperparameters_are_type_checked(key, value, message, tmp_path):
    """Issue 15.11, the NumPy front end: a checkpoint's hyperparameters get the constructor's
    checks, in a state dict and in a file."""
    opt = fo.Adam(np.ones(4, np.float32), lr=0.1)
    opt.step(np.ones(4, np.float32))
    bad = opt.state_dict()
    bad["hyperparameters"][key] = value
    before = buffers_of(opt)
    with pytest.raises((TypeError, ValueError), match=message):
        opt.load_state_dict(bad)
    bad["state"] = [dict(st) for st in bad["state"]]
    checkpoint.write_atomic(tmp_path / "bad.npz", bad)
    with pytest.raises((TypeError, ValueError), match=message):
        opt.load(tmp_path / "bad.npz")
    assert opt.maximize is False and opt.betas == (0.9, 0.999) and opt.eps == 1e-8
    assert_same_buffers(buffers_of(opt), before, "after the refused load")


# -- 12. one set of kernel argument checks ------------------------------------------------------

BAD_KERNEL_ARGUMENTS = [
    ("ewma_step", dict(beta=1), ValueError, "beta must be < 1"),
    ("ewma_step", dict(beta="0.9"), TypeError, "beta must be a real number"),
    ("ewma_step", dict(beta=np.array([0.5, 0.5])), TypeError, "beta must be a real number"),
    ("momentum_step", dict(momentum=1.0), ValueError, "momentum must be < 1"),
    ("adam_step", dict(step=1.5), TypeError, "step must be an integer"),
    ("adam_step", dict(step=0), ValueError, "step must be >= 1"),
    ("adam_step", dict(step=True), TypeError, "step must be an integer"),
    ("adam_step", dict(step=np.int64(2**62)), ValueError, "step is too large"),
    ("adam_step", dict(lr="1e-3"), TypeError, "lr must be a real number"),
    ("adam_step", dict(lr=float("nan")), ValueError, "lr is NaN"),
    ("adam_step", dict(lr=-1.0), ValueError, "lr must be >= 0"),
    ("adam_step", dict(beta1=1.0), ValueError, "beta1 must be < 1"),
    ("adam_step", dict(beta2=True), TypeError, "beta2 must be a real number"),
    ("adam_step", dict(eps=[1e-8]), TypeError, "eps must be a real number"),
    ("adam_step", dict(maximize="false"), TypeError, "maximize must be True or False"),
    ("adam_step", dict(maximize=np.array([1, 0, 1, 0, 1, 0])), TypeError,
     "maximize must be True or False"),
    ("adam_step", dict(eps_hat=2), TypeError, "eps_hat must be True or False"),
    ("adam_step", dict(threads=0), ValueError, "threads must be >= 1"),
    ("adam_step", dict(threads=2.0), TypeError, "threads must be an integer"),
    ("adam_step", dict(rounding="up"), ValueError, "rounding must be one of"),
    ("adam_step", dict(seed="1"), TypeError, "seed must be an integer"),
    ("adam_step", dict(colour=1), TypeError, "unexpected keyword argument 'colour'"),
    ("rmsprop_step", dict(momentum=0.9), ValueError, "momentum_buffer is required"),
    ("adagrad_step", dict(lr_decay=-1), ValueError, "lr_decay must be >= 0"),
    ("rprop_step", dict(etas=(0.5, 1.2, 3)), TypeError, "etas must be a pair"),
    ("rprop_step", dict(etas=(1.5, 1.2)), ValueError, "etas must satisfy"),
    ("lamb_step", dict(max_trust_ratio="2"), TypeError, "max_trust_ratio must be a real"),
    ("nadam_step", dict(mu_product=1.0), ValueError, "mu_product must be < 1"),
    ("interpolate_step", dict(weight=None), TypeError, "weight must be a real number"),
    ("norms", dict(norm_type=3), ValueError, "norm_type must be 1, 2 or inf"),
]


def good_call(kernel):
    """Valid arguments for a kernel function: (positional arrays, keyword arguments)."""
    case = next(c for c in kernel_cases() if c.kernel == kernel)
    p, g = np.linspace(-1, 1, 6), np.linspace(1, 2, 6)
    arrays = [p, g] + [None if s is None else np.full(6, 0.5) for s in case.state]
    if kernel == "norms":
        arrays = [g]
    kwargs = dict(case.options, **(case.per_step(1) if case.per_step else {}))
    if takes_step(kernel):
        kwargs["step"] = 1
    return arrays, kwargs


@pytest.mark.parametrize("kernel, bad, error, message", BAD_KERNEL_ARGUMENTS,
                         ids=[f"{k}({', '.join(f'{n}={v!r}' for n, v in b.items())})"
                              for k, b, _, _ in BAD_KERNEL_ARGUMENTS])
def test_both_backends_refuse_the_same_arguments_with_the_same_message(kernel, bad, error,
                                                                       message):
    """Issue 15.12: beta=1 gave inf/NaN in C and ZeroDivisionError in NumPy; step=1.5 was
    truncated in C. Both backends run the same checks: same error, same message, nothing
    written."""
    assert kernel in FUNCTIONS
    modules = [reference] + ([kernels] if kernels is not None else [])
    messages = []
    for module in modules:
        arrays, kwargs = good_call(kernel)
        before = [None if a is None else a.copy() for a in arrays]
        with pytest.raises(error, match=re.escape(message)) as caught:
            getattr(module, kernel)(*arrays, **{**kwargs, **bad})
        messages.append(str(caught.value))
        assert_same_buffers([a for a in arrays if a is not None],
                            [a for a in before if a is not None], module.__name__)
    assert len(set(messages)) == 1, messages
