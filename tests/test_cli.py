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


@needs_kernels
def test_bench_json_has_every_field(capsys):
    assert main(TINY_BENCH + ["--json"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    header = report["header"]
    for key in ("date", "cpu", "simd_target", "threads", "numpy", "torch", "fastoptim"):
        assert key in header
    assert header["simd_target"] == kernels.build_info()["simd_target"]
    assert [(r["optimizer"], r["dtype"], r["n"]) for r in report["rows"]] == [
        ("Adam", "float32", 1000), ("Adam", "float64", 1000)]
    for row in report["rows"]:
        assert row["values_per_element"] == 7
        assert row["bytes_per_step"] == 7 * np.dtype(row["dtype"]).itemsize * 1000
        ns = row["ns_per_element"]
        assert set(ns) == {"fastoptim", "limit", "numpy", "torch_fused", "torch_foreach"}
        assert ns["fastoptim"] > 0 and ns["limit"] > 0 and ns["numpy"] > 0
        assert row["gb_per_s"]["fastoptim"] > 0 and row["pct_of_limit"] > 0
        assert row["speedup"]["numpy"] > 0
        if header["torch"]:
            assert row["speedup"]["torch_fused"] > 0 and row["speedup"]["torch_foreach"] > 0
    per_call = report["per_call"]
    assert per_call["n"] == 1000
    assert {"fastoptim", "kernel", "limit", "numpy"} <= set(per_call["us_per_call"])
    many = report["many_arrays"]
    assert (many["arrays"], many["n"]) == (100, 10_000)
    assert set(many["rows"]["fastoptim"]) == {"us_per_step", "us_per_array", "us_one_array",
                                              "us_added_per_array"}
    assert "rows" in report["ewma"] or "skipped" in report["ewma"]
    assert "fastoptim bench [" in err   # the progress line


@needs_kernels
def test_bench_table_via_python_dash_m():
    result = subprocess.run(
        [sys.executable, "-m", "fastoptim", *TINY_BENCH, "--optimizers", "SGD", "--dtypes",
         "float32", "--no-torch"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "SIMD target: " + kernels.build_info()["simd_target"] in result.stdout
    assert any(line.startswith("SGD ") and "float32" in line and "1k" in line
               for line in result.stdout.splitlines())
    assert "Per call:" in result.stdout and "Many arrays:" in result.stdout


@needs_kernels
def test_bench_vs_torch_adds_the_adapter_comparison(capsys):
    pytest.importorskip("torch")
    assert main(TINY_BENCH + ["--json", "--no-torch", "--vs", "torch"]) == 0
    rows = json.loads(capsys.readouterr().out)["torch_adapter"]
    assert {row["variant"] for row in rows} >= {"fastoptim", "torch"}
    assert all(row["ns_per_element"] > 0 for row in rows)


def test_bench_refuses_bad_arguments(capsys):
    for bad in (["--sizes", "1.5"], ["--sizes", "abc"], ["--optimizers", "Adamax"],
                ["--dtypes", "float16"], ["--threads", "0"], ["--vs", "jax"]):
        with pytest.raises(SystemExit) as exc:
            main(["bench", "--quick", *bad])
        assert exc.value.code == 2, bad
    assert "Adamax" in capsys.readouterr().err


def test_parse_size():
    assert [parse_size(s) for s in ("1000", "1_000", "1e3", "3e7")] == [
        1000, 1000, 1000, 30_000_000]


# -- verify -----------------------------------------------------------------------------------

QUICK_VERIFY = ["verify", "--sizes", "7", "1000", "--steps", "2"]


def _rows(out, dtypes=2):
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
    assert all(ulps == ["0", "0"] for ulps in rows.values())
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

@needs_kernels
@pytest.mark.parametrize("n", [0, 1, 7, 1000, 2 * 65536 + 37])
@pytest.mark.parametrize("count", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_movement_loop_adds_read_only_to_each_updated(dtype, count, n):
    rng = np.random.default_rng(n + count)
    updated = [rng.standard_normal(n).astype(dtype) for _ in range(count)]
    read_only = rng.standard_normal(n).astype(dtype)
    expected = [u + read_only for u in updated]
    before = read_only.copy()
    kernels.movement_loop(updated, (read_only,))
    for u, e in zip(updated, expected):
        assert_same_bits(u, e, "updated")
    assert_same_bits(read_only, before, "read_only")
    kernels.movement_loop(tuple(updated), [read_only], threads=1)
    for u, e in zip(updated, expected):
        assert_same_bits(u, e + read_only, "updated, second call, one thread")


def _bad_calls():
    f32 = lambda n=8: np.ones(n, np.float32)  # noqa: E731
    ro = np.ones(8, np.float32)
    ro.flags.writeable = False
    same = f32()
    yield "no updated", lambda: ([], (f32(),)), ValueError, "updated must hold 1 to 4"
    yield "five updated", lambda: ([f32() for _ in range(5)], (f32(),)), ValueError, "1 to 4"
    yield "no read_only", lambda: ([f32()], ()), ValueError, "exactly 1"
    yield "two read_only", lambda: ([f32()], (f32(), f32())), ValueError, "exactly 1"
    yield "bare array", lambda: (f32(), (f32(),)), TypeError, "sequences of arrays"
    yield "None", lambda: ([f32(), None], (f32(),)), TypeError, r"updated\[1\]"
    yield "list", lambda: ([[1.0, 2.0]], (f32(2),)), TypeError, r"updated\[0\]"
    yield "int", lambda: ([np.ones(8, np.int64)], (f32(),)), TypeError, "float32 or float64"
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
