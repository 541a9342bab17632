"""Who may use a served model or watch a camera: one key, required beyond loopback.

Why: an edge box sits on a shared network beside cameras that film people. `serve` (the model,
its page, its figures) and `stream --preview` (the live camera) answer only requests that carry
the key, `Authorization: Bearer <key>`, whenever they listen on anything but a loopback address
(TorchServe enforces token authorization by default for the same reason; Jupyter prints a
token). `/healthz` and `/readyz` stay open: a load balancer's probe carries no key.

Where the key comes from, in order: `--key-file F` (read; when F does not exist it is made), the
`TOOLKIT_SERVE_KEY` environment variable, else a key generated at the first start and kept in
`<config>/toolkit/serve.key` (`$XDG_CONFIG_HOME` or `~/.config`), owner-only (0600), reused at
the next start so a Prometheus job keeps working. Only the file's path is ever printed; the key
never reaches a log line, a summary or an error message. A key file others can read is refused,
as ssh refuses such a private key. On loopback the key is optional (checked when one is given;
`--auth` requires it there too); `--no-auth` turns the check off with one warning line.

A browser cannot send a header from its address bar: `?key=KEY` on any page logs it in once (an
HttpOnly, SameSite=Lax cookie holding a token derived from the key, never the key: Lax so that a
link from a chat or a mail opens the page logged in) and redirects to the same address without
the key.
Keys are compared in constant time (`hmac.compare_digest`).
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import json
import os
import secrets
import stat
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode

from ..core.errors import UserError

KEY_ENV = "TOOLKIT_SERVE_KEY"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
COOKIE = "toolkit_key"
MIN_KEY_LENGTH = 16
KEY_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-_.~+/=")  # base64, base64url, hex
CHALLENGE = 'Bearer realm="toolkit"'


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`: only this machine can reach an address like these."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def default_key_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "toolkit" / "serve.key"


@dataclass(frozen=True)
class Access:
    """The key a server checks (None: every request is let in), and the lines its start prints
    (where the key is, warnings). `secure`: the server speaks TLS (the cookie is then Secure)."""

    key: str | None = None
    lines: tuple[str, ...] = ()
    secure: bool = False

    @property
    def required(self) -> bool:
        return self.key is not None

    def admits(self, path: str, headers: Mapping[str, str]) -> bool:
        """Whether a request for `path` with `headers` (lower-case names) may go on: the key as
        a Bearer token, or the login cookie (which holds a token derived from the key, never
        the key: a cookie reaches every port of the host)."""
        if self.key is None or path in OPEN_PATHS:
            return True
        bearer = bearer_key(headers.get("authorization"))
        if bearer is not None:
            return hmac.compare_digest(bearer.encode(), self.key.encode())
        cookie = cookie_value(headers.get("cookie"), COOKIE)
        return cookie is not None and hmac.compare_digest(cookie.encode(), cookie_token(self.key).encode())

    def login(self, path: str, query: str) -> tuple[str, str] | None:
        """A browser's `?key=KEY` (GET): (where to send it, the Set-Cookie value) when KEY is the
        key; None otherwise. The address keeps the other query fields, not the key, and stays
        on this server (a path, never `//host`)."""
        if self.key is None or not query:
            return None
        fields = parse_qsl(query, keep_blank_values=True)
        given = next((v for k, v in fields if k == "key"), None)
        if given is None or not hmac.compare_digest(given.encode(), self.key.encode()):
            return None
        rest = urlencode([(k, v) for k, v in fields if k != "key"])
        local = quote("/" + path.lstrip("/\\"), safe="/-._~")
        cookie = f"{COOKIE}={cookie_token(self.key)}; HttpOnly; SameSite=Lax; Path=/" + ("; Secure" if self.secure else "")
        return (local + (f"?{rest}" if rest else "")), cookie

    def answer(self, method: str, path: str, query: str, headers: Mapping[str, str]) -> Reply | None:
        """What a server answers instead of serving a request (None: serve it): a browser's
        `?key=KEY` on a GET or HEAD gets 303 with its cookie, a request without the key 401
        with `WWW-Authenticate`. One home for the rule: `serve` (`KeyCheck`) and the stream's
        preview translate the reply to their own transport."""
        if not self.required:
            return None
        login = self.login(path, query) if method in ("GET", "HEAD") else None
        if login is not None:
            return Reply(303, {"location": login[0], "set-cookie": login[1], "cache-control": "no-store"}, b"")
        if self.admits(path, headers):
            return None
        return Reply(401, {"content-type": "application/json", "www-authenticate": CHALLENGE, "cache-control": "no-store"},
                     json.dumps({"error": REFUSAL}).encode())


@dataclass(frozen=True)
class Reply:
    """A response a server sends instead of the page (`Access.answer`): lower-case header names."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def refused(self) -> bool:
        """A request turned away for want of the key (counted in /metrics), not a login."""
        return self.status == 401


def cookie_token(key: str) -> str:
    """What the login cookie holds: derived from the key, useless anywhere else."""
    return hmac.new(key.encode(), b"toolkit login cookie", "sha256").hexdigest()


def bearer_key(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer KEY` header."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def cookie_value(header: str | None, name: str) -> str | None:
    """`name`'s value in a Cookie header, read by hand: one malformed cookie of another app on
    the same host must not hide ours (SimpleCookie stops at the first)."""
    for part in (header or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


def check_key(key: str, where: str) -> str:
    """`key` when it is one (16+ characters of base64/hex, no spaces); else one line naming
    `where` it came from, never the key itself."""
    if len(key) < MIN_KEY_LENGTH:
        raise UserError(f"{where}: the key is too short; use {MIN_KEY_LENGTH} characters or more "
                        "(delete the file and a key is generated)")
    if not set(key) <= KEY_CHARACTERS:
        raise UserError(f"{where}: the key holds characters other than letters, digits and -_.~+/= "
                        "(one line, no spaces)")
    return key


def read_key_file(path: Path) -> str:
    """The key in `path` (one line), refused in one line when the file is not a usable key file:
    not a regular file of this user's, a symbolic link, or readable by others. Opened once
    (no symlink followed) and judged on what was opened, so it cannot be swapped in between."""
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a key file")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        why = "a symbolic link (give the file itself)" if e.errno == errno.ELOOP else f"cannot read the key file ({e.strerror or e})"
        raise UserError(f"{path}: {why}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{path}: not a regular file, not a key file")
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            raise UserError(f"{path}: the key file belongs to another user (uid {st.st_uid}); use one of your own")
        if st.st_mode & 0o077:
            raise UserError(f"{path}: the key file can be read by other users (mode {st.st_mode & 0o777:04o}); chmod 600 {path}")
        data = f.read(4096)
    try:
        lines = data.decode("ascii").strip().splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a key file (not ASCII text)") from None
    if len(lines) != 1:
        raise UserError(f"{path}: a key file holds one line (the key), this one holds {len(lines)}")
    return check_key(lines[0].strip(), str(path))


def write_key_file(path: Path) -> str:
    """A new key in a new owner-only file at `path`; missing folders are made owner-only, and a
    folder others may write to is refused (they could swap the file)."""
    key = secrets.token_urlsafe(32)
    try:
        for folder in reversed([p for p in path.parents if not p.exists()]):
            folder.mkdir(mode=0o700)
        where = path.parent.stat()
        if where.st_mode & 0o022 and not where.st_mode & stat.S_ISVTX:
            raise UserError(f"{path.parent}: other users may write to this folder; keep the key file in one of your own")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as e:
        raise UserError(f"{path}: cannot write the key file ({e.strerror or e}); give --key-file F") from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key + "\n")
    return key


TLS_HINT = "give --tls-cert and --tls-key (or put a TLS proxy in front)"


def resolve_access(host: str, *, key_file: Path | None = None, auth: bool | None = None, tls: bool = False,
                   port: int | str = "PORT", env: Mapping[str, str] | None = None, tls_hint: str = TLS_HINT) -> Access:
    """The key a server on `host` checks, and the lines its start prints. `auth`: None (a key
    beyond loopback, optional on it), True (a key even on loopback), False (`--no-auth`);
    `tls_hint`: how this server gets TLS (the clear-text warning's advice)."""
    env = os.environ if env is None else env
    beyond = not is_loopback(host)
    check_auth_options(key_file, auth)
    if auth is False:
        warn = f"warning: --no-auth: anyone who can reach {host}:{port} can use this without a key" if beyond else ""
        return Access(None, tuple(line for line in (warn,) if line), tls)
    clear = () if tls or not beyond else (f"warning: no TLS: the key and the images travel in clear text; {tls_hint}",)
    told = "(send Authorization: Bearer <key>)"
    if key_file is not None and env.get(KEY_ENV):
        clear = (f"note: ${KEY_ENV} ignored: --key-file {key_file} given", *clear)
    if key_file is not None or (beyond or auth) and not env.get(KEY_ENV):
        path = key_file or default_key_path()
        if path.exists():
            return Access(read_key_file(path), (f"key: read from {path} {told}", *clear), tls)
        write_key_file(path)
        return Access(read_key_file(path), (f"key: generated in {path} (owner-only) {told}", *clear), tls)
    if env.get(KEY_ENV):
        return Access(check_key(env[KEY_ENV].strip(), f"${KEY_ENV}"), (f"key: from ${KEY_ENV} {told}", *clear), tls)
    return Access(None, (), tls)  # loopback, no key given: only this machine can connect


REFUSAL = "this server needs its key: send Authorization: Bearer <key> (a browser: open the page once with ?key=<key>)"


def check_auth_options(key_file: Path | None, auth: bool | None, tls_cert: Path | None = None,
                       tls_key: Path | None = None) -> None:
    """The rules of the key and TLS options, for `ServeOptions` and `StreamOptions` alike."""
    if auth is False and key_file is not None:
        raise UserError("--key-file and --no-auth do not go together")
    if (tls_cert is None) != (tls_key is None):
        raise UserError("--tls-cert and --tls-key go together (the certificate and its private key)")


class KeyCheck:
    """ASGI middleware (no framework needed): a request that does not carry the key gets 401
    with `WWW-Authenticate`, a browser's `?key=KEY` gets its cookie and a redirect; `refused()`
    is called for each request turned away (the /metrics counter)."""

    def __init__(self, app, access: Access, refused=lambda: None):  # noqa: ANN001 - an ASGI app
        self.app, self.access, self.refused = app, access, refused

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - ASGI's own types
        if scope["type"] not in ("http", "websocket") or not self.access.required:
            await self.app(scope, receive, send)  # lifespan: no request to judge
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if scope["type"] == "websocket":
            if self.access.admits(scope["path"], headers):
                await self.app(scope, receive, send)
            else:
                self.refused()
                await send({"type": "websocket.close", "code": 1008})
            return
        query = scope.get("query_string", b"").decode("latin-1")
        reply = self.access.answer(scope.get("method", "GET"), scope["path"], query, headers)
        if reply is None:
            await self.app(scope, receive, send)
            return
        if reply.refused:
            self.refused()
        fields = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status,
                    "headers": [*fields, (b"content-length", str(len(reply.body)).encode())]})
        await send({"type": "http.response.body", "body": reply.body})
