"""The hub probe, and what loading does when the hub is out of reach: no back-off retries, the cache alone."""

from __future__ import annotations

import socket
import time

import pytest
import torch
from huggingface_hub import constants

from ale_pipeline import commands, hub


@pytest.fixture
def no_proxy(monkeypatch):
    for name in hub.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # free once closed: a connection there is refused


def test_a_listening_endpoint_is_reachable_and_a_closed_one_is_not(monkeypatch, no_proxy):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert hub.hub_reachable(timeout=2)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    start = time.perf_counter()
    assert not hub.hub_reachable(timeout=2)
    assert time.perf_counter() - start < 2  # refused at once, not waited out


def test_offline_mode_and_proxies_skip_the_probe(monkeypatch, no_proxy):
    def no_connection(*_, **__):
        raise AssertionError("the probe must not connect here")

    monkeypatch.setattr(socket, "create_connection", no_connection)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert not hub.hub_reachable()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert hub.hub_reachable()  # the probe cannot see through a proxy: huggingface_hub decides


@pytest.fixture
def calls(monkeypatch):
    """Every ``_from_pretrained`` call's options; each fails as an uncached, unreachable model does."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    seen: list[dict] = []

    def from_pretrained(model, dtype, **options):
        seen.append(options)
        raise LocalEntryNotFoundError(f"{model} is not in the local cache")

    monkeypatch.setattr(commands, "_from_pretrained", from_pretrained)
    monkeypatch.setattr(commands, "hub_reachable", lambda: False)
    return seen


def test_an_unreachable_hub_is_not_asked_before_the_fallback(calls, capsys):
    pipe = commands.load_pipeline("org/model", "cpu", torch.float32, fallback="tiny", prog="demo")
    assert pipe.random_kind == "tiny"
    assert calls == [{"local_files_only": True}]  # the cache only: no hub attempt after it
    said = capsys.readouterr().out
    assert said.startswith("demo: no weights for 'org/model' could be reached (OSError: ")
    assert f"{constants.ENDPOINT} does not answer and the local cache has no copy" in said


def test_without_a_fallback_an_unreachable_hub_leaves_the_cache(calls):
    with pytest.raises(commands.CommandError, match=r"cannot load model 'org/model': .* does not answer and the local"):
        commands.load_pipeline("org/model", "cpu", torch.float32)
    assert calls == [{"local_files_only": True}]


def test_a_reachable_hub_is_asked_after_the_cache(calls, monkeypatch, capsys):
    monkeypatch.setattr(commands, "hub_reachable", lambda: True)
    commands.load_pipeline("org/model", "cpu", torch.float32, fallback="tiny", prog="demo")
    assert calls == [{"local_files_only": True}, {}]
    assert "(LocalEntryNotFoundError: org/model is not in the local cache)" in capsys.readouterr().out


def test_a_local_folder_needs_no_probe(calls, monkeypatch, tmp_path):
    def probe():
        raise AssertionError("a local folder must not probe the hub")

    monkeypatch.setattr(commands, "hub_reachable", probe)
    with pytest.raises(commands.CommandError):
        commands.load_pipeline(str(tmp_path), "cpu", torch.float32)
    assert calls == [{}]
