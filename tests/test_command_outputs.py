"""The commands as a user runs them twice: ``ale-edit --save-maps`` into one folder (refused, then ``--force``),
and ``ale-profile --backend`` reaching the pipeline with every backend ``ale-edit`` offers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ale_pipeline import profile
from ale_pipeline.cli import main as edit_main
from ale_pipeline.commands import BACKENDS
from tests.tiny_models import tiny_ale_pipeline

HEIGHT, WIDTH = 48, 64


@pytest.fixture(scope="module")
def pipe():
    return tiny_ale_pipeline()


def _inputs(folder: Path) -> list[str]:
    """``ale-edit`` arguments for a noise image and one box mask written into ``folder`` (no ``--out``)."""
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((HEIGHT, WIDTH, 3)) * 255).astype(np.uint8)).save(folder / "room.png")
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[6:24, 6:22] = 255
    Image.fromarray(mask).save(folder / "couch.png")
    return [str(folder / "room.png"), "--edit", "couch=>crimson-colored couch", "--mask", str(folder / "couch.png"),
            "--steps", "2", "--longest-side", "64"]  # fmt: skip


def test_a_second_save_maps_run_into_one_folder_is_refused_then_forced(pipe, tmp_path, capsys):
    base, maps = _inputs(tmp_path), tmp_path / "maps"
    first = [*base, "--out", str(tmp_path / "first.png"), "--save-maps", str(maps)]
    assert edit_main(first, load_pipeline=lambda *_: pipe) == 0
    written = {p.name: p.read_bytes() for p in maps.iterdir()}
    assert "mask_0_couch.png" in written
    capsys.readouterr()

    # Another seed, another --out, the same maps folder: one line naming the first file that would be rewritten.
    second = [*base, "--out", str(tmp_path / "second.png"), "--seed", "7", "--save-maps", str(maps)]
    assert edit_main(second, load_pipeline=lambda *_: pytest.fail("loaded although nothing may be written")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ale-edit: error: --save-maps: '{maps / 'mask_0_couch.png'}' already exists; pass --force to "
                   "overwrite it"]  # fmt: skip
    assert {p.name: p.read_bytes() for p in maps.iterdir()} == written
    assert not (tmp_path / "second.png").exists()

    for name in written:  # marks that only an overwrite removes
        (maps / name).write_bytes(b"stale")
    assert edit_main([*second, "--force"], load_pipeline=lambda *_: pipe) == 0
    assert (tmp_path / "second.png").exists()
    for name in written:
        with Image.open(maps / name) as picture:
            assert picture.size == (WIDTH, HEIGHT)


def test_help_of_the_commands_states_the_overwrite_rule(capsys):
    assert edit_main(["--help"]) == 0
    assert "never overwritten without --force" in " ".join(capsys.readouterr().out.split())
    assert profile.main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "never overwritten without --force" in text and "cpp" in text


class _FakePipeline:
    """Records what each edit call was given; does no work."""

    def __init__(self):
        self.calls: list[dict] = []

    def set_progress_bar_config(self, **_):
        pass

    def __call__(self, **kwargs):
        self.calls.append(kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ale_profile_backend_reaches_the_pipeline(tmp_path, monkeypatch, capsys, backend):
    fake, loaded = _FakePipeline(), []

    def loader(*args, **kwargs):
        loaded.append(args)
        return fake

    monkeypatch.setattr(profile, "load_pipeline", loader)
    argv = ["--backend", backend, "--device", "cpu", "--steps", "1", "--trace", str(tmp_path / "trace.json")]
    assert profile.main(argv) == 0
    assert loaded and len(fake.calls) == 2  # the warm-up and the profiled edit
    assert {call["attention_backend"] for call in fake.calls} == {backend}
    assert f"backend {backend}" in capsys.readouterr().out
