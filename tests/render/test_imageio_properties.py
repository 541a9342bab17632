"""Image loading of arbitrary bytes (Hypothesis): a valid array or one `UserError` line, never
another exception, never a hang.

No warning may escape either: on the command line it would be a second line on stderr.
Pure noise rarely gets past Pillow's format sniffing, so the inputs also start with each
format's magic bytes, and are damaged versions (flipped bytes, cuts, spliced headers) of real
PNG/JPEG/GIF/BMP/TIFF/WebP files: those reach the decoders themselves.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from toolkit.core.errors import UserError
from toolkit.render.imageio import read_gray, read_rgb

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pixels(mode: str, size: tuple[int, int] = (9, 7)) -> np.ndarray:
    """The picture every format encodes: the same random pixels (W x H = `size`)."""
    rng = np.random.default_rng(7)
    return np.asarray(Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).convert(mode))


def _encoded(fmt: str, mode: str = "RGB", size: tuple[int, int] = (9, 7)) -> bytes:
    im = Image.fromarray(_pixels(mode, size))
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


REAL = {
    "png": _encoded("PNG"), "png-palette": _encoded("PNG", "P"), "png-grey": _encoded("PNG", "L"),
    "jpeg": _encoded("JPEG"), "gif": _encoded("GIF", "P"), "bmp": _encoded("BMP"), "tiff": _encoded("TIFF"),
    "webp": _encoded("WEBP"), "ppm": _encoded("PPM"), "ico": _encoded("ICO"),
}
MAGIC = [v[:16] for v in REAL.values()] + [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*"]


def _check(data: bytes, reader=read_rgb) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            a = reader(data, name="probe.img")
        except UserError as e:
            text = str(e)
            assert text.startswith("probe.img: ") and "\n" not in text, text
            a = None
    assert not caught, [str(w.message) for w in caught]  # a warning would be a second stderr line
    if a is None:
        return
    assert a.dtype == np.float32 and a.ndim == (3 if reader is read_rgb else 2) and a.size > 0
    assert np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0


@SETTINGS
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    _check(data)


@SETTINGS
@given(st.sampled_from(MAGIC), st.binary(max_size=1024))
def test_random_bytes_behind_a_real_header(magic, tail):
    _check(magic + tail)


@SETTINGS
@given(st.sampled_from(sorted(REAL)), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(1, 10**6), st.booleans())
def test_damaged_real_files(kind, flips, cut, grey):
    data = bytearray(REAL[kind])
    for at, value in flips:
        data[at % len(data)] = value
    _check(bytes(data[: max(1, cut % (len(data) + 1))]), read_gray if grey else read_rgb)


@pytest.mark.parametrize("kind", sorted(REAL))
def test_the_real_files_themselves_read(kind):
    """Every format, ICO included, reads back at the 9 x 7 it was written at; the lossless ones
    give back the very pixels written."""
    got = read_rgb(REAL[kind], name=kind)
    assert got.shape == (7, 9, 3) and got.dtype == np.float32 and 0 <= got.min() <= got.max() <= 1
    if kind in ("png", "bmp", "tiff", "ppm", "ico"):
        assert np.array_equal(np.rint(got * 255).astype(np.uint8), _pixels("RGB"))
