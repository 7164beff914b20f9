"""``make demo``'s script: falls back to a random model offline and writes its side-by-side picture."""

from __future__ import annotations

import torch
from PIL import Image

from ale_pipeline import demo
from tests.tiny_models import tiny_ale_pipeline


def test_demo_writes_the_side_by_side_picture(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "load_pipeline", lambda *args: (tiny_ale_pipeline(), "tiny random model"))
    assert demo.main(["--out", str(tmp_path), "--steps", "2", "--longest-side", "64", "--device", "cpu"]) == 0
    sheet = Image.open(tmp_path / "ale_demo.png")
    edited = Image.open(tmp_path / "edited.png")
    assert edited.size == (64, 40)  # the example's 600 x 400, longest side 64, multiples of 8
    assert sheet.width == 6 * 64 + 5 * 4  # source, masks, result and three attention maps
    out = capsys.readouterr().out
    assert "| reference (published, materialised) |" in out and "| auto (fused ops) |" in out


def test_unreachable_weights_fall_back_to_a_random_sd_shaped_model(tmp_path, capsys):
    pipe, loaded = demo.load_pipeline(str(tmp_path / "no-such-model"), "cpu", torch.float32)
    assert loaded == "random SD-shaped model"
    assert {m.inner_dim // m.heads for n, m in pipe.unet.named_modules() if n.endswith("attn2")} == {
        40, 80, 160,
    }  # fmt: skip
    line = capsys.readouterr().out.strip().splitlines()
    assert len(line) == 1 and line[0].startswith("demo: no weights for")
