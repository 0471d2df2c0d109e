"""The command line (python -m fastoptim bench / verify) and the benchmark's movement loop."""
import json
import subprocess
import sys

import numpy as np
import pytest

import fastoptim
from conftest import DTYPES, assert_same_bits, kernels, needs_kernels
from fastoptim import _cases
from fastoptim.cli import main, parse_size
from fastoptim.cli.verify import max_ulp

# -- bench ------------------------------------------------------------------------------------

# tiny and short: the point is the shape of the output, not the numbers
TINY_BENCH = ["bench", "--quick", "--sizes", "1000", "--optimizers", "Adam", "--seconds", "0.002"]


def assert_quartiles(quartiles):
    """[median, q1, q3] of positive times, in order."""
    median, q1, q3 = quartiles
    assert 0 < q1 <= median <= q3


@needs_kernels
def test_bench_json_has_every_field(capsys):
    assert main(TINY_BENCH + ["--json"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    header = report["header"]
    for key in ("date", "cpu", "simd_target", "threads", "numpy", "torch", "pandas", "missing",
                "load_average", "busy", "seconds", "fastoptim"):
        assert key in header
    assert header["simd_target"] == kernels.build_info()["simd_target"]
    assert report["sections"] == ["rows", "per_call", "many_arrays", "ewma"]
    assert [(r["optimizer"], r["dtype"], r["n"]) for r in report["rows"]] == [
        ("Adam", "float32", 1000), ("Adam", "float64", 1000)]
    for row in report["rows"]:
        assert row["values_per_element"] == 7
        assert row["bytes_per_step"] == 7 * np.dtype(row["dtype"]).itemsize * 1000
        ns = row["ns_per_element"]
        assert set(ns) == {"fastoptim", "limit", "numpy", "torch_fused", "torch_foreach",
                           "torch_forloop"}
        assert ns["fastoptim"] > 0 and ns["limit"] > 0 and ns["numpy"] > 0
        for name, quartiles in row["ns_per_element_quartiles"].items():
            assert_quartiles(quartiles)
            assert quartiles[0] == ns[name]
        assert row["gb_per_s"]["fastoptim"] > 0 and row["pct_of_limit"] > 0
        assert row["speedup"]["numpy"] == pytest.approx(ns["numpy"] / ns["fastoptim"])
        if header["torch"]:
            assert row["speedup"]["torch_fused"] > 0 and row["speedup"]["torch_foreach"] > 0
    per_call = report["per_call"]
    assert per_call["n"] == 1000
    assert {"fastoptim", "kernel", "limit", "numpy"} <= set(per_call["us_per_call"])
    for quartiles in per_call["us_per_call_quartiles"].values():
        assert_quartiles(quartiles)
    many = report["many_arrays"]
    assert many["counts"] == [25, 50, 100] and many["elements"] == 200_000   # --quick
    for name, row in many["rows"].items():
        assert set(row["us_per_step"]) == {"1", "25", "50", "100"}
        for quartiles in row["us_per_step_quartiles"].values():
            assert_quartiles(quartiles)
        # the least-squares slope of us/step over the array counts, shown as 0 when negative
        slope = np.polyfit(many["counts"], [row["us_per_step"][str(k)] for k in many["counts"]],
                           1)[0]
        assert row["us_per_extra_array_fit"] == pytest.approx(slope)
        assert row["us_per_extra_array"] == max(0.0, row["us_per_extra_array_fit"])
    (ewma,) = report["ewma"]["rows"]                       # --quick: one series of 1M
    assert ewma["shape"] == [1_000_000, 1] and ewma["speedup_vs_pandas"]["fastoptim"] > 0
    pct = sorted(round(r["pct_of_limit"]) for r in report["rows"])
    assert report["verdict"].startswith(f"at n=1k the steps run at {pct[0]}–{pct[-1]} % of "
                                        "their data-movement limit")
    assert "; Adam float32 1k: " in report["verdict"]
    assert "fastoptim bench [" in err   # the progress line


@needs_kernels
def test_bench_table_via_python_dash_m():
    result = subprocess.run(
        [sys.executable, "-m", "fastoptim", *TINY_BENCH, "--optimizers", "SGD", "--dtypes",
         "float32", "--no-torch"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "SIMD target: " + kernels.build_info()["simd_target"] in result.stdout
    assert "torch left out" in result.stdout
    (row,) = [line for line in lines if line.startswith("SGD ")]
    words = row.split()
    assert words[:4] == ["SGD", "float32", "1k", "3"]
    assert all("±" in w and w.endswith("%") for w in (words[4], words[5], words[8]))
    assert words[10:] == ["-"] * 6                  # torch left out: fused, foreach, loop
    assert "Per call:" in result.stdout and "Many arrays:" in result.stdout
    assert lines[-1].startswith("Verdict: SGD float32 1k: ")
    assert "× above 1: fastoptim is faster" in lines[-1]


@needs_kernels
def test_bench_vs_torch_adds_the_adapter_comparison(capsys):
    pytest.importorskip("torch")
    assert main(TINY_BENCH + ["--json", "--no-torch", "--vs", "torch"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sections"][-2:] == ["torch_adapter", "models"]
    models = report["models"]
    assert {r["model"] for r in models["rows"]} >= {"200 × Linear(64, 64)"}
    assert all(r["ms_per_step_quartiles"]["fastoptim.torch"][1] > 0 for r in models["rows"])
    assert set(models["per_tensor"]) >= {"Adam", "SGD", "NAdam"}
    rows = report["torch_adapter"]
    assert {row["variant"] for row in rows} >= {"fastoptim", "torch"}
    assert all(row["ns_per_element"] > 0 for row in rows)
    for row in rows:
        assert_quartiles(row["seconds_quartiles"])


def test_bench_refuses_bad_arguments(capsys):
    for bad in (["--sizes", "1.5"], ["--sizes", "abc"], ["--optimizers", "Yogi"],
                ["--dtypes", "float16"], ["--threads", "0"], ["--vs", "jax"], ["--full"],
                ["--seconds", "0"]):
        with pytest.raises(SystemExit) as exc:
            main(["bench", "--quick", *bad])
        assert exc.value.code == 2, bad
    assert "Yogi" in capsys.readouterr().err


@needs_kernels
@pytest.mark.parametrize("flags,expected", [
    ([], dict(optimizers=("SGD", "Momentum", "AdaGrad", "RMSProp", "Adam", "AdamW"),
              dtypes=("float32",), sizes=(1_000_000, 30_000_000), seconds=0.12)),
    (["--full"], dict(dtypes=("float32", "float64"), sizes=(1_000, 1_000_000, 30_000_000),
                      seconds=0.2)),
    (["--quick"], dict(optimizers=("SGD", "Adam"), sizes=(1_000, 100_000, 3_000_000))),
    (["--full", "--optimizers", "nesterov,adam", "--dtypes", "float64", "--sizes", "1e3",
      "--seconds", "0.5"],
     dict(optimizers=("Nesterov", "Adam"), dtypes=("float64",), sizes=(1000,), seconds=0.5)),
])
def test_bench_plans(monkeypatch, flags, expected):
    """What each flag asks the benchmark to measure (nothing is timed here)."""
    from fastoptim.cli import bench

    seen = {}

    def fake_run(plan, **options):
        seen.update(plan=plan, **options)
        return {}

    monkeypatch.setattr(bench, "run", fake_run)
    monkeypatch.setattr(bench, "format_report", lambda report: "")
    assert main(["bench", *flags, "--threads", "1"]) == 0
    plan = seen["plan"]
    for key, value in expected.items():
        actual = plan.budget.seconds if key == "seconds" else getattr(plan, key)
        assert actual == value, key
    assert seen["threads"] == 1 and seen["use_torch"] and not seen["vs_torch"]


def test_the_benched_optimizers_come_from_twins():
    """A new optimizer is one line in TWINS: the default run, --optimizers and the problem
    setup all read it."""
    import fastoptim as fo
    from fastoptim.cli import bench

    assert bench.PLANS["default"].optimizers == tuple(
        name for name, twin in bench.TWINS.items() if twin.in_default_run)
    for twin in bench.TWINS.values():
        assert issubclass(getattr(fo, twin.fastoptim), fo.Optimizer)


@pytest.mark.parametrize("load,cores,threads,warns", [
    (0.2, 2, 2, False), (0.9, 2, 2, True), (0.9, 2, 1, False), (1.8, 2, 1, True),
    (3.0, 16, 16, True), (3.0, 16, 8, False), (None, 2, 2, False)])
def test_busy_warning(load, cores, threads, warns):
    from fastoptim.cli import bench

    warning = bench.busy_warning(load, cores, threads)
    assert (warning is not None) == warns
    if warns:
        assert f"load average {load:.2f} on {cores} cores" in warning
        assert f"--threads {max(1, int(cores - load))}" in warning


def fake_section(key="extra", phrase="the extra section agrees"):
    from fastoptim.cli import bench

    return bench.Section(key, run=lambda ctx: {"plan_sizes": list(ctx.plan.sizes)},
                         format=lambda data: [f"EXTRA {data['plan_sizes']}"],
                         verdict=lambda data: [phrase])


@needs_kernels
def test_a_new_section_is_one_entry_and_the_busy_and_missing_notes_reach_the_verdict(
        monkeypatch, capsys):
    """SECTIONS drives the run, the text, the JSON and the verdict; a busy machine and a
    missing torch or pandas are said at once on stderr, in the header and in the verdict."""
    from fastoptim.cli import bench

    monkeypatch.setattr(bench, "SECTIONS", [fake_section()])
    monkeypatch.setattr(bench.os, "getloadavg", lambda: (1.5, 1.0, 1.0), raising=False)
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 2)
    for name in ("torch", "pandas"):
        monkeypatch.setitem(sys.modules, name, None)   # import raises ImportError
    assert main(["bench", "--sizes", "1000", "--threads", "2"]) == 0
    out, err = capsys.readouterr()
    assert "EXTRA [1000]" in out
    verdict = out.splitlines()[-1]
    assert verdict.startswith("Verdict: the extra section agrees.")
    for text in (err, out, verdict):
        assert "busy (load average 1.50 on 2 cores)" in text and "--threads 1" in text
        assert "pip install torch==2.13.0" in text and "pip install pandas" in text
    assert "pip install torch\n" not in out + err and "pip install torch " not in out + err

    assert main(["bench", "--sizes", "1000", "--json", "--no-torch"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sections"] == ["extra"] and report["extra"] == {"plan_sizes": [1000]}
    assert report["header"]["missing"] == {"pandas": "pip install pandas"}   # torch left out


def test_step_verdict_and_spread_from_hand_made_rows():
    from fastoptim.cli import bench

    def row(optimizer, n, pct, fused):
        return {"optimizer": optimizer, "dtype": "float32", "n": n, "pct_of_limit": pct,
                "speedup": {"numpy": 10.0, "torch_fused": fused, "torch_foreach": 5.0}}

    rows = [row("SGD", 10**6, 70, 2.0), row("SGD", 3 * 10**7, 90.4, 0.98),
            row("Adam", 10**6, 68, 2.26), row("Adam", 3 * 10**7, 99.2, 1.034)]
    assert bench.verdict_step_rows(rows) == [
        "at n=30M the steps run at 90–99 % of their data-movement limit, 0.98–1.03× torch "
        "fused",
        "Adam float32 30M: 99 % of the limit, 1.03× torch fused",
        "Adam float32 1M: 68 % of the limit, 2.26× torch fused"]
    rows[3]["speedup"]["torch_fused"] = None          # e.g. no fused variant
    assert bench.verdict_step_rows(rows)[1] == "Adam float32 30M: 99 % of the limit, " \
                                               "5.00× torch foreach"
    # 0.65 with quartiles 0.63 and 0.67: half the IQR is 0.02, 3 % of the median
    assert bench._with_spread([0.65, 0.63, 0.67]) == "0.65±3%"
    assert bench._with_spread(None) == "-"
    assert [bench._times(x) for x in (1.034, 14.54, 5486.7)] == ["1.03×", "14.5×", "5487×"]


def test_parse_size():
    assert [parse_size(s) for s in ("1000", "1_000", "1e3", "3e7")] == [
        1000, 1000, 1000, 30_000_000]


# -- verify -----------------------------------------------------------------------------------

QUICK_VERIFY = ["verify", "--sizes", "7", "1000", "--steps", "2"]


def _rows(out, dtypes=4):
    """{case label: [max ULP per dtype]} from verify's table."""
    labels = {case.label for case in _cases.kernel_cases()}
    rows = {}
    for line in out.splitlines():
        words = line.split()
        label = " ".join(words[:-dtypes])
        if label in labels:
            rows[label] = words[-dtypes:]
    return rows


@needs_kernels
def test_verify_prints_zero_for_every_case(capsys):
    assert main(QUICK_VERIFY) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert len(rows) == len(_cases.kernel_cases())
    assert all(ulps == ["0"] * 4 for ulps in rows.values())      # every dtype
    assert "OK" in out


@needs_kernels
def test_verify_exits_1_when_a_kernel_is_off_by_one_ulp(monkeypatch, capsys):
    real_sgd_step = kernels.sgd_step

    def broken_sgd_step(param, grad, **options):
        real_sgd_step(param, grad, **options)
        param[0] = np.nextafter(param[0], np.inf)   # one ULP, on one element

    monkeypatch.setattr(kernels, "sgd_step", broken_sgd_step)
    assert main(["verify", "--sizes", "7", "--steps", "1", "--dtypes", "float32"]) == 1
    out = capsys.readouterr().out
    rows = _rows(out, dtypes=1)
    assert len(rows) == len(_cases.kernel_cases())
    for label, ulps in rows.items():
        assert ulps == (["1"] if label.startswith("sgd_step") else ["0"]), label
    assert "FAIL" in out and "sgd_step, float32, n=7: param differs by up to 1 ULP" in out


def test_commands_exit_2_without_the_extension(monkeypatch, capsys):
    monkeypatch.delattr(fastoptim, "kernels", raising=False)
    monkeypatch.setitem(sys.modules, "fastoptim.kernels", None)
    assert main(["verify"]) == 2
    assert main(TINY_BENCH) == 2
    assert "not built" in capsys.readouterr().err


def test_max_ulp():
    for dtype in DTYPES:
        a = np.array([1.0, -2.5, 0.0, np.inf, np.nan, 1e-30], dtype)
        assert max_ulp(a, a.copy()) == 0
        b = a.copy()
        b[1] = np.nextafter(b[1], dtype(0))
        assert max_ulp(a, b) == 1
        assert max_ulp(np.array([0.0], dtype), np.array([-0.0], dtype)) == 1
        assert max_ulp(np.array([np.nan], dtype), np.array([-np.nan], dtype)) == 0
        assert max_ulp(np.array([np.nan], dtype), np.array([1.0], dtype)) == float("inf")
        tiny = np.array([np.finfo(dtype).smallest_subnormal], dtype)
        assert max_ulp(tiny, -tiny) == 3   # -tiny, -0, +0, tiny
    # the widest gap fits: -inf to +inf in float64 is 2 * 0x7ff0000000000000 + 1 ULP
    assert max_ulp(np.array([np.inf]), np.array([-np.inf])) == 2 * 0x7FF0000000000000 + 1


# -- movement_loop ----------------------------------------------------------------------------

UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


@needs_kernels
@pytest.mark.parametrize("n", [0, 1, 7, 1000, 2 * 65536 + 37])
@pytest.mark.parametrize("count", [1, 2, 3, 4])
@pytest.mark.parametrize("dtypes", [("float32",) * 5, ("float64",) * 5,
                                    ("bfloat16", "bfloat16", "float32", "float16", "float32")],
                         ids=["float32", "float64", "mixed"])
def test_movement_loop_adds_read_only_to_each_updated(dtypes, count, n):
    """u <- u + r on the integers of each buffer's element size: the traffic of a step
    whatever the dtypes (with r all zeros, as the benchmark passes it, nothing changes)."""
    import ml_dtypes
    dtypes = [ml_dtypes.bfloat16 if d == "bfloat16" else np.dtype(d) for d in dtypes]
    rng = np.random.default_rng(n + count)
    updated = [rng.standard_normal(n).astype(dtypes[k]) for k in range(count)]
    read_only = rng.standard_normal(n).astype(dtypes[4])
    r = read_only.view(UINT[read_only.itemsize]).astype(np.uint64)
    expected = [(u.view(UINT[u.itemsize]) + r.astype(UINT[u.itemsize])).view(u.dtype)
                for u in updated]
    before = read_only.copy()
    kernels.movement_loop(updated, (read_only,))
    for u, e in zip(updated, expected):
        assert_same_bits(u, e, "updated")
    assert_same_bits(read_only, before, "read_only")
    zeros = np.zeros(n, dtypes[4])
    kernels.movement_loop(tuple(updated), [zeros], threads=1)
    for u, e in zip(updated, expected):
        assert_same_bits(u, e, "updated, adding zeros on one thread")


@needs_kernels
def test_movement_loop_with_nothing_updated_only_reads():
    x = np.arange(10_000, dtype=np.float32)
    before = x.copy()
    kernels.movement_loop((), (x,))
    assert_same_bits(x, before)


def _bad_calls():
    f32 = lambda n=8: np.ones(n, np.float32)  # noqa: E731
    ro = np.ones(8, np.float32)
    ro.flags.writeable = False
    same = f32()
    yield "six updated", lambda: ([f32() for _ in range(6)], (f32(),)), ValueError, "0 to 4"
    yield "five updated", lambda: ([f32() for _ in range(5)], (f32(),)), ValueError, "0 to 4"
    yield "no read_only", lambda: ([f32()], ()), ValueError, "exactly 1"
    yield "two read_only", lambda: ([f32()], (f32(), f32())), ValueError, "exactly 1"
    yield "bare array", lambda: (f32(), (f32(),)), TypeError, "sequences of arrays"
    yield "None", lambda: ([f32(), None], (f32(),)), TypeError, r"updated\[1\]"
    yield "list", lambda: ([[1.0, 2.0]], (f32(2),)), TypeError, r"updated\[0\]"
    yield "int", lambda: ([np.ones(8, np.int64)], (f32(),)), TypeError, "accepted: float32"
    yield "mixed dtypes", lambda: ([f32()], (np.ones(8),)), TypeError, r"read_only\[0\]"
    yield "shapes", lambda: ([f32(), f32(9)], (f32(),)), ValueError, r"updated\[1\] has shape"
    yield "strided", lambda: ([f32(16)[::2]], (f32(),)), ValueError, "C-contiguous"
    yield "read-only updated", lambda: ([f32(), ro], (f32(),)), ValueError, "read-only"
    yield "repeated", lambda: ([same, same], (f32(),)), ValueError, "shares memory"
    yield "aliased read_only", lambda: ([same], (same,)), ValueError, "shares memory"


@needs_kernels
@pytest.mark.parametrize("name,make,error,message", list(_bad_calls()),
                         ids=[c[0] for c in _bad_calls()])
def test_movement_loop_refuses_bad_buffers_before_writing(name, make, error, message):
    updated, read_only = make()
    arrays = [a for a in list(updated) + list(read_only) if isinstance(a, np.ndarray)]
    before = [a.copy() for a in arrays]
    with pytest.raises(error, match=message):
        kernels.movement_loop(updated, read_only)
    for a, b in zip(arrays, before):
        assert_same_bits(a, b)


@needs_kernels
def test_movement_loop_refuses_overlapping_views():
    base = np.zeros(16, np.float64)
    with pytest.raises(ValueError, match="shares memory"):
        kernels.movement_loop([base[:8], base[4:12]], (np.ones(8),))
    assert not base.any()
    with pytest.raises(ValueError, match="threads"):
        kernels.movement_loop([np.ones(8)], (np.ones(8),), threads=0)


def test_demo_is_a_cli_command(tmp_path, monkeypatch, capsys):
    """`python -m fastoptim demo ...` hands its arguments to fastoptim.cli.demo.main."""
    from fastoptim import cli
    from fastoptim.cli import demo

    seen = []
    monkeypatch.setattr(demo, "main", lambda argv: seen.append(argv) or 7)
    assert cli.main(["demo", "--out", str(tmp_path), "--quick"]) == 7
    assert seen == [["--out", str(tmp_path), "--quick"]]
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "demo" in capsys.readouterr().out


def test_a_negative_per_array_fit_reads_as_about_zero():
    from fastoptim.cli import bench

    def row(fit):
        return {"us_per_step_quartiles": {k: [100.0, 99.0, 101.0] for k in ("1", "25", "50",
                                                                             "100")},
                "us_per_extra_array": max(0.0, fit), "us_per_extra_array_fit": fit}

    ma = {"optimizer": "Adam", "dtype": "float32", "elements": 1000, "counts": [25, 50, 100],
          "rows": {"fastoptim": row(-0.3), "torch_fused": row(7.5)},
          "speedup": {"torch_fused": 2.0}}
    assert bench.verdict_many_arrays(ma) == ["each extra array adds ~0 µs (torch fused 7.50 µs)"]
    table = {line.split()[0]: line.split() for line in bench.format_many_arrays(ma)[4:]}
    assert table["fastoptim"][1:] == ["100±1%"] * 4 + ["~0"]
    assert table["torch_fused"][1:] == ["100±1%"] * 4 + ["7.50", "2.00×"]
