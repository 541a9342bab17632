"""toolkit.render.imageio: every mode Pillow reads, every way a file can be broken, and the outputs."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_python
from toolkit.core.errors import UserError
from toolkit.render import imageio
from toolkit.render.imageio import (
    colorize_depth,
    from_nchw,
    make_panel,
    open_image,
    read_gray,
    read_rgb,
    resize,
    save_png,
    to_nchw,
    to_uint8,
)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def rgb_gradient(h: int = 6, w: int = 8) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 30, y * 40, (x + y) * 10], axis=2).astype(np.uint8)


# -- modes --------------------------------------------------------------------------------
def test_rgb_png_round_trip_is_exact(tmp_path):
    a = rgb_gradient()
    p = save_png(tmp_path / "x.png", a)
    got = read_rgb(p)
    assert got.dtype == np.float32 and got.shape == (6, 8, 3)
    np.testing.assert_array_equal(to_uint8(got), a)


def test_grey_is_expanded_to_rgb_and_rgb_reduced_with_luma(tmp_path):
    g = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    p = tmp_path / "g.png"
    Image.fromarray(g).save(p)
    rgb = read_rgb(p)
    assert rgb.shape == (6, 8, 3)
    for c in range(3):
        np.testing.assert_allclose(rgb[:, :, c], g / 255.0, atol=1e-6)
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[..., 0] = 255  # pure red -> luma 0.299
    q = tmp_path / "red.png"
    Image.fromarray(colour).save(q)
    np.testing.assert_allclose(read_gray(q), 0.299, atol=1e-6)


def test_rgba_and_la_drop_alpha_keep_colour():
    a = np.zeros((3, 3, 4), np.uint8)
    a[..., :3] = (10, 200, 30)
    a[..., 3] = 0  # fully transparent: colour still what is stored
    got = read_rgb(encode(Image.fromarray(a, "RGBA"), "PNG"))
    np.testing.assert_allclose(got[0, 0], np.array([10, 200, 30]) / 255.0, atol=1e-6)
    la = Image.fromarray(np.full((3, 3), 77, np.uint8), "L").convert("LA")
    np.testing.assert_allclose(read_gray(encode(la, "PNG")), 77 / 255.0, atol=1e-6)


def test_palette_with_and_without_transparency():
    p = Image.new("P", (4, 4))
    p.putpalette([0, 0, 0, 255, 128, 0] + [0] * 762)
    p.paste(1, (0, 0, 2, 4))
    got = read_rgb(encode(p, "PNG"))
    np.testing.assert_allclose(got[0, 0], [1.0, 128 / 255, 0.0], atol=1e-6)
    np.testing.assert_allclose(got[0, 3], [0.0, 0.0, 0.0], atol=1e-6)
    got_t = read_rgb(encode(p, "PNG", transparency=0))
    np.testing.assert_allclose(got_t, got, atol=1e-6)


def test_sixteen_bit_is_scaled_by_65535():
    a = np.array([[0, 32768], [65535, 1000]], np.uint16)
    data = encode(Image.fromarray(a), "PNG")
    assert open_image(data).mode in ("I;16", "I")
    got = read_gray(data)
    np.testing.assert_allclose(got, a / 65535.0, atol=1e-6)
    rgb = read_rgb(data)
    assert rgb.shape == (2, 2, 3) and abs(rgb[1, 0, 2] - 1.0) < 1e-6


def test_cmyk_one_bit_float_and_int32_modes():
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # red in CMYK
    np.testing.assert_allclose(read_rgb(encode(cmyk, "JPEG"))[1, 1], [1, 0, 0], atol=0.02)
    one = Image.new("1", (4, 4), 1)
    np.testing.assert_allclose(read_gray(encode(one, "PNG")), 1.0)
    f = Image.fromarray(np.array([[0.0, 2.0], [4.0, 1.0]], np.float32))  # out of [0, 1]: min-max
    np.testing.assert_allclose(read_gray(encode(f, "TIFF")), [[0, 0.5], [1, 0.25]], atol=1e-6)
    f01 = Image.fromarray(np.array([[0.25, 0.5]], np.float32))  # already in [0, 1]: kept
    np.testing.assert_allclose(read_gray(encode(f01, "TIFF")), [[0.25, 0.5]], atol=1e-6)
    i32 = Image.fromarray(np.array([[0, 65535]], np.int32))
    assert open_image(encode(i32, "TIFF")).mode == "I"
    np.testing.assert_allclose(read_gray(encode(i32, "TIFF")), [[0, 1]], atol=1e-6)


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (4, 2), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: stored 4 wide, shown 2 wide
    got = read_rgb(encode(im, "JPEG", exif=exif))
    assert got.shape == (4, 2, 3)


def test_animation_gives_first_frame():
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    got = read_rgb(data)
    assert got[0, 0, 0] > 0.9 and got[0, 0, 2] < 0.1


def test_size_resizes_bilinear(tmp_path):
    p = tmp_path / "c.png"
    Image.new("RGB", (20, 10), (51, 102, 153)).save(p)
    got = read_rgb(p, size=(5, 7))
    assert got.shape == (5, 7, 3)
    np.testing.assert_allclose(got[2, 3], [0.2, 0.4, 0.6], atol=1e-5)
    assert read_gray(p, size=(3, 4)).shape == (3, 4)


# -- broken inputs: one UserError line that names the file -----------------------------------
def expect_user_error(source, name=None, *words):
    with pytest.raises(UserError) as e:
        read_rgb(source, name=name)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg
    return msg


def test_zero_byte_truncated_and_non_image_files(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    expect_user_error(empty, None, "empty.jpg", "not a readable image", "empty")
    good = encode(Image.fromarray(rgb_gradient(64, 64)), "JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good[: len(good) // 2])
    expect_user_error(cut, None, "cut.jpg", "not a readable image")
    png = encode(Image.fromarray(rgb_gradient(64, 64)), "PNG")
    expect_user_error(png[: len(png) // 2], "member.png", "member.png", "not a readable image")
    text = tmp_path / "notes.png"
    text.write_text("hello, not an image")
    expect_user_error(text, None, "notes.png", "not a readable image")


def test_folder_missing_file_and_permissions(tmp_path):
    expect_user_error(tmp_path, None, str(tmp_path), "folder")
    expect_user_error(tmp_path / "nope.png", None, "nope.png", "no such file")



def test_an_unreadable_file_is_one_line_even_as_root(tmp_path):
    """Run in a child without root's permission override (tests/conftest.py: run_python)."""
    code = """
import sys
from toolkit.core.errors import UserError
from toolkit.render import imageio
try:
    print(imageio.read_rgb(sys.argv[1]).shape)
except UserError as e:
    print(f"error: {e}")
"""
    locked, open_ = tmp_path / "locked.png", tmp_path / "open.png"
    for p in (locked, open_):
        p.write_bytes(encode(Image.new("RGB", (2, 2)), "PNG"))
    locked.chmod(0)
    try:
        refused = run_python(code, str(locked), without_dac_override=True)
        read = run_python(code, str(open_), without_dac_override=True)
    finally:
        locked.chmod(0o644)
    assert refused.stdout.startswith("error: ") and "locked.png" in refused.stdout and "permission" in refused.stdout.lower(), refused
    assert read.stdout.strip() == "(2, 2, 3)", read


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size (a decompression bomb's calling card)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_a_user_error(monkeypatch):
    expect_user_error(png_claiming(30000, 30000), "bomb.png", "bomb.png", "not a readable image")
    # Pillow's own warning band (above its limit, below twice it) is an error too.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    monkeypatch.setattr(imageio, "MAX_IMAGE_PIXELS", 10**9)
    expect_user_error(encode(Image.new("RGB", (8, 8)), "PNG"), "warn.png", "warn.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10**9)
    monkeypatch.setattr(imageio, "MAX_IMAGE_PIXELS", 63)
    expect_user_error(encode(Image.new("RGB", (8, 8)), "PNG"), "mine.png", "mine.png", "pixel limit")


# -- outputs ---------------------------------------------------------------------------------
def test_resize_float_planes_and_channels():
    a = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    r = resize(a, (4, 16))
    assert r.shape == (4, 16) and r.dtype == np.float32
    assert r.min() >= 0.0 and r.max() <= 1.0
    assert r[0].mean() < r[-1].mean()  # orientation kept
    c = resize(np.stack([a, 1 - a, a * 0 + 0.5], axis=2), (3, 5))
    assert c.shape == (3, 5, 3)
    np.testing.assert_allclose(c[..., 2], 0.5, atol=1e-6)
    np.testing.assert_array_equal(resize(a, (8, 8)), a)  # same size: untouched


def test_to_uint8_clips_rounds_and_zeroes_nan():
    got = to_uint8(np.array([-1.0, 0.0, 0.5, 1.0, 2.0, np.nan]))
    assert got.tolist() == [0, 0, 128, 255, 255, 0]
    u = np.array([1, 2], np.uint8)
    assert to_uint8(u) is u


def test_save_png_is_atomic_and_leaves_no_temp_files(tmp_path):
    out = tmp_path / "sub" / "mask.png"
    save_png(out, np.full((5, 7), 0.5, np.float32))
    assert sorted(p.name for p in out.parent.iterdir()) == ["mask.png"]
    np.testing.assert_allclose(read_gray(out), 128 / 255, atol=1e-6)
    save_png(out, np.zeros((5, 7, 3), np.uint8))  # replaces in place
    assert sorted(p.name for p in out.parent.iterdir()) == ["mask.png"]
    with pytest.raises(ValueError):
        save_png(tmp_path / "bad.png", np.zeros((5, 7, 2)))
    assert not (tmp_path / "bad.png").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_colorize_depth_near_is_bright():
    d = np.linspace(0, 1, 11, dtype=np.float32).reshape(1, 11)
    c = colorize_depth(d)
    assert c.shape == (1, 11, 3) and c.dtype == np.uint8
    luma = c[0].astype(float) @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(luma) > 0)  # brighter as depth goes towards 1 = near
    assert luma[0] < 20 and luma[-1] > 200


def test_make_panel_shapes_and_labels():
    rgb = np.zeros((20, 10, 3), np.uint8)
    grey = np.ones((10, 10), np.float32)  # half the height: scaled to 20 x 20
    panel = make_panel([rgb, grey], ["fgbg", "mask"])
    assert panel.dtype == np.uint8 and panel.ndim == 3 and panel.shape[2] == 3
    strip = panel.shape[0] - 20
    assert strip > 5
    assert panel.shape[1] == 10 + 20 + 2
    np.testing.assert_array_equal(panel[strip:, 12:], 255)  # the grey tile, upscaled, as RGB
    assert len(np.unique(panel[:strip, :10])) > 1  # text was drawn in the label strip
    with pytest.raises(ValueError):
        make_panel([rgb], ["a", "b"])


def test_nchw_round_trip():
    imgs = [np.random.default_rng(i).random((4, 5, 3), dtype=np.float32) for i in range(3)]
    batch = to_nchw(imgs)
    assert batch.shape == (3, 3, 4, 5) and batch.dtype == np.float32 and batch.flags.c_contiguous
    for a, b in zip(imgs, from_nchw(batch), strict=True):
        np.testing.assert_array_equal(a, b)
    masks = from_nchw(np.zeros((2, 1, 4, 5), np.float32))
    assert masks[0].shape == (4, 5)
    assert to_nchw([np.zeros((4, 5))]).shape == (1, 1, 4, 5)
    with pytest.raises(ValueError):
        to_nchw([np.zeros((4, 5, 3)), np.zeros((4, 6, 3))])


def test_the_8_bit_resize_stream_feeds_the_model_is_the_float_resize_within_a_grey_level():
    """`stream` feeds the model through `resize_uint8` (several times faster on a camera's
    frame); `infer` and the self-test through `resize`: their inputs must agree to rounding."""
    from toolkit.deploy.footage import walking_frames
    from toolkit.render.imageio import resize, resize_uint8

    frame = walking_frames(3, 90, 160)[2]
    for size in ((32, 32), (48, 96), (120, 200)):  # down, down to another aspect, up
        fast = resize_uint8(frame, size).astype(np.float32)
        exact = resize(frame.astype(np.float32) / 255.0, size) * 255.0
        assert fast.shape == (*size, 3) and np.abs(fast - exact).max() <= 1.0
    assert resize_uint8(frame, (90, 160)) is frame
