"""Fuzzing (hypothesis) of what takes untrusted input: the image decoder, the text normalizer, the API's parsing.

Bounded to about a minute in all on two cores (``max_examples`` per test, measured); the fault suite's seed
(PIXGREP_FAULT_SEED) also seeds hypothesis, so a failure replays with the printed seed.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import io
import itertools
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from faultkit import SEED_ENV, make_rng, record
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from PIL import Image
from pixgrep.filters import TYPES
from pixgrep.request import SearchRequest

pytestmark = pytest.mark.slow

_rng, SEED = make_rng("test_fuzz")
_BASE = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)


def fuzz(env: str, default: int) -> settings:
    """Examples per test: sized so the three take about a minute together; the env var overrides it."""
    return settings(_BASE, max_examples=int(os.environ.get(env, str(default))))


MAX_MP = 1.0


def _samples() -> dict[str, bytes]:
    """One small valid file per format the decoder meets, as mutation seeds."""
    im = Image.new("RGB", (48, 32), "white")
    for x in range(0, 48, 4):
        im.putpixel((x, 10), (0, 0, 0))
    out: dict[str, bytes] = {}
    for fmt, kw in (
        ("PNG", {}),
        ("JPEG", {"quality": 70}),
        ("GIF", {}),
        ("WEBP", {}),
        ("BMP", {}),
        ("TIFF", {}),
    ):
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        out[fmt] = buf.getvalue()
    # A palette image with transparency, an animated GIF, a JPEG with an EXIF orientation.
    buf = io.BytesIO()
    im.convert("P").save(buf, "PNG", transparency=0)
    out["PNG-P"] = buf.getvalue()
    buf = io.BytesIO()
    im.save(buf, "GIF", save_all=True, append_images=[im.rotate(90)])
    out["GIF-anim"] = buf.getvalue()
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(buf, "JPEG", exif=exif)
    out["JPEG-exif"] = buf.getvalue()
    return out


SAMPLES = _samples()
# Which bad-input classes the fuzzer reached, by the decoder's first words (for the report).
REASONS: dict[str, int] = {}


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(SAMPLES[draw(st.sampled_from(sorted(SAMPLES)))])
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "header"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 16))]
        else:  # big numbers where headers keep their sizes
            j = min(i, 40)
            data[j : j + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\x00\x01"]))
    return bytes(data)


def _classify(msg: str) -> str:
    return msg.split(":")[0].split("(")[0].strip()


@seed(SEED)
@fuzz("PIXGREP_FUZZ_DECODER", 4000)
@given(st.one_of(mutated(), st.binary(max_size=256)))
def test_decoder_returns_an_image_or_a_permanent_error(data: bytes) -> None:
    from pixgrep.errors import PermanentError
    from pixgrep.images import decode

    try:
        im = decode(data, max_megapixels=MAX_MP)
    except PermanentError as e:
        assert str(e) and "\n" not in str(e), repr(e)
        REASONS[_classify(str(e))] = REASONS.get(_classify(str(e)), 0) + 1
        return
    assert im.mode == "RGB"
    assert im.width * im.height <= MAX_MP * 1_000_000


text = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from("今天不開心我想回家狗狗知道ＡＢＣ１２３ｶﾀｶﾅ한국어ﬁ\u0301\u200b\ufeff　，。！"),
    ),
    max_size=80,
)


@seed(SEED)
@fuzz("PIXGREP_FUZZ_TEXT", 6000)
@given(text, text)
def test_normalizer_invariants(doc: str, query: str) -> None:
    from pixgrep import textnorm

    folded, index = textnorm.fold_with_map(doc)
    assert folded == textnorm.fold(doc)
    assert len(index) == len(folded)
    assert index == sorted(index) and all(0 <= i < len(doc) for i in index)
    for tokens in (textnorm.document_tokens(doc), textnorm.query_tokens(query)):
        assert isinstance(tokens, str) and "  " not in tokens and tokens == tokens.strip()
    spans = textnorm.highlight_spans(doc, query)
    assert all(0 <= s < e <= len(doc) for s, e in spans)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans)), spans
    snip, inner = textnorm.snippet(doc, query)
    assert "\n" not in snip and all(0 <= s < e <= len(snip) for s, e in inner)
    c = textnorm.coverage(query, doc)
    assert 0.0 <= c <= 1.0
    # What is searched for is found in itself: a query's own text covers it completely.
    if textnorm.query_tokens(query):
        assert textnorm.coverage(query, query) == 1.0


class RecordingBackend:
    """Stands behind the API's Backend Protocol; answers every call with a small valid payload."""

    live = True

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def health(self) -> dict[str, Any]:
        return {"ok": True, "pid": os.getpid(), "state": "running", "version": "fuzz"}

    def status(self, *, failed: bool) -> dict[str, Any]:
        self.calls.append(("status", {"failed": failed}))
        return {"counts": {}}

    def search(self, request: SearchRequest) -> list[dict[str, Any]]:
        self.calls.append(("search", dataclasses.asdict(request)))
        return []

    def watch(self, path: str, *, polling: bool) -> dict[str, Any]:
        self.calls.append(("watch", {"path": path, "polling": polling}))
        return {"path": path}

    def unwatch(self, path: str, *, forget: bool) -> dict[str, Any]:
        self.calls.append(("unwatch", {"path": path, "forget": forget}))
        return {"path": path}

    def index(self, paths: list[str], *, force: bool, on_total: Any = None, on_outcome: Any = None) -> dict[str, Any]:
        self.calls.append(("index", {"paths": paths, "force": force}))
        return {"queued": len(paths)}

    def close(self) -> None:
        pass

    def reindex(self, *, stale: bool, embeddings: bool, all: bool, failed: bool) -> dict[str, Any]:
        self.calls.append(("reindex", {}))
        return {}


@pytest.fixture
def api() -> Iterator[tuple[Any, RecordingBackend]]:
    from pixgrep.service.api import build_app
    from starlette.testclient import TestClient

    backend = RecordingBackend()
    with cf.ThreadPoolExecutor(2, thread_name_prefix="fuzz-api") as ex, TestClient(build_app(backend, ex)) as client:
        yield client, backend


ROUTES = ["/v1/health", "/v1/status", "/v1/search", "/v1/watch", "/v1/unwatch", "/v1/index", "/v1/reindex"]
FIELDS = ["query", "limit", "mode", "in_dir", "path", "polling", "forget", "paths", "force", "stale", "all", "x"]
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=8,
)
# Well-formed search bodies too, so the fuzzer reaches the backend and not only the validator.
search_bodies = st.fixed_dictionaries(
    {"query": text},
    optional={
        "limit": st.integers(-5, 2000),
        "mode": st.sampled_from(["hybrid", "semantic", "keyword", "x"]),
        "in_dir": text,
        "all": st.booleans(),
        "since": st.floats(allow_nan=False),
        "until": st.floats(allow_nan=False) | st.integers(-5, 2**40),
        "types": st.lists(st.sampled_from(["png", "JPG", ".tif", "", "svg"]) | text, max_size=3),
        "source": st.sampled_from(["ocr", "caption", "x"]),
    },
).map(lambda d: json.dumps(d).encode())
bodies = st.one_of(
    search_bodies,
    st.dictionaries(st.sampled_from(FIELDS), json_value, max_size=5).map(lambda d: json.dumps(d).encode()),
    json_value.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.just(b""),
)


@seed(SEED)
@fuzz("PIXGREP_FUZZ_API", 2000)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    # One leading slash: the test client cannot express a request target that starts with "//".
    route=st.one_of(
        st.sampled_from(ROUTES), st.text(alphabet="/v1abcxyz%.", max_size=12).map(lambda s: "/" + s.lstrip("/"))
    ),
    body=bodies,
    query=st.sampled_from(["", "?failed=1", "?failed=%ff", "?failed=" + "x" * 300]),
)
def test_api_answers_every_request_with_json_and_never_a_500(
    api: tuple[Any, RecordingBackend], method: str, route: str, body: bytes, query: str
) -> None:
    client, backend = api
    n = len(backend.calls)
    r = client.request(method, route + query, content=body, headers={"content-type": "application/json"})
    assert r.status_code in (200, 400, 404, 405, 413, 422), (r.status_code, r.text)
    payload = r.json()
    if r.status_code == 200:
        assert route in ROUTES
    else:
        assert isinstance(payload.get("error"), str) and payload["error"], payload
        # A refused request never reaches the daemon.
        assert len(backend.calls) == n
    for name, args in backend.calls[n:]:
        if name == "search":
            assert isinstance(args["query"], str)
            assert args["limit"] is None or 1 <= args["limit"] <= 1000
            assert args["mode"] in (None, "hybrid", "semantic", "keyword")
            assert args["source"] in (None, "ocr", "caption") and set(args["types"]) <= set(TYPES)
            assert args["since"] is None or args["until"] is None or args["since"] <= args["until"]


def test_fuzz_report() -> None:
    """Records which bad-input classes the decoder fuzzing reached (runs last in this module)."""
    record("test_fuzz", seed=SEED, seed_env=SEED_ENV, decoder_reasons=REASONS)
    if REASONS:
        assert all(REASONS.values())
