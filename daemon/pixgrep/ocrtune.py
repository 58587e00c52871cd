"""Which runtime ``pixgrep index`` runs RapidOCR on: measured once on this machine (``ocr.runtime = "auto"``).

OpenVINO ran PP-OCRv6 1.5x faster than onnxruntime on the AMD EPYC this project
was tuned on, but that is one CPU's tuning: on another CPU (or another release of
either runtime) the order can change. So the first ``pixgrep index`` that would
start a process per core times one small synthetic image on each runtime that is
installed, alternating them, in a subprocess (both engines are loaded there and
gone after), and keeps the choice in ``$XDG_CACHE_HOME/pixgrep/ocr-runtime.json``
(0600), keyed by the CPU model, the core count and the versions of rapidocr and
both runtimes: a new CPU or an upgrade measures again. OpenVINO must be clearly
faster (``MARGIN``) to be chosen, since its processes hold more memory.

The daemon is not concerned: it runs one OCR process for memory, on onnxruntime
(``ocr.resolve_runtime``). A measurement that fails or times out falls back to the
rule from before (OpenVINO where it imports) and is not kept.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger("pixgrep.ocrtune")

RUNTIMES = ("onnxruntime", "openvino")
CACHE_NAME = "ocr-runtime.json"
# OpenVINO is chosen only when its time per image is at most this share of onnxruntime's.
MARGIN = 0.9
ROUNDS = 3
TIMEOUT_S = 600.0  # the measurement on a loaded 2-core machine takes 20-40 s; a hang must not block forever

Measure = Callable[[Sequence[str]], dict[str, float]]


def installed() -> list[str]:
    """The runtimes whose package is installed (whether they work is what the measurement finds out)."""
    out = []
    for rt in RUNTIMES:
        try:
            if importlib.util.find_spec(rt) is not None:
                out.append(rt)
        except (ImportError, ValueError):  # a module stubbed or broken in sys.modules
            continue
    return out


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def machine_key() -> str:
    """What the measurement depends on: the CPU, its cores and the packages' versions."""
    versions = " ".join(f"{d} {_version(d)}" for d in ("rapidocr", *RUNTIMES))
    return f"{cpu_model()} | {os.cpu_count() or 1} cores | {versions}"


def decide(seconds: dict[str, float]) -> str | None:
    """The runtime to use given seconds per image on each that worked; None if none did."""
    ok = {rt: s for rt, s in seconds.items() if s > 0}
    if not ok:
        return None
    if "onnxruntime" in ok and "openvino" in ok:
        return "openvino" if ok["openvino"] <= MARGIN * ok["onnxruntime"] else "onnxruntime"
    return min(ok, key=lambda rt: ok[rt])


def cache_path(cache_dir: Path | None = None) -> Path:
    if cache_dir is None:
        from pixgrep.settings import default_cache_dir

        cache_dir = default_cache_dir()
    return cache_dir / CACHE_NAME


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def cached(path: Path, key: str, usable: Sequence[str]) -> str | None:
    """The runtime measured for ``key``, if it is one of ``usable``."""
    entry = _read(path).get(key)
    runtime = entry.get("runtime") if isinstance(entry, dict) else None
    return runtime if runtime in usable else None


def _write(path: Path, key: str, entry: dict[str, Any]) -> None:
    from pixgrep.private import private_dir

    doc = _read(path)
    doc[key] = entry
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)
    tmp.replace(path)  # two index runs measuring at once: the last complete file wins


def throughput_runtime(
    *, cache_dir: Path | None = None, measure: Measure | None = None, calibrate: bool = True
) -> str | None:
    """The faster runtime on this machine, cached or else measured now (``calibrate``); None: not measured.

    None also when only one runtime is installed (nothing to choose) or the measurement failed:
    the caller's rule applies (``ocr.resolve_runtime``).
    """
    usable = installed()
    if len(usable) < 2:
        return None
    path, key = cache_path(cache_dir), machine_key()
    known = cached(path, key, usable)
    if known is not None or not calibrate:
        return known
    log.warning("measuring which OCR runtime is faster on this CPU (once; kept in %s)", path)
    try:
        seconds = (measure or measure_in_subprocess)(usable)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        log.warning("could not measure the OCR runtimes: %s", e)
        return None
    choice = decide(seconds)
    if choice is None:
        log.warning("no OCR runtime worked in the measurement")
        return None
    entry = {"runtime": choice, "seconds_per_image": seconds, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        _write(path, key, entry)
    except OSError as e:  # a read-only cache: measured again next time, nothing worse
        log.info("cannot keep the OCR runtime choice in %s: %s", path, e)
    log.warning("OCR runtime for indexing: %s (seconds per image: %s)", choice, seconds)
    return choice


def measure_in_subprocess(runtimes: Sequence[str]) -> dict[str, float]:
    """Run :func:`measure` in a fresh interpreter (its engines and their memory go with it)."""
    env = {**os.environ}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"  # as in an OCR worker: one thread each
    out = subprocess.run(
        [sys.executable, "-m", "pixgrep.ocrtune", "--parent", str(os.getpid()), *runtimes],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    return {str(k): float(v) for k, v in doc.items()}


def calibration_image() -> Any:
    """A small picture with a few lines of text, drawn here (nothing bundled, nothing downloaded)."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.new("RGB", (720, 540), "white")
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=30)
    lines = ("When the code compiles", "on the first try 2026", "and nobody knows why", "GREP FOR PICTURES")
    for i, line in enumerate(lines):
        draw.text((30, 40 + i * 110), line, fill="black", font=font)
    return im


def measure(runtimes: Sequence[str], rounds: int = ROUNDS) -> dict[str, float]:
    """Seconds per image on each runtime (one thread, as an OCR worker): the best of ``rounds``, alternated.

    A runtime that fails to load or reads nothing is left out. The first image of each engine
    (model compilation, lazy loads) is not timed.
    """
    from pixgrep.ocr import RapidOcrEngine

    image = calibration_image()
    engines = {}
    for rt in runtimes:
        try:
            engine = RapidOcrEngine(runtime=rt, threads=1)
            if engine.recognize(image):
                engines[rt] = engine
        except Exception as e:  # a broken runtime is simply not chosen
            log.warning("OCR runtime %s does not work here: %s", rt, e)
    times: dict[str, list[float]] = {rt: [] for rt in engines}
    for r in range(rounds):
        # Alternate the order: a load that comes and goes falls on both.
        for rt in list(engines) if r % 2 == 0 else list(engines)[::-1]:
            t0 = time.perf_counter()
            engines[rt].recognize(image)
            times[rt].append(time.perf_counter() - t0)
    return {rt: round(min(ts), 4) for rt, ts in times.items()}


def main(argv: list[str]) -> None:
    if argv[:1] == ["--parent"]:
        from pixgrep.ocrpool import _die_with_parent

        _die_with_parent(int(argv[1]))  # a `pixgrep index` killed mid-measurement leaves nothing behind
        argv = argv[2:]
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(measure(argv or installed())))


if __name__ == "__main__":
    main(sys.argv[1:])
