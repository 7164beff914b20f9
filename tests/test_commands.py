"""The command module shared by ale-edit, ale-bench, ale-profile and the demo: one-line errors, the missing-extra
message, model loading (checkpoint, random kinds, the demo's fallback), and ``--help`` without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ale_pipeline import commands
from ale_pipeline.commands import (
    CommandError,
    MissingExtraError,
    Parser,
    add_model_arguments,
    call_loader,
    is_load_error,
    load_pipeline,
    refuse_overwrite,
    require_extra,
    run_command,
)
from ale_pipeline.config import DEFAULT_MODEL, DEFAULTS

REPO = Path(__file__).resolve().parents[1]


def test_torch_free_constants_equal_their_homes():
    import ale_kernels
    from ale_pipeline import cli, random_model
    from ale_pipeline.automask import METHODS

    assert commands.BACKENDS == ale_kernels.BACKENDS
    assert set(commands.RANDOM_KINDS) == set(random_model._KINDS)
    assert cli.MASK_METHODS == METHODS


def test_model_arguments_default_to_the_edit_configuration():
    parser = Parser(prog="x")
    add_model_arguments(parser)
    args = parser.parse_args([])
    assert (args.model, args.steps, args.seed, args.backend) == (
        DEFAULT_MODEL, DEFAULTS.num_inference_steps, DEFAULTS.seed, DEFAULTS.attention_backend,
    )  # fmt: skip
    with pytest.raises(CommandError, match=r"invalid choice: 'fast' .*\(see x --help\)"):
        parser.parse_args(["--backend", "fast"])


def test_run_command_reports_mistakes_and_missing_extras_in_one_line(capsys):
    def mistake():
        raise CommandError("--steps must be\nat least 1")

    assert run_command("prog", mistake) == 2
    assert capsys.readouterr().err == "prog: error: --steps must be at least 1\n"

    def missing():
        raise ModuleNotFoundError("No module named 'diffusers'", name="diffusers.models")

    assert run_command("prog", missing, extra="edit") == 2
    assert (
        capsys.readouterr().err
        == "prog: error: this command needs the 'edit' extra: pip install \"ale-kernels[edit]\"\n"
    )

    def unrelated():
        raise ModuleNotFoundError("No module named 'frob'", name="frob")

    with pytest.raises(ModuleNotFoundError):  # a bug, not a missing extra: the traceback stays
        run_command("prog", unrelated, extra="edit")

    def interrupted():
        raise KeyboardInterrupt

    assert run_command("prog", interrupted, interrupted="stopped") == 130
    assert capsys.readouterr().err == "prog: stopped\n"


def test_require_extra_names_the_extra_of_a_missing_module(monkeypatch):
    require_extra("edit")  # installed here
    real = commands.importlib.util.find_spec
    monkeypatch.delitem(sys.modules, "matplotlib", raising=False)
    monkeypatch.setattr(commands.importlib.util, "find_spec", lambda n: None if n == "matplotlib" else real(n))
    require_extra("edit")
    with pytest.raises(MissingExtraError, match=r"needs the 'bench' extra: pip install \"ale-kernels\[bench\]\""):
        require_extra("bench")
    with pytest.raises(ValueError, match="extra must be one of"):
        require_extra("gui")


def test_load_errors_are_recognised_by_type_and_by_http_client_module():
    http_error = type("ConnectError", (Exception,), {"__module__": "httpx2._transports"})
    assert is_load_error(OSError("offline")) and is_load_error(ValueError("bad repo id"))
    assert is_load_error(http_error("refused"))
    assert is_load_error(type("ReadTimeout", (Exception,), {"__module__": "httpx"})())
    assert not is_load_error(RuntimeError("a bug"))

    def unreachable(*_):
        raise http_error("connection refused\nby peer")

    with pytest.raises(CommandError, match=r"cannot load model 'm': connection refused by peer; pass --model"):
        call_loader(unreachable, "m", "cpu", torch.float32)

    def broken(*_):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        call_loader(broken, "m", "cpu", torch.float32)


def test_load_pipeline_names_a_missing_folder(tmp_path):
    with pytest.raises(CommandError, match=r"cannot load model .*no such folder"):
        load_pipeline(str(tmp_path / "nowhere"), "cpu", torch.float32)


def test_random_kinds_load_without_weights():
    from benchmarks import bench_edit

    pipe = load_pipeline("tiny", "cpu", torch.float32, random_kinds=True)
    assert pipe.random_kind == "tiny" and pipe.unet.dtype == torch.float32
    assert bench_edit.load("tiny", "cpu", torch.float32).random_kind == "tiny"  # the benchmark loads alike
    with pytest.raises(ValueError, match="kind must be one of"):
        commands.random_pipeline("huge", "cpu", torch.float32)


def test_unreachable_weights_fall_back_to_a_random_sd_shaped_model(tmp_path, capsys):
    pipe = load_pipeline(str(tmp_path / "no-such-model"), "cpu", torch.float32, fallback="sd-shaped", prog="demo")
    assert pipe.random_kind == "sd-shaped"
    assert {m.inner_dim // m.heads for n, m in pipe.unet.named_modules() if n.endswith("attn2")} == {
        40, 80, 160,
    }  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("demo: no weights for")


def test_refuse_overwrite_names_the_first_existing_file(tmp_path):
    paths = [tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"]
    refuse_overwrite(paths, force=False, flag="--trace")
    paths[1].write_text("{}")
    paths[2].write_text("{}")
    with pytest.raises(CommandError, match=r"--trace: '.*b\.json' already exists; pass --force"):
        refuse_overwrite(paths, force=False, flag="--trace")
    refuse_overwrite(paths, force=True, flag="--trace")


# --- the installed commands, in fresh interpreters ------------------------------------------------------------


COMMANDS = {
    "ale-edit": "ale_pipeline.cli",
    "ale-bench": "ale_pipeline.bench.cli",
    "ale-profile": "ale_pipeline.profile",
    "ale-app": "ale_pipeline.app.cli",
}
#: Blocks ``import diffusers`` as if the package were not installed.
BLOCK_DIFFUSERS = """
import sys
class _NoDiffusers:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "diffusers":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NoDiffusers())
"""


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})  # fmt: skip


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_answers_without_torch_or_diffusers(name, tmp_path):
    code = f"""
import resource, sys
from {COMMANDS[name]} import main
status = main(["--help"])
heavy = sorted(m for m in ("torch", "diffusers", "transformers", "ale_kernels", "gradio") if m in sys.modules)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(status, ",".join(heavy) or "-", usage.ru_utime + usage.ru_stime)
"""
    done = _python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    *help_text, last = done.stdout.strip().splitlines()
    status, heavy, cpu_seconds = last.split()
    assert help_text[0].startswith(f"usage: {name}") and status == "0"
    assert heavy == "-", f"--help imported {heavy}"
    assert float(cpu_seconds) < 2.0  # CPU time: what the command costs, whatever else the machine runs


@pytest.mark.parametrize(
    "name, argv",
    [
        ("ale-edit", ["room.png", "--edit", "couch=>red couch", "--mask", "couch.png", "--out", "edited.png"]),
        ("ale-bench", ["run", "--bench", "bench", "--out", "results"]),
        ("ale-profile", ["--trace", "trace.json"]),
        ("ale-app", ["--port", "0"]),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(name, argv, tmp_path):
    done = _python(f"{BLOCK_DIFFUSERS}\nfrom {COMMANDS[name]} import main\nraise SystemExit(main({argv!r}))", tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"{name}: error: this command needs the 'edit' extra: pip install \"ale-kernels[edit]\"\n"
    assert not list(tmp_path.iterdir())  # nothing written
    helped = _python(
        f"{BLOCK_DIFFUSERS}\nfrom {COMMANDS[name]} import main\nraise SystemExit(main(['--help']))", tmp_path
    )
    assert helped.returncode == 0 and helped.stdout.startswith(f"usage: {name}")  # help needs no extra


def test_the_commands_are_the_installed_entry_points():
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {name: f"{module}:main" for name, module in COMMANDS.items()}
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    def provided(extra: str) -> set[str]:
        names = set()
        for requirement in extras[extra]:
            if requirement.startswith("ale-kernels["):  # the extras it includes
                for included in requirement[len("ale-kernels[") : -1].split(","):
                    names |= provided(included)
            else:
                names.add(requirement.split(">")[0].split("=")[0].strip())
        return names

    for extra, modules in commands.EXTRAS.items():
        assert {"pillow" if m == "PIL" else m for m in modules} <= provided(extra), extra
    assert provided("edit") | provided("bench") <= provided("test")


def test_the_command_module_imports_nothing_heavy_at_load():
    # The command module itself must not pull torch in: it is imported before parsing.
    source = (REPO / "ale_pipeline" / "commands.py").read_text()
    top_level = [n for n in ast.parse(source).body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {(n.module or "") if isinstance(n, ast.ImportFrom) else n.names[0].name for n in top_level}
    assert names and not names & {"torch", "diffusers", "transformers", "numpy", "ale_kernels", "pipeline"}
