"""Makers of bad (and awkward but valid) input files, written at test time: no checked-in binaries.

Every function writes one file (or folder) under the path it is given and returns that path.
The files are small and built from first principles where that is the point of the case (a PNG
whose header claims 20000 x 20000 pixels, a zip whose member climbs out with `../`, a pickle
that calls `os.system`), so a reader of the test sees exactly what is fed to the toolkit.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# --- images ------------------------------------------------------------------------------------


def _rgb(h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def image_bytes(fmt: str = "PNG", h: int = 40, w: int = 48, mode: str = "RGB", seed: int = 0, **save) -> bytes:
    """A small image of `mode` encoded as `fmt` (random pixels, so JPEG has data to cut)."""
    im = Image.fromarray(_rgb(h, w, seed))
    if mode == "P":
        im = im.quantize(16)
    elif mode == "I;16":
        im = Image.fromarray(np.asarray(im.convert("L"), np.uint16) * 257)  # uint16 -> mode I;16
    elif mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def good_image(path: Path, h: int = 40, w: int = 48, seed: int = 0) -> Path:
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".gif": "GIF", ".bmp": "BMP"}[path.suffix.lower()]
    return write(path, image_bytes(fmt, h, w, seed=seed))


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: max(1, int(len(data) * keep))]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_with_header(width: int, height: int, rows: int = 1) -> bytes:
    """A greyscale PNG whose IHDR claims `width` x `height` but whose data holds `rows` rows:
    a decompression bomb's header (or a lie about its size) without allocating the pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = b"".join(b"\x00" + bytes(width) for _ in range(rows))
    # The deflate stream is cut off (no flush), as in a file cut off mid-download. (A *complete*
    # stream of fewer rows than the header claims is accepted by Pillow: the rest reads as black.)
    body = zlib.compressobj(9).compress(raw)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def bomb_png(side: int = 20_000) -> bytes:
    """A real, complete PNG of side x side black pixels: ~400 Mpx from a few hundred kB."""
    row = b"\x00" + bytes(side)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def animated_gif(frames: int = 3, h: int = 40, w: int = 48) -> bytes:
    ims = [Image.fromarray(_rgb(h, w, seed=i)).quantize(32) for i in range(frames)]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=50, loop=0)
    return buf.getvalue()


# --- data sets ------------------------------------------------------------------------------------

KIND_FOLDERS = {"bg": "Background", "fgbg": "OverlayedImages", "mask": "OverlayedMasks", "depth": "DepthImage"}


def sample_files(s: int = 1, p: int = 1, it: int = 1, size: int = 32) -> dict[str, bytes]:
    """The four files of one sample, keyed by their path inside the original layout."""
    key = f"combined_s{s}_p{p}_it{it}.jpg"
    return {
        f"Background/Shelves_{s}.jpg": image_bytes("JPEG", size, size, seed=s),
        f"OverlayedImages/{key}": image_bytes("JPEG", size, size, seed=100 + p),
        f"OverlayedMasks/{key}": image_bytes("JPEG", size, size, mode="L", seed=200 + p),
        f"DepthImage/{key}": image_bytes("JPEG", size, size, mode="L", seed=300 + p),
    }


def dataset_folder(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        write(root / rel, data)
    return root


def good_dataset(root: Path, samples: int = 4) -> Path:
    """`samples` complete pairs over two backgrounds (enough for parity and training to start)."""
    files: dict[str, bytes] = {}
    for i in range(samples):
        files.update(sample_files(s=1 + i % 2, p=1 + i // 2))
    return dataset_folder(root, files)


def zip_of(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """A zip with exactly these member names (no normalisation: `../x` and `/abs` go in as they are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in members.items():
            z.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data, compress_type=compression)
    return path


def zip_bomb(path: Path, megabytes: int = 60) -> Path:
    """A zip whose one image member inflates ~1000x (zeros): over the reader's ratio limit."""
    return zip_of(path, {"OverlayedImages/combined_s1_p1_it1.jpg": bytes(megabytes * 1024 * 1024)})


def corrupt_zip(path: Path) -> Path:
    """Starts like a zip (local header magic) but has no central directory."""
    good = io.BytesIO()
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("OverlayedImages/combined_s1_p1_it1.jpg", b"x" * 100)
    data = good.getvalue()
    return write(path, data[: len(data) // 2])


def zip_with_bad_crc(path: Path, files: dict[str, bytes], victim: str) -> Path:
    """A well-formed zip whose member `victim` has one flipped byte in its (stored) data."""
    zip_of(path, files, compression=zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    at = data.find(files[victim][200:232])
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def patch_zip_member(path: Path, member: str, *, encrypted: bool = False, file_size: int | None = None) -> Path:
    """Rewrite one member's headers in place: mark it encrypted (general purpose bit 0), or make
    its central directory entry claim another uncompressed size (a header that lies)."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    for sig, flag_at, size_at in ((b"PK\x03\x04", 6, 22), (b"PK\x01\x02", 8, 24)):
        at = data.find(sig)
        while at >= 0:
            name_at = at + (30 if sig == b"PK\x03\x04" else 46)
            if data[name_at : name_at + len(name)] == name:
                if encrypted:
                    data[at + flag_at] |= 0x01
                if file_size is not None:
                    struct.pack_into("<I", data, at + size_at, file_size)
            at = data.find(sig, at + 4)
    path.write_bytes(bytes(data))
    return path


def fifo(path: Path) -> Path:
    """A named pipe with an image's (or a model's) name: reading it would block forever."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


# --- checkpoints -------------------------------------------------------------------------------------


class _Payload:
    """Pickles to a call of `func(*args)`: what a hostile checkpoint does on `pickle.load`."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def forbidden_call(kind: str, marker: Path) -> _Payload:
    """A payload that creates `marker` when unpickled, through one forbidden global."""
    import builtins
    import os
    import subprocess

    if kind == "os.system":
        return _Payload(os.system, (f"touch '{marker}'",))
    if kind == "builtins.eval":
        return _Payload(builtins.eval, (f"open({str(marker)!r}, 'w').close()",))
    if kind == "subprocess.Popen":
        return _Payload(subprocess.Popen, (["touch", str(marker)],))
    raise ValueError(kind)


def evil_toolkit_checkpoint(path: Path, kind: str, marker: Path) -> Path:
    """A torch.save'd dict that looks like a toolkit checkpoint but carries a forbidden call."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "toolkit.checkpoint", "format_version": 1, "model": {}, "x": forbidden_call(kind, marker)}, path)
    return path


def evil_legacy_stream(path: Path, kind: str, marker: Path) -> Path:
    """The legacy (pre-zip) torch.save layout: magic, protocol, sys info, then the hostile object."""
    from toolkit.net.legacy import LEGACY_MAGIC

    head = b"".join(pickle.dumps(x, protocol=2) for x in (LEGACY_MAGIC, 1001, {"little_endian": True}))
    return write(path, head + pickle.dumps(forbidden_call(kind, marker), protocol=2))


def evil_legacy_zip(path: Path, kind: str, marker: Path) -> Path:
    """The zip torch.save layout (`archive/data.pkl`) with the hostile object as its pickle."""
    return zip_of(path, {"archive/data.pkl": pickle.dumps(forbidden_call(kind, marker), protocol=2),
                         "archive/version": b"3\n"})


def checkpoint_variant(src: Path, dst: Path, change) -> Path:
    """Load a good toolkit checkpoint, let `change(ckpt)` alter it, save it the normal way
    (so it carries a fresh hash of the altered payload: only the altered content is bad)."""
    import torch

    from toolkit.net.checkpoint import save_checkpoint

    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    change(ckpt)
    return save_checkpoint(dst, ckpt)


def tampered_checkpoint(src: Path, dst: Path) -> Path:
    """A good checkpoint with one weight changed *after* it was hashed (bit rot, or an edit)."""
    import torch

    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    ckpt["model"]["convblock1.0.weight"][0, 0, 0, 0] += 1.0
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dst)
    return dst


# --- models --------------------------------------------------------------------------------------------


def onnx_with_inputs(path: Path, inputs: tuple[str, ...] = ("image", "fgbg"), outputs: tuple[str, ...] = ("mask", "depth"),
                     size: int = 128, dtype: int | None = None) -> Path:
    """A tiny valid ONNX graph (Identity ops) with the given input and output names."""
    import onnx
    from onnx import TensorProto, helper

    t = dtype if dtype is not None else TensorProto.FLOAT
    ins = [helper.make_tensor_value_info(n, t, ["N", 3, size, size]) for n in inputs]
    outs = [helper.make_tensor_value_info(n, t, ["N", 3, size, size]) for n in outputs]
    nodes = [helper.make_node("Identity", [inputs[i % len(inputs)]], [n]) for i, n in enumerate(outputs)]
    model = helper.make_model(helper.make_graph(nodes, "g", ins, outs), opset_imports=[helper.make_opsetid("", 17)])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def onnx_with_metadata(src: Path, dst: Path, **props: str) -> Path:
    """A copy of a real exported model with some `metadata_props` overwritten."""
    import onnx

    model = onnx.load(str(src))
    existing = {p.key: p for p in model.metadata_props}
    for key, value in props.items():
        if key in existing:
            existing[key].value = value
        else:
            model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(dst))
    return dst


def engine_with_sidecar(path: Path, onnx_path: Path, **overrides) -> Path:
    """Bytes that are not a real plan, beside a sidecar as `export --engine` writes it; the
    runner must judge the engine from the sidecar alone, before any TensorRT call."""
    import hashlib

    from export.tensorrt import make_sidecar, read_onnx_source
    from toolkit.runtime.tensorrt_runner import sidecar_path

    path.parent.mkdir(parents=True, exist_ok=True)
    plan = b"not a plan: the sidecar decides first"
    path.write_bytes(plan)
    side = make_sidecar(  # the file's real SHA-256: the runner's sidecar checks go past the hash to the GPU
        engine=path, plan_sha256=hashlib.sha256(plan).hexdigest(), source=read_onnx_source(onnx_path), precision="fp32", batch=(1, 8, 32),
        trt_version="10.13.0.35", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0", checkpoint_sha256="",
        build_seconds=1.0,
    )
    side.update(overrides)
    sidecar_path(path).write_text(json.dumps(side))
    return path
