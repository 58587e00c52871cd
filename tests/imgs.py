"""Small image fixtures the tests make themselves: text rendered with a CJK font."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")


def font(size: int = 40) -> ImageFont.FreeTypeFont:
    if not FONT.exists():
        pytest.skip("fonts-noto-cjk is not installed")
    # Index 2 of the collection is Traditional Chinese (TC); 0 is Japanese, 1 Korean... order per Noto docs.
    return ImageFont.truetype(str(FONT), size)


def render(path: Path, lines: list[str], *, size: tuple[int, int] | None = None, fmt: str | None = None) -> Path:
    f = font()
    w = size[0] if size else max(200, max(len(line) for line in lines) * 44 + 60)
    h = size[1] if size else 40 + 64 * len(lines)
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    for i, line in enumerate(lines):
        d.text((30, 20 + 64 * i), line, font=f, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format=fmt)
    return path


def blank(path: Path, color: str = "skyblue", size: tuple[int, int] = (320, 240)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path
