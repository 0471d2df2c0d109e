"""The command line: ``python -m fastoptim <command>`` (or the ``fastoptim`` script).

    bench    time every optimizer step against its data-movement limit, the NumPy
             reference and torch.optim (python -m fastoptim bench --quick)
    verify   run every kernel and option combination through the compiled and the NumPy
             backend and show the largest difference in ULP (0 expected); exit 1 on any;
             --against torch: how far torch.optim's implementations are from the reference
    demo     draw the lectures' pictures with matplotlib (python -m fastoptim demo --out DIR)

Each command's module is imported when the command runs, so ``--help`` stays fast (bench's
table of optimizers, TWINS, is read for its help: a module of plain data and functions).
"""
import argparse
import json
import sys

DTYPE_NAMES = ("float32", "float64")


def parse_size(text):
    """An element count: 1000, 1_000, 1e3 or 3e7."""
    text = text.strip().replace("_", "")
    try:
        n = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
        if not value.is_integer():
            raise argparse.ArgumentTypeError(f"not a whole number of elements: {text!r}")
        n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"a size must be >= 1, got {text!r}")
    return n


def _flatten(values, convert):
    """Arguments given as `--x a b` or `--x a,b`, converted; None when not given."""
    if values is None:
        return None
    return [convert(v) for item in values for v in item.split(",") if v.strip()]


def _dtype(text):
    if text not in DTYPE_NAMES:
        raise argparse.ArgumentTypeError(f"dtype must be one of {DTYPE_NAMES}, got {text!r}")
    return text


def _any_float_dtype(text):
    from fastoptim.testing import FLOAT_DTYPE_NAMES

    if text not in FLOAT_DTYPE_NAMES:
        raise argparse.ArgumentTypeError(
            f"dtype must be one of {FLOAT_DTYPE_NAMES}, got {text!r}")
    return text


def _threads(text):
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"threads must be >= 1, got {n}")
    return n


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fastoptim", description="fastoptim: one-pass C optimizer kernels over NumPy buffers")
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)

    bench = commands.add_parser(
        "bench", help="time each optimizer step against the data-movement limit, NumPy and torch",
        description="Time opt.step(grad) for each optimizer x dtype x size: fastoptim (C), its "
                    "data-movement limit (fastoptim.kernels.movement_loop over the same "
                    "buffers), the NumPy reference and, when installed, torch.optim fused and "
                    "foreach; then the cost per call and per extra array, and the EWMA scan "
                    "against pandas; last a verdict. The default run (every optimizer, float32, "
                    "at 1M and 30M elements) takes about a minute on 2 cores.")
    length = bench.add_mutually_exclusive_group()
    length.add_argument("--quick", action="store_true",
                        help="SGD and Adam at 1k, 100k and 3M, shorter timings "
                             "(under half a minute)")
    length.add_argument("--full", action="store_true",
                        help="every optimizer, both dtypes, 1k to 30M, and the low-precision, "
                             "reduction and (with --vs torch) model sections: the README's "
                             "tables (~9 minutes)")
    bench.add_argument("--json", action="store_true", help="print the results as JSON")
    bench.add_argument("--sizes", nargs="+", metavar="N",
                       help="element counts, e.g. 1e3 1e6 3e7 (default 1e6 3e7; --full "
                            "1e3 1e6 3e7)")
    from fastoptim.cli.bench import TWINS  # the one table of optimizers; a light import

    left_out = [name for name, twin in TWINS.items() if not twin.in_default_run]
    bench.add_argument("--optimizers", nargs="+", metavar="NAME",
                       help=" ".join(TWINS) + (f" (default all but {', '.join(left_out)})"
                                               if left_out else " (default all)"))
    bench.add_argument("--dtypes", nargs="+", metavar="DTYPE",
                       help="float32 and/or float64 (default float32; --quick, --full both)")
    bench.add_argument("--threads", type=_threads, metavar="N",
                       help="threads for fastoptim and torch (default: all cores; 1 when "
                            "other processes share the machine)")
    bench.add_argument("--seconds", type=float, metavar="S",
                       help="time spent on each implementation per table cell "
                            "(default 0.12, --quick 0.08, --full 0.2)")
    bench.add_argument("--no-torch", action="store_true", help="leave torch out")
    bench.add_argument("--vs", choices=["torch"],
                       help="torch: also time the fastoptim.torch.Adam adapter against "
                            "torch.optim.Adam on torch tensors")
    bench.add_argument("--low-precision", action="store_true",
                       help="also time Adam over bfloat16 storage (float32 params with "
                            "bfloat16 moments, all bfloat16, float32 masters with bfloat16 "
                            "grads and copy) against float32 Adam, each layout's movement "
                            "limit and torch fused bfloat16, at 1M and 30M (in --full)")
    bench.add_argument("--reductions", action="store_true",
                       help="also time the gradient norm against one read of the gradient "
                            "and torch's, and Adam with max_grad_norm and check_finite "
                            "against plain Adam, at 1M and 30M (in --full)")
    bench.set_defaults(run=_bench)

    verify = commands.add_parser(
        "verify", help="compare every kernel with the NumPy reference, in ULP",
        description="Run every kernel and option combination through the compiled and the "
                    "NumPy backend on the same random data and print the largest difference "
                    "in ULP per case and dtype. Exit status: 0 all identical, 1 any "
                    "difference, 2 the extension is not built.")
    verify.add_argument("--steps", type=int, default=None, metavar="N",
                        help="steps per run (default 6)")
    verify.add_argument("--sizes", nargs="+", metavar="N",
                        help="element counts (default 1 7 31 1000 131109; with --against "
                             "torch, fastoptim.testing.DEFAULT_SIZES)")
    verify.add_argument("--dtypes", nargs="+", metavar="DTYPE",
                        help="float32, float64, bfloat16, float16 (default: all four)")
    verify.add_argument("--threads", type=_threads, metavar="N",
                        help="threads for the compiled kernels (default: all cores)")
    verify.add_argument("--against", choices=["torch"],
                        help="torch: instead, the max ULP distance of torch.optim's for-loop, "
                             "foreach and fused implementations from the NumPy reference "
                             "after --steps steps (default 10), per optimizer and dtype")
    verify.set_defaults(run=_verify)

    # listed here for --help; `main` hands its arguments to fastoptim.cli.demo's own parser
    commands.add_parser("demo", add_help=False,
                        help="draw the lectures' pictures (paths, EWMA, training) into --out DIR")
    return parser


def main(argv=None):
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["demo"]:
        from fastoptim.cli import demo

        return demo.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args, parser)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _bench(args, parser):
    from fastoptim.cli import bench

    try:
        from fastoptim import kernels  # noqa: F401
    except ImportError as exc:
        print(f"fastoptim bench: the compiled extension is not built ({exc}); "
              "install with `pip install .` (needs a C compiler)", file=sys.stderr)
        return 2
    try:
        sizes = _flatten(args.sizes, parse_size)
        dtypes = _flatten(args.dtypes, _dtype)
        optimizers = _flatten(args.optimizers, _optimizer_name)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if args.seconds is not None and not args.seconds > 0:
        parser.error(f"--seconds must be > 0, got {args.seconds}")
    if args.vs == "torch":
        try:
            import torch  # noqa: F401
        except ImportError:
            print(f"fastoptim bench --vs torch needs torch: {bench.TORCH_INSTALL}",
                  file=sys.stderr)
            return 2
    plan = bench.PLANS["quick" if args.quick else "full" if args.full else "default"]
    plan = plan._replace(
        optimizers=tuple(optimizers or plan.optimizers), dtypes=tuple(dtypes or plan.dtypes),
        sizes=tuple(sizes or plan.sizes),
        budget=plan.budget._replace(seconds=args.seconds or plan.budget.seconds),
        low_precision_sizes=(plan.low_precision_sizes
                             or (bench.bench_low_precision.SIZES if args.low_precision else ())),
        reduction_sizes=(plan.reduction_sizes
                         or ((1_000_000, 30_000_000) if args.reductions else ())))
    report = bench.run(plan, threads=args.threads, use_torch=not args.no_torch,
                       vs_torch=args.vs == "torch")
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print(bench.format_report(report))
    return 0


def _optimizer_name(text):
    from fastoptim.cli.bench import TWINS

    for name in TWINS:
        if name.lower() == text.strip().lower():
            return name
    raise argparse.ArgumentTypeError(
        f"unknown optimizer {text!r}; choose from {', '.join(TWINS)}")


def _verify(args, parser):
    from fastoptim.cli import verify

    try:
        sizes = _flatten(args.sizes, parse_size)
        dtypes = _flatten(args.dtypes, _any_float_dtype)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if args.against == "torch":
        try:
            import torch  # noqa: F401

            from fastoptim.cli import verify_torch
        except ImportError as exc:
            print(f"fastoptim verify --against torch: {exc}; pip install torch==2.13.0",
                  file=sys.stderr)
            return 2
        return verify_torch.verify_against_torch(
            sizes=sizes or verify_torch.testing.DEFAULT_SIZES,
            dtypes=dtypes or verify_torch.DTYPES, steps=args.steps or verify_torch.DEFAULT_STEPS)
    return verify.verify(sizes=sizes or verify.DEFAULT_SIZES, dtypes=dtypes or verify.DTYPES,
                         steps=args.steps or verify.DEFAULT_STEPS, threads=args.threads)
