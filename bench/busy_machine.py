"""The threaded step on a busy machine, an idle one, and next to torch's own threads.

    python bench/busy_machine.py            # 2-3 minutes on 2 cores (torch's import
                                            #   in 28 child processes is most of it)
    python bench/busy_machine.py --quick    # under a minute: checks that it runs

Three measurements of a default-threads Adam step (float32, backend="c") against the same
step with threads=1, as ratios taken in one run (absolute times vary too much between runs
to compare; a ratio of two interleaved measurements does not):

1. idle machine, 1M elements: threads=1 time / default time -- the parallel speedup
   (target: >= 1.5 on 2 cores); the same for an EWMA over 100 series that writes a fresh
   80 MB result each call (page faults: slow work that is not a busy machine);
2. one competing busy process (a Python spin loop; ``--pin`` pins it to the first core),
   1M and 30M elements: default time / threads=1 time -- the cost of a worker that the
   scheduler does not run (target: <= 1.3; a step that waits for a descheduled worker
   takes a scheduler time slice, 7.5-10x at 1M before the thread pool);
3. after torch's parallel ops: the default-threads 1M step in a child process that runs a
   torch.matmul (512 x 512) and an element-wise add (256k elements), both on torch's own
   threads, right before each step, against a
   child without torch (target: within 15 %); the same in a child that imported
   fastoptim.torch, whose threaded steps run on torch's OpenMP team; and with threads=1 as
   the control. Every child first evicts the step's data with the same 128 MB NumPy copy,
   so the caches start equal and the threads are what differ. (An earlier version compared
   a 1024 x 1024 matmul with a smaller copy; the matmul evicted more, and the threads=1
   control moved by 1.65x from the caches alone.)

Each ratio compares medians of single-step times; the two sides alternate round by round,
so a change in the machine's load hits both. Run it on a quiet machine: other processes
count as competitors too. Nothing here is asserted; the numbers are the result.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time

import numpy as np

import fastoptim as fo
from fastoptim import kernels

SPIN = "import os, sys\nif len(sys.argv) > 1: os.sched_setaffinity(0, {int(sys.argv[1])})\n" \
       "while True: pass\n"

# a child that times steps, each right after evicting the step's data from the caches
# (the same NumPy copy, single-threaded, in every child) and, in the children with torch,
# a torch matmul and add on torch's threads -- small and in cache, so that the threads, not the
# caches, are what differ; prints the median step time in seconds
STEPS_CHILD = textwrap.dedent("""
    import json, statistics, sys, time
    import numpy as np
    kind, n, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    threads = int(sys.argv[4]) or None
    big, other = np.ones(1 << 24, np.float32), np.empty(1 << 24, np.float32)  # 2 x 64 MB
    def evict():
        np.copyto(other, big)
    if kind != "plain":
        import torch
        if kind == "fastoptim.torch":   # imported: the steps run on torch's OpenMP team
            import fastoptim.torch
        a, x, y = torch.randn(512, 512), torch.randn(1 << 18), torch.empty(1 << 18)
        def other_work():
            evict()
            a @ a                           # torch's BLAS threads
            torch.add(x, 1.0, out=y)        # torch's own parallel_for (OpenMP)
    else:
        other_work = evict
    import fastoptim as fo
    rng = np.random.default_rng(0)
    opt = fo.Adam(rng.standard_normal(n).astype(np.float32), backend="c", threads=threads)
    grad = rng.standard_normal(n).astype(np.float32)
    times = []
    for _ in range(steps + 3):
        other_work()
        began = time.perf_counter()
        opt.step(grad)
        times.append(time.perf_counter() - began)
    print(json.dumps(statistics.median(times[3:])))
""")


def adam(n):
    rng = np.random.default_rng(n)
    opt = fo.Adam(rng.standard_normal(n).astype(np.float32), backend="c")
    return opt, rng.standard_normal(n).astype(np.float32)


def step_times(opt, grad, threads, steps):
    """Times of `steps` single steps with this thread count."""
    opt.threads = threads
    times = []
    for _ in range(steps):
        began = time.perf_counter()
        opt.step(grad)
        times.append(time.perf_counter() - began)
    return times


def compare_threads(n, rounds, steps):
    """Median step time with the default team and with threads=1, interleaved by round."""
    opt, grad = adam(n)
    step_times(opt, grad, None, 2)      # start the workers, touch the memory
    default, single = [], []
    for _ in range(rounds):
        default += step_times(opt, grad, None, steps)
        single += step_times(opt, grad, 1, steps)
    return statistics.median(default), statistics.median(single)


def compare_ewma_threads(rounds, calls):
    """The same for fastoptim.ewma on 100 series of 100k values stored as a DataFrame
    stores them (each series contiguous): each call writes a fresh 80 MB result, whose
    first writes the kernel serves with freshly zeroed pages -- slow work on a core, which
    must not be taken for a busy machine."""
    values = np.asfortranarray(np.random.default_rng(0).standard_normal((100_000, 100)))

    def times(threads):
        out = []
        for _ in range(calls):
            began = time.perf_counter()
            fo.ewma(values, 0.9, backend="c", threads=threads)
            out.append(time.perf_counter() - began)
        return out
    default, single = [], []
    for _ in range(rounds):
        default += times(None)
        single += times(1)
    return statistics.median(default), statistics.median(single)


def start_spinner(pin):
    command = [sys.executable, "-c", SPIN] + (["0"] if pin else [])
    spinner = subprocess.Popen(command)
    time.sleep(0.3)                     # let it start spinning
    return spinner


def compare_torch(n, rounds, steps, threads=0):
    """Median of the children's median step times, by kind, alternating: with torch's
    matmul before each step ("torch"; "fastoptim.torch": that module imported too, so the
    steps run on torch's OpenMP team), and without torch ("plain"). threads=0: the default
    team."""
    result = {"torch": [], "fastoptim.torch": [], "plain": []}
    for _ in range(rounds):
        for kind in result:
            out = subprocess.run([sys.executable, "-c", STEPS_CHILD, kind, str(n), str(steps),
                                  str(threads)], capture_output=True, text=True, check=True)
            result[kind].append(json.loads(out.stdout))
    return {kind: statistics.median(times) for kind, times in result.items()}


def ms(seconds):
    return f"{seconds * 1e3:8.3f} ms"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few rounds: checks it runs")
    parser.add_argument("--pin", action="store_true",
                        help="pin the competing busy process to the first core")
    parser.add_argument("--skip-torch", action="store_true", help="leave out measurement 3")
    args = parser.parse_args(argv)
    rounds, steps = (2, 3) if args.quick else (15, 10)
    big_rounds, big_steps = (1, 2) if args.quick else (5, 4)
    info = kernels.build_info()
    print(f"fastoptim {fo.__version__}, {info['threads']}, default team "
          f"{info['max_threads']} of {info['hardware_threads']} cores, {info['simd_target']}")
    print(f"load average now: {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
          "(near 0 for meaningful numbers)\n")
    rows = []

    default, single = compare_threads(1_000_000, rounds, steps)
    rows.append(("idle, 1M: threads=1 / default", single / default, ">= 1.5", default, single))
    default, single = compare_ewma_threads(3 if args.quick else 10, 3 if args.quick else 6)
    rows.append(("idle, EWMA 100k x 100 (fresh result): threads=1 / default", single / default,
                 "", default, single))

    spinner = start_spinner(args.pin)
    try:
        for n, (r, s) in ((1_000_000, (rounds, steps)), (30_000_000, (big_rounds, big_steps))):
            default, single = compare_threads(n, r, s)
            rows.append((f"one busy process, {n // 1_000_000}M: default / threads=1",
                         default / single, "<= 1.3", default, single))
    finally:
        spinner.kill()
        spinner.wait()

    if not args.skip_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch is not installed: measurement 3 left out")
        else:
            for threads, label, target in ((0, "default", "<= 1.15"), (1, "threads=1", "")):
                median = compare_torch(1_000_000, 3 if args.quick else 7,
                                       steps if args.quick else 30, threads)
                plain = median["plain"]
                rows.append((f"after torch's parallel ops, 1M, {label}: with / without torch",
                             median["torch"] / plain, target, median["torch"], plain))
                if threads == 0:
                    rows.append(("  the same, fastoptim.torch imported (torch's OpenMP team)",
                                 median["fastoptim.torch"] / plain, target,
                                 median["fastoptim.torch"], plain))

    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  ratio  target   (numerator, denominator: median step)")
    for label, ratio, target, a, b in rows:
        print(f"{label:<{width}}  {ratio:5.2f}  {target:7}  ({ms(a)}, {ms(b)})")


if __name__ == "__main__":
    main()
