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
    # Bigrams first; the single characters after them let partial matches rank lower.
    assert q == ["昨天", "天去", "去农", "农场", "昨", "天", "去", "农", "场"]
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


# --------------------------------------------------------------------------
# Script boundaries and the substring promise, as properties.

import re  # noqa: E402
import string  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# Traditional and simplified characters that memes use, plus any unified ideograph and kana.
_CJK = st.one_of(
    st.sampled_from("我們们昨天去農农場场玩時时點点才睡是啥不開开心說说話话後后裡里髮发麵面"),
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
    st.characters(min_codepoint=0x30A1, max_codepoint=0x30FA),
)
_LATIN = st.sampled_from(string.ascii_letters + string.digits + "ＡＢｃｄ０１２")
_OTHER = st.sampled_from(" \n、，。！？!?.,:;-_/()「」『』…~・😂")
# Anything at all now and then: symbols, marks, other scripts, compatibility forms.
_ANY = st.characters(blacklist_categories=["Cs"])
_TEXT = st.text(alphabet=st.one_of(_CJK, _CJK, _LATIN, _LATIN, _OTHER, _ANY), max_size=30)


def _doc(text: str) -> set[str]:
    return set(textnorm.document_tokens(text).split())


def _word_char(ch: str) -> bool:
    """Whether ``ch`` folds into something that joins a latin/digit word."""
    f = textnorm.fold(ch)
    return bool(f) and any(re.fullmatch(r"[^\W_]", c) and not textnorm.is_cjk(c) for c in f)


def test_chinese_after_digits_and_latin_is_cut_at_the_script_boundary() -> None:
    doc = _doc("1、2點才睡")
    for q in ("才睡", "點才睡", "点才睡", "睡", "2"):
        assert set(textnorm.query_tokens(q).split()) <= doc, q
    assert set(textnorm.query_tokens("是啥").split()) <= _doc("COSPLAY是啥")
    assert "cosplay" in _doc("COSPLAY是啥") and "cosplay" in _doc("是啥COSPLAY")
    assert set(textnorm.query_tokens("3點").split()) <= _doc("凌晨3點")  # each part on its own side


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=_TEXT, sub=st.text(alphabet=_CJK, min_size=2, max_size=8), suffix=_TEXT)
def test_every_cjk_substring_of_two_or_more_characters_matches(prefix: str, sub: str, suffix: str) -> None:
    text = prefix + sub + suffix
    query = textnorm.query_tokens(sub).split()
    assert query and set(query) <= _doc(text)
    assert textnorm.coverage(sub, text) == 1.0


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=_TEXT, word=st.text(alphabet=_LATIN, min_size=1, max_size=10), suffix=_TEXT)
def test_every_latin_word_matches(prefix: str, word: str, suffix: str) -> None:
    # A word is a maximal run: nothing that joins it may touch it on either side.
    assume(not (prefix and _word_char(prefix[-1])) and not (suffix and _word_char(suffix[0])))
    text = prefix + word + suffix
    assert textnorm.query_tokens(word).split() == [textnorm.fold(word)]
    assert textnorm.fold(word) in _doc(text)


@settings(max_examples=200)
@given(prefix=_TEXT, ch=_CJK, suffix=_TEXT)
def test_single_cjk_characters_match(prefix: str, ch: str, suffix: str) -> None:
    assert set(textnorm.query_tokens(ch).split()) <= _doc(prefix + ch + suffix)


@settings(max_examples=200)
@given(sub=st.text(alphabet=_CJK, min_size=2, max_size=6), filler=st.sampled_from([" ", "，", "a", "1"]))
def test_scattered_characters_match_below_the_whole_substring(sub: str, filler: str) -> None:
    # A text with the query's characters apart holds its unigrams but not all its bigrams.
    apart = filler.join(sub)
    bigrams = {t for t in textnorm.query_tokens(sub).split() if len(t) > 1}
    assume(not bigrams <= _doc(apart))
    assert 0.0 < textnorm.coverage(sub, apart) < textnorm.coverage(sub, sub) == 1.0


@settings(max_examples=300)
@given(text=_TEXT)
def test_tokens_survive_the_milvus_analyzer_whole(text: str) -> None:
    # Milvus's standard analyzer splits on \W and lowercases: each token must stay one token.
    for tok in (textnorm.document_tokens(text) + " " + textnorm.query_tokens(text)).split():
        assert re.findall(r"\w+", tok.lower()) == [tok]


@pytest.mark.slow
def test_keyword_search_finds_every_substring_in_milvus_lite(tmp_path: Path) -> None:
    """End to end through the store's BM25 keyword search on Milvus Lite."""
    from pixgrep.store import MilvusStore, Segment

    store = MilvusStore(str(tmp_path / "milvus.db"), collection="c", embed_name="m", dim=4)
    rng = np.random.default_rng(0)
    others = ["凌晨三點還在滑手機", "COSPLAY 好難", "今天不開心", "2 點 才 睡"]

    def put(h: str, text: str) -> None:
        v = rng.standard_normal((1, 4)).astype(np.float32)
        store.upsert(h, [Segment("full", "ocr", text, textnorm.document_tokens(text))], v / np.linalg.norm(v))

    for i, t in enumerate(others):
        put(f"other{i}", t)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        prefix=_TEXT,
        sub=st.one_of(st.text(alphabet=_CJK, min_size=2, max_size=6), st.text(alphabet=_LATIN, min_size=1, max_size=8)),
        suffix=_TEXT,
    )
    def check(prefix: str, sub: str, suffix: str) -> None:
        if not textnorm.is_cjk(textnorm.fold(sub)[0]):
            assume(not (prefix and _word_char(prefix[-1])) and not (suffix and _word_char(suffix[0])))
        put("target", prefix + sub + suffix)
        hits = store.search_keyword(textnorm.query_tokens(sub), 10)
        assert "target" in {h.content_hash for h in hits}

    try:
        check()
        put("target", "1、2點才睡")
        for q in ("才睡", "點才睡"):
            hits = store.search_keyword(textnorm.query_tokens(q), 10)
            assert hits and hits[0].content_hash == "target", q
        assert "target" in {h.content_hash for h in store.search_keyword(textnorm.query_tokens("睡"), 10)}
        # "2 點 才 睡" holds the characters apart: found too, ranked below the whole phrase.
        ranked = [h.content_hash for h in store.search_keyword(textnorm.query_tokens("點才睡"), 10)]
        assert ranked[:2] == ["target", "other3"]
    finally:
        store.close()
