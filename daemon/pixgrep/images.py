"""Reading image files safely: hashing, decoding, orientation, size caps."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from pixgrep.errors import PermanentError, RetryableError

# decode() checks the pixel count against image.max_megapixels from the header,
# before any pixel is decoded, and may first shrink a JPEG with draft(); Pillow's
# own global limit would refuse those JPEGs before draft() gets a chance.
Image.MAX_IMAGE_PIXELS = None

# Refuse to read more than this from one file: nothing legitimate comes close,
# and reading it all to hash would stall the pipeline.
MAX_FILE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class FileBytes:
    data: bytes
    digest: str
    size: int
    mtime_ns: int
    inode: int


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def read_file(path: str) -> FileBytes:
    """Read and hash a file, classifying OS errors as permanent or retryable."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if st.st_size > MAX_FILE_BYTES:
                raise PermanentError(f"file is {st.st_size >> 20} MiB, over the {MAX_FILE_BYTES >> 20} MiB limit")
            data = fh.read()
    except FileNotFoundError:
        raise RetryableError("file vanished before it could be read") from None
    except PermissionError:
        raise RetryableError("permission denied: the service user cannot read this file") from None
    except IsADirectoryError:
        raise PermanentError("is a directory") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise PermanentError("symlink loop") from None
        raise RetryableError(f"cannot read file: {e.strerror or e}") from None
    if not data:
        raise PermanentError("empty file (0 bytes)")
    return FileBytes(data, content_hash(data), st.st_size, st.st_mtime_ns, st.st_ino)


def _open_within_cap(data: bytes, max_megapixels: float) -> Image.Image:
    """Open lazily, asking JPEG for a reduced decode when that keeps it under the pixel cap."""
    max_pixels = int(max_megapixels * 1_000_000)
    im: Image.Image = Image.open(io.BytesIO(data))
    w, h = im.size
    if w * h > max_pixels and getattr(im, "format", None) == "JPEG":
        # JPEG can decode at 1/2, 1/4 or 1/8 scale without the full-size buffer.
        scale = 2
        while scale < 8 and (w // scale) * (h // scale) > max_pixels:
            scale *= 2
        im.draft("RGB", (w // scale, h // scale))
    dw, dh = im.size
    if dw * dh > max_pixels:
        raise PermanentError(
            f"image is {w}x{h} ({w * h / 1e6:.0f} MP), over the {max_megapixels:g} MP cap (image.max_megapixels)"
        )
    return im


def _to_rgb(im: Image.Image) -> Image.Image:
    """Flatten transparency onto white (OCR reads dark text on light) and convert to RGB."""
    if im.mode == "RGB":
        return im
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.split()[-1])
        return bg
    return im.convert("RGB")


def _decode_error(data: bytes, e: Exception) -> PermanentError:
    """What a decoder exception says about the bytes, as one line."""
    if isinstance(e, PermanentError):
        return e
    if isinstance(e, UnidentifiedImageError):
        kind = _sniff(data)
        return PermanentError(f"not an image{f' ({kind})' if kind else ''}")
    if isinstance(e, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return PermanentError(f"decompression bomb refused: {e}")
    if isinstance(e, OSError | SyntaxError | ValueError | EOFError):
        msg = str(e) or type(e).__name__
        if "truncated" in msg:
            msg = "truncated image: " + msg
        return PermanentError(f"corrupt image: {msg}")
    # Pillow's plugins raise what their parsers hit on damaged headers (IndexError from a GIF's frame
    # table, struct.error, ZeroDivisionError...; found by tests/test_fuzz.py): the bytes are bad, not us.
    return PermanentError(f"corrupt image: {type(e).__name__}: {e}"[:300])


def decode(data: bytes, *, max_megapixels: float) -> Image.Image:
    """Decode to an upright RGB image, first frame only, within the pixel cap."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = _open_within_cap(data, max_megapixels)
            if getattr(im, "is_animated", False):
                im.seek(0)
            im.load()
            return _to_rgb(ImageOps.exif_transpose(im) or im)
    except Exception as e:
        raise _decode_error(data, e) from None


def _sniff(data: bytes) -> str:
    head = data[:16]
    if head[4:8] == b"ftyp":
        return "looks like an MP4/MOV video"
    if head.startswith(b"%PDF"):
        return "looks like a PDF"
    if head.startswith((b"\x1aE\xdf\xa3",)):
        return "looks like a WebM/MKV video"
    try:
        data[:512].decode("utf-8")
        return "looks like text"
    except UnicodeDecodeError:
        return ""
