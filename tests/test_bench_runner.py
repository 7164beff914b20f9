"""The ALE-Bench runner and ``ale-bench run``: published layout, GT masks and presets, resuming after a crash,
and a 2-process ``accelerate launch`` giving the same files as one process (tiny random model, 6 cases)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ale_pipeline import DEFAULT_MODEL
from ale_pipeline.bench import load_bench
from ale_pipeline.bench.cli import main
from ale_pipeline.bench.runner import (
    FALLBACK_SELF_REPLACE_STEPS,
    ResultsMismatchError,
    injection_kwargs,
    run_bench,
    shard,
)
from tests.bench_data import BENCH
from tests.tiny_models import tiny_ale_pipeline

REPO = Path(__file__).resolve().parents[1]
IMAGE = "natural_img09"  # four objects, two names with spaces / hyphens ("yoga mat", "t-shirt")
#: (object count, edit type) folders of the small benchmark; color+object picks its preset from two types.
FOLDERS = [(1, "color"), (2, "material"), (3, "color+object")]
PER_FILE = 2
# The torch attention backend, not "auto": which backend "auto" picks on the CPU depends on what is built (the
# C++ kernel), and the runs compared here must compute alike.
FAST = dict(num_inference_steps=2, longest_side=64, attention_backend="torch")
FAST_ARGS = ["--steps", "2", "--longest-side", "64", "--backend", "torch", "--quiet"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Single-threaded CPU kernels: faster on a shared 2-core machine, and the same float reduction order as
    the launched processes (torchrun gives each OMP_NUM_THREADS=1), so results compare bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    """A 6-case benchmark cut from the shared sample: one image, its masks, the first two cases of three
    prompt files."""
    root = tmp_path_factory.mktemp("mini-bench")
    (root / "images").mkdir()
    (root / "images" / f"{IMAGE}.jpg").write_bytes((BENCH / "images" / f"{IMAGE}.jpg").read_bytes())
    (root / "masks" / IMAGE).mkdir(parents=True)
    for mask in (BENCH / "masks" / IMAGE).iterdir():
        (root / "masks" / IMAGE / mask.name).write_bytes(mask.read_bytes())
    for n, edit_type in FOLDERS:
        name = Path(str(n), edit_type, f"{IMAGE}_prompts.json")
        data = json.loads((BENCH / "prompts" / name).read_text())
        data["prompts"] = data["prompts"][:PER_FILE]
        (root / "prompts" / name).parent.mkdir(parents=True)
        (root / "prompts" / name).write_text(json.dumps(data, indent=4))
    return root


@pytest.fixture(scope="module")
def cases(mini):
    selected = load_bench(mini).cases
    assert len(selected) == len(FOLDERS) * PER_FILE
    return selected


@pytest.fixture(scope="module")
def pipe():
    pipeline = tiny_ale_pipeline()  # = the CLI's --random-model tiny
    return pipeline


@pytest.fixture(scope="module")
def reference(mini, tmp_path_factory) -> tuple[Path, str]:
    """One uninterrupted single-process ``ale-bench run`` over the small benchmark: (results folder, stdout)."""
    out = tmp_path_factory.mktemp("reference") / "results"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["run", "--bench", str(mini), "--out", str(out), "--random-model", "tiny", *FAST_ARGS])
    assert status == 0
    return out, stdout.getvalue()


class FakePipe:
    """Records each call and returns an 8x8 image; ``fail_at`` raises on that call (0-based)."""

    def __init__(self, fail_at: int | None = None):
        self.calls: list[tuple] = []
        self.fail_at = fail_at

    def __call__(self, image, edits, masks, **kwargs):
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise RuntimeError("simulated crash")
        self.calls.append((image, edits, masks, kwargs))
        return types.SimpleNamespace(images=[Image.new("RGB", (8, 8), (len(self.calls), 0, 0))])


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).copy()


def expected_files(cases) -> set[str]:
    names = {f"{c.n_objects}/{c.edit_type}/{c.image_name}/edit_{c.index}.png" for c in cases}
    return names | {f"{c.n_objects}/{c.edit_type}/{c.image_name}/prompt.json" for c in cases}


# ------------------------------------------------------------------------------------------------ the layout


def test_run_writes_the_published_layout(reference, cases, mini):
    out, stdout = reference
    assert files_under(out) == expected_files(cases)  # nothing else: no temporary files either
    for case in cases:
        with Image.open(case.result_path(out)) as image:
            assert image.format == "PNG" and image.mode == "RGB" and image.size == (64, 64)
    for n, edit_type in FOLDERS:
        copy = out / str(n) / edit_type / IMAGE / "prompt.json"
        assert copy.read_bytes() == (mini / "prompts" / str(n) / edit_type / f"{IMAGE}_prompts.json").read_bytes()
    assert stdout.strip().startswith("ale-bench: 6/6 cases done in ") and "6 edited now, 0 already there" in stdout


def test_each_case_gets_its_gt_masks_and_the_injection_preset(cases, tmp_path):
    fake = FakePipe()
    summary = run_bench(fake, cases, tmp_path, progress=False, seed=7)
    assert summary.computed == summary.assigned == len(cases) and summary.skipped == 0
    assert [c.result_path(tmp_path) for c in cases] == summary.written
    for case, (image, edits, masks, kwargs) in zip(cases, fake.calls, strict=True):
        assert image == str(case.image_path)
        assert edits == list(case.edits) and masks == [str(p) for p in case.mask_paths]
        assert kwargs == {"edit_type": case.edit_type, "seed": 7}
    assert [c[3]["edit_type"] for c in fake.calls] == ["color"] * 2 + ["material"] * 2 + ["color+object"] * 2

    # An explicit self_replace_steps wins over the preset (the pipeline prefers it to edit_type).
    fake = FakePipe()
    run_bench(fake, cases[:1], tmp_path / "override", progress=False, self_replace_steps=0.3)
    assert fake.calls[0][3] == {"edit_type": "color", "self_replace_steps": 0.3}


def test_published_ore_reaches_the_pipeline_only_when_asked(cases, tmp_path):
    fake = FakePipe()
    run_bench(fake, cases[:1], tmp_path / "published", progress=False, published_ore=True)
    assert fake.calls[0][3] == {"edit_type": "color", "published_ore": True}
    fake = FakePipe()
    run_bench(fake, cases[:1], tmp_path / "default", progress=False)
    assert "published_ore" not in fake.calls[0][3]  # the pipeline's own default applies
    with pytest.raises(TypeError, match="published_ore must be a bool"):
        run_bench(FakePipe(), cases[:1], tmp_path / "bad", progress=False, published_ore="yes")


def test_ale_bench_run_published_passes_published_ore(mini, tmp_path):
    base = ["run", "--bench", str(mini), "--out", str(tmp_path / "a"), "--quiet", "--limit", "2"]
    fake = FakePipe()
    assert main([*base, "--published"], lambda *_: fake) == 0
    assert [call[3]["published_ore"] for call in fake.calls] == [True, True]
    fake = FakePipe()
    assert main([*base[:4], str(tmp_path / "b"), *base[5:]], lambda *_: fake) == 0
    assert len(fake.calls) == 2 and not any("published_ore" in call[3] for call in fake.calls)


def test_a_type_without_preset_gets_the_published_fallback(cases):
    odd = replace(cases[0], edit_type="style", editing_types=("style",))
    with pytest.warns(UserWarning, match="no injection preset"):
        assert injection_kwargs(odd) == {"self_replace_steps": FALLBACK_SELF_REPLACE_STEPS}
    # Without the entry's own types, the folder decides.
    assert injection_kwargs(replace(cases[-1], editing_types=())) == {"edit_type": "color+object"}


def test_the_progress_bar_shows_cases_per_minute(cases, tmp_path, capsys):
    run_bench(FakePipe(), cases, tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "cases/min" in err and "6/6" in err


# ------------------------------------------------------------------------------------------------ resuming


def test_resume_after_a_crash_finishes_only_the_rest(pipe, cases, reference, tmp_path):
    def counting(fail_at=None):
        calls = []

        def call(image, edits, masks, **kwargs):
            if len(calls) == fail_at:
                raise RuntimeError("simulated crash")
            calls.append(tuple(edits))
            return pipe(image, edits, masks, **kwargs)

        return call, calls

    crashing, first = counting(fail_at=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_bench(crashing, cases, tmp_path, progress=False, **FAST)
    assert first == [c.edits for c in cases[:2]]
    # The two finished cases, the prompt.json of their folder and of the folder of the case in flight (copied
    # before its first edit); nothing half-written.
    assert files_under(tmp_path) == expected_files(cases[:3]) - {f"2/material/{IMAGE}/edit_0.png"}

    resuming, second = counting()
    summary = run_bench(resuming, cases, tmp_path, progress=False, **FAST)
    assert second == [c.edits for c in cases[2:]]  # exactly the cases the crash left
    assert (summary.computed, summary.skipped) == (4, 2)
    assert files_under(tmp_path) == expected_files(cases)
    out, _ = reference
    for case in cases:  # the same seed per case: an interrupted run ends with the uninterrupted run's images
        np.testing.assert_array_equal(pixels(case.result_path(tmp_path)), pixels(case.result_path(out)))

    again, third = counting()
    assert run_bench(again, cases, tmp_path, progress=False, **FAST).skipped == 6 and third == []


def test_a_crash_while_saving_leaves_no_partial_file(cases, tmp_path):
    class BrokenImage:
        def save(self, path, format=None):
            Path(path).write_bytes(b"\x89PNG half")
            raise OSError("disk full")

    def broken(*args, **kwargs):
        return types.SimpleNamespace(images=[BrokenImage()])

    with pytest.raises(OSError, match="disk full"):
        run_bench(broken, cases[:1], tmp_path, progress=False)
    assert files_under(tmp_path) == {f"1/color/{IMAGE}/prompt.json"}
    fake = FakePipe()
    assert run_bench(fake, cases[:1], tmp_path, progress=False).computed == 1 and len(fake.calls) == 1


def test_results_of_another_benchmark_are_not_mixed_in(cases, tmp_path):
    copy = cases[-1].result_dir(tmp_path) / "prompt.json"  # the last folder in the run's order
    copy.parent.mkdir(parents=True)
    copy.write_text(json.dumps({"image": IMAGE, "prompts": []}))
    fake = FakePipe()
    with pytest.raises(ResultsMismatchError, match="another benchmark's results"):
        run_bench(fake, cases, tmp_path, progress=False)
    assert fake.calls == []  # refused before any work
    # The published runner's re-dumped copy (same data, other formatting) is accepted.
    copy.write_text(json.dumps(json.loads(cases[-1].prompt_file.read_text()), indent=1))
    assert run_bench(FakePipe(), cases, tmp_path, progress=False).computed == 6


def test_finished_folders_without_prompt_json_get_it(cases, tmp_path):
    run_bench(FakePipe(), cases, tmp_path, progress=False)
    for copy in tmp_path.rglob("prompt.json"):
        copy.unlink()
    assert run_bench(FakePipe(), cases, tmp_path, progress=False).skipped == 6
    assert files_under(tmp_path) == expected_files(cases)


# ---------------------------------------------------------------------------------------- several processes


def test_shards_partition_the_cases_whatever_the_input_order(cases):
    for num in (1, 2, 3, 4, 7):
        shards = [shard(cases, k, num) for k in range(num)]
        ids = [c.case_id for s in shards for c in s]
        assert sorted(ids) == sorted(c.case_id for c in cases) and len(ids) == len(set(ids))
        assert shards == [shard([*reversed(cases), *cases], k, num) for k in range(num)]  # order, duplicates
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ValueError, match="process_index"):
        shard(cases, 2, 2)


def test_processes_split_the_work_without_overlap(cases, tmp_path):
    fakes = [FakePipe(), FakePipe()]
    summaries = [run_bench(f, cases, tmp_path, process_index=k, num_processes=2, progress=False) for k, f in
                 enumerate(fakes)]  # fmt: skip
    written = [set(s.written) for s in summaries]
    assert not written[0] & written[1] and written[0] | written[1] == {c.result_path(tmp_path) for c in cases}
    assert [s.computed for s in summaries] == [len(f.calls) for f in fakes] == [3, 3]
    assert files_under(tmp_path) == expected_files(cases)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accelerate_launch_with_two_processes_writes_what_one_process_writes(mini, reference, cases, tmp_path):
    # `accelerate launch --cpu` starts a single process whatever --num_processes says (several CPU processes
    # need an MPI hostfile there); --multi_gpu starts them through torchrun, and --device cpu keeps them on the
    # CPU (a process group over gloo) even where GPUs exist, so that the pixels compare with the CPU reference.
    out = tmp_path / "results"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
        "-m", "ale_pipeline.bench.cli", "run", "--bench", str(mini), "--out", str(out), "--random-model", "tiny",
        "--counts", "1,2,3", "--types", "color", "material,color+object", "--device", "cpu", *FAST_ARGS,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    report = f"stdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-4000:]}"
    assert done.returncode == 0, report
    assert "6/6 cases done" in done.stdout and "3 edited now by process 0 of 2" in done.stdout, report

    single, _ = reference
    assert files_under(out) == files_under(single) == expected_files(cases)
    for name in files_under(out):
        if name.endswith(".png"):
            # Bit-identical: each case is seeded alone, and both runs use single-threaded kernels.
            np.testing.assert_array_equal(pixels(out / name), pixels(single / name), err_msg=name)
        else:
            assert (out / name).read_bytes() == (single / name).read_bytes()


def test_a_launch_that_accelerate_does_not_see_as_distributed_is_refused(mini, tmp_path, capsys, monkeypatch):
    # Otherwise every process would believe it is alone and edit every case.
    fake_accelerate = types.ModuleType("accelerate")
    fake_accelerate.PartialState = lambda cpu=False: types.SimpleNamespace(num_processes=1, process_index=0)
    monkeypatch.setitem(sys.modules, "accelerate", fake_accelerate)
    monkeypatch.setenv("WORLD_SIZE", "2")
    fake = FakePipe()
    assert main(["run", "--bench", str(mini), "--out", str(tmp_path), "--quiet"], lambda *_: fake) == 2
    assert_one_line_error(capsys, "the launcher started 2 processes but accelerate sees 1")
    assert fake.calls == []


# --------------------------------------------------------------------------------------------------- the CLI


def assert_one_line_error(capsys, pattern: str) -> None:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ale-bench: error: ") and "Traceback" not in err, err
    assert pattern in lines[0], lines[0]


def test_the_loader_gets_model_device_and_dtype(mini, tmp_path):
    seen = []

    def loader(*args):
        seen.append(args)
        return FakePipe()

    base = ["run", "--bench", str(mini), "--out", str(tmp_path / "a"), "--quiet", "--limit", "1"]
    assert main(base, load_pipeline=loader) == 0
    assert main([*base[:4], str(tmp_path / "b"), *base[5:], "--model", "/m", "--dtype", "bfloat16"], loader) == 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if torch.cuda.is_available() else torch.float32
    assert seen == [(DEFAULT_MODEL, device, dtype), ("/m", device, torch.bfloat16)]
    assert files_under(tmp_path / "a") == expected_files(load_bench(mini).cases[:1])


def test_selection_options_take_comma_or_space_separated_lists(mini, tmp_path):
    fake = FakePipe()
    args = ["run", "--bench", str(mini), "--out", str(tmp_path), "--quiet", "--counts", "1,3", "--types"]
    assert main([*args, "color", "color+object", "--images", IMAGE], lambda *_: fake) == 0
    assert [len(call[1]) for call in fake.calls] == [1, 1, 3, 3]


@pytest.mark.parametrize(
    "change, pattern",
    [
        (["--types", "colour"], "no edit type 'colour'"),
        (["--counts", "one"], "--counts takes object counts"),
        (["--counts", "4"], "no object count '4'"),
        (["--images", "natural_img02"], "no image 'natural_img02'"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--limit", "-1"], "--limit must be >= 0"),
        (["--longest-side", "4"], "--longest-side must be at least 8"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["--backend", "magic"], "invalid choice: 'magic'"),
    ],
)
def test_user_mistakes_are_one_line_errors(mini, tmp_path, capsys, change, pattern):
    fake = FakePipe()
    assert main(["run", "--bench", str(mini), "--out", str(tmp_path / "r"), *change], lambda *_: fake) == 2
    assert_one_line_error(capsys, pattern)
    assert fake.calls == [] and not (tmp_path / "r").exists()  # refused before any work


def test_bad_folders_and_models_are_one_line_errors(mini, tmp_path, capsys, monkeypatch):
    def run(*extra, bench=mini, out=tmp_path / "r", loader=lambda *_: FakePipe()):
        return main(["run", "--bench", str(bench), "--out", str(out), "--quiet", *extra], loader)

    assert run(bench=tmp_path / "nowhere") == 2
    assert_one_line_error(capsys, "benchmark folder not found")
    (tmp_path / "file").write_text("x")
    assert run(out=tmp_path / "file") == 2
    assert_one_line_error(capsys, "exists and is not a folder")

    def unreachable(*_):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nto load this model")

    assert run(loader=unreachable) == 2
    assert_one_line_error(capsys, f"cannot load model {DEFAULT_MODEL!r}: We couldn't connect")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run("--device", "cuda") == 2
    assert_one_line_error(capsys, "torch sees no CUDA device")

    bad = mini.parent / "bad-bench"
    (bad / "images").mkdir(parents=True)
    (bad / "masks").mkdir()
    (bad / "prompts" / "1" / "color").mkdir(parents=True)
    (bad / "prompts" / "1" / "color" / "x_prompts.json").write_text("{")
    assert run(bench=bad) == 2
    assert_one_line_error(capsys, "x_prompts.json: not valid JSON")

    copy = tmp_path / "r" / "1" / "color" / IMAGE / "prompt.json"
    copy.parent.mkdir(parents=True)
    copy.write_text("{}")
    assert run() == 2
    assert_one_line_error(capsys, "another benchmark's results; use another --out")


def test_help_and_the_eval_subcommand_is_handed_to_the_report_module(monkeypatch, capsys):
    assert main(["run", "--help"]) == 0
    assert "--bench" in capsys.readouterr().out
    seen = {}

    def add_eval_arguments(parser):
        parser.add_argument("--results", required=True)

    def eval_main(args):
        seen["results"] = args.results
        return 5

    fake = types.ModuleType("ale_pipeline.bench.report")
    fake.add_eval_arguments, fake.eval_main = add_eval_arguments, eval_main
    monkeypatch.setitem(sys.modules, "ale_pipeline.bench.report", fake)
    assert main(["eval", "--results", "r"]) == 5 and seen == {"results": "r"}
    assert main(["eval"]) == 2
    assert_one_line_error(capsys, "the following arguments are required: --results")
