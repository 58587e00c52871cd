"""One HTTP/1.1 exchange with the daemon over its Unix socket, with ``socket`` alone.

``http.client`` would do, but importing it pulls in the ``email`` package to parse
headers: 20-25 ms of a warm ``pixgrep search`` whose daemon answers in 30-70 ms
(``python -X importtime``). The daemon's API (uvicorn) answers every request of
ours with a Content-Length (or, for a streamed body, chunked transfer coding),
and we send ``Connection: close``, so one request, one response and EOF is all
this needs to speak.
"""

from __future__ import annotations

import socket


class ProtocolError(OSError):
    """The answer was not an HTTP/1.x response this client understands."""


def exchange(path: str, method: str, url: str, body: bytes | None, *, timeout: float | None) -> tuple[int, bytes]:
    """Send one request to the Unix socket at ``path``; (status, body) of the answer.

    Raises TimeoutError (``timeout`` seconds without progress), OSError (refused, reset,
    a stale socket file) or ProtocolError.
    """
    head = [f"{method} {url} HTTP/1.1", "Host: pixgrep", "Connection: close", "Accept-Encoding: identity"]
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    request = ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + (body or b"")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(request)
        return parse_response(_read_all(s))


def _read_all(s: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        data = s.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def parse_response(raw: bytes) -> tuple[int, bytes]:
    """(status, body) of one complete HTTP/1.x response (the connection closed after it)."""
    try:
        return _parse(raw)
    except ValueError as e:  # a length or chunk size that is not a number
        raise ProtocolError(f"a malformed answer from the daemon ({e})") from e


def _parse(raw: bytes) -> tuple[int, bytes]:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ProtocolError("the daemon's answer ended before its headers did")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP response: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return int(parts[1]), _unchunk(rest)
    if "content-length" in headers:
        n = int(headers["content-length"])
        if len(rest) < n:
            raise ProtocolError(f"the daemon's answer was cut short ({len(rest)} of {n} bytes)")
        return int(parts[1]), rest[:n]
    return int(parts[1]), rest  # delimited by the end of the connection


def _unchunk(data: bytes) -> bytes:
    out: list[bytes] = []
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            raise ProtocolError("a chunked answer was cut short")
        size = int(data[pos:end].split(b";", 1)[0], 16)
        if size == 0:
            return b"".join(out)
        start = end + 2
        if len(data) < start + size:
            raise ProtocolError("a chunked answer was cut short")
        out.append(data[start : start + size])
        pos = start + size + 2
