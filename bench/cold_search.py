"""Search without and with the daemon, and the daemon's memory: this checkout against a baseline, interleaved.

For each size, one synthetic index (``daemon_latency.py --grow``: about 7 segments an item, Zipf words,
random unit vectors) is built with the *baseline* code, then copied; the copy is opened once by this
checkout (the upgrade: an older layout is migrated on first open, timed apart). Then, in one run:

- cold CLI search, no daemon: ``python -m pixgrep_cli.main search --json Q`` as a fresh process, end to
  end, baseline and candidate alternating query by query (ABBA), same queries;
- warm daemon search: both daemons run side by side (each on its own copy); each query goes to one and
  then the other (order alternating) through the ``pixgrep`` console script (its stdlib fast path), and
  as an in-process API request (the daemon's share);
- the RSS of each daemon process (and of its OCR children) after the searches.

    PYTHONPATH=daemon:cli python bench/cold_search.py --baseline /path/to/baseline/checkout \
        [--sizes 10000 50000] [--runs 9] [--reuse 50000=/prebuilt/baseline/home]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _daemon import REPO, Daemon, Sandbox, machine
from daemon_latency import vocabulary


def arm_env(sb: Sandbox, code: Path) -> dict[str, str]:
    # A generous Milvus timeout: on a shared, loaded machine a 10 s deadline fails runs, not code.
    return sb.env(
        PYTHONPATH=f"{code / 'daemon'}:{code / 'cli'}",
        XDG_CACHE_HOME=str(sb.base / "cache"),
        PIXGREP_MILVUS__TIMEOUT="300",
    )


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode not in (0, 1):
        raise RuntimeError(f"{cmd} exited {r.returncode}: {r.stderr[-2000:]}")
    return dt, r


def cold(env: dict[str, str], q: str) -> tuple[float, list[str]]:
    dt, r = timed([sys.executable, "-m", "pixgrep_cli.main", "search", "--json", q], env)
    return dt, [line.split('"score"')[0] for line in r.stdout.splitlines()]


def console(env: dict[str, str], q: str, cpu: list[float] | None = None) -> float:
    pixgrep = shutil.which("pixgrep", path=os.path.dirname(sys.executable)) or "pixgrep"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    dt = timed([pixgrep, "search", "--json", q], env)[0]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:  # CPU time of the client process: what its wall time would be on an idle core
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return dt


def _pid(d: Daemon) -> int:
    assert d.proc is not None
    return d.proc.pid


def process_cpu(pid: int) -> float:
    """Seconds of CPU a process (all its threads) has used: utime + stime from /proc (10 ms ticks)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def build(code: Path, home: Path, n: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXGREP_")}
    env["PYTHONPATH"] = f"{code / 'daemon'}:{code / 'cli'}"
    # The baseline's own grow script: this checkout's may use what the baseline's code lacks.
    subprocess.run(
        [sys.executable, str(code / "bench" / "daemon_latency.py"), "--grow", "0", str(n), "--home", str(home)],
        env=env,
        check=True,
    )


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.0f}"


def p95(xs: list[float]) -> str:
    return f"{sorted(xs)[min(len(xs) - 1, int(0.95 * len(xs)))] * 1000:.0f}"


def measure(n: int, base_code: Path, reuse: Path | None, queries: list[str], runs: int, cold_runs: int) -> list[str]:
    sb = {"baseline": Sandbox("pgcold-b-"), "candidate": Sandbox("pgcold-c-")}
    code = {"baseline": base_code, "candidate": REPO}
    env = {arm: arm_env(sb[arm], code[arm]) for arm in sb}
    rows: list[str] = []
    daemons: dict[str, Daemon] = {}
    try:
        if reuse is not None:
            shutil.copytree(reuse, sb["baseline"].home, symlinks=True)
        else:
            t = time.monotonic()
            build(base_code, sb["baseline"].home, n)
            print(f"# built {n:,} items with the baseline in {time.monotonic() - t:.0f}s", file=sys.stderr)
        shutil.copytree(sb["baseline"].home, sb["candidate"].home, symlinks=True)
        # First search of each: the candidate migrates the older layout; both warm the page cache.
        first = {arm: cold(env[arm], queries[0])[0] for arm in ("baseline", "candidate")}
        same = 0
        t_cold: dict[str, list[float]] = {"baseline": [], "candidate": []}
        for i, q in enumerate(queries[1 : cold_runs + 1]):
            order = ("baseline", "candidate") if i % 2 == 0 else ("candidate", "baseline")
            out = {}
            for arm in order:
                dt, out[arm] = cold(env[arm], q)
                t_cold[arm].append(dt)
            same += out["baseline"] == out["candidate"]
        for arm in ("baseline", "candidate"):
            rows.append(
                f"| {n:,} | {arm} | cold CLI, no daemon | {med(t_cold[arm])} | {p95(t_cold[arm])} "
                f"| first search {first[arm]:.1f} s |"
            )
        rows.append(f"<!-- {n}: {same}/{cold_runs} cold queries gave the same paths in the same order -->")

        for arm in ("baseline", "candidate"):
            daemons[arm] = Daemon(
                sb[arm],
                **{
                    k: v
                    for k, v in env[arm].items()
                    if k in ("PYTHONPATH", "XDG_CACHE_HOME", "PIXGREP_MILVUS__TIMEOUT")
                },
            )
            secs = daemons[arm].start(timeout=1800)
            print(f"# {arm} daemon up at {n:,} in {secs:.0f}s", file=sys.stderr)
        for q in queries[:5]:  # warm both
            for arm in daemons:
                daemons[arm].search(q)
                console(env[arm], q)
        api: dict[str, list[float]] = {"baseline": [], "candidate": []}
        cli: dict[str, list[float]] = {"baseline": [], "candidate": []}
        cli_cpu: dict[str, list[float]] = {"baseline": [], "candidate": []}
        # The daemon's CPU over the whole loop (two searches a query: the API request and the CLI's).
        daemon_cpu = {arm: -process_cpu(_pid(daemons[arm])) for arm in daemons}
        for i, q in enumerate(queries[:runs]):
            order = ("baseline", "candidate") if i % 2 == 0 else ("candidate", "baseline")
            for arm in order:
                t = time.perf_counter()
                daemons[arm].search(q)
                api[arm].append(time.perf_counter() - t)
                cli[arm].append(console(env[arm], q, cli_cpu[arm]))
        for arm in daemons:
            daemon_cpu[arm] += process_cpu(_pid(daemons[arm]))
        for arm in ("baseline", "candidate"):
            rss = daemons[arm].rss()
            rows.append(
                f"| {n:,} | {arm} | daemon: CLI (API) | {med(cli[arm])} ({med(api[arm])}) | {p95(cli[arm])} "
                f"| RSS {rss['daemon']:.0f} MiB (peak {rss['daemon_peak']:.0f}) + OCR {rss['children']:.0f} MiB; "
                f"CPU a search: client {med(cli_cpu[arm])} ms (p50) + daemon "
                f"{daemon_cpu[arm] / (2 * runs) * 1000:.0f} ms (mean) |"
            )
    finally:
        for d in daemons.values():
            d.stop()
        for s in sb.values():
            s.cleanup()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", type=Path, required=True, help="a checkout of the code to compare with")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    ap.add_argument("--runs", type=int, default=9, help="daemon queries per arm")
    ap.add_argument("--cold-runs", type=int, default=None, help="daemon-less queries per arm (default: --runs)")
    ap.add_argument("--reuse", action="append", default=[], help="SIZE=DIR: a baseline home already built")
    args = ap.parse_args()
    reuse = {int(k): Path(v) for k, v in (r.split("=", 1) for r in args.reuse)}
    vocab = vocabulary()
    rnd = random.Random(7)
    queries = [" ".join(rnd.sample(vocab[50:2000], k=rnd.randint(1, 3))) for _ in range(args.runs + 6)]
    rows: list[Any] = []
    for n in args.sizes:
        rows += measure(n, args.baseline.resolve(), reuse.get(n), queries, args.runs, args.cold_runs or args.runs)
    load = os.getloadavg()
    print(f"machine: {machine()}; load average at the end {load[0]:.1f} (shared with other jobs)")
    print(
        f"hybrid search, k=10; {args.cold_runs or args.runs} cold and {args.runs} daemon queries per arm, interleaved"
    )
    print("| items | code | path | p50 ms | p95 ms | notes |")
    print("|---:|---|---|---:|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
