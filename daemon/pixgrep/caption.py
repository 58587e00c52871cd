"""Image captioning with Hugging Face transformers (ViT-GPT2, BLIP, other image-to-text models)."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pixgrep.embed_torch import pick_device, resolve_model
from pixgrep.stages import BackendUnavailable

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger("pixgrep.caption")

# Generation settings saved with a model that BLIP-style wrappers would drop,
# because they call generate() on an inner decoder with its own defaults.
_MODEL_GENERATION_KEYS = (
    "min_new_tokens",
    "min_length",
    "suppress_tokens",
    "bad_words_ids",
    "no_repeat_ngram_size",
    "repetition_penalty",
    "length_penalty",
)
_AUTO_CLASSES = ("AutoModelForImageTextToText", "AutoModelForVision2Seq")


def is_oom(e: BaseException) -> bool:
    import torch

    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(e, oom_type):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class TransformersCaptioner:
    """Captions images with a transformers image-to-text model given by hub id or local path.

    Images are batched on the device; a CUDA out-of-memory error halves the
    batch size (kept for later calls) and retries. ``unload`` frees the model,
    which is loaded again on the next ``caption`` call.
    """

    def __init__(
        self,
        model: str,
        device: str = "auto",
        batch_size: int = 8,
        num_beams: int = 3,
        max_new_tokens: int = 24,
        num_captions: int = 1,
        temperature: float = 1.0,
    ) -> None:
        if not model:
            raise BackendUnavailable("caption.model is empty; set it to an image-to-text model's hub id or directory")
        self.name = model
        self.device = pick_device(device)
        self.batch_size = max(1, batch_size)
        self.num_beams = max(1, num_beams)
        self.max_new_tokens = max_new_tokens
        self.num_captions = max(1, num_captions)
        self.temperature = temperature
        self._source = resolve_model(model, "caption.model")
        self._lock = threading.RLock()
        self._model: Any = None
        self._image_processor: Any = None
        self._tokenizer: Any = None
        self._defaults: dict[str, Any] = {}
        self._strip_prompt = False
        import transformers

        self.version = f"transformers {transformers.__version__}"
        self._load()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> None:
        try:
            self._load_unchecked()
        except BackendUnavailable:
            raise
        except Exception as e:  # loaders raise OSError, ValueError, KeyError...
            raise BackendUnavailable(f"caption.model {self.name!r} cannot be loaded: {_first_line(e)}") from e
        log.info("captioner %s (%s) on %s", self.name, type(self._model).__name__, self.device)

    def _load_unchecked(self) -> None:
        import torch
        import transformers
        from transformers import AutoConfig, AutoImageProcessor, AutoProcessor, AutoTokenizer

        config = AutoConfig.from_pretrained(self._source)
        cls = self._model_class(config)
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        # transformers < 4.56 only knows the older keyword.
        version = tuple(int(x) for x in transformers.__version__.split(".")[:2] if x.isdigit())
        dtype_key = "dtype" if version >= (4, 56) else "torch_dtype"
        model = cls.from_pretrained(self._source, **{dtype_key: dtype})
        model.to(self.device).eval()
        if config.model_type == "vision-encoder-decoder":
            image_processor = AutoImageProcessor.from_pretrained(self._source)
            tokenizer = AutoTokenizer.from_pretrained(self._source)
        else:
            image_processor = AutoProcessor.from_pretrained(self._source)
            tokenizer = getattr(image_processor, "tokenizer", None) or AutoTokenizer.from_pretrained(self._source)
        gen = model.generation_config
        if gen.pad_token_id is None and gen.eos_token_id is not None:
            eos = gen.eos_token_id
            gen.pad_token_id = eos[0] if isinstance(eos, list) else eos
        diff = gen.to_diff_dict()
        self._defaults = {k: diff[k] for k in _MODEL_GENERATION_KEYS if diff.get(k) is not None}
        self._strip_prompt = not config.is_encoder_decoder
        self._model, self._image_processor, self._tokenizer = model, image_processor, tokenizer

    def _model_class(self, config: Any) -> Any:
        import transformers

        for arch in getattr(config, "architectures", None) or []:
            cls = getattr(transformers, arch, None)
            if cls is not None and hasattr(cls, "generate"):
                return cls
        for auto_name in _AUTO_CLASSES:
            auto = getattr(transformers, auto_name, None)
            if auto is not None and type(config) in auto._model_mapping:
                return auto
        raise BackendUnavailable(
            f"caption.model {self.name!r} (model_type {config.model_type!r}) is not an image-to-text model"
        )

    def unload(self) -> None:
        with self._lock:
            if self._model is None:
                return
            self._model = self._image_processor = self._tokenizer = None
            gc.collect()
            if self.device == "cuda":
                import torch

                torch.cuda.empty_cache()
            log.info("captioner %s unloaded", self.name)

    def caption(self, images: Sequence[Image.Image]) -> list[list[str]]:
        if not images:
            return []
        with self._lock:
            if self._model is None:
                self._load()
            out: list[list[str]] = []
            start = 0
            while start < len(images):
                chunk = images[start : start + self.batch_size]
                try:
                    out.extend(self._caption_chunk(chunk))
                except Exception as e:
                    if not is_oom(e) or len(chunk) == 1:
                        raise
                    self.batch_size = max(1, len(chunk) // 2)
                    log.warning(
                        "out of GPU memory captioning %d images; batch size now %d", len(chunk), self.batch_size
                    )
                    self._free_cuda()
                    continue
                start += len(chunk)
            return out

    def _free_cuda(self) -> None:
        if self.device == "cuda":
            import torch

            gc.collect()
            torch.cuda.empty_cache()

    def _caption_chunk(self, images: Sequence[Image.Image]) -> list[list[str]]:
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        features = self._image_processor(images=rgb, return_tensors="pt")
        dtype = self._model.dtype
        inputs: dict[str, Any] = {}
        for key, value in features.items():
            if hasattr(value, "to"):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(dtype)
            inputs[key] = value
        kwargs: dict[str, Any] = {**self._defaults, "max_new_tokens": self.max_new_tokens}
        if self.num_captions > 1:
            kwargs.update(
                do_sample=True, num_beams=1, temperature=self.temperature, num_return_sequences=self.num_captions
            )
        else:
            kwargs.update(do_sample=False, num_beams=self.num_beams)
        sequences = self._generate(inputs, **kwargs)
        if self._strip_prompt and "input_ids" in inputs:
            sequences = sequences[:, inputs["input_ids"].shape[1] :]
        texts = [t.strip() for t in self._tokenizer.batch_decode(sequences, skip_special_tokens=True)]
        n = len(texts) // len(images)
        return [texts[i * n : (i + 1) * n] for i in range(len(images))]

    def _generate(self, inputs: dict[str, Any], **kwargs: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self._model.generate(**inputs, **kwargs)
