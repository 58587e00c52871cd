"""The index pipeline: file -> hash -> image -> OCR/caption -> embed -> Milvus + SQLite.

``Pipeline.process`` takes a list of paths and is shared by ``pixgrep index``
and the daemon's worker loop. OCR runs in worker processes (one engine per
core); captioning and embedding run batched in the calling process, where the
GPU is, if there is one.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pixgrep import images, textnorm
from pixgrep.catalog import Catalog, Content, ContentStatus, Indexed, Link, OutcomeStatus, Refreshed
from pixgrep.errors import PermanentError, RetryableError, StoreUnavailable
from pixgrep.ocrpool import Analysis, OcrPool
from pixgrep.segments import Segment, build_segments
from pixgrep.settings import Settings
from pixgrep.stages import CAPTION, EMBED, BackendUnavailable, Captioner, Embedder, OcrLine
from pixgrep.store import VectorStore, open_store

log = logging.getLogger("pixgrep.pipeline")


# --------------------------------------------------------------------------
# The pipeline


@dataclass
class Outcome:
    path: str
    status: OutcomeStatus
    content_hash: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        self.status = OutcomeStatus(self.status)  # a plain string is accepted, and checked


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

    def links(self) -> list[Link]:
        """This path and its duplicates, as the books link them to the bytes."""
        out = [_link(self.path, self.root, self.fb)]
        out += [_link(dup, root, fb) for dup, (root, fb) in self.dups.items()]
        return out


def _link(path: str, root: str | None, fb: images.FileBytes) -> Link:
    return Link(path, root, fb.digest, fb.size, fb.mtime_ns, fb.inode)


def content_source(has_lines: bool, has_captions: bool) -> str:
    """What an item's text came from: ocr, caption, ocr+caption or none."""
    return "+".join(x for x, on in (("ocr", has_lines), ("caption", has_captions)) if on) or "none"


ProgressFn = Callable[[Outcome], None]


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        db: Catalog,
        *,
        store: VectorStore | None = None,
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
    def store(self) -> VectorStore:
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
            rows = self.db.with_a_path(chunk)
            stored = {c.hash: c for c, _ in rows}
            for content, path in rows:
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
            records = []
            for p in pends:
                a = p.analysis
                assert a is not None
                old = stored[a.digest].versions
                captioned = bool(p.captions) or (p in to_caption and self._captioner is not None)
                v = self.versions(a.ocr_version, captioned)
                v["ocr_cfg"] = old.get("ocr_cfg", "")
                if captioned and p not in to_caption:
                    v["caption"] = old.get("caption", "")
                    v["caption_cfg"] = old.get("caption_cfg", "")
                records.append(Refreshed(a.digest, p.captions, content_source(bool(a.lines), bool(p.captions)), v))
            done += self.db.record_refreshed(records)
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
                done(Outcome(path, OutcomeStatus.RETRY if retryable else OutcomeStatus.FAILED, pend.fb.digest, msg))

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
        unchanged = {} if force else self.db.settled_stats([p for p, _ in items])
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

    def _prepare(
        self,
        path: str,
        root: str | None,
        force: bool,
        known: tuple[int, int, int, str, str | None] | None = None,
    ) -> tuple[Outcome | None, images.FileBytes | None]:
        """Stat and hash; link known content. Returns an outcome if nothing more is needed.

        ``known`` is the path's booked stat when its content is settled (from
        ``Catalog.settled_stats``): a matching stat means unchanged, with no read.
        """
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self.remove_paths([path])
            return Outcome(path, OutcomeStatus.FAILED, None, "file vanished"), None
        except OSError as e:
            msg = "symlink loop" if e.errno == 40 else (e.strerror or str(e))
            self._path_error(path, root, msg)
            return Outcome(path, OutcomeStatus.FAILED, None, msg), None
        if known is not None and known[:3] == (st.st_size, st.st_mtime_ns, st.st_ino):
            return Outcome(path, OutcomeStatus.UNCHANGED, known[3], known[4]), None
        try:
            fb = images.read_file(path)
        except PermanentError as e:
            self._path_error(path, root, str(e), failed_at=st)
            return Outcome(path, OutcomeStatus.FAILED, None, str(e)), None
        except RetryableError as e:
            if "vanished" in str(e):
                self.remove_paths([path])
            else:
                self._path_error(path, root, str(e))
            return Outcome(path, OutcomeStatus.RETRY, None, str(e)), None
        content = None if force else self.db.content(fb.digest)
        if content is not None and content.settled:
            self._forget(self.db.link([_link(path, root, fb)]))
            status = OutcomeStatus.LINKED if content.status == ContentStatus.DONE else OutcomeStatus.FAILED
            return Outcome(path, status, fb.digest, content.error), None
        return None, fb

    def _path_error(self, path: str, root: str | None, msg: str, *, failed_at: os.stat_result | None = None) -> None:
        """Record an error of the path itself. ``failed_at``: the stat of bytes that failed for good (an empty
        file): the rescan then leaves the path alone until its stat changes. A passing error records no stat,
        so the path is tried again (``catalog.path_settled``)."""
        log.warning("%s", msg, extra={"file": path})
        stat = (failed_at.st_size, failed_at.st_mtime_ns, failed_at.st_ino) if failed_at else None
        self.db.record_path_error(path, root, msg, failed_at=stat)

    def _fail_content(self, pend: _Pending, msg: str, *, retryable: bool, quiet: bool = False) -> None:
        if not quiet:
            log.warning("%s", msg, extra={"file": pend.path})
        orphans = self.db.record_failure(
            pend.fb.digest,
            msg,
            retryable=retryable,
            max_attempts=self.settings.pipeline.max_attempts,
            links=pend.links(),
        )
        self._forget(orphans)

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
                    done(Outcome(path, OutcomeStatus.RETRY, p.fb.digest, str(e)))
            return
        records = []
        for p in batch:
            a = p.analysis
            assert a is not None
            records.append(
                Indexed(
                    digest=p.fb.digest,
                    lines=[ln.to_json() for ln in a.lines],
                    captions=p.captions,
                    width=a.width,
                    height=a.height,
                    source=content_source(bool(a.lines), bool(p.captions)),
                    versions=self.versions(a.ocr_version, p in to_caption),
                    links=p.links(),
                )
            )
        self._forget(self.db.record_indexed(records))
        for p in batch:
            done(Outcome(p.path, OutcomeStatus.INDEXED, p.fb.digest))
            for dup in p.dups:
                done(Outcome(dup, OutcomeStatus.LINKED, p.fb.digest))

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
    def _forget(self, orphans: Sequence[str]) -> list[str]:
        """After the books committed a path change: delete the orphans' vectors, then their rows.

        The order is the catalog's "decide, commit, then act": a crash or a Milvus outage
        here leaves orphan rows (invisible to search) that ``purge_orphans`` finishes.
        """
        if not orphans:
            return []
        try:
            self.store.delete(orphans)
        except StoreUnavailable as e:
            log.warning("vectors of %d removed images kept for later deletion: %s", len(orphans), e)
            return []
        return self.db.delete_orphans(orphans)

    def purge_orphans(self) -> int:
        """Delete contents (and vectors) that no path points at, left by a Milvus outage or a crash."""
        return len(self._forget(self.db.orphans()))

    def remove_paths(self, paths: Sequence[str]) -> int:
        """Forget paths; vectors go with the last path of a content."""
        n, orphans = self.db.remove_paths(paths)
        self._forget(orphans)
        return n

    def remove_tree(self, directory: str, keep: Sequence[str] = ()) -> int:
        """Forget every path under ``directory`` except those under a folder in ``keep``."""
        prefixes = tuple(k.rstrip("/") + "/" for k in keep)
        return self.remove_paths([p for p in self.db.paths_under(directory) if not p.startswith(prefixes)])

    def move(self, src: str, dst: str, root: str | None = None) -> bool:
        """Record a rename without re-reading content. False if ``src`` was unknown."""
        try:
            st = os.stat(dst)
        except OSError:
            return False
        orphans = self.db.move(src, dst, size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino, root=root)
        if orphans is None:
            return False
        self._forget(orphans)
        return True

    def move_tree(self, src_dir: str, dst_dir: str) -> int:
        n = 0
        for p in self.db.paths_under(src_dir):
            if self.move(p, dst_dir.rstrip("/") + p[len(src_dir.rstrip("/")) :]):
                n += 1
        return n

    def retry_pending_contents(self) -> list[str]:
        """Paths whose content is waiting for a retry (e.g. Milvus was down)."""
        return self.db.retry_pending_paths()

    def reset_failed(self) -> None:
        self.db.reset_failed()

    def flush(self) -> None:
        """Flush the store if this run opened it (a run with nothing to write never does)."""
        if self._store is not None:
            self._store.flush()

    def close(self) -> None:
        self.ocr_pool.close()
        if self._store is not None:
            self._store.close()
            self._store = None
