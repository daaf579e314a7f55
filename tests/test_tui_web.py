"""`rtproxy tui --web` in a real headless Chromium (driven over the DevTools protocol), and its guard over HTTP.

The page draws the terminal on a canvas, so what the app rendered is read where the browser received it: a
script added before the page's own wraps ``WebSocket`` and keeps the bytes the app sent (ANSI text).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import rtproxy_exe

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
RECORDING = ROOT / "recordings" / "function-call-ga.jsonl"
ANSI = re.compile(r"\x1b(\[[0-9;?<>=]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][A-Za-z0-9]|[=>78DEHMNOZc])")
#: What the wrapped WebSocket keeps of the app's output (the page's own script sets binaryType later).
HOOK = """
window.__rtproxy = [];
const Native = window.WebSocket;
window.WebSocket = function (url, protocols) {
  const ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
  ws.addEventListener("message", (e) => {
    if (typeof e.data !== "string") window.__rtproxy.push(new TextDecoder().decode(new Uint8Array(e.data)));
  });
  return ws;
};
window.WebSocket.prototype = Native.prototype;
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def chromium() -> str:
    """The headless browser. Without one the browser test is skipped, with the reason, on a developer's machine;
    CI installs Chromium and sets RTPROXY_REQUIRE_BROWSER=1, so there a missing browser fails."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        why = "no Chromium on PATH (Debian: apt-get install -y chromium; macOS: brew install --cask chromium)"
        if os.environ.get("RTPROXY_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return exe


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path


def serve(db: Path, *args: str, timeout: float = 30.0) -> Served:
    logs = Path(tempfile.mkdtemp(prefix="rtproxy-web-"))
    port = free_port()
    out, err = logs / "stdout", logs / "stderr"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            [*rtproxy_exe(), "tui", "--web", "--db", str(db), "--port", str(port), *args],
            stdout=o,
            stderr=e,
            stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if "serving the TUI on" in out.read_text():
            return Served(f"http://127.0.0.1:{port}", proc, out, err)
        time.sleep(0.05)  # polling the log for the start line, bounded
    proc.kill()
    proc.wait()
    raise AssertionError(f"tui --web did not start: {out.read_text()}\n{err.read_text()}")


def stop(served: Served) -> None:
    if served.proc.poll() is None:
        served.proc.send_signal(signal.SIGTERM)
        try:
            served.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            served.proc.kill()
            served.proc.wait()


@pytest.fixture
def db(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "db"
    done = subprocess.run(
        [*rtproxy_exe(), "import", str(RECORDING), "--db", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return path, done.stdout.strip().splitlines()[-1]


@pytest.fixture
def web(db: tuple[Path, str]) -> Iterator[Served]:
    served = serve(db[0])
    try:
        yield served
    finally:
        stop(served)


class Page:
    """One Chromium tab over the DevTools protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        mid = next(self.ids)
        await self.ws.send_json({"id": mid, "method": method, "params": params})
        for _ in range(10_000):  # events arrive between the answers; bounded
            msg = await asyncio.wait_for(self.ws.receive_json(), 30)
            if msg.get("id") == mid:
                assert "error" not in msg, msg
                result: dict[str, Any] = msg.get("result", {})
                return result
        raise AssertionError(f"no answer to {method}")

    async def eval(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def screen(self) -> str:
        text = await self.eval("window.__rtproxy ? window.__rtproxy.join('') : ''")
        return ANSI.sub("", text or "")

    async def wait_for(self, needle: str, timeout: float = 60.0, since: int = 0) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = (await self.screen())[since:]
            if needle in text:
                return text
            await asyncio.sleep(0.2)  # polling the page, bounded by the deadline
        raise AssertionError(f"{needle!r} never rendered; the page received:\n{text[-3000:]}")

    async def key(self, key: str, code: str, vk: int, text: str) -> None:
        for kind in ("keyDown", "keyUp"):
            await self.call(
                "Input.dispatchKeyEvent",
                type=kind,
                key=key,
                code=code,
                windowsVirtualKeyCode=vk,
                **({"text": text} if kind == "keyDown" and text else {}),
            )


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    profile = tmp_path / "chromium"
    proc = subprocess.Popen(
        [
            chromium(),
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--window-size=1400,900",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            # nothing outside loopback (the page asks a web font of Google's)
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (active.exists() and active.read_text().strip()) and time.monotonic() < deadline:
            assert proc.poll() is None, "chromium exited at start"
            await asyncio.sleep(0.05)  # polling for the DevTools port file, bounded
        port = int(active.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            targets: list[dict[str, Any]] = []
            for _ in range(100):
                async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                    targets = [t for t in await r.json() if t.get("type") == "page"]
                if targets:
                    break
                await asyncio.sleep(0.05)  # the first tab appears just after the port; bounded
            assert targets, "chromium has no page"
            async with http.ws_connect(targets[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                tab = Page(ws)
                await tab.call("Page.enable")
                await tab.call("Runtime.enable")
                await tab.call("Page.addScriptToEvaluateOnNewDocument", source=HOOK)
                yield tab
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_the_sessions_table_renders_in_chromium_and_a_session_opens(
    web: Served, page: Page, db: tuple[Path, str]
) -> None:
    _, sid = db
    await page.call("Page.navigate", url=web.url + "/")
    table = await page.wait_for(sid)
    assert "example" in table  # the session's label, in its row
    assert "get_weather" not in table
    before = len(await page.screen())
    await page.eval("document.querySelector('.xterm-helper-textarea').focus()")
    await page.key("Enter", "Enter", 13, "\r")
    opened = await page.wait_for("get_weather", since=before)  # the session's own view: its function call
    assert "response.done" in opened or "Paris" in opened


def get(url: str, cookie: str | None = None) -> tuple[int, dict[str, str], str]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode("utf-8", "replace")


async def test_with_a_token_every_request_must_carry_it(db: tuple[Path, str]) -> None:
    token = "team-" + os.urandom(8).hex()
    served = serve(db[0], "--auth-token", token)
    try:
        assert get(served.url + "/")[0] == 401
        assert get(served.url + "/?token=wrong")[0] == 401
        assert get(served.url + "/static/js/textual.js")[0] == 401
        status, headers, body = get(f"{served.url}/?token={token}")
        assert status == 200 and "textual" in body
        cookie = headers["Set-Cookie"].split(";")[0]
        assert "HttpOnly" in headers["Set-Cookie"] and cookie.endswith(token)
        assert get(served.url + "/static/js/textual.js", cookie)[0] == 200
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(served.url + "/ws")
            assert refused.value.status == 401
            with pytest.raises(aiohttp.WSServerHandshakeError) as elsewhere:  # another site's page, with the cookie
                await http.ws_connect(served.url + "/ws", headers={"Cookie": cookie, "Origin": "http://evil.test"})
            assert elsewhere.value.status == 403
            async with http.ws_connect(served.url + "/ws?width=80&height=24", headers={"Cookie": cookie}) as ws:
                msg = await asyncio.wait_for(ws.receive(), 60)  # the app's first bytes
                assert msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT)
    finally:
        stop(served)


def test_a_non_loopback_host_needs_a_token(db: tuple[Path, str]) -> None:
    done = subprocess.run(
        [*rtproxy_exe(), "tui", "--web", "--db", str(db[0]), "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "--auth-token" in done.stderr
    assert "Traceback" not in done.stderr
