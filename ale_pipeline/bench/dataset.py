"""ALE-Bench in its published layout: source images, ground-truth object masks and editing cases.

::

    <root>/images/<img>.jpg
    <root>/masks/<img>/<object>_mask.png
    <root>/prompts/<n objects>/<edit type>/<img>_prompts.json

A prompt file is ``{"image": "<img>", "prompts": [{"index": i, "editing_types": [...], "edits": [[source,
target], ...]}, ...]}``; every entry is one editing case with ``n`` edits. Nothing here assumes the shared
half-sample: the folders, counts, types, images and objects are whatever the tree holds, so the full
benchmark (``ml-postech/ALE``, ``ale_bench/``) loads the same way. Everything is validated at load time, and
a malformed tree raises :class:`BenchFormatError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

#: The benchmark's edit types, in the order the paper's tables use (also the order cases are sorted in).
EDIT_TYPES = ("color", "object", "material", "color+object", "object+material")
#: File suffixes accepted as source images (the benchmark ships .jpg).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MASK_SUFFIX = "_mask.png"
PROMPTS_SUFFIX = "_prompts.json"


class BenchFormatError(ValueError):
    """The benchmark folder does not have the ALE-Bench layout; the message names the file and the problem."""


@dataclass(frozen=True)
class BenchCase:
    """One editing case: ``len(edits) == n_objects`` edits of one source image.

    ``mask_paths[k]`` is the ground-truth mask of the object named by ``edits[k][0]`` (the source phrase).
    ``editing_types`` is the prompt entry's own ``editing_types`` list (``("color", "object")`` for a
    ``color+object`` case), kept because the published runner picks its injection preset from it.
    """

    image_name: str
    image_path: Path
    n_objects: int
    edit_type: str
    index: int
    edits: tuple[tuple[str, str], ...]
    mask_paths: tuple[Path, ...]
    prompt_file: Path
    editing_types: tuple[str, ...] = field(default=(), compare=False)

    @property
    def source_phrases(self) -> tuple[str, ...]:
        return tuple(source for source, _ in self.edits)

    @property
    def target_phrases(self) -> tuple[str, ...]:
        return tuple(target for _, target in self.edits)

    @property
    def case_id(self) -> str:
        """``"<n>/<type>/<img>/<index>"``, unique within a benchmark."""
        return f"{self.n_objects}/{self.edit_type}/{self.image_name}/{self.index}"

    @property
    def has_duplicate_targets(self) -> bool:
        """Whether two edits share a target phrase (case and spacing ignored), e.g. ``balloon`` twice: the
        cases where the published first-occurrence token matching collides (docs/method.md section 8)."""
        keys = [_key(t) for t in self.target_phrases]
        return len(set(keys)) < len(keys)

    def result_dir(self, results_dir: str | os.PathLike) -> Path:
        """``results_dir/<n>/<type>/<img>``: the published folder of this case's image (and ``prompt.json``)."""
        return Path(results_dir) / str(self.n_objects) / self.edit_type / self.image_name

    def result_path(self, results_dir: str | os.PathLike) -> Path:
        """``results_dir/<n>/<type>/<img>/edit_<index>.png``, the published runner's layout."""
        return self.result_dir(results_dir) / f"edit_{self.index}.png"


@dataclass
class AleBench:
    """A loaded benchmark. ``cases`` are sorted by (object count, edit type in :data:`EDIT_TYPES` order, image,
    index); ``images`` maps an image name to its file; ``masks[image][object]`` is an object's mask file."""

    root: Path
    cases: list[BenchCase]
    images: dict[str, Path]
    masks: dict[str, dict[str, Path]]

    @property
    def counts(self) -> list[int]:
        """The object counts present, ascending."""
        return sorted({c.n_objects for c in self.cases})

    @property
    def types(self) -> list[str]:
        """The edit types present, in :data:`EDIT_TYPES` order (unknown ones after, alphabetically)."""
        return sorted({c.edit_type for c in self.cases}, key=_type_rank)

    def select(
        self,
        counts: Iterable[int] | None = None,
        types: Iterable[str] | None = None,
        images: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[BenchCase]:
        """The cases with an object count in ``counts``, a type in ``types`` and an image in ``images`` (each
        ``None`` = all), in the benchmark's order, at most the first ``limit``.

        Raises ``ValueError`` for a count, type or image the benchmark does not have (a typo would otherwise
        silently select nothing) and for a negative limit.
        """
        chosen = self.cases
        for what, wanted, present, get in (
            ("object count", counts, self.counts, lambda c: c.n_objects),
            ("edit type", types, self.types, lambda c: c.edit_type),
            ("image", images, sorted(self.images), lambda c: c.image_name),
        ):
            if wanted is None:
                continue
            wanted = set(wanted)
            unknown = sorted(map(str, wanted - set(present)))
            if unknown:
                raise ValueError(
                    f"no {what} {', '.join(map(repr, unknown))} in {self.root} (it has: {', '.join(map(str, present))})"
                )
            chosen = [c for c in chosen if get(c) in wanted]
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit must be >= 0, got {limit}")
            chosen = chosen[:limit]
        return list(chosen)

    def __len__(self) -> int:
        return len(self.cases)


def load_bench(root: str | os.PathLike) -> AleBench:
    """Read and validate the benchmark at ``root`` (the folder holding ``images/``, ``masks/`` and ``prompts/``;
    a checkout of ``ml-postech/ALE`` works too, through its ``ale_bench/``).

    Raises :class:`BenchFormatError` for a missing folder, a prompt file that is not valid JSON or has fields
    of the wrong type, a case whose edit count differs from its ``<n>`` folder, a repeated index, and a case
    whose image or source-object mask does not exist.
    """
    root = Path(root)
    if not (root / "prompts").is_dir() and (root / "ale_bench" / "prompts").is_dir():
        root = root / "ale_bench"
    if not root.is_dir():
        raise BenchFormatError(f"benchmark folder not found: {str(root)!r}")
    for sub in ("images", "masks", "prompts"):
        if not (root / sub).is_dir():
            raise BenchFormatError(f"{str(root)!r} is not an ALE-Bench folder: it has no {sub}/ folder")

    images = _find_images(root / "images")
    masks = _find_masks(root / "masks")
    cases: list[BenchCase] = []
    for n_objects, edit_type, prompt_file in _prompt_files(root / "prompts"):
        cases += _read_prompt_file(prompt_file, n_objects, edit_type, images, masks, root)
    cases.sort(key=_case_order)
    return AleBench(root=root, cases=cases, images=images, masks=masks)


def load_gt_masks(case: BenchCase, size: tuple[int, int] | None = None) -> torch.Tensor:
    """The ground-truth masks of the case's source objects, ``(N, H, W)`` float32 in {0, 1}, edit order.

    Each file is read as 8-bit grey (PIL ``"L"``, as the published evaluation does) and ``> 127`` is inside.
    ``size`` is ``(height, width)`` to resize to (nearest neighbour, before thresholding); ``None`` keeps the
    files' size, which must then be the same for all of them.
    """
    planes = []
    for path in case.mask_paths:
        try:
            with Image.open(path) as image:
                grey = image.convert("L")
        except (UnidentifiedImageError, OSError) as err:
            raise BenchFormatError(f"{path}: cannot read the mask as an image ({err})") from None
        if size is not None:
            height, width = size
            grey = grey.resize((width, height), Image.NEAREST)
        planes.append(np.asarray(grey) > 127)
    shapes = {p.shape for p in planes}
    if len(shapes) > 1:
        raise BenchFormatError(
            f"case {case.case_id}: its masks have different sizes {sorted(shapes)}; pass size=(height, width)"
        )
    return torch.from_numpy(np.stack(planes)).float()


# ----------------------------------------------------------------------------------------------------------


def _key(name: str) -> str:
    """How object names and source phrases are matched: case and runs of whitespace ignored."""
    return " ".join(name.split()).casefold()


def _type_rank(edit_type: str) -> tuple[int, str]:
    return (EDIT_TYPES.index(edit_type) if edit_type in EDIT_TYPES else len(EDIT_TYPES), edit_type)


def _case_order(case: BenchCase) -> tuple:
    return (case.n_objects, _type_rank(case.edit_type), case.image_name, case.index)


def _visible(folder: Path) -> list[Path]:
    """Entries of ``folder`` without hidden ones (the published masks/ holds a .DS_Store), sorted."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _find_images(folder: Path) -> dict[str, Path]:
    images: dict[str, Path] = {}
    for path in _visible(folder):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in images:
                raise BenchFormatError(
                    f"{folder}: two images named {path.stem!r}: {images[path.stem].name}, {path.name}"
                )
            images[path.stem] = path
    return images


def _find_masks(folder: Path) -> dict[str, dict[str, Path]]:
    masks: dict[str, dict[str, Path]] = {}
    for image_dir in _visible(folder):
        if not image_dir.is_dir():
            continue
        objects: dict[str, Path] = {}
        for path in _visible(image_dir):
            if path.is_file() and path.name.endswith(MASK_SUFFIX):
                objects[path.name[: -len(MASK_SUFFIX)]] = path
        masks[image_dir.name] = objects
    return masks


def _prompt_files(folder: Path) -> list[tuple[int, str, Path]]:
    """``(n, type, file)`` for every ``prompts/<n>/<type>/*_prompts.json``."""
    found = []
    for count_dir in _visible(folder):
        if not count_dir.is_dir():
            continue
        if not count_dir.name.isdigit() or int(count_dir.name) < 1:
            raise BenchFormatError(
                f"{count_dir}: folders in prompts/ must be object counts (1, 2, 3, ...), got {count_dir.name!r}"
            )
        for type_dir in _visible(count_dir):
            if type_dir.is_dir():
                found += [
                    (int(count_dir.name), type_dir.name, f)
                    for f in _visible(type_dir)
                    if f.is_file() and f.name.endswith(PROMPTS_SUFFIX)
                ]
    if not found:
        raise BenchFormatError(f"{folder}: no prompts/<n>/<type>/<image>{PROMPTS_SUFFIX} files")
    return found


def _read_prompt_file(
    path: Path,
    n_objects: int,
    edit_type: str,
    images: dict[str, Path],
    masks: dict[str, dict[str, Path]],
    root: Path,
) -> list[BenchCase]:
    def fail(what: str) -> BenchFormatError:
        return BenchFormatError(f"{path}: {what}")

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise fail(f"cannot read the file ({err})") from None
    except json.JSONDecodeError as err:
        raise fail(f"not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise fail(f'expected an object {{"image": ..., "prompts": [...]}}, got {type(data).__name__}')
    image_name, entries = data.get("image"), data.get("prompts")
    if not isinstance(image_name, str) or not image_name:
        raise fail(f'"image" must be the image name (a non-empty string), got {image_name!r}')
    if not isinstance(entries, list):
        raise fail(f'"prompts" must be a list of cases, got {type(entries).__name__}')
    expected_stem = path.name[: -len(PROMPTS_SUFFIX)]
    if image_name != expected_stem:
        # The runner takes the image from the field and the evaluation from the result folder: they must agree.
        raise fail(f'"image" is {image_name!r} but the file name says {expected_stem!r}')
    if image_name not in images:
        raise fail(f"its image {image_name!r} is not in {root / 'images'} (expected {image_name}.jpg)")
    objects = masks.get(image_name)
    if objects is None:
        raise fail(f"no mask folder {root / 'masks' / image_name} for its image")
    by_key: dict[str, Path] = {}
    for name, mask_path in objects.items():
        if _key(name) in by_key:
            raise fail(f"masks {by_key[_key(name)].name!r} and {mask_path.name!r} name the same object")
        by_key[_key(name)] = mask_path

    cases, seen = [], set()
    for k, entry in enumerate(entries):
        where = f"prompts[{k}]"
        if not isinstance(entry, dict):
            raise fail(f"{where} must be an object with index and edits, got {type(entry).__name__}")
        index, edits, types = entry.get("index"), entry.get("edits"), entry.get("editing_types", [])
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise fail(f'{where}: "index" must be a non-negative integer, got {index!r}')
        if index in seen:
            raise fail(f'{where}: "index" {index} is repeated')
        seen.add(index)
        where = f"case index {index}"
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise fail(f'{where}: "editing_types" must be a list of strings, got {types!r}')
        if not isinstance(edits, list) or not all(
            isinstance(e, list) and len(e) == 2 and all(isinstance(p, str) and p.strip() for p in e) for e in edits
        ):
            raise fail(f'{where}: "edits" must be a list of [source, target] pairs of non-empty strings, got {edits!r}')
        if len(edits) != n_objects:
            raise fail(f"{where} has {len(edits)} edits but is in the prompts/{n_objects}/ folder")
        pairs = tuple((source.strip(), target.strip()) for source, target in edits)
        mask_paths = []
        for source, _ in pairs:
            mask_path = by_key.get(_key(source))
            if mask_path is None:
                available = ", ".join(repr(name) for name in sorted(objects)) or "none"
                raise fail(
                    f"{where}: no mask for source object {source!r} in {root / 'masks' / image_name} "
                    f"(expected {source}{MASK_SUFFIX}; masks there: {available})"
                )
            mask_paths.append(mask_path)
        cases.append(
            BenchCase(
                image_name=image_name,
                image_path=images[image_name],
                n_objects=n_objects,
                edit_type=edit_type,
                index=index,
                edits=pairs,
                mask_paths=tuple(mask_paths),
                prompt_file=path,
                editing_types=tuple(types),
            )
        )
    return cases


__all__ = ["EDIT_TYPES", "AleBench", "BenchCase", "BenchFormatError", "load_bench", "load_gt_masks"]
