"""Tiny random-weight models of the real captioning and embedding architectures.

Each builder saves a model with everything needed to load it offline by path.
"""

from __future__ import annotations

from pathlib import Path

_CAPTION_WORDS = """
a the of on in with and is are two one man woman child dog cat bird car bus train street
road tree sky water beach snow table plate food cake pizza red blue green white black
sitting standing walking riding holding next to near picture photo sign text screen
"""
WORDS = _CAPTION_WORDS.split()
SIZE = 32  # image side in pixels; 4 patches of 16


def _wordlevel_tokenizer(specials: list[str], unk: str, lowercase: bool = True):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    vocab = {tok: i for i, tok in enumerate([*specials, *WORDS])}
    tok = Tokenizer(WordLevel(vocab, unk_token=unk))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return tok


def _gen_defaults(generation_config, special_ids: list[int]) -> None:  # type: ignore[no-untyped-def]
    # Random weights would often emit only special tokens, i.e. empty captions.
    generation_config.min_new_tokens = 3
    generation_config.suppress_tokens = special_ids


def build_vit_gpt2(path: Path | str) -> Path:
    import torch
    from transformers import (
        GPT2Config,
        PreTrainedTokenizerFast,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    path = Path(path)
    torch.manual_seed(0)
    eos = "<|endoftext|>"
    tok = PreTrainedTokenizerFast(
        tokenizer_object=_wordlevel_tokenizer([eos, "<unk>"], "<unk>"),
        bos_token=eos,
        eos_token=eos,
        pad_token=eos,
        unk_token="<unk>",
    )
    enc = ViTConfig(
        image_size=SIZE,
        patch_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    dec = GPT2Config(
        vocab_size=len(tok),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    config.decoder_start_token_id = 0
    config.pad_token_id = 0
    config.eos_token_id = 0
    model = VisionEncoderDecoderModel(config=config)
    model.generation_config.decoder_start_token_id = 0
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 0
    model.generation_config.bos_token_id = 0
    _gen_defaults(model.generation_config, [0, 1])
    model.save_pretrained(path)
    tok.save_pretrained(path)
    ViTImageProcessor(size={"height": SIZE, "width": SIZE}).save_pretrained(path)
    return path


def build_blip(path: Path | str) -> Path:
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    path = Path(path)
    torch.manual_seed(0)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    vocab = {tok: i for i, tok in enumerate([*specials, *WORDS])}
    tok = BertTokenizer(vocab=vocab, bos_token="[DEC]")
    config = BlipConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "encoder_hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 64,
            "bos_token_id": 5,
            "eos_token_id": 3,
            "sep_token_id": 3,
            "pad_token_id": 0,
        },
        vision_config={
            "hidden_size": 32,
            "image_size": SIZE,
            "patch_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
        },
        projection_dim=32,
    )
    model = BlipForConditionalGeneration(config)
    _gen_defaults(model.generation_config, list(range(len(specials))))
    model.save_pretrained(path)
    image_processor = BlipImageProcessor(size={"height": SIZE, "width": SIZE})
    BlipProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(path)
    return path


def build_bert(path: Path | str) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    path = Path(path)
    torch.manual_seed(0)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate([*specials, *WORDS])}
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(path)
    BertTokenizer(vocab=vocab).save_pretrained(path)
    return path
