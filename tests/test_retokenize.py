"""An index written by an older keyword tokenizer is re-cut by `reindex --stale`, without OCR."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from imgs import render
from pixgrep import textnorm
from pixgrep.app import Index, index_paths, reindex
from pixgrep.catalog import Content
from pixgrep.settings import load_settings
from pixgrep.store import Segment
from sqlalchemy import select

pytestmark = pytest.mark.slow


def test_reindex_stale_recuts_keyword_text_of_an_older_tokenizer(home: Path, tmp_path: Path) -> None:
    pic = render(tmp_path / "pics" / "late.png", ["1、2點才睡"])
    with Index(load_settings(), ocr_workers=0) as ix:
        index_paths(ix, [str(pic.parent)])
        with ix.db.session() as s:
            content = s.scalars(select(Content)).one()
            h, text = content.hash, content.text
        assert "才睡" in textnorm.fold(text)
        st = ix.pipeline.store
        assert st.search_keyword(textnorm.query_tokens("才睡"), 5)[0].content_hash == h

        # What version 1 stored: a digit and the Chinese after it were one token, and no version was recorded.
        old_kw = " ".join(textnorm.fold(text).replace("、", " ").split())
        st.upsert(h, [Segment("full", "ocr", text, old_kw)], ix.pipeline.embedder.embed([text]))
        st.flush()
        with ix.db.session() as s:
            row = s.get(Content, h)
            assert row is not None
            versions = row.versions
            del versions["keyword"]
            row.versions_json = json.dumps(versions)
        assert st.search_keyword(textnorm.query_tokens("才睡"), 5) == []

    with Index(load_settings(), ocr_workers=0) as ix:
        with ix.db.session() as s:
            row = s.get(Content, h)
            assert row is not None and ix.pipeline.stale_stages(row) == {"embed"}
        r = reindex(ix, stale=True)
        assert (r.ocr, r.embed) == (0, 1) and ix.pipeline.ocr_pool.runs == 0  # from the stored lines, no OCR
        hits = ix.search("才睡", mode="keyword", limit=5)
        assert [x.path for x in hits] == [str(pic)]
        assert reindex(ix, stale=True).embed == 0  # now current
