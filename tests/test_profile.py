"""``ale-profile``, the processors' stage ranges and the benchmark report: the tools users time things with."""

from __future__ import annotations

import json

import pytest
import torch

from ale_kernels import ops
from ale_kernels.diffusers import install_regional_processors
from ale_kernels.profiling import STAGES, enable_stage_ranges, stage_ranges_enabled
from ale_pipeline import profile
from tests.test_processors import ale_attention_kwargs, ale_inputs
from tests.tiny_models import tiny_sd15_unet


def _profiled_stage_names(unet, kwargs, sample, text) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with install_regional_processors(unet, backend="torch"), torch.no_grad():
            unet(sample, 500, text, cross_attention_kwargs=kwargs)
    return {e.key for e in prof.key_averages()} & set(STAGES)


def test_stage_ranges_appear_only_when_enabled():
    unet = tiny_sd15_unet()
    spec, sample, text = ale_inputs(2, (16, 16), 32)
    kwargs = ale_attention_kwargs(spec, inject_qk=True)
    assert not stage_ranges_enabled()
    assert _profiled_stage_names(unet, kwargs, sample, text) == set()
    enable_stage_ranges(True)
    try:
        names = _profiled_stage_names(unet, kwargs, sample, text)
    finally:
        enable_stage_ranges(False)
    # Every self-attention call injects and every cross-attention call is regional: no plain attention stage.
    assert names == {"ale::projections", "ale::cross_attention.regional", "ale::self_attention.qk_injection",
                     "ale::out_projection"}  # fmt: skip


def test_ale_profile_writes_a_trace_and_summary_and_refuses_to_overwrite(tmp_path, capsys):
    trace, summary = tmp_path / "trace.json", tmp_path / "summary.md"
    argv = ["--model", "tiny", "--steps", "3", "--size", "64", "--trace", str(trace), "--summary", str(summary)]
    assert profile.main(argv) == 0
    assert json.loads(trace.read_text())["traceEvents"]
    text = summary.read_text()
    assert "ale::self_attention.qk_injection" in text and "attention share" in text
    assert "ale-profile | model tiny" in capsys.readouterr().out
    before = trace.read_bytes()
    assert profile.main(argv) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert trace.read_bytes() == before


@pytest.mark.parametrize("argv, message", [(["--steps", "0"], "--steps must be at least 1")])
def test_ale_profile_bad_input_is_one_line(tmp_path, capsys, argv, message):
    assert profile.main([*argv, "--trace", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_auto_runs_the_shared_qk_kernel_only_for_narrow_heads(monkeypatch):
    monkeypatch.setattr(ops, "resolve_backend", lambda backend, device, dtype: "triton")
    narrow, wide = torch.empty(1, 1, 4, 40), torch.empty(1, 1, 4, 80)
    assert ops._resolve_shared_qk_backend("auto", narrow) == "triton"
    assert ops._resolve_shared_qk_backend("auto", wide) == "torch"
    assert ops._resolve_shared_qk_backend("triton", wide) == "triton"  # asked for by name: kept


def test_benchmark_report_writes_tables_and_plots(tmp_path):
    from benchmarks import report

    times = {(576, "reference"): 4.0, (576, "torch"): 2.0, (9216, "reference"): 60.0, (9216, "torch"): 20.0}
    benches = [
        {"group": f"op region_attention L={L} D=40", "name": impl, "stats": {"median": ms / 1e3},
         "extra_info": {"impl": impl, "L": L}}
        for (L, impl), ms in times.items()
    ]  # fmt: skip
    suite = {"machine_info": {"cpu": {"brand_raw": "test cpu"}}, "benchmarks": benches}
    processors = [{"variant": v, "image_size": px, "ms": 10.0, "peak_mb": mb, "note": ""}
                  for v, px, mb in (("reference", 256, 300.0), ("ours", 256, 20.0), ("ours", 384, 40.0))]  # fmt: skip
    (tmp_path / "suite.json").write_text(json.dumps(suite))
    (tmp_path / "proc.json").write_text(json.dumps(processors))
    out = tmp_path / "out"
    argv = ["--cpu-suite", str(tmp_path / "suite.json"), "--processors", str(tmp_path / "proc.json"), "--out", str(out)]
    assert report.main(argv) == 0
    text = (out / "report.md").read_text()
    assert "| torch | 20.00 | 3.00x |" in text and "| 256 px | reference | 10.0 | 300 |" in text
    for name in ("cpu_speedup_vs_latent.png", "cpu_memory_vs_resolution.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
