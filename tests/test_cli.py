"""``ale-edit`` on a tiny random pipeline (injected loader, no weights): outputs, maps, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ale_pipeline import DEFAULT_MODEL
from ale_pipeline.automask import AutoMasks, GroundedSAM
from ale_pipeline.cli import main
from tests.tiny_models import tiny_ale_pipeline

HEIGHT, WIDTH = 48, 64
FAST = ["--steps", "2", "--longest-side", "64"]


@pytest.fixture(scope="module")
def pipe():
    pipeline = tiny_ale_pipeline()
    return pipeline


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """An image and two box masks (non-square, with a background border) as PNG files."""
    image = (np.random.default_rng(0).random((HEIGHT, WIDTH, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "room.png")
    for k, name in enumerate(["couch", "floor"]):
        mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        mask[6 + 5 * k : 24 + 5 * k, 6 + 20 * k : 22 + 20 * k] = 255
        Image.fromarray(mask).save(tmp_path / f"{name}.png")
    return dict(image=tmp_path / "room.png", couch=tmp_path / "couch.png", floor=tmp_path / "floor.png")


def cli_args(files, out, *extra, edits=("couch=>crimson-colored couch",), masks=("couch",)) -> list[str]:
    args = [str(files["image"])]
    for e in edits:
        args += ["--edit", e]
    for m in masks:
        args += ["--mask", str(files.get(m, m))]
    return [*args, "--out", str(out), *FAST, *extra]


def run(args, pipe=None, loader=None, masker=None) -> int:
    return main(args, load_pipeline=loader or (lambda *_: pipe), load_masker=masker)


def assert_one_line_error(capsys, pattern: str, prefix: str = "ale-edit: error: ") -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix) and "Traceback" not in err, err
    assert pattern in lines[0], lines[0]
    return lines[0]


def test_writes_the_edited_image_and_reports_it(pipe, files, tmp_path, capsys):
    out = tmp_path / "edited.png"
    assert run(cli_args(files, out), pipe) == 0
    with Image.open(out) as edited:
        assert edited.size == (WIDTH, HEIGHT) and edited.mode == "RGB"
    stdout = capsys.readouterr().out.strip().splitlines()
    assert len(stdout) == 1 and str(out) in stdout[0] and " s" in stdout[0]


def test_the_loader_gets_model_device_and_dtype(pipe, files, tmp_path):
    seen = []

    def loader(*args):
        seen.append(args)
        return pipe

    assert run(cli_args(files, tmp_path / "a.png"), loader=loader) == 0
    assert run(cli_args(files, tmp_path / "b.png", "--model", "/models/lcm", "--dtype", "bfloat16"), loader=loader) == 0
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    default_dtype = torch.float16 if torch.cuda.is_available() else torch.float32
    assert seen == [(DEFAULT_MODEL, default_device, default_dtype), ("/models/lcm", default_device, torch.bfloat16)]


def test_save_maps_writes_masks_and_overlay(pipe, files, tmp_path):
    out, maps = tmp_path / "edited.jpg", tmp_path / "maps" / "run1"  # the folder is created, parents too
    edits = ("couch=>crimson-colored couch", "floor=>floor made of marble")
    assert run(cli_args(files, out, "--save-maps", str(maps), edits=edits, masks=("couch", "floor")), pipe) == 0
    with Image.open(out) as edited:
        assert edited.format == "JPEG"
    names = {p.name for p in maps.iterdir()}
    # Attention heatmaps come too where the pipeline can return them (``return_attention_maps``).
    assert {"mask_0_couch.png", "mask_1_floor.png", "masks_overlay.png"} <= names
    assert names <= {"mask_0_couch.png", "mask_1_floor.png", "masks_overlay.png", "attention_0_couch.png",
                     "attention_1_floor.png"}  # fmt: skip
    for name in names:
        with Image.open(maps / name) as picture:
            assert picture.size == (WIDTH, HEIGHT)
    for k, name in enumerate(["mask_0_couch.png", "mask_1_floor.png"]):
        with Image.open(maps / name) as mask:
            assert mask.size == (WIDTH, HEIGHT) and mask.mode == "L"
            values = np.array(mask)
        assert set(np.unique(values)) == {0, 255}
        with Image.open(files[["couch", "floor"][k]]) as raw:
            inside = np.array(raw) > 0
        assert (values[inside] == 255).all() and (values == 255).sum() > inside.sum()  # dilated, not raw
    with Image.open(maps / "masks_overlay.png") as overlay, Image.open(files["image"]) as source:
        assert overlay.size == (WIDTH, HEIGHT) and overlay.mode == "RGB"
        tinted = np.array(overlay).astype(int) != np.array(source).astype(int)
    assert tinted[10, 10].any() and not tinted[HEIGHT - 1, WIDTH - 1].any()  # in a mask / in the background


def test_attention_maps_are_written_when_the_pipeline_returns_them(pipe, files, tmp_path):
    def with_attention(*args, **kwargs):
        result = pipe(*args, **kwargs)
        result.attention_maps = torch.rand(1, HEIGHT // 8, WIDTH // 8)  # lower resolution than the image
        return result

    maps = tmp_path / "maps"
    assert (
        run(cli_args(files, tmp_path / "edited.png", "--save-maps", str(maps)), loader=lambda *_: with_attention) == 0
    )
    with Image.open(maps / "attention_0_couch.png") as heat:
        assert heat.size == (WIDTH, HEIGHT) and heat.mode == "RGB"


def test_existing_out_is_kept_without_force_and_replaced_with_it(pipe, files, tmp_path, capsys):
    out = tmp_path / "edited.png"
    out.write_bytes(b"precious")
    assert run(cli_args(files, out), pipe) == 2
    assert_one_line_error(capsys, "--force")
    assert out.read_bytes() == b"precious"

    assert run(cli_args(files, out, "--force"), pipe) == 0
    with Image.open(out) as edited:
        assert edited.size == (WIDTH, HEIGHT)
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


@pytest.mark.parametrize("target", ["image", "couch"])
def test_out_never_overwrites_an_input_even_with_force(pipe, files, capsys, target):
    before = files[target].read_bytes()
    assert run(cli_args(files, files[target], "--force"), pipe) == 2
    assert_one_line_error(capsys, "refusing to overwrite an input")
    assert files[target].read_bytes() == before


def test_save_maps_never_overwrites_an_input(pipe, files, tmp_path, capsys):
    (tmp_path / "mask_0_couch.png").write_bytes(files["couch"].read_bytes())
    args = cli_args(
        files, tmp_path / "edited.png", "--save-maps", str(tmp_path), masks=(tmp_path / "mask_0_couch.png",)
    )
    assert run(args, pipe) == 2
    assert_one_line_error(capsys, "which is an input")


@pytest.mark.parametrize(
    "change, pattern",
    [
        (dict(edits=("couch crimson couch",)), 'must be "SOURCE=>TARGET"'),
        (dict(edits=("=>crimson couch",)), "empty source phrase"),
        (dict(edits=("couch=>red couch", "floor=>marble floor")), "got 2 --edit but 1 --mask"),
        (dict(masks=("couch", "floor")), "got 1 --edit but 2 --mask"),
        (dict(masks=("missing.png",)), "no such mask file"),
        (dict(masks=("empty",)), "is empty"),
        (dict(masks=("full",)), "cover the whole image"),
        (dict(masks=("room.txt",)), "cannot read"),
        (dict(image="missing.png"), "image not found"),
        (dict(out="no/such/folder/edited.png"), "does not exist"),
        (dict(out="edited.unknown"), "cannot tell an image format"),
        (dict(extra=("--steps", "0")), "--steps must be at least 1"),
        (dict(extra=("--self-replace-steps", "1.5")), "--self-replace-steps must lie in [0, 1]"),
        (dict(extra=("--backend", "fast")), "invalid choice"),
        (dict(extra=("--steps", "many")), "invalid int value"),
    ],
)
def test_user_mistakes_are_one_line_errors(pipe, files, tmp_path, capsys, change, pattern):
    Image.fromarray(np.zeros((HEIGHT, WIDTH), dtype=np.uint8)).save(tmp_path / "empty.png")
    Image.fromarray(np.full((HEIGHT, WIDTH), 255, dtype=np.uint8)).save(tmp_path / "full.png")
    (tmp_path / "room.txt").write_text("not an image")
    files = {**files, **{name: tmp_path / f"{name}.png" for name in ("empty", "full")}}
    files["room.txt"] = tmp_path / "room.txt"
    if "image" in change:
        files["image"] = tmp_path / change["image"]
    loaded = []
    args = cli_args(
        files,
        tmp_path / change.get("out", "edited.png"),
        *change.get("extra", ()),
        edits=change.get("edits", ("couch=>crimson-colored couch",)),
        masks=[files.get(m, tmp_path / m) if isinstance(m, str) else m for m in change.get("masks", ("couch",))],
    )
    assert run(args, loader=lambda *a: loaded.append(a) or pipe) == 2
    assert_one_line_error(capsys, pattern)
    assert not loaded  # every mistake here is caught before the (slow) model load
    assert not (tmp_path / "edited.png").exists()


def test_errors_raised_by_the_pipeline_are_one_line(files, tmp_path, capsys):
    def failing(*_args, **_kwargs):
        raise ValueError("the target prompt is too long\n(more than 77 tokens)")

    assert run(cli_args(files, tmp_path / "edited.png"), loader=lambda *_: failing) == 2
    assert_one_line_error(capsys, "the target prompt is too long (more than 77 tokens)")
    assert not (tmp_path / "edited.png").exists()


def test_cuda_requested_without_cuda_is_an_error(pipe, files, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run(cli_args(files, tmp_path / "edited.png", "--device", "cuda"), pipe) == 2
    assert_one_line_error(capsys, "no CUDA device")


def test_model_that_cannot_be_loaded_is_one_line(files, tmp_path, capsys):
    def offline(model, device, dtype):
        raise OSError(
            f"We couldn't connect to 'https://huggingface.co' to load the files of {model},\n"
            "and couldn't find them in the cached files."
        )

    assert run(cli_args(files, tmp_path / "edited.png"), loader=offline) == 2
    line = assert_one_line_error(capsys, "pass --model with a local diffusers folder")
    assert line.startswith(f"ale-edit: error: cannot load model '{DEFAULT_MODEL}': We couldn't connect")
    assert not (tmp_path / "edited.png").exists()


def test_default_loader_on_a_folder_without_a_model_is_one_line(files, tmp_path, capsys):
    """The real ``from_pretrained`` on a local folder: fails without any network access."""
    (tmp_path / "not-a-model").mkdir()
    assert main(cli_args(files, tmp_path / "edited.png", "--model", str(tmp_path / "not-a-model"))) == 2
    assert_one_line_error(capsys, "cannot load model")


def test_default_loader_loads_a_local_diffusers_folder(pipe, files, tmp_path, capsys):
    """The real ``from_pretrained`` path, offline: the tiny pipeline saved to a folder and loaded by ``--model``."""
    pipe.save_pretrained(tmp_path / "model")
    out = tmp_path / "edited.png"
    assert main(cli_args(files, out, "--model", str(tmp_path / "model"), "--device", "cpu")) == 0
    with Image.open(out) as edited:
        assert edited.size == (WIDTH, HEIGHT)
    assert "Traceback" not in capsys.readouterr().err


def test_default_loader_on_a_missing_folder_names_it(files, tmp_path, capsys):
    assert main(cli_args(files, tmp_path / "edited.png", "--model", str(tmp_path / "nowhere"))) == 2
    assert_one_line_error(capsys, "no such folder", prefix="ale-edit: error: cannot load model")


def test_mask_value_accepts_minus_infinity_as_a_separate_argument(files, tmp_path):
    seen = {}

    def recording(*args, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    assert run(cli_args(files, tmp_path / "edited.png", "--mask-value", "-inf"), loader=lambda *_: recording) == 2
    assert seen["mask_value"] == float("-inf")


def test_unexpected_errors_are_not_hidden(files, tmp_path):
    def broken(*_):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run(cli_args(files, tmp_path / "edited.png"), loader=broken)


def test_help_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "ale_pipeline.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ale-edit") and "--save-maps" in result.stdout


# --- --auto-mask -------------------------------------------------------------------------------------------------

TWO_EDITS = ("couch=>crimson-colored couch", "floor=>floor made of marble")


def auto_args(files, out, method, *extra) -> list[str]:
    args = [str(files["image"])]
    for e in TWO_EDITS:
        args += ["--edit", e]
    return [*args, "--auto-mask", method, "--out", str(out), *FAST, *extra]


def changed_pixels(picture: Path, source: Path) -> np.ndarray:
    with Image.open(picture) as a, Image.open(source) as b:
        return (np.array(a).astype(int) != np.array(b).astype(int)).any(-1)


def test_auto_mask_attention_edits_and_saves_the_masks_found(pipe, files, tmp_path, capsys):
    out, maps = tmp_path / "edited.png", tmp_path / "maps"
    assert run(auto_args(files, out, "attention", "--save-maps", str(maps)), pipe) == 0
    with Image.open(out) as edited:
        assert edited.size == (WIDTH, HEIGHT)
    assert "masks by attention" in capsys.readouterr().out
    names = {p.name for p in maps.iterdir()}
    assert {"found_0_couch.png", "found_1_floor.png", "found_masks_overlay.png", "mask_0_couch.png"} <= names
    # The overlays show exactly the masks the attention path finds for this image, size and seed.
    found = pipe.attention_masks(str(files["image"]), ["couch", "floor"], num_inference_steps=2, longest_side=64)
    for k, name in enumerate(["found_0_couch.png", "found_1_floor.png"]):
        assert np.array_equal(changed_pixels(maps / name, files["image"]), found.masks[k].numpy())
    assert np.array_equal(changed_pixels(maps / "found_masks_overlay.png", files["image"]), found.masks.any(0).numpy())


def test_auto_mask_dino_sam_loads_the_detector_and_segmenter_given(pipe, files, tmp_path, capsys):
    seen = []

    def load_masker(detector, segmenter, device, box_threshold, text_threshold):
        seen.append((detector, segmenter, box_threshold, text_threshold))

        def find(image, phrases):
            masks = torch.zeros(2, *image.size[::-1], dtype=torch.bool)
            masks[0, 6:24, 6:22], masks[1, 30:44, 10:60] = True, True
            return AutoMasks(masks, tuple(phrases), "dino-sam")

        return find

    out, maps = tmp_path / "edited.png", tmp_path / "maps"
    extra = ("--detector", "/models/dino", "--segmenter", "sam-id", "--box-threshold", "0.3", "--save-maps", str(maps))
    assert run(auto_args(files, out, "dino-sam", *extra), pipe, masker=load_masker) == 0
    assert seen == [("/models/dino", "sam-id", 0.3, 0.4)]
    assert "masks by dino-sam" in capsys.readouterr().out
    assert changed_pixels(maps / "found_0_couch.png", files["image"])[6:24, 6:22].all()


def test_auto_mask_dino_sam_with_no_detection_names_the_phrase_before_loading_the_pipeline(files, tmp_path, capsys):
    from tests.tiny_grounded_sam import steer_detector, tiny_models

    det, *_ = tiny_models()
    logits = torch.full((1, 8), -10.0)
    logits[0, 1] = 5.0  # only "couch" is found
    loaded = []
    with steer_detector(det, logits, torch.tensor([[0.3, 0.3, 0.2, 0.2]])):
        code = run(
            auto_args(files, tmp_path / "edited.png", "dino-sam"),
            loader=lambda *a: loaded.append(a),
            masker=lambda d, s, device, box, text: GroundedSAM(*tiny_models(), box, text),
        )
    assert code == 2 and not loaded
    assert_one_line_error(capsys, "found no 'floor' in the image")


def test_auto_mask_dino_sam_without_its_models_is_one_line(files, tmp_path, capsys):
    """The real loader, offline: a folder that holds no model is named, before the pipeline loads."""
    (tmp_path / "not-a-model").mkdir()
    loaded = []
    args = auto_args(files, tmp_path / "edited.png", "dino-sam", "--detector", str(tmp_path / "not-a-model"))
    assert run(args, loader=lambda *a: loaded.append(a)) == 2
    line = assert_one_line_error(capsys, "pass --detector and --segmenter with local folders")
    assert line.startswith(f"ale-edit: error: cannot load the detector '{tmp_path / 'not-a-model'}'") and not loaded


@pytest.mark.parametrize(
    "extra, pattern",
    [
        (("--mask", "couch.png"), "give either --mask or --auto-mask attention, not both"),
        (("--mask-threshold", "1.5"), "--mask-threshold must lie in (0, 1]"),
        (("--mask-threshold", "high"), "must be a number in (0, 1] or otsu"),
        (("--box-threshold", "-0.1"), "--box-threshold must lie in [0, 1]"),
    ],
)
def test_auto_mask_mistakes_are_one_line_errors(pipe, files, tmp_path, capsys, extra, pattern):
    loaded = []
    assert run(auto_args(files, tmp_path / "edited.png", "attention", *extra), loader=lambda *a: loaded.append(a)) == 2
    assert_one_line_error(capsys, pattern)
    assert not loaded


def test_without_masks_the_error_suggests_auto_mask(files, tmp_path, capsys):
    args = [str(files["image"]), "--edit", "couch=>red couch", "--out", str(tmp_path / "edited.png")]
    assert run(args, loader=lambda *a: None) == 2
    assert_one_line_error(capsys, "got 1 --edit but 0 --mask")
    capsys.readouterr()
    assert main(["--help"]) == 0
    assert "--auto-mask {dino-sam,attention}" in capsys.readouterr().out


def test_save_maps_keeps_existing_files_without_force(pipe, files, tmp_path, capsys):
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "masks_overlay.png").write_bytes(b"precious")
    args = cli_args(files, tmp_path / "edited.png", "--save-maps", str(maps))
    assert run(args, loader=lambda *a: pytest.fail("loaded although the maps would be overwritten")) == 2
    assert_one_line_error(capsys, f"--save-maps: '{maps / 'masks_overlay.png'}' already exists; pass --force")
    assert (maps / "masks_overlay.png").read_bytes() == b"precious" and not (tmp_path / "edited.png").exists()
    assert run([*args, "--force"], pipe) == 0
    with Image.open(maps / "masks_overlay.png") as overlay:
        assert overlay.size == (WIDTH, HEIGHT)
    capsys.readouterr()
    assert main(["--help"]) == 0
    assert "without --force" in " ".join(capsys.readouterr().out.split())


def test_every_default_comes_from_the_edit_configuration():
    from ale_pipeline.cli import build_parser
    from ale_pipeline.config import DEFAULT_MASK_THRESHOLD, DEFAULTS

    args = build_parser().parse_args(["room.png", "--edit", "a=>b", "--out", "o.png"])
    assert (args.steps, args.seed, args.longest_side, args.mask_value, args.dilation, args.backend) == (
        DEFAULTS.num_inference_steps, DEFAULTS.seed, DEFAULTS.longest_side, DEFAULTS.mask_value, DEFAULTS.dilation,
        DEFAULTS.attention_backend,
    )  # fmt: skip
    assert args.mask_threshold == DEFAULT_MASK_THRESHOLD and args.model == DEFAULT_MODEL
    assert args.self_replace_steps is None and args.edit_type is None  # the pipeline applies the presets
