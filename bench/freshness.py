"""Freshness: drop corpus memes one at a time into a watched folder; time drop -> searchable.

An idle daemon with the default models and settings (OCR workers = cores,
watch.stable_seconds = 0.5) watches an empty folder. Each meme is copied in
(like ``cp``); the clock stops when a keyword search through the daemon's API
for a line of the meme's own text returns it. To keep the probe from loading
the 2-core box, it waits on the SQLite books (read-only, every 10 ms) and
searches once they show the meme indexed. The text
per meme comes from a pre-pass with the same OCR engine. Also reports the
daemon's memory after the run.

    PYTHONPATH=daemon:cli python bench/freshness.py [--n 50] [--stable 0.5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

from _daemon import CORPUS, Daemon, Sandbox, cli, machine, pct


def pick(n: int) -> list[tuple[Path, str]]:
    """n memes with some OCR text, and a query (their longest line) for each."""
    from pixgrep import ocrpool as pipeline
    from pixgrep.settings import load_settings

    pipeline._init_worker(load_settings().model_dump_json())
    files = sorted(CORPUS.rglob("*.jpg"))
    out: list[tuple[Path, str]] = []
    seen: set[str] = set()
    for f in files[:: max(1, len(files) // (n * 3))]:
        a = pipeline.analyze("x", f.read_bytes())
        lines = sorted((ln.text for ln in a.lines if len(ln.text) >= 6), key=len, reverse=True)
        if lines and lines[0] not in seen:
            seen.add(lines[0])
            out.append((f, lines[0]))
        if len(out) == n:
            break
    return out


def _indexed(db: sqlite3.Connection, path: Path) -> bool:
    row = db.execute(
        "SELECT c.status FROM paths p JOIN contents c ON c.hash = p.content_hash WHERE p.path = ?",
        (os.fsencode(str(path)),),
    ).fetchone()
    return bool(row and row[0] == "done")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--stable", type=float, default=None, help="watch.stable_seconds (default: the setting's default)")
    ap.add_argument("--pause", type=float, default=0.5, help="idle time between drops")
    args = ap.parse_args()
    memes = pick(args.n)
    sb = Sandbox("pgfresh-")
    drop = sb.base / "drop"
    drop.mkdir()
    sb.config.write_text(f'[[watch.folders]]\npath = "{drop}"\n')
    extra = {"PIXGREP_WATCH__STABLE_SECONDS": str(args.stable)} if args.stable is not None else {}
    d = Daemon(sb, **extra)
    try:
        startup = d.start()
        db = sqlite3.connect(f"file:{sb.home / 'pixgrep.sqlite'}?mode=ro", uri=True, timeout=5)
        times: list[float] = []
        misses = 0
        for i, (src, query) in enumerate(memes):
            dst = drop / f"{i:03d}_{src.name}"
            t0 = time.perf_counter()
            shutil.copyfile(src, dst)
            while True:
                # Cheap wait on the books (read-only, no load on the daemon), then the real check:
                # the clock stops when a search through the API returns the meme.
                if _indexed(db, dst):
                    hits = d.search(query, mode="keyword", limit=20, in_dir=str(drop))
                    if any(h["path"] == str(dst) for h in hits):
                        break
                if time.perf_counter() - t0 > 30:
                    misses += 1
                    print(f"# not searchable after 30 s: {dst.name} ({query!r})", file=sys.stderr)
                    break
                time.sleep(0.01)
            times.append(time.perf_counter() - t0)
            time.sleep(args.pause)
        db.close()
        d.wait_idle()
        rss = d.rss()
        status = d.api("GET", "/v1/status")
        # One end-to-end check through the CLI in its default (hybrid) mode.
        dt, r = cli(d.env, "search", "--json", memes[-1][1])
        cli_ok = f"{len(memes) - 1:03d}_" in r.stdout
        rc = d.stop()
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
        sb.cleanup()
    print(f"machine: {machine()}")
    print(f"daemon start-up to ready: {startup:.1f}s; indexed {status['counts']['indexed']}; exit code {rc}")
    print("| memes | stable_seconds | p50 s | p95 s | max s | misses |")
    print("|---:|---:|---:|---:|---:|---:|")
    stable = args.stable if args.stable is not None else 0.5
    print(f"| {len(times)} | {stable} | {pct(times, 50):.2f} | {pct(times, 95):.2f} | {max(times):.2f} | {misses} |")
    print(
        f"RSS after the run: daemon {rss['daemon']:.0f} MiB (peak {rss['daemon_peak']:.0f} MiB), "
        f"OCR worker processes {rss['children']:.0f} MiB, total {rss['daemon'] + rss['children']:.0f} MiB"
    )
    print(f"CLI hybrid search for the last meme: {'found' if cli_ok else 'NOT found'} in {dt * 1000:.0f} ms")


if __name__ == "__main__":
    main()
