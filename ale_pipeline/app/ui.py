"""The page: Gradio components laid out and wired to an :class:`~ale_pipeline.app.session.EditSession`.

Left, the inputs: the image editor (the picture as its background, one named layer per object for its mask),
the shipped examples, one row per edit, where the masks come from, and the settings with the published
defaults (the ablation switches under "Advanced"). Right, the outputs: the masks tinted over the picture (shown
before the edit runs), a before/after slider, one attention heatmap per target phrase, the edit's time and the
edited PNG to download.

The editing event is queued with concurrency 1, shared with the mask preview: one model job at a time per
process. Every user mistake reaches the page as a ``gr.Error`` message, never a traceback.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from ale_kernels import MAX_OBJECTS

from ..commands import BACKENDS
from ..config import DEFAULT_MASK_THRESHOLD, DEFAULTS, SELF_REPLACE_PRESETS
from .inputs import EDIT_TYPES, MASK_SOURCES, NO_PRESET, AppInputError, Controls, edits_from_rows, layer_name
from .offline import SYSTEM_FONTS, SYSTEM_MONO_FONTS
from .session import EditRequest, EditSession

#: The shipped examples (``examples/<name>/edits.json`` with its image and masks), where the source tree has them.
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
#: How opaque an example's mask layer is painted (any alpha > 0 is inside; this keeps the picture visible).
LAYER_ALPHA = 140
#: The tints painted on the layers, object by object.
BRUSH_COLOURS = ["#e6194b", "#3cb44b", "#0082c8", "#ffe119", "#911eb4", "#46f0f0"]
#: The editor's layers when the page opens ("object 1", ...); more can be added in the editor's layer menu.
EDITOR_LAYERS = 3
#: The event queue's name shared by everything that runs the model.
MODEL_QUEUE = "model"
#: Small pictures (the edit runs at the model's size, the masks preview too) fill their boxes.
CSS = "#masks img { width: 100%; height: 100%; object-fit: contain; }"
#: The settings controls, in the order the events pass them (:class:`Controls`' fields).
CONTROL_NAMES = tuple(Controls.__dataclass_fields__)


def example_layers(example: Path, masks: Sequence[str], cache: Path) -> list[str]:
    """The example's mask files as editor layers: transparent PNGs with each mask painted in its object's tint."""
    layers = []
    for k, name in enumerate(masks):
        mask = np.asarray(Image.open(example / name).convert("L")) >= 128
        rgba = np.zeros((*mask.shape, 4), np.uint8)
        tint = tuple(int(BRUSH_COLOURS[k % len(BRUSH_COLOURS)][i : i + 2], 16) for i in (1, 3, 5))
        rgba[mask] = (*tint, LAYER_ALPHA)
        path = cache / f"{example.name}-layer-{k}.png"
        Image.fromarray(rgba).save(path)
        layers.append(str(path))
    return layers


def load_examples(folder: Path, max_objects: int) -> list[dict]:
    """The examples under ``folder`` as ``{"editor": value, "edits": [(src, tgt), ...]}``; none if it is absent."""
    if not folder.is_dir():
        return []
    cache = Path(tempfile.mkdtemp(prefix="ale-app-examples-"))
    examples = []
    for spec_path in sorted(folder.glob("*/edits.json")):
        spec = json.loads(spec_path.read_text())
        edits = [tuple(p.strip() for p in e["edit"].split("=>", 1)) for e in spec["edits"]][:max_objects]
        image = str(spec_path.parent / spec["image"])
        layers = example_layers(spec_path.parent, [e["mask"] for e in spec["edits"]][: len(edits)], cache)
        examples.append({"editor": {"background": image, "layers": layers, "composite": image}, "edits": edits})
    return examples


def _error(err: AppInputError) -> gr.Error:
    return gr.Error(str(err), title="Please check the inputs", print_exception=False)


def build_app(
    session: EditSession,
    model: str = "",
    max_objects: int = MAX_OBJECTS,
    examples_dir: Path = EXAMPLES_DIR,
) -> gr.Blocks:
    """The page for ``session`` (``model`` is shown in its header); rows for up to ``max_objects`` edits."""
    examples = load_examples(examples_dir, max_objects)
    with gr.Blocks(title="ALE editing") as app:
        gr.Markdown(
            "## ALE: edit several objects at once\n"
            "1. Upload a picture (or click an example). 2. Type one edit per object: what it is now, what it "
            "becomes. 3. Paint each object on its own layer of the editor (the layer menu lists them by edit), "
            "or upload the masks, or let them be found. 4. Press **Edit**." + (f"\n\nModel: `{model}`" if model else "")
        )
        with gr.Row():
            with gr.Column(scale=1):
                editor = gr.ImageEditor(
                    label="Image and mask layers (one layer per edit; paint anywhere on the object)",
                    type="numpy",
                    image_mode="RGBA",
                    sources=("upload", "clipboard"),
                    layers=gr.LayerOptions(
                        layers=[layer_name(k) for k in range(EDITOR_LAYERS)], allow_additional_layers=True
                    ),
                    brush=gr.Brush(colors=BRUSH_COLOURS, color_mode="defaults"),
                    transforms=(),
                    elem_id="editor",
                )
                count = gr.Number(
                    value=1, label="objects", precision=0, minimum=1, maximum=max_objects, elem_id="count"
                )
                rows, sources, targets = [], [], []
                for k in range(max_objects):
                    with gr.Row(visible=k == 0) as row:
                        for side, texts, hint in (("source", sources, "cup"), ("target", targets, "blue cup")):
                            texts.append(gr.Textbox(label=f"edit {k + 1}: {side} phrase", value="", placeholder=hint,
                                                    elem_id=f"{side}-{k}", max_lines=1))  # fmt: skip
                    rows.append(row)
                with gr.Row():
                    add = gr.Button("+ add object", size="sm", elem_id="add-object")
                    remove = gr.Button("- remove last", size="sm", elem_id="remove-object")
                mask_source = gr.Radio(
                    list(MASK_SOURCES),
                    value="draw",
                    label="Masks",
                    info="draw: paint the layers; upload: one mask file per edit (white inside); attention: from "
                    "the model's own cross-attention; dino-sam: Grounding DINO + SAM (needs their weights)",
                    elem_id="mask-source",
                )
                files = gr.File(
                    label="Mask files, one per edit, in order", file_count="multiple", file_types=["image"],
                    visible=False, elem_id="mask-files",
                )  # fmt: skip
                threshold = gr.Slider(0.05, 1.0, value=DEFAULT_MASK_THRESHOLD, step=0.05, visible=False,
                                      label="attention mask threshold", elem_id="mask-threshold")  # fmt: skip
                controls = _controls(session.max_steps)
                with gr.Row():
                    preview = gr.Button("Show masks", elem_id="show-masks")
                    run = gr.Button("Edit", variant="primary", elem_id="run")
            with gr.Column(scale=1):
                # PNG throughout: Gradio's default WebP is lossy, and these pictures are for looking closely.
                masks_view = gr.Image(label="Masks (tinted over the picture)", interactive=False, format="png",
                                      height=260, elem_id="masks")  # fmt: skip
                slider = gr.ImageSlider(label="Before / after", interactive=False, format="png", elem_id="slider")
                attention = gr.Gallery(label="Where each target phrase looked (attention)", columns=3, format="png",
                                       interactive=False, elem_id="attention")  # fmt: skip
                timing = gr.Markdown(elem_id="timing")
                download = gr.File(label="Download the edited image", interactive=False, elem_id="download")
        if examples:
            width = max(len(e["edits"]) for e in examples)
            gr.Examples(
                [[e["editor"], len(e["edits"]), *_padded([s for s, _ in e["edits"]], width),
                  *_padded([t for _, t in e["edits"]], width)] for e in examples],
                inputs=[editor, count, *sources[:width], *targets[:width]],
                label="Examples (click one to load its picture, edits and masks)",
            )  # fmt: skip

        controls["mask_threshold"] = threshold
        control_list = [controls[name] for name in CONTROL_NAMES]
        inputs = [editor, count, mask_source, files, *control_list, *sources, *targets]

        def request(values: Sequence) -> EditRequest:
            editor_value, n, source, uploaded = values[:4]
            settings = Controls(**dict(zip(CONTROL_NAMES, values[4 : 4 + len(CONTROL_NAMES)], strict=True)))
            texts = values[4 + len(CONTROL_NAMES) :]
            edits = edits_from_rows(texts[:max_objects], texts[max_objects:], n)
            editor_value = editor_value or {}
            return EditRequest(
                image=editor_value.get("background"), edits=edits, mask_source=source,
                layers=editor_value.get("layers") or [], files=uploaded or [], controls=settings,
            )  # fmt: skip

        def show_masks(*values, progress=gr.Progress()):  # noqa: B008  (how Gradio asks for a progress bar)
            try:
                picture, _ = session.preview(request(values), _reporter(progress))
            except AppInputError as err:
                raise _error(err) from None
            return picture

        def edit(*values, progress=gr.Progress()):  # noqa: B008  (how Gradio asks for a progress bar)
            try:
                job = request(values)
                picture, masks = session.preview(job, _reporter(progress))
                yield picture, None, None, "masks ready; editing...", None
                result = session.edit(job, _reporter(progress), masks=masks)
            except AppInputError as err:
                raise _error(err) from None
            width, height = result.edited.size
            steps = job.controls.config().num_inference_steps
            note = (f"**Edit time: {result.seconds:.2f} s** ({len(job.edits)} object(s), {width}x{height} px, "
                    f"{steps} steps, on {session.device})")  # fmt: skip
            yield picture, (result.source, result.edited), result.attention, note, str(result.path)

        def show_rows(n):
            n = max(1, min(int(n or 1), max_objects))
            return [gr.Row(visible=k < n) for k in range(max_objects)]

        add.click(lambda n: min(int(n or 1) + 1, max_objects), count, count, queue=False)
        remove.click(lambda n: max(int(n or 1) - 1, 1), count, count, queue=False)
        count.change(show_rows, count, rows, queue=False)
        mask_source.change(
            lambda s: (gr.File(visible=s == "upload"), gr.Slider(visible=s == "attention")),
            mask_source, [files, threshold], queue=False,
        )  # fmt: skip
        preview.click(show_masks, inputs, masks_view, concurrency_limit=1, concurrency_id=MODEL_QUEUE,
                      api_name="masks")  # fmt: skip
        run.click(edit, inputs, [masks_view, slider, attention, timing, download], concurrency_limit=1,
                  concurrency_id=MODEL_QUEUE, api_name="edit")  # fmt: skip
    app.queue(default_concurrency_limit=1)
    app.ale_session = session  # for launch(): the folder the downloads are written to
    return app


def _controls(max_steps: int) -> dict:
    """The settings, with the published defaults; the ablation switches and the rarer ones under "Advanced"."""
    presets = ", ".join(f"{name} {value:g}" for name, value in SELF_REPLACE_PRESETS.items())
    c = {}
    with gr.Row():
        c["steps"] = gr.Slider(1, max_steps, value=DEFAULTS.num_inference_steps, step=1, label="steps",
                               elem_id="steps")  # fmt: skip
        c["seed"] = gr.Number(value=DEFAULTS.seed, precision=0, label="seed", elem_id="seed")
    with gr.Row():
        c["target_guidance"] = gr.Slider(0.0, 10.0, value=DEFAULTS.target_guidance_scale, step=0.1,
                                         label="guidance (target)")  # fmt: skip
        c["edit_type"] = gr.Dropdown(list(EDIT_TYPES), value=NO_PRESET, label="edit type preset",
                                     info=f"sets the injection fraction: {presets}")  # fmt: skip
    with gr.Row():
        c["injection"] = gr.Slider(0.0, 1.0, value=DEFAULTS.injection_fraction, step=0.05,
                                   label="Q/K injection fraction (without a preset)")  # fmt: skip
        c["dilation"] = gr.Slider(0.0, 0.49, value=DEFAULTS.dilation, step=0.01,
                                  label="mask dilation (fraction of the height)")  # fmt: skip
    c["mask_value"] = gr.Number(value=DEFAULTS.mask_value, label="RGB-CAM mask value (<= 0)")
    with gr.Accordion("Advanced", open=False, elem_id="advanced"):
        with gr.Row():
            c["source_guidance"] = gr.Slider(0.0, 10.0, value=DEFAULTS.source_guidance_scale, step=0.1,
                                             label="guidance (source)")  # fmt: skip
            c["longest_side"] = gr.Number(value=DEFAULTS.longest_side, precision=0, elem_id="longest-side",
                                          label="longest side (px; 0 keeps the size)")  # fmt: skip
        c["backend"] = gr.Dropdown(
            list(BACKENDS), value=DEFAULTS.attention_backend, label="attention backend", elem_id="backend"
        )
        gr.Markdown("Ablations (the paper's): switch off one part of ALE")
        with gr.Row():
            c["use_ore"] = gr.Checkbox(DEFAULTS.use_ore, label="object-restricted embeddings (ORE)")
            c["use_rgb_cam"] = gr.Checkbox(DEFAULTS.use_rgb_cam, label="region-guided cross-attention (RGB-CAM)")
            c["use_background_blend"] = gr.Checkbox(DEFAULTS.use_background_blend, label="background blending")
            c["use_qk_injection"] = gr.Checkbox(DEFAULTS.use_qk_injection, label="self-attention Q/K injection")
    return c


def _padded(texts: list[str], width: int) -> list[str]:
    return texts + [""] * (width - len(texts))


def _reporter(progress: gr.Progress):
    def report(done: int, total: int, what: str) -> None:
        progress((done, total), desc=what, unit="steps")

    return report


def offline_theme() -> gr.themes.Base:
    """Gradio's default look with the system's fonts: nothing for the browser to fetch."""
    return gr.themes.Default(font=list(SYSTEM_FONTS), font_mono=list(SYSTEM_MONO_FONTS))


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, block: bool = True, quiet: bool = False):
    """Serve ``app`` on ``host:port`` (``port`` None: Gradio picks a free one), offline: no share link, no
    analytics, no server-side rendering, no MCP server. Returns Gradio's ``(app, local_url, share_url)``; with
    ``block`` it returns only once the server stops."""
    session = getattr(app, "ale_session", None)
    allowed = [str(session.out_dir)] if session is not None else []
    return app.launch(
        server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=not block,
        ssr_mode=False, mcp_server=False, show_error=False, quiet=quiet, allowed_paths=allowed,
        theme=offline_theme(), css=CSS, footer_links=["api", "settings"], enable_monitoring=False,
    )  # fmt: skip
