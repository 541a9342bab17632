"""What a file is, from its first bytes: how an error says what a file is not.

A library's own error for a file of the wrong kind is an internal fragment (torch.load on a CSV
file says "pop from empty list", on a short text "101"); the toolkit says instead what the file
is and what was expected ("not a readable checkpoint: it is a CSV text file"). Signatures only,
read from the first 4 KiB: no parsing, nothing loaded.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

HEAD_BYTES = 4096

# (offset, magic bytes, what the file is)
SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (0, b"\xff\xd8\xff", "a JPEG image"),
    (0, b"GIF8", "a GIF image"),
    (0, b"BM", "a BMP image"),
    (0, b"%PDF", "a PDF document"),
    (0, b"\x1f\x8b", "a gzip file"),
    (0, b"\x7fELF", "an executable (ELF)"),
    (0, b"\x93NUMPY", "a NumPy array file"),
    (0, b"\x89HDF", "an HDF5 file"),
    (0, b"\x1a\x45\xdf\xa3", "a Matroska/WebM video"),
    (4, b"ftyp", "an MP4/MOV video"),
)


def describe(path: str | Path) -> str:
    """'a CSV text file', 'a zip archive', 'an empty file', ...: what `path` holds."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if not head:
        return "an empty file"
    for offset, magic, what in SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return what
    if head.startswith(b"RIFF") and head[8:12] in (b"WEBP", b"AVI ", b"WAVE"):
        return {b"WEBP": "a WebP image", b"AVI ": "an AVI video", b"WAVE": "a WAV sound file"}[head[8:12]]
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_kind(path)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle"
    return _text_kind(head) or ("an ONNX model" if _is_onnx(path) else "binary data of no format the toolkit knows")


def _is_onnx(path: str | Path) -> bool:
    """An ONNX protobuf with a graph (a protobuf has no magic bytes: parse it, without weights)."""
    try:
        import onnx

        return bool(onnx.load(str(path), load_external_data=False).graph.node)
    except Exception:  # DecodeError and friends: not ONNX
        return False


def _text_kind(head: bytes) -> str | None:
    """'a JSON text file', 'a CSV text file' or 'a text file' when `head` reads as text."""
    for cut in (0, 1, 2, 3):  # the 4 KiB may end inside a multi-byte character
        try:
            text = head[: len(head) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:
        return None
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    if printable < 0.95 * len(text):
        return None
    if text.lstrip().startswith(("{", "[")):
        return "a JSON text file"
    lines = [line for line in text.splitlines()[:5] if line.strip()]
    if len(lines) >= 2 and lines[0].count(",") >= 1 and len({line.count(",") for line in lines[:-1]}) == 1:
        return "a CSV text file"
    return "a text file"


def _zip_kind(path: str | Path) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return "a zip archive that is cut short or damaged"
    return "a PyTorch checkpoint archive" if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names) else "a zip archive"
