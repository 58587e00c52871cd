"""Text folding and keyword tokens.

Queries are mostly typed in simplified Chinese, meme text is mostly
traditional, and screenshots mix full- and half-width forms. Both sides are
folded per character (traditional -> simplified, NFKC width folding, case), so
offsets in the folded text map back to the original for highlighting.

Keyword tokens for BM25 are CJK unigrams and bigrams plus latin words,
joined by spaces. Bigrams make any CJK substring of two or more characters
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
    if folded and _is_cjk(folded[0]):
        folded = _converter.convert(folded)
    return folded


def fold(text: str) -> str:
    return "".join(fold_char(c) for c in text)


def fold_with_map(text: str) -> tuple[str, list[int]]:
    """Fold ``text``; also return, for each folded character, its source index."""
    out: list[str] = []
    index: list[int] = []
    for i, c in enumerate(text):
        f = fold_char(c)
        out.append(f)
        index.extend([i] * len(f))
    return "".join(out), index


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2FA1F
        or 0xF900 <= cp <= 0xFAFF
        or 0x3040 <= cp <= 0x30FF  # kana
        or 0xAC00 <= cp <= 0xD7AF  # hangul
    )


_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0002fa1f]+|[^\W_]+")


def _runs(text: str) -> list[str]:
    return _RUN.findall(fold(text))


def document_tokens(text: str) -> str:
    """Tokens to index: every CJK character and bigram, every latin/digit word."""
    toks: list[str] = []
    for run in _runs(text):
        if _is_cjk(run[0]):
            toks.extend(run)
            toks.extend(run[i : i + 2] for i in range(len(run) - 1))
        else:
            toks.append(run)
    return " ".join(toks)


def query_tokens(text: str) -> str:
    """Tokens to search: CJK bigrams (a lone character stays a unigram), latin words."""
    toks: list[str] = []
    for run in _runs(text):
        if _is_cjk(run[0]) and len(run) > 1:
            toks.extend(run[i : i + 2] for i in range(len(run) - 1))
        else:
            toks.append(run)
    return " ".join(toks)


def highlight_spans(text: str, query: str) -> list[tuple[int, int]]:
    """Spans of ``text`` (original offsets) that match the query after folding.

    The whole folded query is tried first; failing that, each query token
    (CJK bigram or word) is highlighted where it occurs.
    """
    folded, index = fold_with_map(text)
    fq = fold(query).strip()
    needles = [fq] if fq and fq in folded else query_tokens(query).split()
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


def coverage(query: str, text: str) -> float:
    """Share of the query's keyword tokens found in ``text`` (0..1), after folding."""
    q = set(query_tokens(query).split())
    if not q:
        return 0.0
    doc = set(document_tokens(text).split())
    return len(q & doc) / len(q)
