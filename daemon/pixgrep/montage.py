"""A contact sheet of search hits: a grid of thumbnails with rank and score."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from pixgrep import images
from pixgrep.errors import PixgrepError


def montage(paths: Sequence[str], out: Path, *, labels: Sequence[str] = (), cell: int = 256, columns: int = 0) -> Path:
    if not paths:
        raise ValueError("no images to put in a montage")
    cols = columns or min(len(paths), max(1, math.ceil(math.sqrt(len(paths)))))
    rows = math.ceil(len(paths) / cols)
    label_h = 18
    sheet = Image.new("RGB", (cols * cell, rows * (cell + label_h)), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for i, path in enumerate(paths):
        x, y = (i % cols) * cell, (i // cols) * (cell + label_h)
        try:
            im = images.decode(images.read_file(path).data, max_megapixels=64)
            thumb = ImageOps.contain(im, (cell - 4, cell - 4))
            sheet.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
        except PixgrepError as e:
            draw.text((x + 6, y + cell // 2), f"unreadable: {e}"[:40], fill=(255, 120, 120))
        label = labels[i] if i < len(labels) else f"#{i + 1}"
        draw.text((x + 4, y + cell + 2), label, fill=(230, 230, 230))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, quality=88)
    return out
