"""``ale-bench eval`` on a few real ALE-Bench cases with fake edits and tiny random models: the per-case CSV,
the markdown report beside the published numbers, the plots, missing results, resuming and refusals."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from ale_pipeline.bench import load_bench
from ale_pipeline.bench.cli import main
from ale_pipeline.bench.report import CSV_COLUMNS, mean_finite
from tests.bench_data import BENCH
from tests.tiny_metric_models import save_tiny_metric_models

IMAGES = ("artificial_img01", "natural_img01")
SIZE = 128  # the sample images shrunk (the metrics are defined at any size; this keeps the test fast)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return save_tiny_metric_models(tmp_path_factory.mktemp("metric-models"))


@pytest.fixture(scope="module")
def small_bench(tmp_path_factory):
    """Two sample images with all their cases, in the benchmark's layout, images and masks at 128 px."""
    root = tmp_path_factory.mktemp("bench")
    for name in IMAGES:
        (root / "images").mkdir(exist_ok=True)
        Image.open(BENCH / "images" / f"{name}.jpg").convert("RGB").resize((SIZE, SIZE)).save(
            root / "images" / f"{name}.jpg", quality=95
        )
        (root / "masks" / name).mkdir(parents=True)
        for mask in (BENCH / "masks" / name).glob("*_mask.png"):
            Image.open(mask).convert("L").resize((SIZE, SIZE)).save(root / "masks" / name / mask.name)
        for prompts in (BENCH / "prompts").glob(f"*/*/{name}_prompts.json"):
            target = root / prompts.relative_to(BENCH)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(prompts.read_text())
    return load_bench(root)


def _chosen(bench):
    """Index 0 of every (count, type) for color and object, both images: 12 cases."""
    return [c for c in bench.select(types=["color", "object"]) if c.index == 0]


def _write_results(bench, results, cases):
    """Fake edits in the published layout: the source itself for the 1-object colour cases (untouched
    background: PSNR inf), the source with noise elsewhere, saved at another size (resized back by eval)."""
    rng = np.random.default_rng(0)
    for case in cases:
        source = np.asarray(Image.open(case.image_path).convert("RGB"))
        if case.n_objects == 1 and case.edit_type == "color":
            edited = Image.fromarray(source)
        else:
            noisy = np.clip(source.astype(int) + rng.integers(-30, 31, source.shape), 0, 255).astype(np.uint8)
            edited = Image.fromarray(noisy).resize((96, 96))
        path = case.result_path(results)
        path.parent.mkdir(parents=True, exist_ok=True)
        edited.save(path)


def _args(bench, results, models, *extra):
    return [
        "eval",
        "--bench", str(bench.root),
        "--results", str(results),
        "--clip-model", str(models["clip"]),
        "--dino-model", str(models["dino"]),
        "--lpips-weights", str(models["lpips"]),
        "--device", "cpu",
        "--quiet",
        *extra,
    ]  # fmt: skip


def _rows(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_eval_writes_csv_report_and_plots(small_bench, models, tmp_path, capsys):
    results = tmp_path / "results"
    cases = _chosen(small_bench)
    _write_results(small_bench, results, cases)
    assert main(_args(small_bench, results, models)) == 0
    out = results / "stats"
    assert f"{len(cases)} cases scored" in capsys.readouterr().out

    with (out / "evaluation_results.csv").open(newline="") as f:
        assert tuple(next(csv.reader(f))) == CSV_COLUMNS
    rows = _rows(out / "evaluation_results.csv")
    assert sorted(r["case_id"] for r in rows) == sorted(c.case_id for c in cases)
    by_id = {r["case_id"]: r for r in rows}
    for case in cases:
        row = by_id[case.case_id]
        assert row["file_id"] == f"{case.image_name}_edit_{case.index}.png"  # the published file_id
        assert int(row["target_count"]) == case.n_objects and row["edit_type"] == case.edit_type
        values = {c: float(row[c]) for c in CSV_COLUMNS[3:11]}
        assert math.isnan(values["TILS"]) == (case.n_objects == 1)
        assert float(row["TELS"]) == float(row["TELS_joined"])  # the default: the published code's TELS
        assert float(row["structure_distance"]) == float(row["structure_distance_published"])
        if case.n_objects == 1 and case.edit_type == "color":  # untouched
            assert values["psnr_unedit_part"] == math.inf and values["mse_unedit_part"] == 0.0
            assert values["lpips_unedit_part"] == 0.0 and values["structure_distance"] == 0.0
        else:
            assert 0 < values["mse_unedit_part"] and math.isfinite(values["psnr_unedit_part"])
            assert values["lpips_unedit_part"] > 0 and values["structure_distance"] > 0

    report = (out / "report.md").read_text()
    for heading in ("## Overall", "## By number of edited objects", "## By edit type", "## Metric variants"):
        assert heading in report
    # Published ALE numbers beside ours: table 1 overall, table 2 for one object, table 3 colour.
    assert "| all | paper | 3000 | 16.03 | 15.28 | 0.01670 | 22.20 | 30.04 | 0.0361 | 0.00140 | 0.9228 |" in report
    assert "| 1 | paper | 1000 | 16.41 | – | 0.00876 | 22.62 | 30.01 | 0.0405 | 0.00167 | 0.9049 |" in report
    assert "| color | paper | 600 | 17.63 | 16.21 | 0.00890 | 23.12 | 32.97 | 0.0288 | 0.00079 | 0.9309 |" in report
    # Our overall row is the mean of the CSV (NaN skipped; the untouched cases' PSNR inf left out, counted).
    tels = np.mean([float(r["TELS"]) for r in rows])
    psnr, n_inf = mean_finite(float(r["psnr_unedit_part"]) for r in rows)
    assert n_inf == 2
    assert f"| all | ours | {len(rows)} | {tels:.2f} |" in report
    assert f"{psnr:.2f}" in report.split("| all | ours |")[1].split("\n")[0]
    assert "psnr_unedit_part: 2" in report

    assert "## By object count and edit type" in report and "| 3 object | ours | 2 |" in report
    with (out / "summary.csv").open(newline="") as f:
        summary = {(r["table"], r["group"]): r for r in csv.DictReader(f)}
    assert len(summary) == 1 + 3 + 2 + 6  # overall, 3 counts, 2 types, 3 x 2 (count, type) groups
    assert float(summary[("overall", "all")]["TELS"]) == pytest.approx(tels)
    one_color = [float(r["editing_performance"]) for r in rows if r["case_id"].startswith("1/color/")]
    assert float(summary[("by_count_type", "1 color")]["editing_performance"]) == pytest.approx(np.mean(one_color))

    missing = (out / "missing.txt").read_text().splitlines()
    assert len(missing) == len(small_bench.cases) - len(cases)
    assert f"without a result image: {len(missing)}" in report
    for name in ("overall.png", "by_count.png", "by_type.png"):
        with Image.open(out / name) as png:
            assert png.format == "PNG" and png.size[0] > 500
    assert json.loads((out / "eval_config.json").read_text())["lpips"].startswith("ale_pipeline LpipsSqueeze")


def test_eval_resumes_and_switches_variants_without_rescoring(small_bench, models, tmp_path, monkeypatch):
    import ale_pipeline.bench.report as report

    results = tmp_path / "results"
    cases = _chosen(small_bench)
    _write_results(small_bench, results, cases[:2])
    assert main(_args(small_bench, results, models)) == 0
    before = {r["case_id"]: r for r in _rows(results / "stats" / "evaluation_results.csv")}

    scored = []
    real = report.evaluate_case
    monkeypatch.setattr(
        report, "evaluate_case", lambda case, *a, **k: scored.append(case.case_id) or real(case, *a, **k)
    )
    _write_results(small_bench, results, cases[2:3])
    assert main(_args(small_bench, results, models, "--tels", "mean", "--dino-input", "unit")) == 0
    assert scored == [cases[2].case_id]  # only the new case is scored
    rows = _rows(results / "stats" / "evaluation_results.csv")
    assert len(rows) == 3
    for row in rows:  # the headline columns follow the new choice, for old rows too
        assert row["TELS"] == row["TELS_mean"] and row["structure_distance"] == row["structure_distance_unit"]
        if row["case_id"] in before:
            assert row["TELS_joined"] == before[row["case_id"]]["TELS_joined"]
    assert "mean over target phrases (project page)" in (results / "stats" / "report.md").read_text()

    # A result file that is not an image (a run killed mid-write): listed, not scored, not fatal; retried later.
    broken = cases[3].result_path(results)
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(b"\x89PNG truncated")
    scored.clear()
    assert main(_args(small_bench, results, models)) == 0
    assert scored == []
    assert len(_rows(results / "stats" / "evaluation_results.csv")) == 3
    assert f"{cases[3].case_id}\t{broken}\tunreadable: " in (results / "stats" / "missing.txt").read_text()
    assert "Unreadable result images" in (results / "stats" / "report.md").read_text()


def test_eval_refuses_to_overwrite_and_reports_one_line(small_bench, models, tmp_path, capsys):
    results = tmp_path / "results"
    _write_results(small_bench, results, _chosen(small_bench)[:1])
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my notes")
    assert main(_args(small_bench, results, models, "--out", str(out))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pass --force" in err
    assert (out / "report.md").read_text() == "my notes"

    assert main(_args(small_bench, results, models, "--out", str(out), "--force")) == 0
    assert "my notes" not in (out / "report.md").read_text()
    capsys.readouterr()
    # Resuming with another model would mix scores: refused.
    other = [*_args(small_bench, results, models, "--out", str(out))]
    other[other.index("--clip-model") + 1] = str(tmp_path / "other-clip")
    assert main(other) == 2
    assert "clip_model" in capsys.readouterr().err

    # A model that cannot be loaded: one line, no traceback.
    fresh = [*_args(small_bench, results, models, "--out", str(tmp_path / "fresh"))]
    fresh[fresh.index("--dino-model") + 1] = str(tmp_path / "no-dino")
    assert main(fresh) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ale-bench eval: error: DINO model: no folder")


def test_mean_finite():
    assert mean_finite([1.0, math.inf, 3.0, math.nan]) == (2.0, 1)
    assert mean_finite([math.inf, math.nan]) == (math.inf, 1)  # a group of untouched backgrounds
    value, n_inf = mean_finite([math.nan])
    assert math.isnan(value) and n_inf == 0


def test_eval_without_results_is_an_error(small_bench, models, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(_args(small_bench, tmp_path / "empty", models)) == 2
    assert "no result images" in capsys.readouterr().err
