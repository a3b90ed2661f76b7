"""`serve` lets in only the holder of the token it printed: a real server on 127.0.0.1,
driven by aiohttp and stdlib clients, one of them run as another Unix account."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tui.app import SSH_VARIABLES
from tui.services.settings import VARIABLES

SYSTEM_PYTHON = Path("/usr/bin/python3")


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    token: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        return self.base

    @property
    def cookie(self) -> str:
        return f"evalwb_serve_{self.port}={self.token}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the module (each start costs seconds), in an environment of its own."""
    home = tmp_path_factory.mktemp("serve")
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES and k not in SSH_VARIABLES}
    env.update(HOME=str(home), WANDB_DIR=str(home / "wandb"))
    env["EVALWB_REGISTRY_DIR"] = str(home / "registry")
    for name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        env[name] = str(home / name.lower())
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "serve", "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()  # the server prints the URL first
        url = rf"open http://127\.0\.0\.1:{port}/\?token=([A-Za-z0-9_-]{{40,}})\s"
        found = re.search(url, line)
        assert found, line + proc.stdout.read().decode() if proc.poll() is not None else line
        wait_listening(port)
        yield Served(proc, port, found.group(1))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def status(served: Served, path: str, headers: dict[str, str] | None = None) -> int:
    """The status of a GET, redirects not followed, and no cookie jar."""

    async def go() -> int:
        jar = aiohttp.DummyCookieJar()
        async with (
            aiohttp.ClientSession(cookie_jar=jar) as session,
            session.get(served.base + path, headers=headers or {}, allow_redirects=False) as got,
        ):
            return got.status

    return asyncio.run(go())


def ws_status(served: Served, headers: dict[str, str]) -> int:
    """The HTTP status of a websocket handshake on /ws (101 when it opened)."""

    async def go() -> int:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
            try:
                async with session.ws_connect(
                    f"ws://127.0.0.1:{served.port}/ws?width=80&height=24", headers=headers
                ):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    return asyncio.run(go())


PATHS = ["/", "/ws", "/static/js/textual.js", "/static/", "/download/x", "/nothing"]


@pytest.mark.parametrize("path", PATHS)
def test_no_way_in_without_the_token(served: Served, path: str) -> None:
    assert status(served, path) == 403
    assert status(served, path, {"Cookie": f"evalwb_serve_{served.port}=wrong"}) == 403
    assert status(served, path + "?token=wrong") == 403
    # The cookie of another server on this host (another port) is no key either.
    assert status(served, path, {"Cookie": f"evalwb_serve_1={served.token}x"}) == 403


def test_the_websocket_refuses_a_missing_or_wrong_token(served: Served) -> None:
    own = {"Origin": served.origin}
    assert ws_status(served, own) == 403
    assert ws_status(served, {**own, "Cookie": f"evalwb_serve_{served.port}=wrong"}) == 403
    cut = f"evalwb_serve_{served.port}={served.token[:-1]}"
    assert ws_status(served, {**own, "Cookie": cut}) == 403


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://127.0.0.1:1", "null", "http://localhost"]
)
def test_a_foreign_origin_is_refused_even_with_the_token(served: Served, origin: str) -> None:
    cookie = {"Cookie": served.cookie, "Origin": origin}
    assert status(served, "/", cookie) == 403
    assert status(served, f"/?token={served.token}", {"Origin": origin}) == 403
    assert ws_status(served, cookie) == 403


def test_a_rebound_host_name_is_refused_even_with_the_token(served: Served) -> None:
    host = f"evil.example:{served.port}"
    headers = {"Cookie": served.cookie, "Host": host}
    assert status(served, "/", headers) == 403
    assert ws_status(served, {**headers, "Origin": f"http://{host}"}) == 403


def test_the_owners_url_opens_the_page_and_the_app(served: Served) -> None:
    async def go() -> tuple[str, str, bytes]:
        # A browser keeps cookies of 127.0.0.1; aiohttp's jar does so only when told.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            async with session.get(
                f"{served.base}/?token={served.token}&fontsize=18", allow_redirects=False
            ) as first:
                assert first.status == 303
                # The token leaves the address bar; other parameters stay.
                assert first.headers["Location"] == "/?fontsize=18"
                set_cookie = first.headers["Set-Cookie"]
            async with session.get(served.base + "/?fontsize=18") as page:
                assert page.status == 200
                text = await page.text()
            async with session.get(served.base + "/static/js/textual.js") as script:
                assert script.status == 200
            url = f"ws://127.0.0.1:{served.port}/ws?width=80&height=24"
            async with session.ws_connect(url, headers={"Origin": served.origin}) as ws:
                await ws.send_json(["ping", "p1"])
                drawn = b""
                pong = False
                for _ in range(2000):  # the app's first screen, within 60 s
                    message = await ws.receive(timeout=60)
                    if message.type == aiohttp.WSMsgType.TEXT:
                        pong = pong or json.loads(message.data) == ["pong", "p1"]
                    elif message.type == aiohttp.WSMsgType.BINARY:
                        drawn += message.data
                    else:
                        break
                    if pong and b"Registry" in drawn:
                        break
                assert pong
            return set_cookie, text, drawn

    set_cookie, text, drawn = asyncio.run(go())
    assert f"evalwb_serve_{served.port}={served.token}" in set_cookie
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    assert "evalwb-tui" in text
    assert b"Registry" in drawn  # the served app draws its screen into the socket


def process_texts() -> str:
    """Every process's argument list, and the environment of those this account can read."""
    texts = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            for name in ("cmdline", "environ"):
                with contextlib.suppress(OSError):
                    texts.append((entry / name).read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


def test_the_token_is_in_no_argument_list_nor_a_served_apps_environment(served: Served) -> None:
    async def open_app() -> str:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            async with session.get(f"{served.base}/?token={served.token}"):
                pass
            url = f"ws://127.0.0.1:{served.port}/ws?width=80&height=24"
            async with session.ws_connect(url, headers={"Origin": served.origin}) as ws:
                await ws.receive(timeout=60)  # the served app is running
                # Root reads every environment: the served app's, and the server's own
                # (which does not hold it either: it lives in memory only).
                return process_texts()

    seen = asyncio.run(open_app())
    assert "-m\0tui.cli" in seen  # the served app was among the processes read
    assert served.token not in seen


NOBODY_CLIENT = r"""
import json, os, socket, sys, urllib.error, urllib.request
port, token = int(sys.argv[1]), sys.argv[2]
def get(path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
def handshake(extra=""):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((f"GET /ws?width=80&height=24 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                   f"Origin: http://127.0.0.1:{port}\r\n{extra}\r\n").encode())
        return int(s.recv(1024).split()[1])
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None
def get_with_token():
    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(f"http://127.0.0.1:{port}/?token={token}", timeout=10)
    except urllib.error.HTTPError as e:
        return e.code
texts = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for name in ("cmdline", "environ"):
            try:
                texts.append(open(f"/proc/{pid}/{name}", "rb").read().decode("utf-8", "replace"))
            except OSError:
                pass
print(json.dumps({
    "uid": os.getuid(), "page": get("/"), "static": get("/static/js/textual.js"),
    "ws": handshake(), "guess": get("/?token=" + "A" * 43),
    "with_token": get_with_token(), "seen": "\n".join(texts),
}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another account needs root")
@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no system python3 for the other account")
def test_another_account_cannot_get_in_without_the_token(served: Served) -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no nobody account")

    def become_nobody() -> None:
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    def run(token: str) -> dict:
        done = subprocess.run(
            [str(SYSTEM_PYTHON), "-c", NOBODY_CLIENT, str(served.port), token],
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=become_nobody,
            cwd="/",
            env={"PATH": "/usr/bin:/bin"},
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    # The other account has no token, and finds none in what it can read of the host.
    # (Its own argument list holds the guess it is given below, nothing else.)
    stranger = run("not-the-token")
    assert stranger["uid"] == nobody.pw_uid
    assert (stranger["page"], stranger["static"], stranger["ws"], stranger["guess"]) == (
        403,
        403,
        403,
        403,
    )
    assert stranger["with_token"] == 403
    assert served.token not in stranger["seen"]
    # The same account given the token gets in: the refusals above are the token's doing.
    assert run(served.token)["with_token"] == 303
