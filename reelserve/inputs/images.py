"""A reference image (``input_reference``), read the way a server that takes uploads from anyone must:
the bytes are bounded before they are decoded, the pixel count is read from the header and bounded
before the pixels are (a few-KB PNG can claim 20000 x 20000: a decompression bomb), only PNG, JPEG and
WebP are taken, EXIF orientation is applied, and an image of another size than the video is refused
unless the request says how to fit it (``input_fit``): nothing is resized silently.

Every refusal is a 422 naming the field, what is allowed, and what to send instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from reelserve.schemas.errors import invalid

FIELD = "input_reference"
MAX_IMAGE_BYTES = 16 * 2**20
MAX_IMAGE_PIXELS = 4096 * 4096
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_DATA_URL = re.compile(r"data:(image/(?:png|jpeg|jpg|webp));base64,(.*)", re.DOTALL)


class Fit(StrEnum):
    """How an image of another size is made the video's size (``input_fit``)."""

    crop = "crop"  # scaled to cover the frame, the overflow cut off evenly (aspect kept)
    pad = "pad"  # scaled to fit inside the frame, the rest black (aspect kept)
    resize = "resize"  # stretched to the frame (aspect changed)


@dataclass(frozen=True)
class ReferenceImage:
    """The first frame a video starts from: (height, width, 3) uint8 RGB, at the video's size."""

    pixels: np.ndarray
    fit: Fit | None  # how it was fitted; None: it had the video's size already
    digest: str  # "sha256:" of the decoded pixels and the fit: the result cache keys on what the model sees

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]


def from_data_url(text: str) -> bytes:
    """The bytes of a ``data:image/...;base64,`` URL (how JSON bodies carry an image)."""
    match = _DATA_URL.fullmatch(text.strip())
    if match is None:
        raise invalid(FIELD, f"{FIELD}: in JSON, send a data URL 'data:image/png;base64,...' (PNG, JPEG or WebP), "
                      "or upload the file as multipart/form-data")
    try:
        return base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError):
        raise invalid(FIELD, f"{FIELD}: the data URL's base64 does not decode; send the file's bytes base64-encoded") from None


def read_reference(data: bytes, width: int, height: int, fit: Fit | None) -> ReferenceImage:
    """``data`` (an uploaded file's bytes) as the first frame of a ``width`` x ``height`` video."""
    if len(data) > MAX_IMAGE_BYTES:
        raise invalid(FIELD, f"{FIELD}: at most {MAX_IMAGE_BYTES // 2**20} MiB; got {len(data) / 2**20:.1f} MiB. "
                      f"Send a smaller file (it is fitted to {width}x{height} anyway)")
    image = _open(data)
    image = ImageOps.exif_transpose(image).convert("RGB")
    if image.size != (width, height):
        if fit is None:
            raise invalid(FIELD, f"{FIELD}: the image is {image.width}x{image.height} and the video {width}x{height}; "
                          "send an image of the video's size, or input_fit 'crop', 'pad' or 'resize' to fit it")
        image = fitted(image, (width, height), fit)
    else:
        fit = None
    pixels = np.asarray(image, dtype=np.uint8)
    digest = hashlib.sha256(pixels.tobytes() + f"|{width}x{height}|{fit or ''}".encode()).hexdigest()
    return ReferenceImage(pixels=pixels, fit=fit, digest=f"sha256:{digest}")


def to_png(pixels: np.ndarray) -> bytes:
    """Pixels as PNG (lossless): how a fitted first frame is stored for the worker."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def from_png(data: bytes) -> np.ndarray:
    """What ``to_png`` stored, as (H, W, 3) uint8 RGB."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _open(data: bytes) -> Image.Image:
    """Decoded, after the checks that need only the header: its format and its pixel count."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in FORMATS:
                raise invalid(FIELD, f"{FIELD}: a {image.format} image; send PNG, JPEG or WebP")
            pixels = image.width * image.height
            if pixels > MAX_IMAGE_PIXELS:
                raise invalid(FIELD, f"{FIELD}: {image.width}x{image.height} is {pixels / 1e6:.0f} megapixels; at most "
                              f"{MAX_IMAGE_PIXELS / 1e6:.1f}. Send a smaller image")
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # Pillow's own header check
        raise invalid(FIELD, f"{FIELD}: the image claims far more than {MAX_IMAGE_PIXELS / 1e6:.1f} megapixels "
                      "(a decompression bomb, or a huge image); send a smaller image") from None
    except UnidentifiedImageError:
        raise invalid(FIELD, f"{FIELD}: not a PNG, JPEG or WebP image; send an image file") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt past its header
        raise invalid(FIELD, f"{FIELD}: the image could not be decoded ({exc}); send the whole, uncorrupted file") from None
    return image


def fitted(image: Image.Image, size: tuple[int, int], fit: Fit) -> Image.Image:
    if fit is Fit.crop:
        return ImageOps.fit(image, size, Image.Resampling.LANCZOS)
    if fit is Fit.pad:
        return ImageOps.pad(image, size, Image.Resampling.LANCZOS, color=(0, 0, 0))
    return image.resize(size, Image.Resampling.LANCZOS)
