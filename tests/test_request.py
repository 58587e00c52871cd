"""SearchRequest: one search's fields, checked where it is made, and the socket API's body both ways."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pixgrep.filters import TYPES, Filters, filters_from
from pixgrep.limits import MAX_LIMIT, MAX_QUERY_CHARS, MODES, QueryRefused
from pixgrep.request import SearchRequest


def test_defaults_are_a_plain_search() -> None:
    r = SearchRequest("cat")
    assert (r.limit, r.mode, r.in_dir, r.all, r.since, r.until, r.types, r.source) == (
        None,
        None,
        None,
        False,
        None,
        None,
        (),
        None,
    )
    assert r.filters == Filters()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.query = "dog"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"query": "x" * (MAX_QUERY_CHARS + 1)}, f"the limit is {MAX_QUERY_CHARS}"),
        ({"limit": 0}, f"between 1 and {MAX_LIMIT}, not 0"),
        ({"limit": MAX_LIMIT + 1}, f"not {MAX_LIMIT + 1}"),
    ],
)
def test_the_limits_are_refused_as_query_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(QueryRefused, match=message):
        SearchRequest(**{"query": "x", **fields})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mode": "fuzzy"}, "unknown mode 'fuzzy'"),
        ({"source": "exif"}, "unknown source 'exif'"),
        ({"types": ("svg",)}, "unknown image type 'svg'"),
        ({"types": "png"}, "types: must be a list"),
        ({"types": ("png",) * 17}, "types: at most 16"),
        ({"since": 2.0, "until": 1.0}, "since is after --until"),
        ({"since": float("inf")}, "since: must be a Unix time"),
        ({"until": True}, "until: must be a Unix time"),
        ({"limit": True}, "limit: must be a whole number"),
        ({"limit": 2.5}, "limit: must be a whole number"),
        ({"all": "yes"}, "all: must be true or false"),
        ({"query": 5}, "query: must be text"),
    ],
)
def test_bad_fields_are_refused_in_one_line(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as e:
        SearchRequest(**{"query": "x", **fields})
    assert "\n" not in str(e.value)


def test_the_bounds_themselves_pass() -> None:
    assert SearchRequest("x" * MAX_QUERY_CHARS, limit=MAX_LIMIT).limit == MAX_LIMIT
    assert SearchRequest("x", limit=1, since=5, until=5).since == 5.0
    assert {SearchRequest("x", mode=m).mode for m in MODES} == set(MODES)


def test_fields_are_normalised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = SearchRequest("x", types=["JPG", "png", ".jpeg", "", "tif"], source="", in_dir="sub")
    assert r.types == ("jpeg", "png", "tiff") and r.source is None
    assert r.in_dir == os.path.join(str(tmp_path), "sub")
    assert SearchRequest("x", in_dir="").in_dir is None
    # Equal requests compare equal whatever spelling made them.
    assert r == SearchRequest("x", types=("tiff", "png", "jpg"), in_dir=str(tmp_path / "sub"))


def test_from_filters_carries_what_the_user_typed() -> None:
    f = filters_from(since="2024-05-01", until="2024-05-01", types=["gif"], source="caption", in_dir="/pics")
    r = SearchRequest.from_filters("cat", f, limit=3, mode="keyword", all=True)
    assert (r.limit, r.mode, r.all, r.types, r.source, r.in_dir) == (3, "keyword", True, ("gif",), "caption", "/pics")
    assert r.since == f.since and r.until == f.until and r.filters == f
    with pytest.raises(ValueError, match="since is after"):
        SearchRequest.from_filters("cat", filters_from(since="2024-05-02", until="2024-05-01"))


def test_a_plain_search_body_is_what_every_daemon_version_reads() -> None:
    assert SearchRequest("cat", limit=5).to_json() == {"query": "cat", "limit": 5, "mode": None, "in_dir": None}
    body = SearchRequest("cat", all=True, since=0.0, types=("png",), source="ocr").to_json()
    # A since of 0.0 is a time (1970), not "unset".
    assert body == {
        "query": "cat",
        "limit": None,
        "mode": None,
        "in_dir": None,
        "all": True,
        "since": 0.0,
        "types": ["png"],
        "source": "ocr",
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "a search is a JSON object"),
        ({"limit": 3}, "query: missing"),
        ({"query": "x", "path": "/p"}, "unknown field 'path'"),
        ({"query": "x", "types": "png"}, "types: must be a list"),
        ({"query": "x", "types": [3]}, "types: must be a list"),
        ({"query": "x", "limit": "5"}, "limit: must be a whole number"),
    ],
)
def test_from_json_refuses_what_to_json_never_writes(body: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SearchRequest.from_json(body)


requests = st.builds(
    SearchRequest,
    query=st.text(max_size=50),
    limit=st.none() | st.integers(1, MAX_LIMIT),
    mode=st.none() | st.sampled_from(MODES),
    in_dir=st.none() | st.sampled_from(["/p", "/p/q r", "/ü"]),
    all=st.booleans(),
    since=st.none() | st.floats(-1e10, 0),
    until=st.none() | st.floats(0, 1e10),
    types=st.lists(st.sampled_from(sorted(TYPES)), max_size=3).map(tuple),
    source=st.none() | st.sampled_from(["ocr", "caption"]),
)


@given(requests)
def test_json_round_trip(r: SearchRequest) -> None:
    # Through the bytes the socket carries, as the client writes them and the server reads them.
    assert SearchRequest.from_json(json.loads(json.dumps(r.to_json()))) == r


def test_the_apis_schema_has_exactly_the_requests_fields() -> None:
    """The API checks wire types with pydantic (its messages), then builds the request: they must not drift."""
    from pixgrep.service.api import SearchBody

    assert set(SearchBody.model_fields) == {f.name for f in dataclasses.fields(SearchRequest)}
