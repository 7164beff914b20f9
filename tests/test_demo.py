"""``make demo``'s script: its side-by-side picture, and backend timings that are interleaved, summarised by their
median and flagged when the machine's load or their spread makes them unreliable."""

from __future__ import annotations

import pytest
from PIL import Image

from ale_pipeline import demo
from tests.tiny_models import tiny_ale_pipeline


def test_demo_writes_the_side_by_side_picture_and_the_timing_table(tmp_path, monkeypatch, capsys):
    seen = {}

    def load(model, device, dtype, **options):
        seen.update(options)
        return tiny_ale_pipeline()

    monkeypatch.setattr(demo, "load_pipeline", load)
    argv = ["--out", str(tmp_path), "--steps", "2", "--longest-side", "64", "--device", "cpu", "--repeats", "1"]
    assert demo.main([*argv, "--timing-size", "32", "--timing-steps", "1"]) == 0
    assert seen["fallback"] == "sd-shaped"  # offline, the demo still runs
    sheet = Image.open(tmp_path / "ale_demo.png")
    edited = Image.open(tmp_path / "edited.png")
    assert edited.size == (64, 40)  # the example's 600 x 400, longest side 64, multiples of 8
    assert sheet.size == (6 * 64 + 5 * 4, 40 + 18)  # source, masks, result and three attention maps, titled
    out = capsys.readouterr().out
    assert "model: random tiny model | 64x40 px | 2 steps" in out
    assert "1 interleaved repeats per backend after a warm-up, at 32x24 px and 1 steps (smaller than" in out
    assert "| reference (published, materialised) |" in out and "| auto (fused ops) |" in out
    assert "load average (1 min): " in out


def test_backends_are_timed_interleaved_after_a_warm_up(monkeypatch):
    calls = []
    durations = {"reference": [4.0, 6.0, 5.0], "auto": [2.0, 2.5, 2.25]}
    now = [0.0]

    def run(backend):
        calls.append(backend)
        if len(calls) > 2:  # the warm-ups take no time on this clock
            now[0] += durations[backend][(len(calls) - 3) // 2]

    monkeypatch.setattr(demo.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(demo, "load_average", lambda: 0.5)
    timing = demo.time_backends(run, ("reference", "auto"), repeats=3)
    assert calls == ["reference", "auto"] + ["reference", "auto"] * 3
    assert timing.seconds == durations
    assert timing.median("reference") == 5.0 and timing.median("auto") == 2.25
    assert timing.speedup("auto") == pytest.approx(5.0 / 2.25) and timing.speedup("reference") == 1.0
    assert timing.spread("reference") == pytest.approx(0.4) and timing.spread("auto") == pytest.approx(0.5 / 2.25)
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        demo.time_backends(run, repeats=0)


@pytest.mark.parametrize(
    "load, seconds, reason",
    [
        (1.0, {"reference": [5.0, 5.1, 5.05], "auto": [2.0, 2.02, 2.01]}, None),
        (3.5, {"reference": [5.0, 5.1, 5.05], "auto": [2.0, 2.02, 2.01]}, "load average 3.50 above the 2 cores"),
        (1.0, {"reference": [5.0, 7.0, 5.05], "auto": [2.0, 2.02, 2.01]}, "repeats spread more than 20% (reference"),
        (None, {"reference": [5.0], "auto": [2.0]}, None),
    ],
)
def test_unreliable_timings_are_said_so_in_one_line(load, seconds, reason):
    timing = demo.Timing(seconds, load, cores=2)
    text = demo.render_timing(timing, "test")
    warnings = [line for line in text.splitlines() if "unreliable" in line]
    if reason is None:
        assert timing.unreliable() is None and not warnings
    else:
        assert len(warnings) == 1 and reason in warnings[0]
    assert f"| auto (fused ops) | {timing.median('auto'):.2f} |" in text
    assert f"| {timing.speedup('auto'):.2f}x |" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--repeats", "0"], "--repeats must be at least 1, got 0"),
        (["--timing-size", "4"], "--timing-size must be at least 8, got 4"),
    ],
)
def test_bad_options_are_one_line_before_any_model_loads(argv, message, monkeypatch, capsys):
    monkeypatch.setattr(demo, "load_pipeline", lambda *a, **k: pytest.fail("loaded a model"))
    assert demo.main(argv) == 2
    assert capsys.readouterr().err == f"demo: error: {message}\n"
