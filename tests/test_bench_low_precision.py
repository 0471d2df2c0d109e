"""The "low precision" section of `python -m fastoptim bench` (--low-precision, --full):
what it measures, its report and the issue's goals; timings are tiny, only the shape of
the output and the bookkeeping are checked."""
import json

import numpy as np
import pytest

from conftest import needs_kernels
from fastoptim.cli import bench, main
from fastoptim.cli import bench_low_precision as low

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)

SECTION = [s for s in bench.SECTIONS if s.key == "low_precision"]


def test_bytes_per_element_of_each_layout():
    """param read and written, grad read, two moments read and written, copy written."""
    expected = {"float32": 4 + 4 + 4 + 16, "bf16_moments": 4 + 4 + 4 + 8, "bf16": 2 + 2 + 2 + 8,
                "bf16_stochastic": 14, "master": 4 + 4 + 2 + 16 + 2}
    assert {layout.key: layout.bytes_per_element() for layout in low.LAYOUTS} == expected


@needs_kernels
@pytest.mark.parametrize("key", [layout.key for layout in low.LAYOUTS])
def test_each_layout_steps_its_own_dtypes_and_its_limit_moves_them_unchanged(key):
    layout = low.BY_KEY[key]
    made = low.make_step(layout, 3000)
    opt = made.optimizer
    assert opt.params[0].dtype == np.dtype(np.float32 if layout.param == "float32" else BF16)
    assert opt.state[0]["exp_avg"].dtype == (BF16 if layout.state == "bfloat16" else np.float32)
    assert (opt._copies is not None) == (layout.copy is not None)
    assert opt.rounding == layout.rounding
    before = [a.copy() for a in (opt.params[0], opt.state[0]["exp_avg_sq"])]
    made.limit()                               # adds zeros: the buffers keep their bits
    assert all((a.view(np.uint8) == b.view(np.uint8)).all()
               for a, b in zip(before, (opt.params[0], opt.state[0]["exp_avg_sq"])))
    made.step()
    assert (opt.params[0] != before[0]).any()


@needs_kernels
def test_the_section_reports_every_layout_and_reads_as_text():
    plan = bench.PLANS["quick"]._replace(low_precision_sizes=(1000,),
                                         budget=bench.Budget(0.002, 3, 3))
    report = bench.run(plan, sections=SECTION, use_torch=False)
    json.dumps(report)
    rows = report["low_precision"]
    assert [r["layout"] for r in rows] == [layout.key for layout in low.LAYOUTS]
    for r in rows:
        median, q1, q3 = r["ns_per_element_quartiles"]["fastoptim"]
        assert 0 < q1 <= median <= q3 and median == pytest.approx(r["ns_per_element"])
        assert r["pct_of_limit"] > 0 and r["speedup"][low.TORCH_KEY] is None   # no torch
    assert rows[0]["speedup"]["float32"] == 1.0
    text = bench.format_report(report, SECTION)
    for layout in low.LAYOUTS:
        assert layout.label in text
    assert "goal:" not in text        # the goals are at 1M and 30M


def test_the_goals_from_hand_made_rows():
    def row(key, n, float32=None, torch=None):
        return {"layout": key, "n": n, "speedup": {"float32": float32, low.TORCH_KEY: torch}}

    rows = [row("bf16_moments", 30_000_000, float32=1.3), row("bf16", 30_000_000, torch=0.97),
            row("bf16", 1_000_000, torch=1.6), row("master", 30_000_000, float32=0.96)]
    goals = low.targets(rows)
    assert [(g["goal"].split()[0], g["n"], g["met"]) for g in goals] == [
        ("float32", 30_000_000, True), ("all-bfloat16", 30_000_000, False),
        ("all-bfloat16", 1_000_000, True), ("float32", 30_000_000, True)]   # 0.96 >= 1/1.05
    assert low.verdict(rows) == ["low precision: 3 of 4 goals met (not: all-bfloat16 Adam "
                                 "vs torch fused bfloat16 at 30M)"]
    assert low.targets([row("master", 30_000_000, float32=0.95)])[0]["met"] is False


@needs_kernels
@pytest.mark.parametrize("flags, sizes", [
    ([], ()), (["--quick"], ()), (["--full"], (1_000_000, 30_000_000)),
    (["--low-precision"], (1_000_000, 30_000_000)),
    (["--quick", "--low-precision"], (1_000_000, 30_000_000))])
def test_the_section_runs_with_full_or_its_flag(monkeypatch, flags, sizes):
    seen = {}
    monkeypatch.setattr(bench, "run", lambda plan, **options: seen.update(plan=plan) or {})
    monkeypatch.setattr(bench, "format_report", lambda report: "")
    assert main(["bench", *flags]) == 0
    assert seen["plan"].low_precision_sizes == sizes
