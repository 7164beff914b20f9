"""The benchmark harness: it flags a wrong implementation, times fairly and writes what report.py reads."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import harness


def _case(wrong_by: float) -> harness.Case:
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    return harness.Case(
        params={"n": 64},
        impls={
            "reference": lambda: lambda: x.softmax(-1),
            "good": lambda: lambda: torch.exp(x - x.logsumexp(-1, keepdim=True)),
            "wrong": lambda: lambda: x.softmax(-1) + wrong_by,
            "broken": lambda: lambda: 1 / 0,
        },
        dtype=torch.float32,
        oracle=lambda: x.double().softmax(-1),
    )


def test_runner_flags_an_error_above_the_policy_and_reports_failures():
    rows = {r.impl: r for r in harness.run_case(_case(1e-3), "cpu", repeats=3)}
    assert not rows["reference"].flagged and not rows["good"].flagged and rows["wrong"].flagged
    assert rows["broken"].error.startswith("ZeroDivisionError") and rows["broken"].time_ms is None
    assert rows["reference"].speedup == 1.0 and len(rows["good"].samples_ms) == 3
    notes = harness.error_notes(list(rows.values()))
    assert any(n.startswith("WARNING wrong n=64") for n in notes)


def test_interleaved_timing_rotates_the_order():
    calls = []
    runners = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    timings = harness.time_interleaved(runners, repeats=3)
    assert calls[:3] == list("abc") and calls[3:6] == list("bca")  # warm-up round, then rotated rounds
    assert all(len(t.samples_ms) == 3 for t in timings.values())
    assert harness.Timing([1.0, 2.0, 3.0, 4.0, 100.0]).median_ms == 3.0


def test_results_carry_the_environment(tmp_path):
    env = harness.finish(harness.environment("cpu", dtype="float32"))
    assert {"torch", "triton", "diffusers", "cpu", "threads", "load_avg_start", "load_avg_end"} <= set(env)
    rows = harness.run_case(_case(0.0), "cpu", repeats=1)
    harness.publish(env, "| t |", [r.as_dict() for r in rows], json_path=tmp_path / "r.json")
    payload = json.loads((tmp_path / "r.json").read_text())
    assert payload["environment"]["dtype"] == "float32" and payload["rows"][0]["n"] == 64


def test_reliability_warnings_name_a_busy_machine_and_noisy_repeats():
    env = {"cpu_count": 2, "load_avg_start": 5.0, "load_avg_end": 1.0}
    warnings = harness.reliability_warnings(env, [5.0, 40.0])
    assert len(warnings) == 2 and "load average 5.0" in warnings[0] and "40%" in warnings[1]
    assert harness.reliability_warnings({"cpu_count": 8, "load_avg_start": 1.0}, [5.0]) == []


def test_without_an_oracle_errors_are_against_the_baseline_wherever_it_stands():
    x = torch.ones(4)
    case = harness.Case(
        params={}, impls={"a": lambda: (lambda: x + 1), "base": lambda: (lambda: x)}, dtype=torch.float32,
        baseline="base",
    )  # fmt: skip
    rows = {r.impl: r for r in harness.run_case(case, "cpu", repeats=1)}
    assert rows["a"].max_err == 1.0 and rows["base"].max_err == 0.0 and not rows["a"].flagged


def test_edit_benchmarks_compare_every_name_with_the_first(tmp_path, one_torch_thread):
    """bench_edit and bench_edit_compiled share one row builder: each row holds its name under the script's own
    key, the first name is the baseline of speed-up and pixel difference, and both scripts run end to end."""
    from benchmarks import bench_edit, bench_edit_compiled

    common = ["--model", "tiny", "--sizes", "64", "--steps", "1", "--repeats", "1"]
    assert bench_edit.main([*common, "--backends", "reference", "torch", "--json", str(tmp_path / "e.json")]) == 0
    eager = json.loads((tmp_path / "e.json").read_text())["rows"]
    assert [r["backend"] for r in eager] == ["reference", "torch"]
    assert eager[0]["speedup"] == 1.0 and eager[0]["max_pixel_diff"] == 0.0
    assert eager[1]["max_pixel_diff"] < 1.0  # same edit, another backend: float rounding only
    assert all(r["peak_gb"] is None and r["peak_share"] is None for r in eager)  # CPU: no allocator peak

    variants = ["torch", "torch+compiled"]
    argv = [*common, "--variants", *variants, "--compile-backend", "eager", "--json", str(tmp_path / "c.json")]
    assert bench_edit_compiled.main(argv) == 0
    compiled = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert [r["variant"] for r in compiled] == variants and compiled[0]["speedup"] == 1.0
    assert compiled[1]["max_pixel_diff"] < 1.0


def test_size_rows_take_their_shares_from_the_first_name():
    from benchmarks.bench_edit import size_rows

    image = torch.zeros(1, 3, 4, 6)
    timings = {"a": harness.Timing([200.0]), "b": harness.Timing([100.0])}
    record = {"a": (image, 2.0), "b": (image + 1 / 255, 0.5)}
    a, b = size_rows(64, "variant", timings, record)
    assert (a["variant"], b["variant"], a["pixels"]) == ("a", "b", "6x4")
    assert (a["speedup"], b["speedup"], b["peak_share"], a["peak_share"]) == (1.0, 2.0, 0.25, 1.0)
    assert abs(b["max_pixel_diff"] - 1.0) < 1e-4 and b["seconds"] == 0.1


def test_sdxl_unet_benchmark_runs_each_variant_and_sizes_the_published_need(one_torch_thread):
    from benchmarks import bench_sdxl_unet as bench

    # SDXL base at 1024 px: two (4 entries x 10 heads, 4096, 4096) fp32 tensors at the 64 x 64 layers = 5 GiB.
    assert bench.published_math_gb(1024, "sdxl", torch.float32) == 5.0
    assert bench.published_math_gb(1024, "sdxl", torch.float16) == 2.5
    results = []
    for variant in ("sdpa", "ours", "reference", "reference-layer"):
        got = bench.worker(variant, 128, "tiny-xl", "float32", "cpu")
        assert got["ms"] > 0 and got["peak_mb"] >= 0, (variant, got)
        results.append(bench.Result(variant, got["ms"], got["peak_mb"], 1))
    table = bench.markdown(results, 0.0)
    assert table.count("\n") == 5 and "| sdpa |" in table and "| 1.00x |" in table
    missing = bench.markdown([bench.Result("reference", None, None, 0, "does not fit in 20 GB")], 1.5)
    assert "does not fit in 20 GB" in missing and "1536 needed" in missing


def test_dropin_runs_plot_together_and_the_plot_is_not_overwritten(tmp_path, capsys):
    from benchmarks import bench_dropin

    runs = []
    for size, steps in ((512, 8), (768, 2)):
        rows = [
            {"model": "sd15", "size": size, "variant": variant, "peak_extra_mb": mb, "unet_peak_extra_mb": mb / 2}
            for variant, mb in (("stock", size * 4.0), ("speed_up", size * 1.0))
        ]
        runs.append(tmp_path / f"run{size}.json")
        runs[-1].write_text(json.dumps({"environment": {"steps": steps}, "rows": [*rows, {"error": "skipped"}]}))
    bench_dropin.main(["--plot-from", *map(str, runs), "--out", str(tmp_path / "out")])
    plot = tmp_path / "out" / "bench_dropin_sizes.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = plot.stat().st_mtime_ns
    with pytest.raises(SystemExit) as refused:
        bench_dropin.main(["--plot-from", str(runs[0]), "--out", str(tmp_path / "out")])
    assert refused.value.code == 2 and "pass --force" in capsys.readouterr().err
    assert plot.stat().st_mtime_ns == before
    with pytest.raises(SystemExit):
        bench_dropin.main(["--plot-from", str(tmp_path / "nowhere.json"), "--out", str(tmp_path / "out"), "--force"])
    assert "no such file" in capsys.readouterr().err
