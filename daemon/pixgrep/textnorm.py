"""Text folding and keyword tokens.

Queries are mostly typed in simplified Chinese, meme text is mostly
traditional, and screenshots mix full- and half-width forms. Both sides are
folded per character (traditional -> simplified, NFKC width folding, case), so
offsets in the folded text map back to the original for highlighting.

Keyword tokens for BM25 are CJK unigrams and bigrams plus latin/digit words,
joined by spaces; a change between CJK and other scripts ends a token. Bigrams make any CJK substring of two or more characters
match, which word segmenters (jieba) cannot promise: they cut the query and the
document differently depending on context.
"""

from __future__ import annotations

import functools
import re
import unicodedata

import opencc

_converter = opencc.OpenCC("t2s")


@functools.lru_cache(maxsize=65536)
def fold_char(ch: str) -> str:
    folded = unicodedata.normalize("NFKC", ch).lower()
    if folded and is_cjk(folded[0]):
        folded = _converter.convert(folded)
    return folded


def fold(text: str) -> str:
    # ASCII folds to its lower case (NFKC leaves it alone); a search folds the text of its ~80
    # keyword candidates, and a generator over every character was a third of that cost.
    if text.isascii():
        return text.lower()
    return "".join(map(fold_char, text))


def fold_with_map(text: str) -> tuple[str, list[int]]:
    """Fold ``text``; also return, for each folded character, its source index."""
    out: list[str] = []
    index: list[int] = []
    for i, c in enumerate(text):
        f = fold_char(c)
        out.append(f)
        index.extend([i] * len(f))
    return "".join(out), index


# Bump when document_tokens or query_tokens change: the keyword text stored in the index
# was cut by the old rules, and `pixgrep reindex --stale` re-cuts it from the stored OCR lines.
TOKENIZER_VERSION = "2"

_CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0002fa1f"
_CJK_CLASS = re.compile(f"[{_CJK_RANGES}]")
# Letters and digits only: kana punctuation such as ・ sits in the kana block but cuts words.
# A CJK run and a latin/digit run are separate runs, so "1、2點才睡" gives 2 | 点才睡 and
# "COSPLAY是啥" gives cosplay | 是啥: a script boundary cuts a token like a space does.
_RUN = re.compile(rf"(?:(?=[{_CJK_RANGES}])[^\W_])+|(?:(?![{_CJK_RANGES}])[^\W_])+")


def is_cjk(ch: str) -> bool:
    """Whether ``ch`` is a CJK character: such runs are cut into characters and bigrams, not words."""
    return bool(_CJK_CLASS.match(ch))


def _runs(text: str) -> list[str]:
    return _RUN.findall(fold(text))


def _bigrams(run: str) -> list[str]:
    return [run[i : i + 2] for i in range(len(run) - 1)]


def document_tokens(text: str) -> str:
    """Tokens to index: every CJK character and bigram, every latin/digit word."""
    toks: list[str] = []
    for run in _runs(text):
        if is_cjk(run[0]):
            toks.extend(run)
            toks.extend(_bigrams(run))
        else:
            toks.append(run)
    return " ".join(toks)


def _query_parts(text: str) -> tuple[list[str], list[str]]:
    """(CJK bigrams and latin words, CJK unigrams of runs longer than one character)."""
    main: list[str] = []
    singles: list[str] = []
    for run in _runs(text):
        if is_cjk(run[0]) and len(run) > 1:
            main.extend(_bigrams(run))
            singles.extend(run)
        else:
            main.append(run)  # a lone CJK character is a unigram, and a word is a word
    return main, singles


def query_tokens(text: str) -> str:
    """Tokens to search: CJK bigrams, latin words, and the CJK characters themselves.

    The single characters let BM25 find an image holding only some characters of
    the query; ``coverage`` weighs them low, so such an image ranks below one
    holding the query's bigrams.
    """
    main, singles = _query_parts(text)
    return " ".join(main + list(dict.fromkeys(singles)))


def highlight_spans(text: str, query: str) -> list[tuple[int, int]]:
    """Spans of ``text`` (original offsets) that match the query after folding.

    The whole folded query is tried first; failing that, each query token
    (CJK bigram or word) is highlighted where it occurs.
    """
    folded, index = fold_with_map(text)
    fq = fold(query).strip()
    needles = [fq] if fq and fq in folded else _query_parts(query)[0]
    spans: list[tuple[int, int]] = []
    for needle in needles:
        if not needle:
            continue
        start = folded.find(needle)
        while start != -1:
            end = start + len(needle)
            spans.append((index[start], index[end - 1] + 1))
            start = folded.find(needle, end)
    spans.sort()
    merged: list[tuple[int, int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return merged


def snippet(text: str, query: str, width: int = 60) -> tuple[str, list[tuple[int, int]]]:
    """A one-line window of ``text`` around the first match, with match spans in it."""
    flat = " ".join(text.split())
    spans = highlight_spans(flat, query)
    if len(flat) <= width:
        return flat, spans
    center = spans[0][0] if spans else 0
    start = max(0, min(center - width // 3, len(flat) - width))
    end = start + width
    window = flat[start:end]
    prefix = "…" if start > 0 else ""
    suffix = "…" if end < len(flat) else ""
    shift = len(prefix) - start
    inside = [(max(s, start) + shift, min(e, end) + shift) for s, e in spans if e > start and s < end]
    return prefix + window + suffix, inside


# How much a matching single character counts against a matching bigram or word.
UNIGRAM_WEIGHT = 0.25


def coverage(query: str, text: str) -> float:
    """Share of the query's keyword tokens found in ``text`` (0..1), after folding.

    Bigrams and words count 1, the query's single CJK characters ``UNIGRAM_WEIGHT``:
    a text holding all of "才睡" covers it fully, one holding 才 and 睡 apart
    covers a third of it.
    """
    main, singles = _query_parts(query)
    q_main, q_single = set(main), set(singles)
    total = len(q_main) + UNIGRAM_WEIGHT * len(q_single)
    if not total:
        return 0.0
    doc = set(document_tokens(text).split())
    return (len(q_main & doc) + UNIGRAM_WEIGHT * len(q_single & doc)) / total
