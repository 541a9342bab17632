"""The request body `toolkit serve` takes, for Python callers without an HTTP client library.

`POST /v1/infer` takes the pair as multipart/form-data fields `bg` and `fgbg` (image files);
`encode_multipart` builds that body and its Content-Type header with the standard library only,
so `urllib.request` can send it (the tests and `benchmarks/serve_load.py` do). A server beyond
loopback needs its key (toolkit.deploy.auth): `key_header` adds it.
"""

from __future__ import annotations

from pathlib import Path


def key_header(key_file: str | Path | None = None, key: str | None = None) -> dict[str, str]:
    """`{"Authorization": "Bearer KEY"}` for the key in `key_file` (as `serve --key-file` reads
    it) or `key`; empty when neither is given (a server on loopback without a key)."""
    if key_file is not None:
        from .auth import read_key_file

        key = read_key_file(Path(key_file))
    return {"Authorization": f"Bearer {key}"} if key else {}


def encode_multipart(fields: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body from {name: (filename, content, content type)}."""
    boundary = "toolkit-client-boundary-7d1c"
    parts = []
    for name, (filename, content, ctype) in fields.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'
        parts.append(head.encode() + content + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
