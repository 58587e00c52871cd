"""A Captioner test double with fixed captions per image colour, next to the real
TransformersCaptioner (tested with tiny real-architecture models)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from PIL import Image


class FixedCaptioner:
    name = "fixed-captions"
    version = "fixed 1"
    CAPTIONS: ClassVar[dict[tuple[int, int, int], str]] = {
        (255, 165, 0): "an orange cat sleeping on a computer keyboard",
        (135, 206, 235): "a sunset over the sea at the beach",
    }
    calls: ClassVar[list[int]] = []

    def __init__(self, **_: Any) -> None:
        pass

    def caption(self, images: Sequence[Image.Image]) -> list[list[str]]:
        FixedCaptioner.calls.append(len(images))
        out = []
        for im in images:
            px = im.getpixel((5, 5))
            out.append([self.CAPTIONS.get(tuple(px), "a picture")])  # type: ignore[arg-type]
        return out
