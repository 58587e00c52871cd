import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image
from pixgrep import images
from pixgrep.errors import PermanentError, RetryableError


def _png_header_only(path: Path, w: int, h: int) -> Path:
    """A tiny PNG that claims to be w x h: the classic decompression bomb shape."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_zero_byte(tmp_path: Path) -> None:
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(PermanentError, match="empty"):
        images.read_file(str(p))


def test_truncated_jpeg(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (400, 300), "red").save(buf, "JPEG")
    data = buf.getvalue()[: len(buf.getvalue()) // 2]
    with pytest.raises(PermanentError, match="truncated|corrupt"):
        images.decode(data, max_megapixels=64)


def test_video_and_text_with_image_extension() -> None:
    mp4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 100
    with pytest.raises(PermanentError, match="not an image.*MP4"):
        images.decode(mp4, max_megapixels=64)
    with pytest.raises(PermanentError, match="not an image.*text"):
        images.decode(b"hello, I am a text file\n", max_megapixels=64)


def test_decompression_bomb(tmp_path: Path) -> None:
    p = _png_header_only(tmp_path / "bomb.png", 50000, 50000)
    with pytest.raises(PermanentError, match="MP cap"):
        images.decode(p.read_bytes(), max_megapixels=64)


def test_100_megapixel_png_refused_jpeg_downscaled(tmp_path: Path) -> None:
    big = Image.new("L", (10000, 10000), 200)
    png = io.BytesIO()
    big.save(png, "PNG")
    with pytest.raises(PermanentError, match="100 MP"):
        images.decode(png.getvalue(), max_megapixels=64)
    jpg = io.BytesIO()
    big.save(jpg, "JPEG", quality=50)
    im = images.decode(jpg.getvalue(), max_megapixels=64)
    assert im.width * im.height <= 64_000_000
    assert im.mode == "RGB"


def test_exif_orientation_applied() -> None:
    im = Image.new("RGB", (200, 100), "white")
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif)
    out = images.decode(buf.getvalue(), max_megapixels=64)
    assert out.size == (100, 200)


def test_animated_gif_first_frame() -> None:
    frames = [Image.new("RGB", (50, 40), c) for c in ("red", "blue", "green")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = images.decode(buf.getvalue(), max_megapixels=64)
    assert out.size == (50, 40)
    r, g, b = out.getpixel((10, 10))  # type: ignore[misc]
    assert r > 200 and b < 50


def test_transparent_png_on_white() -> None:
    im = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    assert images.decode(buf.getvalue(), max_megapixels=64).getpixel((0, 0)) == (255, 255, 255)


def test_vanished_file(tmp_path: Path) -> None:
    with pytest.raises(RetryableError, match="vanished"):
        images.read_file(str(tmp_path / "gone.jpg"))


def test_symlink_loop(tmp_path: Path) -> None:
    p = tmp_path / "loop.jpg"
    os.symlink(p, p)
    with pytest.raises(PermanentError, match="symlink loop"):
        images.read_file(str(p))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file; see test_unreadable_file_as_root")
def test_unreadable_file(tmp_path: Path) -> None:
    p = tmp_path / "secret.jpg"
    Image.new("RGB", (10, 10)).save(p)
    p.chmod(0)
    with pytest.raises(RetryableError, match="permission denied"):
        images.read_file(str(p))


def test_unreadable_file_as_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root bypasses file modes, so the kernel's EACCES is simulated at open().
    p = tmp_path / "secret.jpg"
    Image.new("RGB", (10, 10)).save(p)
    real_open = open

    def fake_open(file: object, *a: object, **kw: object) -> object:
        if str(file) == str(p):
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(file, *a, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", fake_open)
    with pytest.raises(RetryableError, match="permission denied"):
        images.read_file(str(p))


def test_hash_is_content_identity(tmp_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (10, 10), "red").save(a)
    b.write_bytes(a.read_bytes())
    assert images.read_file(str(a)).digest == images.read_file(str(b)).digest


def test_damaged_gif_frame_table_is_a_corrupt_image() -> None:
    """Found by tests/test_fuzz.py: Pillow raises struct.error/IndexError from a GIF's frame table."""
    good = io.BytesIO()
    frame = Image.new("RGB", (48, 32), "white")
    frame.save(good, "GIF", save_all=True, append_images=[frame.rotate(90)])
    data = good.getvalue()
    # Cut inside the second frame's descriptor, right after its separator.
    cut = data[: data.index(b",", data.index(b"!\xf9", 20) + 8) + 1]
    with pytest.raises(PermanentError, match="corrupt image"):
        images.decode(cut, max_megapixels=1)
