from pixgrep import textnorm


def test_fold_traditional_fullwidth_case() -> None:
    assert textnorm.fold("今天不開心") == "今天不开心"
    assert textnorm.fold("ＡＢＣ１２３") == "abc123"
    assert textnorm.fold("Hello WORLD") == "hello world"


def test_fold_map_points_back_to_original() -> None:
    folded, index = textnorm.fold_with_map("ＡＢ開心")
    assert folded == "ab开心"
    assert index == [0, 1, 2, 3]


def test_cjk_bigrams_make_substrings_match() -> None:
    doc = set(textnorm.document_tokens("我們昨天去農場玩時").split())
    q = textnorm.query_tokens("昨天去农场").split()
    assert q == ["昨天", "天去", "去农", "农场"]
    assert set(q) <= doc
    # A single character query is a unigram, and the doc has unigrams too.
    assert textnorm.query_tokens("农").split() == ["农"]
    assert "农" in doc


def test_latin_words_and_mixed_text() -> None:
    toks = textnorm.document_tokens("G.I.Joe Memes 因為他").split()
    assert {"g", "i", "joe", "memes", "因为", "为他"} <= set(toks)


def test_highlight_simplified_query_in_traditional_text() -> None:
    text = "狗狗知道自己什麼也沒做"
    assert textnorm.highlight_spans(text, "什么也没") == [(6, 10)]
    snip, spans = textnorm.snippet(text, "什么也没")
    assert snip[spans[0][0] : spans[0][1]] == "什麼也沒"


def test_snippet_window_keeps_match_visible() -> None:
    text = "前" * 100 + "目標文字" + "後" * 100
    snip, spans = textnorm.snippet(text, "目标", width=30)
    assert len(snip) <= 32
    (s, e), *_ = spans
    assert snip[s:e] == "目標"
