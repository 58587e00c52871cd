"""The index pipeline: file -> hash -> image -> OCR/caption -> embed -> Milvus + SQLite.

``Pipeline.process`` takes a list of paths and is shared by ``pixgrep index``
and the daemon's worker loop. OCR runs in worker processes (one engine per
core); captioning and embedding run batched in the calling process, where the
GPU is, if there is one.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import delete, select, update

from pixgrep import images, textnorm
from pixgrep.db import SETTLED, Content, Database, PathEntry, path_prefix_range, settled
from pixgrep.errors import PermanentError, RetryableError, StoreUnavailable
from pixgrep.ocrpool import Analysis, OcrPool
from pixgrep.settings import Settings
from pixgrep.stages import CAPTION, EMBED, BackendUnavailable, Captioner, Embedder, OcrLine
from pixgrep.store import MilvusStore, Segment, open_store

log = logging.getLogger("pixgrep.pipeline")


# --------------------------------------------------------------------------
# Segments


def regions(lines: Sequence[OcrLine]) -> list[list[OcrLine]]:
    """Group OCR lines into blocks of vertically adjacent lines (panels, subtitles)."""
    if not lines:
        return []
    out: list[list[OcrLine]] = [[lines[0]]]
    for prev, line in itertools.pairwise(lines):
        if prev.box and line.box:
            height = max(prev.box[3] - prev.box[1], line.box[3] - line.box[1], 1.0)
            gap = line.box[1] - prev.box[3]
            overlap_x = min(prev.box[2], line.box[2]) - max(prev.box[0], line.box[0])
            if -height <= gap <= 1.2 * height and overlap_x > -height:
                out[-1].append(line)
                continue
        out.append([line])
    return out


def build_segments(lines: Sequence[OcrLine], captions: Sequence[str]) -> list[Segment]:
    segs: list[Segment] = []
    texts = [ln.text for ln in lines]
    if texts:
        full = "\n".join(texts)
        segs.append(Segment("full", "ocr", full, textnorm.document_tokens(full)))
        if len(texts) > 1:
            blocks = regions(lines)
            seen = {full}
            for block in blocks:
                t = "\n".join(ln.text for ln in block)
                if t not in seen:
                    seen.add(t)
                    segs.append(Segment("region", "ocr", t, textnorm.document_tokens(t)))
            for t in texts:
                if t not in seen:
                    seen.add(t)
                    segs.append(Segment("line", "ocr", t, textnorm.document_tokens(t)))
    for cap in dict.fromkeys(c.strip() for c in captions if c.strip()):
        segs.append(Segment("caption", "caption", cap, textnorm.document_tokens(cap)))
    return segs


# --------------------------------------------------------------------------
# The pipeline


@dataclass
class Outcome:
    path: str
    status: str  # indexed | linked | unchanged | failed | retry
    content_hash: str | None = None
    error: str | None = None


@dataclass
class _Pending:
    path: str
    root: str | None
    fb: images.FileBytes
    analysis: Analysis | None = None
    captions: list[str] = field(default_factory=list)
    # Other paths with the same bytes seen in this run: linked once this one is done,
    # each with its own root and stat (its bytes dropped).
    dups: dict[str, tuple[str | None, images.FileBytes]] = field(default_factory=dict)

    @property
    def ocr_chars(self) -> int:
        return sum(len(ln.text) for ln in self.analysis.lines) if self.analysis else 0


ProgressFn = Callable[[Outcome], None]


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        store: MilvusStore | None = None,
        embedder: Embedder | None = None,
        ocr_workers: int | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self._embedder = embedder
        self._store = store
        self._captioner: Captioner | None = None
        self._captioner_error: str | None = None
        self.ocr_pool = OcrPool(settings, ocr_workers)
        self._lock = threading.RLock()

    # Lazily loaded stages -------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                e = self.settings.embed
                self._embedder = EMBED.create(
                    e.backend,
                    model=e.model,
                    device=e.device,
                    batch_size=e.batch_size,
                    # OCR processes fill every core: more BLAS threads would only spin.
                    threads=1 if self.ocr_pool.throughput else 0,
                )
            return self._embedder

    @property
    def store(self) -> MilvusStore:
        with self._lock:
            if self._store is None:
                self._store = open_store(self.settings, embed_name=self.embedder.name, dim=self.embedder.dim)
            return self._store

    @property
    def captioner(self) -> Captioner | None:
        c = self.settings.caption
        if not c.model or self._captioner_error:
            return None
        with self._lock:
            if self._captioner is None:
                try:
                    self._captioner = CAPTION.create(
                        c.backend,
                        model=c.model,
                        device=c.device,
                        batch_size=c.batch_size,
                        num_beams=c.num_beams,
                        max_new_tokens=c.max_new_tokens,
                        num_captions=c.num_captions,
                        temperature=c.temperature,
                    )
                except BackendUnavailable as e:
                    # Optional stage: index without captions; `reindex --stale` adds them later.
                    self._captioner_error = str(e)
                    log.error("captioner unavailable, indexing without captions: %s", e)
                    return None
            return self._captioner

    def rebuild_store(self) -> None:
        """Drop and recreate the vector collection for the current embedder."""
        with self._lock:
            if self._store is not None:
                self._store.close()
            self._store = open_store(self.settings, embed_name=self.embedder.name, dim=self.embedder.dim, recreate=True)

    def unload_models(self) -> None:
        """Give model memory back (idle unload); stages reload on next use."""
        with self._lock:
            if self._captioner is not None and hasattr(self._captioner, "unload"):
                self._captioner.unload()
            self.ocr_pool.restart()

    def ocr_fingerprint(self) -> str:
        o = self.settings.ocr
        langs = f" {o.languages}" if o.engine == "tesseract" else ""
        return f"{o.engine}{langs} det={o.det_limit_side_len}-{o.det_max_short_side} conf={o.min_confidence}"

    def caption_fingerprint(self) -> str:
        c = self.settings.caption
        return f"{c.model} beams={c.num_beams} n={c.num_captions} t={c.temperature} max={c.max_new_tokens}"

    def embed_fingerprint(self) -> str:
        return f"{self.embedder.name} dim={self.embedder.dim}"

    def versions(self, ocr_version: str, captioned: bool) -> dict[str, str]:
        """What produced an item, per stage; `reindex --stale` compares these with the settings."""
        v = {
            "ocr": ocr_version,
            "ocr_cfg": self.ocr_fingerprint() if ocr_version else "",
            "embed": f"{self.embedder.name} {self.embedder.version}",
            "embed_cfg": self.embed_fingerprint(),
            "keyword": textnorm.TOKENIZER_VERSION,
            "policy": self.settings.pipeline.policy,
        }
        if captioned and self._captioner is not None:
            v["caption"] = self._captioner.version
            v["caption_cfg"] = self.caption_fingerprint()
        return v

    def wants_caption(self, n_chars: int) -> bool:
        policy = self.settings.pipeline.policy
        if not self.settings.caption.model or policy == "ocr":
            return False
        return policy in ("caption", "both") or n_chars < self.settings.pipeline.min_text_chars

    def stale_stages(self, content: Content) -> set[str]:
        """Which stages of a done item no longer match the settings: ocr, caption, embed.

        A change of keyword tokenizer counts as ``embed``: its rows are rebuilt from the
        stored OCR lines (no OCR), which re-cuts their keyword text.
        """
        v = content.versions
        stale: set[str] = set()
        wants_ocr = self.settings.pipeline.policy != "caption"
        if wants_ocr and v.get("ocr_cfg") != self.ocr_fingerprint():
            stale.add("ocr")
        if self.wants_caption(len(content.text.replace("\n", ""))):
            if v.get("caption_cfg") != self.caption_fingerprint():
                stale.add("caption")
        elif v.get("caption_cfg"):
            stale.add("caption")  # captions are no longer wanted: drop them
        if v.get("embed_cfg") != self.embed_fingerprint() or v.get("keyword") != textnorm.TOKENIZER_VERSION:
            stale.add("embed")
        return stale

    def refresh(self, hashes: Sequence[str], *, recaption: bool) -> int:
        """Re-embed (and optionally re-caption) contents from their stored OCR lines; no OCR."""
        done = 0
        for i in range(0, len(hashes), self.settings.pipeline.batch_size):
            chunk = hashes[i : i + self.settings.pipeline.batch_size]
            pends: list[_Pending] = []
            with self.db.session() as s:
                rows = [
                    (c, s.scalar(select(PathEntry.path).where(PathEntry.content_hash == c.hash).limit(1)))
                    for c in s.scalars(select(Content).where(Content.hash.in_(chunk)))
                ]
            for content, path in rows:
                if path is None:
                    continue
                lines = [OcrLine.from_json(d) for d in content.lines]
                fb = images.FileBytes(b"", content.hash, 0, 0, 0)
                pend = _Pending(
                    path,
                    None,
                    fb,
                    Analysis(
                        content.hash,
                        content.width or 0,
                        content.height or 0,
                        lines,
                        ocr_version=content.versions.get("ocr", ""),
                    ),
                )
                keep_captions = not recaption and bool(content.versions.get("caption_cfg"))
                pend.captions = content.captions if keep_captions else []
                pends.append(pend)
            to_caption = [p for p in pends if recaption and self.wants_caption(p.ocr_chars)]
            if to_caption and self.captioner is not None:
                for p in to_caption:
                    try:
                        p.fb = images.read_file(p.path)
                    except (PermanentError, RetryableError) as e:
                        log.warning("cannot re-read for captioning: %s", e, extra={"file": p.path})
                ok = [p for p in to_caption if p.fb.data and p.fb.digest == p.analysis.digest]  # type: ignore[union-attr]
                self._caption(ok, self.captioner)
            segs = [build_segments(p.analysis.lines, p.captions) for p in pends]  # type: ignore[union-attr]
            texts = [seg.text for ss in segs for seg in ss]
            vectors = self.embedder.embed(texts) if texts else np.zeros((0, 1), dtype=np.float32)
            items, off = [], 0
            for p, ss in zip(pends, segs, strict=True):
                items.append((p.analysis.digest, ss, vectors[off : off + len(ss)]))  # type: ignore[union-attr]
                off += len(ss)
            self.store.upsert_many(items)
            with self.db.session() as s:
                for p in pends:
                    a = p.analysis
                    assert a is not None
                    row = s.get(Content, a.digest)
                    if row is None:
                        continue
                    content = row
                    content.captions_json = json.dumps(p.captions, ensure_ascii=False)
                    content.source = (
                        "+".join(x for x, on in (("ocr", bool(a.lines)), ("caption", bool(p.captions))) if on) or "none"
                    )
                    captioned = bool(p.captions) or (p in to_caption and self._captioner is not None)
                    v = self.versions(a.ocr_version, captioned)
                    v["ocr_cfg"] = content.versions.get("ocr_cfg", "")
                    if captioned and p not in to_caption:
                        v["caption"] = content.versions.get("caption", "")
                        v["caption_cfg"] = content.versions.get("caption_cfg", "")
                    content.versions_json = json.dumps(v)
                    content.updated_at = time.time()
                    done += 1
        self.store.flush()
        return done

    # Main entry -------------------------------------------------------------
    def process(
        self,
        paths: Iterable[str | tuple[str, str | None]],
        *,
        progress: ProgressFn | None = None,
        force: bool = False,
    ) -> list[Outcome]:
        """Index ``paths`` (optionally paired with their root). Never raises for one bad file."""
        outcomes: list[Outcome] = []

        def done(o: Outcome) -> None:
            outcomes.append(o)
            if progress:
                progress(o)

        batch: list[_Pending] = []
        inflight: dict[cf.Future[Analysis], _Pending] = {}
        # Deep enough that the OCR processes keep working while this thread embeds and
        # upserts a finished batch (about a second for 32 images).
        max_inflight = max(4, self.ocr_pool.workers * 8)
        batch_size = self.settings.pipeline.batch_size
        policy = self.settings.pipeline.policy
        need_ocr = policy != "caption"

        def fail(pend: _Pending, msg: str, *, retryable: bool) -> None:
            self._fail_content(pend, msg, retryable=retryable)
            for path in [pend.path, *pend.dups]:
                done(Outcome(path, "retry" if retryable else "failed", pend.fb.digest, msg))

        def drain(block_until: int) -> None:
            while len(inflight) > block_until:
                finished, _ = cf.wait(list(inflight), return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    pend = inflight.pop(fut)
                    try:
                        pend.analysis = fut.result()
                    except cf.process.BrokenProcessPool:
                        self.ocr_pool.restart()
                        fail(pend, "OCR worker crashed on this image", retryable=True)
                        continue
                    except Exception as e:  # an engine bug must not stop the run
                        log.exception("OCR failed", extra={"file": pend.path})
                        fail(pend, f"OCR error: {e}", retryable=True)
                        continue
                    if pend.analysis.error:
                        fail(pend, pend.analysis.error, retryable=False)
                        continue
                    batch.append(pend)
                    if len(batch) >= batch_size:
                        self._finish(batch, done)
                        batch.clear()

        seen_digests: dict[str, _Pending] = {}
        warm: threading.Thread | None = None
        items = [item if isinstance(item, tuple) else (item, None) for item in paths]
        unchanged = {} if force else self._unchanged_candidates([p for p, _ in items])
        try:
            for path, root in items:
                o, fb = self._prepare(path, root, force, unchanged.get(path))
                if o is not None:
                    done(o)
                    continue
                assert fb is not None
                pend = _Pending(path, root, fb)
                if fb.digest in seen_digests:
                    # The same bytes twice in one run: link after the first is done.
                    seen_digests[fb.digest].dups[path] = (root, dataclasses.replace(fb, data=b""))
                    continue
                seen_digests[fb.digest] = pend
                inflight[self.ocr_pool.submit(fb.digest, fb.data, need_ocr)] = pend
                if warm is None and self.ocr_pool.workers:
                    # Load the embedder and open the store while the OCR processes work,
                    # not after the first batch is read (seconds of idle cores otherwise).
                    warm = threading.Thread(target=self._warm_stages, name="pixgrep-warm", daemon=True)
                    warm.start()
                drain(max_inflight)
            drain(0)
            if batch:
                self._finish(batch, done)
        finally:
            if warm is not None:
                warm.join()
        return outcomes

    def _warm_stages(self) -> None:
        try:
            self.embedder.embed(["warm up"])  # loads the weights, not just the tokenizer
            self.store  # noqa: B018
        except Exception as e:  # the batch that needs them meets the same error and records it
            log.debug("warming the embedder and store failed: %s", e)

    def _unchanged_candidates(self, paths: Sequence[str]) -> dict[str, tuple[int, int, int, str, str | None]]:
        """(size, mtime_ns, inode, hash, error) of the given paths whose content needs no work, in bulk."""
        out: dict[str, tuple[int, int, int, str, str | None]] = {}
        with self.db.session() as s:
            for i in range(0, len(paths), 500):
                rows = s.execute(
                    select(
                        PathEntry.path, PathEntry.size, PathEntry.mtime_ns, PathEntry.inode, Content.hash, Content.error
                    )
                    .join(Content, Content.hash == PathEntry.content_hash)
                    .where(PathEntry.path.in_(paths[i : i + 500]), PathEntry.error.is_(None), SETTLED)
                )
                for path, size, mtime_ns, inode, h, err in rows:
                    out[path] = (size, mtime_ns, inode, h, err)
        return out

    def _prepare(
        self,
        path: str,
        root: str | None,
        force: bool,
        known: tuple[int, int, int, str, str | None] | None = None,
    ) -> tuple[Outcome | None, images.FileBytes | None]:
        """Stat and hash; link known content. Returns an outcome if nothing more is needed.

        ``known`` is the path's booked stat when its content is settled (from
        ``_unchanged_candidates``): a matching stat means unchanged, with no read.
        """
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self.remove_paths([path])
            return Outcome(path, "failed", None, "file vanished"), None
        except OSError as e:
            msg = "symlink loop" if e.errno == 40 else (e.strerror or str(e))
            self._path_error(path, root, msg)
            return Outcome(path, "failed", None, msg), None
        if known is not None and known[:3] == (st.st_size, st.st_mtime_ns, st.st_ino):
            return Outcome(path, "unchanged", known[3], known[4]), None
        try:
            fb = images.read_file(path)
        except PermanentError as e:
            self._path_error(path, root, str(e), failed_at=st)
            return Outcome(path, "failed", None, str(e)), None
        except RetryableError as e:
            if "vanished" in str(e):
                self.remove_paths([path])
            else:
                self._path_error(path, root, str(e))
            return Outcome(path, "retry", None, str(e)), None
        with self.db.session() as s:
            content = s.get(Content, fb.digest)
            if content is not None and not force and settled(content.status, content.retryable):
                self._link(s, path, root, fb)
                status = "linked" if content.status == "done" else "failed"
                return Outcome(path, status, fb.digest, content.error), None
        return None, fb

    def _link(self, s: Any, path: str, root: str | None, fb: images.FileBytes) -> None:
        entry = s.get(PathEntry, path)
        old_hash = entry.content_hash if entry else None
        if entry is None:
            entry = PathEntry(path=path)
            s.add(entry)
        entry.content_hash = fb.digest
        entry.root = root if root is not None else entry.root
        entry.size, entry.mtime_ns, entry.inode = fb.size, fb.mtime_ns, fb.inode
        entry.error = None
        entry.attempts = 0
        entry.seen_at = time.time()
        s.flush()
        if old_hash and old_hash != fb.digest:
            self._drop_orphans(s, [old_hash])

    def _path_error(self, path: str, root: str | None, msg: str, *, failed_at: os.stat_result | None = None) -> None:
        """Record an error of the path itself. ``failed_at``: the stat of bytes that failed for good (an empty
        file): the rescan then leaves the path alone until its stat changes. A passing error records no stat,
        so the path is tried again (``db.path_settled``)."""
        log.warning("%s", msg, extra={"file": path})
        with self.db.session() as s:
            entry = s.get(PathEntry, path)
            if entry is None:
                entry = PathEntry(path=path, root=root)
                s.add(entry)
            if entry.content_hash is None:
                st = failed_at
                entry.size, entry.mtime_ns, entry.inode = (st.st_size, st.st_mtime_ns, st.st_ino) if st else (0, 0, 0)
            entry.error = msg
            entry.attempts = (entry.attempts or 0) + 1
            entry.seen_at = time.time()

    def _fail_content(self, pend: _Pending, msg: str, *, retryable: bool, quiet: bool = False) -> None:
        if not quiet:
            log.warning("%s", msg, extra={"file": pend.path})
        with self.db.session() as s:
            content = s.get(Content, pend.fb.digest)
            if content is None:
                content = Content(hash=pend.fb.digest)
                s.add(content)
            content.status = "pending" if retryable else "failed"
            content.error = msg
            content.retryable = retryable
            content.attempts = (content.attempts or 0) + 1
            content.updated_at = time.time()
            if retryable and content.attempts >= self.settings.pipeline.max_attempts:
                content.status = "failed"
            s.flush()
            self._link(s, pend.path, pend.root, pend.fb)
            for dup, (root, dup_fb) in pend.dups.items():
                self._link(s, dup, root, dup_fb)

    # Batch finish: caption, embed, upsert, record --------------------------------
    def _finish(self, batch: list[_Pending], done: ProgressFn) -> None:
        captioner = self.captioner if self.settings.pipeline.policy != "ocr" else None
        to_caption: list[_Pending] = []
        for p in batch:
            assert p.analysis is not None
            if captioner is not None and self.wants_caption(p.ocr_chars):
                to_caption.append(p)
        if to_caption and captioner is not None:
            self._caption(to_caption, captioner)

        all_segments: list[list[Segment]] = []
        texts: list[str] = []
        for p in batch:
            assert p.analysis is not None
            segs = build_segments(p.analysis.lines, p.captions)
            all_segments.append(segs)
            texts.extend(s.text for s in segs)
        try:
            vectors = self.embedder.embed(texts) if texts else np.zeros((0, 1), dtype=np.float32)
            items = []
            offset = 0
            for p, segs in zip(batch, all_segments, strict=True):
                items.append((p.fb.digest, segs, vectors[offset : offset + len(segs)]))
                offset += len(segs)
            self.store.upsert_many(items)
        except StoreUnavailable as e:
            # One cause for the whole batch: one log line, not one per file.
            log.warning("%s (%d files wait for it)", e, len(batch))
            for p in batch:
                self._fail_content(p, str(e), retryable=True, quiet=True)
                for path in [p.path, *p.dups]:
                    done(Outcome(path, "retry", p.fb.digest, str(e)))
            return
        with self.db.session() as s:
            for p in batch:
                assert p.analysis is not None
                a = p.analysis
                caps = p.captions
                content = s.get(Content, p.fb.digest) or Content(hash=p.fb.digest)
                s.add(content)
                content.status = "done"
                content.error = None
                content.retryable = False
                content.attempts = (content.attempts or 0) + 1
                content.text = "\n".join(ln.text for ln in a.lines)
                content.lines_json = json.dumps([ln.to_json() for ln in a.lines], ensure_ascii=False)
                content.captions_json = json.dumps(caps, ensure_ascii=False)
                content.source = (
                    "+".join(x for x, on in (("ocr", bool(a.lines)), ("caption", bool(caps))) if on) or "none"
                )
                content.width, content.height = a.width, a.height
                content.versions_json = json.dumps(self.versions(a.ocr_version, p in to_caption))
                content.updated_at = time.time()
                s.flush()
                self._link(s, p.path, p.root, p.fb)
                for dup, (root, dup_fb) in p.dups.items():
                    self._link(s, dup, root, dup_fb)
        for p in batch:
            done(Outcome(p.path, "indexed", p.fb.digest))
            for dup in p.dups:
                done(Outcome(dup, "linked", p.fb.digest))

    def _caption(self, pends: list[_Pending], captioner: Captioner) -> None:
        ims = []
        ok = []
        for p in pends:
            try:
                ims.append(images.decode(p.fb.data, max_megapixels=self.settings.image.max_megapixels))
                ok.append(p)
            except PermanentError:
                continue
        try:
            caps = captioner.caption(ims)
        except Exception as e:
            log.error("captioning a batch of %d failed: %s", len(ims), e)
            return
        for p, c in zip(ok, caps, strict=True):
            p.captions = list(c) + p.captions

    # Removal and moves ---------------------------------------------------------
    def _drop_orphans(self, s: Any, hashes: Iterable[str]) -> list[str]:
        """Delete content rows (and their vectors) no path points at any more."""
        gone = []
        for h in set(hashes):
            still = s.scalar(select(PathEntry.path).where(PathEntry.content_hash == h).limit(1))
            if still is None:
                gone.append(h)
        if gone:
            try:
                self.store.delete(gone)
            except StoreUnavailable as e:
                # The content rows stay, with no path: invisible to search, and
                # purge_orphans() deletes their vectors once Milvus is back.
                log.warning("vectors of %d removed images kept for later deletion: %s", len(gone), e)
                return []
            s.execute(delete(Content).where(Content.hash.in_(gone)))
        return gone

    def purge_orphans(self) -> int:
        """Delete contents (and vectors) that no path points at, left by a Milvus outage."""
        with self.db.session() as s:
            orphans = list(
                s.scalars(
                    select(Content.hash).where(
                        ~select(PathEntry.path).where(PathEntry.content_hash == Content.hash).exists()
                    )
                )
            )
            if not orphans:
                return 0
            try:
                return len(self._drop_orphans(s, orphans))
            except StoreUnavailable:
                return 0

    def remove_paths(self, paths: Sequence[str]) -> int:
        """Forget paths; vectors go with the last path of a content."""
        if not paths:
            return 0
        with self.db.session() as s:
            hashes = [h for h in s.scalars(select(PathEntry.content_hash).where(PathEntry.path.in_(paths))) if h]
            n = s.execute(delete(PathEntry).where(PathEntry.path.in_(paths))).rowcount  # type: ignore[attr-defined]
            self._drop_orphans(s, hashes)
        return int(n or 0)

    def remove_tree(self, directory: str, keep: Sequence[str] = ()) -> int:
        """Forget every path under ``directory`` except those under a folder in ``keep``."""
        lo, hi = path_prefix_range(directory)
        with self.db.session() as s:
            paths = list(s.scalars(select(PathEntry.path).where(PathEntry.path >= lo, PathEntry.path < hi)))  # type: ignore[operator]
        prefixes = tuple(k.rstrip("/") + "/" for k in keep)
        return self.remove_paths([p for p in paths if not p.startswith(prefixes)])

    def move(self, src: str, dst: str, root: str | None = None) -> bool:
        """Record a rename without re-reading content. False if ``src`` was unknown."""
        try:
            st = os.stat(dst)
        except OSError:
            return False
        with self.db.session() as s:
            entry = s.get(PathEntry, src)
            if entry is None or entry.content_hash is None:
                return False
            if (entry.size, entry.mtime_ns) != (st.st_size, st.st_mtime_ns):
                return False  # changed on the way: let the caller re-index dst
            h = entry.content_hash
            s.delete(entry)
            s.flush()
            existing = s.get(PathEntry, dst)
            old = existing.content_hash if existing else None
            if existing is None:
                existing = PathEntry(path=dst)
                s.add(existing)
            existing.content_hash = h
            existing.root = root or entry.root
            existing.size, existing.mtime_ns, existing.inode = st.st_size, st.st_mtime_ns, st.st_ino
            existing.error = None
            existing.seen_at = time.time()
            s.flush()
            if old and old != h:
                self._drop_orphans(s, [old])
        return True

    def move_tree(self, src_dir: str, dst_dir: str) -> int:
        lo, hi = path_prefix_range(src_dir)
        with self.db.session() as s:
            paths = list(s.scalars(select(PathEntry.path).where(PathEntry.path >= lo, PathEntry.path < hi)))  # type: ignore[operator]
        n = 0
        for p in paths:
            if self.move(p, dst_dir.rstrip("/") + p[len(src_dir.rstrip("/")) :]):
                n += 1
        return n

    def retry_pending_contents(self) -> list[str]:
        """Paths whose content is waiting for a retry (e.g. Milvus was down)."""
        with self.db.session() as s:
            rows = s.scalars(
                select(PathEntry.path)
                .join(Content, Content.hash == PathEntry.content_hash)
                .where(Content.status == "pending")
            )
            return list(rows)

    def reset_failed(self) -> None:
        with self.db.session() as s:
            s.execute(update(Content).where(Content.status == "failed").values(status="pending", attempts=0))

    def flush(self) -> None:
        """Flush the store if this run opened it (a run with nothing to write never does)."""
        if self._store is not None:
            self._store.flush()

    def close(self) -> None:
        self.ocr_pool.close()
        if self._store is not None:
            self._store.close()
            self._store = None
