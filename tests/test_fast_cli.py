"""The stdlib-only search path: same socket as Settings, same flags, or step aside."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pixgrep.settings import load_settings
from pixgrep_cli import fast, wire


def _same_as_settings(config: str | None = None) -> None:
    expected = str(load_settings(config).socket_path)
    assert fast.socket_path(config) == expected


def test_socket_path_follows_settings_precedence(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _same_as_settings()  # $XDG_RUNTIME_DIR/pixgrep/api.sock
    cfg = tmp_path / "config" / "pixgrep" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('[daemon]\nsocket = "/run/x/from-default-config.sock"\n')
    _same_as_settings()
    other = tmp_path / "other.toml"
    other.write_text('[daemon]\nsocket = "/run/x/from-flag.sock"\n')
    _same_as_settings(str(other))
    monkeypatch.setenv("PIXGREP_CONFIG_FILE", str(other))
    _same_as_settings()
    monkeypatch.setenv("PIXGREP_DAEMON__SOCKET", "/run/x/from-env.sock")
    _same_as_settings()
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.delenv("PIXGREP_DAEMON__SOCKET")
    monkeypatch.delenv("PIXGREP_CONFIG_FILE")
    cfg.unlink()
    _same_as_settings()  # /tmp/pixgrep-UID/api.sock


def test_socket_path_steps_aside_when_unsure(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon\n")
    assert fast.socket_path(str(bad)) is None
    assert fast.socket_path(str(tmp_path / "missing.toml")) is None
    monkeypatch.setenv("PIXGREP_DAEMON__SHUTDOWN_TIMEOUT", "5")  # another key of the section: no matter
    assert fast.socket_path(None) is not None
    monkeypatch.setenv("PIXGREP_DAEMON", '{"socket": "/x"}')
    assert fast.socket_path(None) is None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["search", "hello", "world"], (None, {"query": "hello world", "limit": None, "json": False})),
        (["--config", "c.toml", "search", "-k", "3", "--json", "x"], ("c.toml", {"limit": 3, "json": True})),
        (["search", "--mode=keyword", "--in", "d", "x"], (None, {"mode": "keyword", "in_dir": "d"})),
    ],
)
def test_parse(argv: list[str], expected: tuple[str | None, dict[str, object]]) -> None:
    parsed = fast.parse_search(argv)
    assert parsed is not None
    assert parsed[0] == expected[0]
    for k, v in expected[1].items():
        assert parsed[1][k] == v


@pytest.mark.parametrize(
    "argv",
    [
        ["search"],
        ["search", "--montage", "m.png", "x"],
        ["search", "--help"],
        ["--home", "h", "search", "x"],
        ["-v", "search", "x"],
        ["search", "--mode", "fuzzy", "x"],
        ["index", "search"],
    ],
)
def test_parse_leaves_other_forms_to_the_full_cli(argv: list[str]) -> None:
    assert fast.parse_search(argv) is None


def test_no_daemon_means_the_full_cli(home: Path) -> None:
    assert fast.search(["search", "x"]) is None
    sock = Path(os.environ["XDG_RUNTIME_DIR"]) / "pixgrep" / "api.sock"
    sock.parent.mkdir()
    sock.write_text("")  # a stale file, nobody listening
    assert fast.search(["search", "x"]) is None


def test_wire_reads_the_answers_the_api_gives() -> None:
    ok = b'HTTP/1.1 200 OK\r\ncontent-length: 13\r\ncontent-type: application/json\r\n\r\n{"results":[]}'
    assert wire.parse_response(ok) == (200, b'{"results":[]')  # exactly Content-Length bytes
    chunked = b'HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"a"\r\n3;x=1\r\n:1}\r\n0\r\n\r\n'
    assert wire.parse_response(chunked) == (400, b'{"a":1}')
    assert wire.parse_response(b"HTTP/1.0 200 OK\r\n\r\nuntil EOF") == (200, b"until EOF")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"HTTP/1.1 200 OK\r\ncontent-length: 10",  # the headers never end
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",  # the daemon died mid-answer
        b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nabc",
        b"SSH-2.0-OpenSSH\r\n\r\n",
    ],
)
def test_wire_refuses_what_is_not_a_whole_answer(raw: bytes) -> None:
    # An OSError: the CLI treats it like a daemon that is gone (the full CLI searches the index itself).
    with pytest.raises(wire.ProtocolError):
        wire.parse_response(raw)


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "cat"],
        ["search", "-k", "5", "--mode", "keyword", "--in", "rel/dir", "a", "b"],
        ["search", "--in=/p", "x"],
    ],
)
def test_the_fast_path_sends_what_a_search_request_writes(argv: list[str]) -> None:
    """One wire format: the fast path writes the body itself (no dataclass import), the same as SearchRequest."""
    from pixgrep.request import SearchRequest

    parsed = fast.parse_search(argv)
    assert parsed is not None
    o = parsed[1]
    want = SearchRequest(o["query"], limit=o["limit"], mode=o["mode"], in_dir=o["in_dir"]).to_json()
    assert fast.request_body(o) == want
