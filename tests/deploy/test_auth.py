"""Who may use a served model: the key's sources and rules (toolkit.deploy.auth), and a real
`toolkit serve` on 127.0.0.1 that requires it (`--auth`: as it does beyond loopback)."""

from __future__ import annotations

import http.client
import json
import socket
import stat
import urllib.error
import urllib.request

import pytest

from tests.conftest import run_cli
from tests.deploy.conftest import running_server
from tests.deploy.test_server import pair_body
from toolkit.core.errors import UserError
from toolkit.deploy.auth import CHALLENGE, KEY_ENV, Access, bearer_key, cookie_token, cookie_value, is_loopback, read_key_file, resolve_access

GOOD = "k3y-" + "x" * 28  # 32 characters


def key_file(path, text: str = GOOD, mode: int = 0o600):
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
                                            ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.0.0.7", False),
                                            ("camera-box.local", False)])
def test_loopback_is_only_this_machine(host, loopback):
    assert is_loopback(host) is loopback


def test_loopback_needs_no_key_beyond_it_one_is_made_owner_only_and_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert resolve_access("127.0.0.1", env={}) == Access()
    made = resolve_access("0.0.0.0", port=8000, env={})
    path = tmp_path / "config" / "toolkit" / "serve.key"
    assert made.required and path.read_text().strip() == made.key and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert made.lines[0] == f"key: generated in {path} (owner-only) (send Authorization: Bearer <key>)"
    assert made.lines[1].startswith("warning: no TLS: the key and the images travel in clear text")
    assert all(made.key not in line for line in made.lines)
    again = resolve_access("0.0.0.0", tls=True, env={})  # the next start reads the same key
    assert again.key == made.key and again.lines == (f"key: read from {path} (send Authorization: Bearer <key>)",)
    assert resolve_access("127.0.0.1", auth=True, env={}).key == made.key  # --auth: on loopback too


def test_a_given_key_wins_and_no_auth_warns_beyond_loopback(tmp_path):
    given = key_file(tmp_path / "k")
    assert resolve_access("127.0.0.1", key_file=given, env={}).key == GOOD  # used on loopback when given
    assert resolve_access("0.0.0.0", env={KEY_ENV: GOOD}, tls=True).lines == (f"key: from ${KEY_ENV} (send Authorization: Bearer <key>)",)
    assert resolve_access("127.0.0.1", env={KEY_ENV: GOOD}).key == GOOD
    open_ = resolve_access("0.0.0.0", auth=False, port=8000, env={KEY_ENV: GOOD})
    assert open_.key is None and open_.lines == ("warning: --no-auth: anyone who can reach 0.0.0.0:8000 can use this without a key",)
    assert resolve_access("127.0.0.1", auth=False, env={}).lines == ()
    with pytest.raises(UserError, match="--key-file and --no-auth do not go together"):
        resolve_access("0.0.0.0", key_file=given, auth=False)


@pytest.mark.parametrize("text, mode, says", [
    ("abc12", 0o600, "the key is too short; use 16 characters or more"),
    ("has a space in it, 32 characters", 0o600, "characters other than letters"),
    (GOOD + "\n" + GOOD, 0o600, "holds one line (the key), this one holds 2"),
    ("", 0o600, "holds one line (the key), this one holds 0"),
    (GOOD, 0o644, "can be read by other users (mode 0644); chmod 600"),
])
def test_a_bad_key_file_is_one_line_without_the_key(tmp_path, text, mode, says):
    path = key_file(tmp_path / "serve.key", text, mode)
    with pytest.raises(UserError) as e:
        read_key_file(path)
    assert says in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)
    assert GOOD not in str(e.value) and (text not in str(e.value) or not text)


def test_the_key_is_taken_from_a_bearer_header_or_the_login_cookie():
    assert bearer_key("Bearer " + GOOD) == GOOD and bearer_key("bearer  " + GOOD + " ") == GOOD
    assert bearer_key("Basic abc") is None and bearer_key(None) is None
    token = cookie_token(GOOD)
    assert token != GOOD and GOOD not in token  # the cookie never holds the key
    assert cookie_value(f'other={{"json": 1}}; broken="; toolkit_key={token}', "toolkit_key") == token  # others' cookies do not hide it
    access = Access(GOOD)
    assert access.admits("/healthz", {}) and access.admits("/readyz", {}) and not access.admits("/v1/model", {})
    assert not access.admits("//healthz", {}) and not access.admits("/healthz/", {})
    assert access.admits("/metrics", {"authorization": f"Bearer {GOOD}"})
    assert not access.admits("/metrics", {"authorization": f"Bearer {GOOD[:-1]}X"})
    assert access.admits("/", {"cookie": f"toolkit_key={token}"}) and not access.admits("/", {"cookie": f"toolkit_key={GOOD}"})
    assert access.login("/", f"key={GOOD}&format=panel") == ("/?format=panel", f"toolkit_key={token}; HttpOnly; SameSite=Lax; Path=/")
    assert access.login("/", "key=wrong") is None and Access().login("/", f"key={GOOD}") is None


def test_one_answer_for_serve_and_the_preview():
    """`Access.answer`: what both servers send instead of the page, or None to serve it."""
    access = Access(GOOD)
    login = access.answer("GET", "/", f"key={GOOD}", {})
    assert login.status == 303 and login.headers["location"] == "/" and not login.refused and login.body == b""
    assert access.answer("POST", "/v1/infer", f"key={GOOD}", {}).status == 401  # only GET and HEAD log in
    refused = access.answer("GET", "/metrics", "", {})
    assert refused.refused and refused.headers["www-authenticate"] == CHALLENGE and b"Authorization: Bearer" in refused.body
    assert access.answer("GET", "/metrics", "", {"authorization": f"Bearer {GOOD}"}) is None
    assert access.answer("GET", "/healthz", "", {}) is None and Access().answer("GET", "/", "", {}) is None


@pytest.mark.parametrize("path, lands", [("//evil.example/", "/evil.example/"), ("/\\evil", "/evil"),
                                         ("/a b?#", "/a%20b%3F%23"), ("/stream.mjpg", "/stream.mjpg")])
def test_the_login_redirect_stays_on_this_server(path, lands):
    assert Access(GOOD).login(path, f"key={GOOD}")[0] == lands


def test_a_key_file_of_another_kind_is_refused(tmp_path):
    real = key_file(tmp_path / "real.key")
    (tmp_path / "link.key").symlink_to(real)
    with pytest.raises(UserError, match="link.key: a symbolic link"):
        read_key_file(tmp_path / "link.key")
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(UserError, match="other users may write to this folder"):
        resolve_access("0.0.0.0", key_file=shared / "serve.key", env={})
    made = resolve_access("0.0.0.0", key_file=tmp_path / "new" / "deeper" / "serve.key", env={KEY_ENV: GOOD}, tls=True)
    assert made.key != GOOD and made.lines[1] == f"note: ${KEY_ENV} ignored: --key-file {tmp_path / 'new' / 'deeper' / 'serve.key'} given"
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700 == stat.S_IMODE((tmp_path / "new" / "deeper").stat().st_mode)


def no_redirect(url: str, path: str) -> tuple[int, dict[str, str]]:
    """(status, lower-case headers) of one GET, a redirect not followed (urllib would follow it)."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=60)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


def test_serve_requires_the_key_and_keeps_it_out_of_every_line(exported_onnx, tmp_path):
    path = tmp_path / "keys" / "serve.key"  # not there yet: made at start
    with running_server(exported_onnx, "--auth", "--key-file", str(path), "--log-level", "info") as s:
        key = path.read_text().strip()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(key) >= 32
        bearer = {"Authorization": f"Bearer {key}"}
        assert s.request("/healthz")[0] == 200 and s.request("/readyz")[0] == 200  # probes carry no key
        for headers in ({}, {"Authorization": "Bearer " + key[:-1] + ("A" if key[-1] != "A" else "B")},
                        {"Authorization": "Bearer short"}, {"Authorization": f"Basic {key}"}):
            status, got, body = s.request("/v1/model", headers=headers)
            assert status == 401 and got["www-authenticate"].startswith("Bearer") and "needs its key" in json.loads(body)["error"]
        assert s.request("/v1/model", headers=bearer)[0] == 200
        assert s.request("/", headers={})[0] == 401
        status, got = no_redirect(s.url, f"/?key={key}")  # a browser logs in once
        assert status == 303 and got["location"] == "/" and "HttpOnly" in got["set-cookie"] and key not in got["set-cookie"]
        assert s.request("/", headers={"Cookie": got["set-cookie"].split(";")[0]})[0] == 200
        assert s.request(f"/v1/infer?key={key}", *pair_body())[0] == 401  # a POST never logs in
        metrics = s.request("/metrics", headers=bearer)[2].decode()
        assert "toolkit_auth_refused_total 6" in metrics
        code, out, err = s.stop()
    assert code == 0 and f"key: generated in {path} (owner-only)" in err
    assert "GET /v1/model 401" in err and "GET /v1/model 200" in err  # the request log has the lines...
    assert key not in out + err  # ...and never the key


def test_no_auth_warns_beyond_loopback_and_a_bad_key_file_is_exit_2(exported_onnx, tmp_path):
    with socket.socket() as busy:  # 0.0.0.0 is never listened on: the port is taken, the bind fails after the warning
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = run_cli("serve", "--model", str(exported_onnx), "--host", "0.0.0.0", "--port", str(busy.getsockname()[1]), "--no-auth")
    lines = r.stderr.strip().splitlines()
    assert "warning: --no-auth: anyone who can reach 0.0.0.0:" in r.stderr and lines[-1].startswith("error: cannot listen on 0.0.0.0")
    bad = key_file(tmp_path / "open.key", mode=0o644)
    r = run_cli("serve", "--model", str(exported_onnx), "--key-file", str(bad))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: {bad}: the key file can be read by other users (mode 0644); chmod 600 {bad}"]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_the_preview_needs_the_key_as_serve_does(tmp_path, host):
    from toolkit.deploy.preview import Preview

    if host == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    preview = Preview(0, host, Access(GOOD))
    try:
        url = preview.url.rstrip("/")
        for path in ("/", "/frame.jpg", "/stream.mjpg", "/metrics"):
            status, got = no_redirect(url, path)
            assert status == 401 and got["www-authenticate"].startswith("Bearer"), path
        status, got = no_redirect(url, f"/?key={GOOD}")
        assert status == 303 and got["location"] == "/" and f"toolkit_key={cookie_token(GOOD)}; HttpOnly" in got["set-cookie"]
        request = urllib.request.Request(url + "/metrics", headers={"Cookie": f"toolkit_key={cookie_token(GOOD)}"})
        with urllib.request.urlopen(request, timeout=60) as r:
            assert r.status == 200 and "toolkit_auth_refused_total 4" in r.read().decode()
        request = urllib.request.Request(url + "/frame.jpg", headers={"Authorization": f"Bearer {GOOD}"})
        with pytest.raises(urllib.error.HTTPError) as e:  # let in: no frame yet is a 503, not a 401
            urllib.request.urlopen(request, timeout=60)
        e.value.close()
        assert e.value.code == 503
    finally:
        preview.close()


def test_the_preview_key_options_need_the_preview(tmp_path):
    r = run_cli("stream", "--model", "m.onnx", "--source", "x", "--out", str(tmp_path / "o"), "--key-file", "k", "--no-auth")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        "error: --key-file, --auth/--no-auth apply to --preview PORT (the live page)")


def test_tls_serves_https_with_the_key(exported_onnx, tmp_path):
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate to test TLS with")
    cert, private = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(private), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    given = key_file(tmp_path / "serve.key")
    trusted = ssl.create_default_context(cafile=str(cert))
    with running_server(exported_onnx, "--key-file", str(given), "--tls-cert", str(cert), "--tls-key", str(private)) as s:
        assert s.url.startswith("https://127.0.0.1:")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(s.url + "/v1/model", context=trusted, timeout=60)
        e.value.close()  # an open connection would hold the server's graceful stop
        assert e.value.code == 401
        request = urllib.request.Request(s.url + "/v1/model", headers={"Authorization": f"Bearer {GOOD}"})
        with urllib.request.urlopen(request, context=trusted, timeout=60) as r:
            assert r.status == 200 and json.loads(r.read())["model"] == exported_onnx.name
        code, out, err = s.stop()
    assert code == 0 and "no TLS" not in err and GOOD not in out + err


def test_the_client_sends_the_key_from_its_file(tmp_path):
    from toolkit.deploy.client import key_header

    assert key_header(key_file(tmp_path / "k")) == {"Authorization": f"Bearer {GOOD}"}
    assert key_header(key=GOOD) == {"Authorization": f"Bearer {GOOD}"} and key_header() == {}
    with pytest.raises(UserError, match="other users"):
        key_header(key_file(tmp_path / "open", mode=0o640))
