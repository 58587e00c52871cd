"""A contact sheet of search hits: a grid of thumbnails with rank and score."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from pixgrep import images
from pixgrep.errors import PixgrepError


def output_problem(out: Path) -> str | None:
    """Why a montage cannot be written to ``out``, in one line, or None (checked before searching)."""
    Image.init()
    fmt = Image.registered_extensions().get(out.suffix.lower())
    if fmt is None or fmt not in Image.SAVE or fmt not in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"):
        return f"--montage {out}: the name must end in an image type (.jpg, .png, .webp)"
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        return f"--montage {out}: {parent} is not a folder"
    return None


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
    problem = output_problem(out)
    if problem:
        raise ValueError(problem)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(out, quality=88)
    except OSError as e:
        raise PixgrepError(f"cannot write the montage to {out}: {e.strerror or e}") from None
    return out
