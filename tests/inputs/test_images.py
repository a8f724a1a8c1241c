"""Reference images are read as a server that takes uploads from anyone must: every bad input the
issue names is a 422 naming ``input_reference`` and saying what to send, EXIF orientation is applied,
and an image of another size is fitted only when the request says how."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from reelserve.inputs.images import FIELD, Fit, from_data_url, read_reference
from reelserve.schemas import ReelserveError


def encoded(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None, None].repeat(width, 1)
    return Image.fromarray(np.concatenate([x, y, np.zeros_like(x)], axis=2))


def refused(data: bytes, width: int = 64, height: int = 48, fit: Fit | None = None) -> str:
    with pytest.raises(ReelserveError) as caught:
        read_reference(data, width, height, fit)
    assert caught.value.param == FIELD and caught.value.http_status == 422
    return str(caught.value)


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` with a few KB of (compressible) data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    rows = zlib.compress(b"\0" * (width + 1) * 16)  # the first rows only
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_an_image_of_the_videos_size_is_taken_as_it_is(fmt: str) -> None:
    image = gradient(64, 48)
    reference = read_reference(encoded(image, fmt), 64, 48, None)
    assert reference.size == (64, 48) and reference.fit is None
    tolerance = 0 if fmt == "PNG" else 40  # lossy formats
    assert np.abs(reference.pixels.astype(int) - np.asarray(image, dtype=int)).max() <= tolerance


def test_bad_inputs_are_refused_naming_the_field() -> None:
    assert "PNG, JPEG or WebP" in refused(b"this is not an image at all")
    png = encoded(gradient(64, 48))
    assert "could not be decoded" in refused(png[: len(png) // 2])  # truncated
    assert "megapixels" in refused(bomb_png(20000, 20000))  # a few KB claiming 400 megapixels
    assert len(bomb_png(20000, 20000)) < 10_000
    assert "send PNG, JPEG or WebP" in refused(encoded(gradient(64, 48), "GIF"))
    message = refused(encoded(gradient(80, 48)))
    assert "80x48" in message and "64x48" in message and "input_fit" in message  # never resized silently


@pytest.mark.parametrize("fit", list(Fit))
def test_another_size_is_fitted_only_as_asked(fit: Fit) -> None:
    wide = np.zeros((48, 128, 3), dtype=np.uint8)
    wide[:, 32:96] = 255  # a white middle half on black
    reference = read_reference(encoded(Image.fromarray(wide)), 64, 48, fit)
    assert reference.size == (64, 48) and reference.fit is fit
    middle, edge = reference.pixels[24, 32], reference.pixels[24, 1]
    assert middle.min() > 200
    if fit is Fit.crop:  # scaled to cover: the white half fills the whole width
        assert edge.min() > 200
    else:  # pad keeps the aspect, resize squeezes it: the black sides stay
        assert edge.max() < 60
    if fit is Fit.pad:  # scaled to 64x24, the rest black above and below
        assert reference.pixels[2, 32].max() < 20


def test_exif_orientation_is_applied() -> None:
    image = gradient(48, 64)  # stored portrait; EXIF says rotate 90 degrees: shown 64x48
    exif = Image.Exif()
    exif[0x0112] = 6
    reference = read_reference(encoded(image, "JPEG", exif=exif.tobytes(), quality=95), 64, 48, None)
    assert reference.size == (64, 48)


def test_the_digest_is_of_the_pixels_and_the_fit() -> None:
    png, webp = encoded(gradient(64, 48)), encoded(gradient(64, 48), "WEBP", lossless=True)
    assert read_reference(png, 64, 48, None).digest == read_reference(webp, 64, 48, None).digest  # same pixels
    wide = encoded(gradient(80, 48))
    assert read_reference(wide, 64, 48, Fit.crop).digest != read_reference(wide, 64, 48, Fit.pad).digest


def test_a_data_url_carries_the_image_in_json() -> None:
    png = encoded(gradient(64, 48))
    assert from_data_url("data:image/png;base64," + base64.b64encode(png).decode()) == png
    for text in ("https://example.invalid/cat.png", "data:image/png;base64,@@@", "data:text/plain;base64,aGk="):
        with pytest.raises(ReelserveError) as caught:
            from_data_url(text)
        assert caught.value.param == FIELD


def test_an_image_just_over_the_pixel_limit_is_refused_before_its_pixels_are_decoded() -> None:
    assert "megapixels" in refused(bomb_png(4097, 4096))  # under Pillow's own limit: ours, from the header
