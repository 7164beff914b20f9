"""The SD1.x CLIP tokenizer, built offline from the BPE merges that ship inside the ``open-clip-torch`` wheel.

SD1.x checkpoints use OpenAI CLIP's tokenizer: 49,408 tokens, ``<|startoftext|>`` = 49406, ``<|endoftext|>``
= 49407, 77 positions, padded with ``<|endoftext|>``. Its vocabulary is fully determined by the merges file:
the 256 byte-level symbols (in ``bytes_to_unicode`` order), the same with ``</w>``, one entry per merge, then
the two special tokens. So the real tokenizer can be rebuilt with no model hub, from the merges file of the
``open-clip-torch`` wheel. That wheel is installed with ``--no-deps`` (its torchvision requirement would
replace this torch), so it is never imported here: only its data file is located.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import json
import os
import tempfile
from pathlib import Path

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MODEL_MAX_LENGTH = 77
#: What SDXL's ``tokenizer_2`` pads with (OpenCLIP's tokenizer pads with id 0, the byte symbol ``"!"``).
SDXL_PAD_TOKEN = "!"
VOCAB_SIZE = 49408
# CLIP's SimpleTokenizer keeps lines [1, 49152 - 256 - 2 + 1) of the file: the header is line 0, and the
# vocabulary must total 49152 + 256 = 49408 with the 512 byte symbols and the 2 special tokens.
NUM_MERGES = 49152 - 256 - 2


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible byte -> printable unicode map, in the order the vocabulary lists them."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def find_bpe_file() -> Path:
    """Path of ``bpe_simple_vocab_16e6.txt.gz`` inside the installed ``open-clip-torch``, without importing it.

    Importing ``open_clip`` would import torchvision, which the wheel was installed without.
    """
    spec = importlib.util.find_spec("open_clip")
    candidates: list[Path] = []
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / BPE_FILE for p in spec.submodule_search_locations]
    try:
        files = importlib.metadata.files("open-clip-torch") or []
        candidates += [Path(f.locate()) for f in files if f.name == BPE_FILE]
    except importlib.metadata.PackageNotFoundError:
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"cannot find {BPE_FILE}: the CLIP tokenizer is built from the merges file of the open-clip-torch wheel. "
        'Install it without its dependencies (they would replace torch): pip install --no-deps "open-clip-torch>=2.20" '
        "(make setup does this), or pass a model directory holding a tokenizer to load_tokenizer()"
    )


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ale-kernels`` (``~/.cache/ale-kernels`` by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "ale-kernels"


def _vocab_and_merges(bpe_path: Path) -> tuple[dict[str, int], list[str]]:
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = lines[1 : NUM_MERGES + 1]
    if len(merges) != NUM_MERGES or any(len(m.split()) != 2 for m in merges):
        raise ValueError(f"{bpe_path} does not hold {NUM_MERGES} BPE merges after its header line")
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def _write_atomic(path: Path, text: str) -> None:
    # Parallel test workers may build the cache at once: write to a private file, then rename over.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def clip_tokenizer_files(cache_dir: str | os.PathLike | None = None) -> Path:
    """Directory holding ``vocab.json`` and ``merges.txt`` of the CLIP tokenizer, written on first use."""
    out = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = out / "clip-bpe-16e6"
    vocab_file, merges_file = out / "vocab.json", out / "merges.txt"
    if vocab_file.is_file() and merges_file.is_file():
        return out
    vocab, merges = _vocab_and_merges(find_bpe_file())
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(merges_file, "#version: 0.2\n" + "\n".join(merges) + "\n")
    _write_atomic(vocab_file, json.dumps(vocab, ensure_ascii=False))
    return out


def build_clip_tokenizer(cache_dir: str | os.PathLike | None = None, pad_token: str = EOS_TOKEN):
    """The SD1.x CLIP tokenizer (49,408 tokens, 77 positions, padded with ``<|endoftext|>``), built offline.

    Returns a ``transformers.CLIPTokenizer`` (backed by the ``tokenizers`` library in transformers 5).
    "a photo of a cat" encodes to ``[49406, 320, 1125, 539, 320, 2368, 49407]`` as in SD. SDXL's second
    tokenizer (``tokenizer_2``, OpenCLIP ViT-bigG's) is the same vocabulary padded with ``"!"`` (id 0):
    ``pad_token=SDXL_PAD_TOKEN`` builds it.
    """
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(
        str(clip_tokenizer_files(cache_dir)),
        model_max_length=MODEL_MAX_LENGTH,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=pad_token,
        local_files_only=True,
    )
    if len(tokenizer) != VOCAB_SIZE:
        raise ValueError(f"the rebuilt CLIP tokenizer has {len(tokenizer)} tokens, expected {VOCAB_SIZE}")
    return tokenizer


def load_tokenizer(
    model_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    subfolder: str = "tokenizer",
):
    """The tokenizer of a local checkpoint, or the rebuilt SD1.x CLIP tokenizer when ``model_dir`` is None.

    ``model_dir`` is a diffusers pipeline directory (its ``subfolder``, ``tokenizer/`` or SDXL's
    ``tokenizer_2/``, is used) or a tokenizer directory itself. Only local files are read.
    """
    if model_dir is None:
        return build_clip_tokenizer(cache_dir)
    from transformers import AutoTokenizer

    root = Path(model_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"model_dir {str(root)!r} is not a directory")
    path = root / subfolder if (root / subfolder).is_dir() else root
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
