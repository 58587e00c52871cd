"""OCR in worker processes: one engine per process, fed file bytes, returning lines.

Kept apart from the pipeline so a spawned worker imports only what OCR needs
(not SQLAlchemy, pymilvus or gRPC): half a second less per process start.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pixgrep import images
from pixgrep.errors import PermanentError
from pixgrep.settings import Settings
from pixgrep.stages import OCR, OcrEngine, OcrLine


@dataclass
class Analysis:
    digest: str
    width: int = 0
    height: int = 0
    lines: list[OcrLine] = field(default_factory=list)
    error: str | None = None
    ocr_version: str = ""


_engine: OcrEngine | None = None
_max_mp: float = 64.0


def make_ocr(settings: Settings, threads: int = 1, throughput: bool = False) -> OcrEngine:
    runtime: str = settings.ocr.runtime
    if settings.ocr.engine == "rapidocr":
        from pixgrep.ocr import resolve_runtime

        runtime = resolve_runtime(runtime, throughput=throughput)
    return OCR.create(
        settings.ocr.engine,
        threads=threads,
        languages=settings.ocr.languages,
        min_confidence=settings.ocr.min_confidence,
        det_limit_side_len=settings.ocr.det_limit_side_len,
        det_max_short_side=settings.ocr.det_max_short_side,
        runtime=runtime,
    )


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux prctl), then check it still lives.

    A pool process holds both ends of its call queue, so it never sees EOF when the parent is
    killed (kill -9, OOM); a watch thread alone cannot run while model loading holds the GIL,
    so the processes outlived their parent by up to 30 s with their models loaded. The kernel's
    signal needs no thread of ours. The pool's processes are started from long-lived threads
    (main or worker): the signal follows the death of the thread that started the process.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the watch thread below still ends us within a second or so of idle time
    if os.getppid() != parent:
        os._exit(0)  # the parent died before the signal was armed


def _exit_with_parent() -> None:
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="pixgrep-parent-watch", daemon=True).start()


def _trim_after_each_image() -> None:
    # glibc keeps the detector's freed buffers: an OCR process grows to ~600 MB on
    # memes and screenshots, and to ~200 MB when the heap is trimmed after each image.
    global _trim
    try:
        libc = ctypes.CDLL("libc.so.6")
        _trim = lambda: libc.malloc_trim(0)  # noqa: E731
    except (OSError, AttributeError):
        _trim = None


_trim: Callable[[], object] | None = None


def _init_worker(settings_json: str, threads: int = 1, throughput: bool = False, parent: int = 0) -> None:
    global _engine, _max_mp
    if mp.parent_process() is not None:
        _die_with_parent(parent or os.getppid())
        _exit_with_parent()
        if not throughput:
            _trim_after_each_image()
        # Each worker gets `threads` cores' worth of OCR; other numeric libraries must not spawn more.
        for var in ("OMP_NUM_THREADS", "OMP_THREAD_LIMIT", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = "1"
    settings = Settings.model_validate_json(settings_json)
    _engine = make_ocr(settings, threads, throughput)
    _max_mp = settings.image.max_megapixels


def analyze(digest: str, data: bytes, do_ocr: bool = True) -> Analysis:
    """Decode and OCR one file's bytes (runs in a worker process)."""
    assert _engine is not None
    try:
        im = images.decode(data, max_megapixels=_max_mp)
    except PermanentError as e:
        return Analysis(digest, error=str(e))
    lines = _engine.recognize(im) if do_ocr else []
    if _trim is not None:
        _trim()
    return Analysis(digest, im.width, im.height, lines, ocr_version=_engine.version if do_ocr else "")


class OcrPool:
    """A pool of OCR processes, or the calling thread when ``workers == 0``.

    With a process per core (``pixgrep index``) the pool runs for throughput: OpenVINO
    (with ``ocr.runtime = auto``), and each process keeps its heap between images. With
    fewer (the daemon's one process using every core) it runs for a small resident
    size: onnxruntime, and the heap is trimmed after each image.
    """

    def __init__(self, settings: Settings, workers: int | None = None) -> None:
        cores = os.cpu_count() or 1
        n = settings.ocr.workers or cores if workers is None else workers
        self.workers = n
        self.throughput = n >= cores
        # ONNX intra-op threads per OCR process: by default the cores are shared out,
        # so one process (the daemon's) uses them all on a single image.
        self.threads = settings.ocr.threads or max(1, cores // max(n, 1))
        self._settings = settings
        self._settings_json = settings.model_dump_json()
        self._executor: cf.Executor | None = None
        self._lock = threading.Lock()
        self._inline_engine: OcrEngine | None = None
        # Images OCR'd to completion (warm-ups excluded): the fault suite checks that outages,
        # moves and shutdowns never make the same image OCR'd twice; status shows it.
        self.runs = 0
        self._runs_lock = threading.Lock()

    def _count(self, fut: cf.Future[Analysis]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            with self._runs_lock:
                self.runs += 1

    @property
    def loaded(self) -> bool:
        """Whether an OCR engine has been loaded (inline) or its processes started."""
        with self._lock:
            return self._inline_engine is not None or self._executor is not None

    def _ensure(self) -> cf.Executor:
        with self._lock:
            if self._executor is None:
                # spawn, not fork: the parent has threads (watcher, API) and gRPC state.
                ctx = mp.get_context("spawn")
                self._executor = cf.ProcessPoolExecutor(
                    self.workers,
                    mp_context=ctx,
                    initializer=_init_worker,
                    initargs=(self._worker_settings(), self.threads, self.throughput, os.getpid()),
                )
            return self._executor

    def _worker_settings(self) -> str:
        """The processes' settings: for throughput, ``ocr.runtime = auto`` measured on this CPU (ocrtune)."""
        s = self._settings
        if not (self.throughput and s.ocr.engine == "rapidocr" and s.ocr.runtime == "auto"):
            return self._settings_json
        from pixgrep.ocrtune import throughput_runtime

        measured = throughput_runtime()
        if measured is None:
            return self._settings_json  # not measured: the workers apply resolve_runtime's rule
        ocr = s.ocr.model_copy(update={"runtime": measured})
        return s.model_copy(update={"ocr": ocr}).model_dump_json()

    def submit(self, digest: str, data: bytes, do_ocr: bool = True, *, warm_up: bool = False) -> cf.Future[Analysis]:
        fut = self._submit(digest, data, do_ocr)
        if do_ocr and not warm_up:
            fut.add_done_callback(self._count)
        return fut

    def _submit(self, digest: str, data: bytes, do_ocr: bool) -> cf.Future[Analysis]:
        if self.workers == 0:
            with self._lock:
                # Loaded on first use (a search that opens the index never OCRs), and again
                # if another inline pool in this process has put its engine in place since.
                if self._inline_engine is None or _engine is not self._inline_engine:
                    _init_worker(self._settings_json, self.threads)
                    self._inline_engine = _engine
            fut: cf.Future[Analysis] = cf.Future()
            try:
                fut.set_result(analyze(digest, data, do_ocr))
            except Exception as e:
                fut.set_exception(e)
            return fut
        try:
            return self._ensure().submit(analyze, digest, data, do_ocr)
        except cf.process.BrokenProcessPool:
            self.restart()
            return self._ensure().submit(analyze, digest, data, do_ocr)

    def restart(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)
                self._executor = None
