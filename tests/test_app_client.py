"""The running app through ``gradio_client``: served on 127.0.0.1 in the test, it takes edits with painted mask
layers, returns the pictures, reports mistakes as messages, and runs one edit at a time."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ale_pipeline.app.inputs import Controls
from ale_pipeline.app.offline import go_offline
from ale_pipeline.app.session import EditSession
from tests.tiny_models import random_image, tiny_ale_pipeline

go_offline()  # before Gradio is imported, as ale-app does

import gradio as gr  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from ale_pipeline.app.ui import build_app, launch  # noqa: E402

#: Rows on the test page: fewer than the ops' 31 keep the page and the calls small.
ROWS = 4


@contextmanager
def serve(session: EditSession, rows: int = ROWS):
    """The app for ``session`` served on 127.0.0.1 (a free port) while the block runs; yields its URL."""
    app = build_app(session, model="tiny", max_objects=rows)
    _, url, _ = launch(app, host="127.0.0.1", port=None, block=False, quiet=True)
    try:
        yield url
    finally:
        app.close()


def arguments(editor: dict, edits: list[tuple[str, str]], rows: int = ROWS, mask_source: str = "draw", **controls):
    """The ``/edit`` endpoint's positional arguments: the editor, the count, the mask source and files, the
    settings (:class:`Controls`' order), then every row's source and target phrase."""
    settings = Controls(**{"steps": 1, "longest_side": 64, "backend": "torch", **controls})
    sources = [s for s, _ in edits] + [""] * (rows - len(edits))
    targets = [t for _, t in edits] + [""] * (rows - len(edits))
    values = [getattr(settings, name) for name in Controls.__dataclass_fields__]
    return [editor, len(edits), mask_source, None, *values, *sources, *targets]


def write_editor(folder: Path, height: int = 48, width: int = 64) -> tuple[dict, list[np.ndarray]]:
    """A picture and two painted layers on disk, as the editor sends them, and the masks they hold."""
    Image.fromarray(random_image(height, width)).save(folder / "picture.png")
    masks = [np.zeros((height, width), bool) for _ in range(2)]
    masks[0][4:20, 6:30] = True
    masks[1][28:44, 36:60] = True
    layers = []
    for k, mask in enumerate(masks):
        rgba = np.zeros((height, width, 4), np.uint8)
        rgba[mask] = (255, 60 * k, 0, 120)
        Image.fromarray(rgba, "RGBA").save(folder / f"layer{k}.png")
        layers.append(handle_file(str(folder / f"layer{k}.png")))
    editor = {"background": handle_file(str(folder / "picture.png")), "layers": layers, "composite": None}
    return editor, masks


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("app")
    session = EditSession(tiny_ale_pipeline(), out_dir=folder / "downloads")
    spans = []
    edit = session.edit

    def timed(*args, **kwargs):  # records when each edit runs, to see that two never overlap
        start = time.perf_counter()
        try:
            return edit(*args, **kwargs)
        finally:
            spans.append((start, time.perf_counter(), threading.get_ident()))

    session.edit = timed
    with serve(session) as url:
        yield Client(url, verbose=False), session, spans, folder


def test_the_page_is_served_on_localhost_only(served):
    client, *_ = served
    assert client.src.startswith("http://127.0.0.1:")
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/edit", "/masks"} <= set(endpoints)


def test_edits_with_painted_masks_return_images_one_at_a_time(served):
    client, session, spans, folder = served
    editor, _ = write_editor(folder)
    edits = [("cup", "blue cup"), ("spoon", "golden spoon")]
    # Two requests at once: the queue runs them one after the other.
    jobs = [client.submit(*arguments(editor, edits, seed=seed), api_name="/edit") for seed in (1, 2)]
    results = [job.result(timeout=600) for job in jobs]
    for masks_picture, (before, after), attention, timing, download in results:
        assert Image.open(masks_picture).size == Image.open(before).size == Image.open(after).size == (64, 48)
        assert [item["caption"] for item in attention] == ["blue cup", "golden spoon"]
        assert timing.startswith("**Edit time: ") and "2 object(s), 64x48 px, 1 steps" in timing
        downloaded = Path(download)
        assert downloaded.suffix == ".png" and Image.open(downloaded).size == (64, 48)
        # The file offered for download is the edit the session wrote.
        assert any(downloaded.read_bytes() == p.read_bytes() for p in session.out_dir.glob("edited-*.png"))
    assert len(spans) == 2
    first, second = sorted(spans)
    assert first[1] <= second[0]  # never two edits at once
    assert not np.array_equal(*(np.asarray(Image.open(r[4])) for r in results))  # two seeds, two edits


@pytest.mark.parametrize(
    "edits, change, message",
    [
        ([("cup", "blue cup"), ("", "golden spoon")], {}, "edit 2 has no source phrase"),
        ([("cup", "blue cup"), ("spoon", "golden spoon"), ("saucer", "marble saucer")], {},
         r"no mask for edit 3 \('saucer'\)"),
        ([("cup", "blue cup")], {"mask_value": 5}, "mask_value must be a number <= 0"),
    ],
)  # fmt: skip
def test_mistakes_come_back_as_messages(served, edits, change, message):
    client, _, spans, folder = served
    editor, _ = write_editor(folder)
    count = len(spans)
    with pytest.raises(AppError, match=message):
        client.predict(*arguments(editor, edits, **change), api_name="/edit")
    assert len(spans) == count  # nothing was edited


def test_the_masks_are_shown_before_an_edit(served):
    client, _, spans, folder = served
    editor, masks = write_editor(folder)
    count = len(spans)
    picture = np.asarray(Image.open(client.predict(*arguments(editor, [("cup", "c"), ("spoon", "s")]),
                                                   api_name="/masks")).convert("RGB"))  # fmt: skip
    source = np.asarray(Image.open(folder / "picture.png").convert("RGB"))
    # Inside each undilated mask the picture is tinted; far from both it is the picture itself.
    changed = np.any(picture.astype(int) != source, axis=-1)
    assert changed[masks[0]].all() and changed[masks[1]].all()
    assert not changed[~(masks[0] | masks[1])].any()
    assert len(spans) == count and gr.__version__ >= "6"


@pytest.mark.parametrize("mask_source", ["upload", "attention"])
def test_masks_uploaded_or_found_are_shown_too(served, mask_source):
    client, _, _, folder = served
    editor, masks = write_editor(folder)
    files = []
    for k, mask in enumerate(masks):  # white inside, as ale-edit --mask reads them
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"mask{k}.png")
        files.append(handle_file(str(folder / f"mask{k}.png")))
    args = arguments(editor, [("cup", "c"), ("spoon", "s")], mask_source=mask_source)
    args[3] = files if mask_source == "upload" else None
    picture = np.asarray(Image.open(client.predict(*args, api_name="/masks")).convert("RGB"))
    source = np.asarray(Image.open(folder / "picture.png").convert("RGB"))
    changed = np.any(picture.astype(int) != source, axis=-1)
    if mask_source == "upload":  # the files' masks exactly
        assert np.array_equal(changed, masks[0] | masks[1])
    else:  # found by attention: some pixels for each phrase, not the whole picture
        assert picture.shape == source.shape and 0 < changed.mean() < 1
