"""Caption and embedding throughput of the torch backends, on CUDA (fp16) and CPU (fp32).

Builds real-size architectures with random weights (no hub needed):
ViT-base/16-224 + GPT-2 124M as a VisionEncoderDecoder captioner, and a
BERT-base encoder the size of text2vec-base-chinese (hidden 768, 12 layers,
vocab 21128) used with mean pooling. Both run through pixgrep's own classes
(TransformersCaptioner, SentenceTransformersEmbedder), so image preprocessing,
tokenisation, generation and decoding are all timed.

    PYTHONPATH=daemon:cli python bench/gpu_pipeline.py [--cpu-only] [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

CAPTION_TOKENS = 20
EMBED_TOKENS = 64  # [CLS] + 62 words + [SEP]
BATCHES = (1, 8, 32)
BERT_VOCAB = 21128
GPT2_VOCAB = 50257


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build_captioner_model(path: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import (
        GPT2Config,
        PreTrainedTokenizerFast,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    torch.manual_seed(0)
    eos_id = GPT2_VOCAB - 1
    vocab = {f"w{i}": i for i in range(eos_id)}
    vocab["<|endoftext|>"] = eos_id
    tok = Tokenizer(WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    eos = "<|endoftext|>"
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eos, eos_token=eos, pad_token=eos)
    encoder = ViTConfig(image_size=224, patch_size=16)  # ViT-base defaults: 768 wide, 12 layers
    decoder = GPT2Config(bos_token_id=eos_id, eos_token_id=eos_id)  # GPT-2 small defaults: 124M
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = config.pad_token_id = config.eos_token_id = eos_id
    model = VisionEncoderDecoderModel(config=config)
    gen = model.generation_config
    gen.decoder_start_token_id = gen.pad_token_id = gen.eos_token_id = gen.bos_token_id = eos_id
    # Fixed-length captions, so every batch does the same work.
    gen.min_new_tokens = CAPTION_TOKENS
    params = sum(p.numel() for p in model.parameters())
    model.half().save_pretrained(path)
    tokenizer.save_pretrained(path)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(path)
    log(f"built ViT-base + GPT-2 captioner: {params / 1e6:.0f}M parameters")
    return path


def build_bert(path: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials)}
    vocab.update({f"w{i}": i for i in range(len(specials), BERT_VOCAB)})
    model = BertModel(BertConfig(vocab_size=BERT_VOCAB))  # BERT-base defaults: 768 wide, 12 layers
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(path)
    BertTokenizer(vocab=vocab).save_pretrained(path)
    log(f"built BERT-base encoder: {params / 1e6:.0f}M parameters, vocab {BERT_VOCAB}")
    return path


def make_images(n: int) -> list[Any]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), "RGB") for _ in range(n)]


def make_texts(n: int) -> list[str]:
    rnd = random.Random(0)
    words = EMBED_TOKENS - 2
    return [" ".join(f"w{rnd.randrange(5, BERT_VOCAB)}" for _ in range(words)) for _ in range(n)]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.monotonic()
        self.rows: list[dict[str, Any]] = []
        self.meta: dict[str, Any] = {}

    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.t0)

    def cell(
        self, stage: str, device: str, batch: int, run: Any, items_per_call: int, cap: float, **extra: Any
    ) -> None:
        row: dict[str, Any] = {"stage": stage, "device": device, "batch": batch, **extra}
        if self.left() < 5:
            row["skipped"] = "time budget"
            log(f"skip {stage} {device} batch {batch}: time budget")
            self.rows.append(row)
            return
        cap = min(cap, max(1.0, self.left() - 5))
        try:
            warm = 1 if device == "cpu" else 2
            for _ in range(warm):
                run()
            calls = 0
            start = time.perf_counter()
            while True:
                run()
                calls += 1
                elapsed = time.perf_counter() - start
                if calls >= self.args.max_calls or elapsed >= cap:
                    break
            row.update(
                calls=calls,
                seconds=round(elapsed, 3),
                items_per_s=round(calls * items_per_call / elapsed, 2),
                ms_per_call=round(1000 * elapsed / calls, 1),
            )
            log(f"{stage:8s} {device:4s} batch {batch:2d}: {row['items_per_s']:9.1f} items/s ({calls} calls)")
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log(f"{stage} {device} batch {batch} failed: {row['error']}")
            traceback.print_exc()
        self.rows.append(row)
        self.save()

    def save(self) -> None:
        if not self.args.out:
            return
        out = Path(self.args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_pipeline.json").write_text(json.dumps({"meta": self.meta, "rows": self.rows}, indent=2))
        (out / "gpu_pipeline.md").write_text(self.markdown())

    def markdown(self) -> str:
        m = self.meta
        lines = [
            f"Device: {m.get('gpu') or 'no GPU'}; CPU: {m.get('cpu_threads')} torch threads ({m.get('cpu')}); "
            f"torch {m.get('torch')}, transformers {m.get('transformers')}, "
            f"sentence-transformers {m.get('sentence_transformers')}.",
            "",
            f"Captioner: ViT-base/16-224 + GPT-2 124M (random weights), greedy, exactly {CAPTION_TOKENS} new tokens, "
            "640x480 RGB inputs, preprocessing and decoding included. "
            f"Embedder: BERT-base (vocab {BERT_VOCAB}) mean pooling, {EMBED_TOKENS} tokens per text, "
            "through SentenceTransformersEmbedder. cuda runs fp16, cpu fp32.",
            "",
            "| stage | device | dtype | batch | items/s | ms/call | calls |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for r in self.rows:
            stage = r["stage"] + (f" (beams={r['beams']})" if r.get("beams", 1) > 1 else "")
            dtype = "fp16" if r["device"] == "cuda" else "fp32"
            if "items_per_s" in r:
                vals = f"{r['items_per_s']:.1f} | {r['ms_per_call']:.1f} | {r['calls']}"
            else:
                vals = f"{r.get('error') or r.get('skipped')} | | "
            lines.append(f"| {stage} | {r['device']} | {dtype} | {r['batch']} | {vals} |")
        lines.append("")
        lines.append(f"Total wall time {time.monotonic() - self.t0:.0f} s.")
        return "\n".join(lines) + "\n"


def run_device(bench: Bench, device: str, cap_dir: Path, bert_dir: Path, images: list[Any], texts: list[str]) -> None:
    from pixgrep.caption import TransformersCaptioner
    from pixgrep.embed_torch import SentenceTransformersEmbedder

    quick = bench.args.quick
    cap_s = (2.0 if quick else 8.0) if device == "cuda" else (2.0 if quick else 12.0)

    t = time.perf_counter()
    captioner = TransformersCaptioner(
        str(cap_dir), device=device, batch_size=1, num_beams=1, max_new_tokens=CAPTION_TOKENS
    )
    log(f"captioner loaded on {device} in {time.perf_counter() - t:.1f} s")
    sample = captioner.caption(images[:2])
    words = [len(c[0].split()) for c in sample]
    log(f"caption sample lengths (words): {words}")
    bench.meta.setdefault("caption_words", {})[device] = words
    for batch in BATCHES:
        captioner.batch_size = batch
        bench.cell("caption", device, batch, lambda b=batch: captioner.caption(images[:b]), batch, cap_s)
    if device == "cuda" and not quick:
        captioner.batch_size, captioner.num_beams = 8, 3
        bench.cell("caption", device, 8, lambda: captioner.caption(images[:8]), 8, cap_s, beams=3)
    captioner.unload()

    t = time.perf_counter()
    embedder = SentenceTransformersEmbedder(str(bert_dir), device=device)
    log(f"embedder loaded on {device} in {time.perf_counter() - t:.1f} s (dim {embedder.dim})")
    bench.meta["embed_tokens"] = len(embedder._model.tokenizer(texts[0])["input_ids"])
    for batch in BATCHES:
        embedder.batch_size = batch
        n = max(16, 4 * batch)
        bench.cell("embed", device, batch, lambda n=n: embedder.embed(texts[:n]), n, cap_s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-only", action="store_true", help="skip CUDA even if present")
    parser.add_argument("--quick", action="store_true", help="few calls per cell (a smoke test)")
    parser.add_argument("--out", help="directory for gpu_pipeline.json and gpu_pipeline.md")
    parser.add_argument("--budget", type=float, default=280.0, help="wall-clock seconds; later cells are skipped")
    parser.add_argument("--max-calls", type=int, default=0, help="calls per cell (default 3 quick, 200 full)")
    args = parser.parse_args()
    if not args.max_calls:
        args.max_calls = 3 if args.quick else 200
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import sentence_transformers
    import torch
    import transformers

    bench = Bench(args)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    bench.meta.update(
        gpu=gpu,
        torch=torch.__version__,
        cuda=torch.version.cuda,
        transformers=transformers.__version__,
        sentence_transformers=sentence_transformers.__version__,
        cpu=platform.processor() or platform.machine(),
        cpu_threads=torch.get_num_threads(),
        python=sys.version.split()[0],
        quick=args.quick,
    )
    log(f"meta: {json.dumps(bench.meta)}")
    devices = ([] if args.cpu_only or gpu is None else ["cuda"]) + ["cpu"]

    with tempfile.TemporaryDirectory(prefix="pixgrep-bench-") as tmp:
        t = time.perf_counter()
        cap_dir = build_captioner_model(Path(tmp) / "vit-gpt2")
        bert_dir = build_bert(Path(tmp) / "bert")
        log(f"models built and saved in {time.perf_counter() - t:.1f} s")
        images = make_images(max(BATCHES))
        texts = make_texts(4 * max(BATCHES))
        for device in devices:
            try:
                run_device(bench, device, cap_dir, bert_dir, images, texts)
            except Exception as e:
                log(f"{device} run failed: {type(e).__name__}: {e}")
                traceback.print_exc()
                bench.rows.append({"stage": "load", "device": device, "batch": 0, "error": f"{type(e).__name__}: {e}"})
    bench.save()
    print()
    print(bench.markdown(), flush=True)
    return 0 if all("error" not in r for r in bench.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
