"""Startup reconcile over N unchanged files (target: 100k in <= 10 s).

Creates N real tiny files in a tree, books them in SQLite as indexed (synthetic
rows whose size/mtime/inode match the disk), then times ``reconcile()``: one
bulk SELECT plus an os.scandir walk with a stat per file. Runs it a few times
(warm page cache) and also once through a real daemon (the time it reports in
``pixgrep status --json``).

``--named``: also books the same tree in a second books file, times naming it (``Catalog.use_mounts`` rebooks
every row as a ``pics:/rel`` key, pixgrep.roots), then times its reconcile interleaved with the unnamed one's.

    PYTHONPATH=daemon:cli python bench/reconcile.py [--files 100000] [--dir /tmp/x] [--no-daemon] [--named]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from _daemon import machine
from pixgrep import scan
from pixgrep.catalog import Catalog
from pixgrep.roots import RootMap
from pixgrep.service.queue import WorkQueue
from pixgrep.service.reconcile import reconcile
from pixgrep.settings import load_settings


def make_tree(root: Path, n: int, per_dir: int = 1000) -> list[tuple[bytes, str, int, int, int]]:
    rows = []
    for i in range(n):
        d = root / f"{i // per_dir // 100:02d}" / f"{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        p = d / f"img{i:07d}.jpg"
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"\xff\xd8\xff")
        os.close(fd)
        st = os.stat(p)
        rows.append((os.fsencode(str(p)), f"{i:032x}", st.st_size, st.st_mtime_ns, st.st_ino))
    return rows


def book(db: Catalog, rows: list[tuple[bytes, str, int, int, int]], key: Callable[[str], str] = str) -> None:
    db.seed(
        [{"hash": h, "status": "done", "attempts": 1} for h in dict.fromkeys(r[1] for r in rows)],
        [
            {"path": key(os.fsdecode(p)), "content_hash": h, "size": size, "mtime_ns": mtime, "inode": ino}
            for p, h, size, mtime, ino in rows
        ],
    )


def timed(db: Catalog, root: Path, flt: scan.FileFilter, n: int) -> float:
    q = WorkQueue(db)
    t = time.monotonic()
    r = reconcile(db, q, str(root), flt)
    dt = time.monotonic() - t
    assert (r.files, r.unchanged, r.queued, r.deleted) == (n, n, 0, 0), r
    return dt


def via_daemon(home: Path, root: Path, timeout: float = 300) -> float:
    run = Path(tempfile.mkdtemp(prefix="pgrun-"))
    run.chmod(0o700)
    cfg = home / "config.toml"
    cfg.write_text(f'[[watch.folders]]\npath = "{root}"\n')
    env = {
        **os.environ,
        "PIXGREP_HOME": str(home),
        "XDG_RUNTIME_DIR": str(run),
        "PIXGREP_CONFIG_FILE": str(cfg),
        "PIXGREP_OCR__WORKERS": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pixgrep_cli.main", "daemon"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    sock = run / "pixgrep" / "api.sock"
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://d") as c:
                    rec = c.get("/v1/status").json().get("daemon", {}).get("reconcile", {}).get(str(root))
                if rec:
                    assert rec["queued"] == 0 and rec["deleted"] == 0, rec
                    return float(rec["seconds"])
            except (httpx.HTTPError, OSError, ValueError):
                pass
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "daemon died")
            time.sleep(0.1)
        raise TimeoutError("no reconcile report from the daemon")
    finally:
        proc.terminate()
        proc.wait(60)
        shutil.rmtree(run, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-daemon", action="store_true")
    ap.add_argument("--named", action="store_true", help="also time the tree booked as a named root, interleaved")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pixgrep-reconcile-", dir=args.dir))
    try:
        root = base / "pics"
        home = base / "home"
        t0 = time.monotonic()
        rows = make_tree(root, args.files)
        db = Catalog(home / "pixgrep.sqlite")
        book(db, rows)
        print(f"# setup: {args.files} files and rows in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        os.environ["PIXGREP_HOME"] = str(home)
        flt = scan.FileFilter.from_settings(load_settings())
        named: Catalog | None = None
        adopted = 0.0
        if args.named:
            # Booked by absolute path, then named: the one-time rebooking of an indexed folder under its name.
            named = Catalog(base / "named.sqlite")
            book(named, rows)
            t = time.monotonic()
            assert named.use_mounts(RootMap.of({"pics": str(root)})) == args.files
            adopted = time.monotonic() - t
        times: list[float] = []
        named_times: list[float] = []
        for _ in range(args.runs):
            times.append(timed(db, root, flt, args.files))
            if named is not None:
                named_times.append(timed(named, root, flt, args.files))
        db.close()
        if named is not None:
            named.close()
        print(f"machine: {machine()}")
        print("| files | run | seconds | files/s |\n|---:|---|---:|---:|")
        for label, ts in (("in-process", times), ("in-process, named root", named_times)):
            for i, t in enumerate(ts):
                print(f"| {args.files} | {label} #{i + 1} | {t:.2f} | {args.files / t:,.0f} |")
            if ts:
                print(f"| {args.files} | {label}, median | {statistics.median(ts):.2f} | |")
        if adopted:
            print(f"| {args.files} | naming the indexed folder (rebooking its rows) | {adopted:.2f} | |")
        if not args.no_daemon:
            t = via_daemon(home, root)
            print(f"| {args.files} | daemon start-up | {t:.2f} | {args.files / t:,.0f} |")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
