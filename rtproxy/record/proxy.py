"""The recording proxy: an aiohttp app that relays WebSockets and REST calls.

Each WebSocket connection is a :class:`Relay`: the client's handshake is
repeated upstream (same path and query, headers minus hop-by-hop ones, the
same offered subprotocols), then two pumps copy frames both ways. A pump's
loop is receive → forward → hand to the recorder; nothing on it parses or
touches SQLite, and a frame is handed to the recorder only once it has been
forwarded.

Closing. The first side to end decides how the other side is closed:

- a close frame with a valid code (1000–1003, 1007–1014, 3000–4999) crosses
  over with its code and reason, and is echoed back;
- a close frame with no code crosses over as a close frame with no code
  (recorded as 1005, the code RFC 6455 reserves for "no status code");
- a close frame with a code nobody may send (0–999, 1004–1006, 1015,
  1016–2999, 5000 and up) or a malformed one is a protocol error: both
  sides get 1002, the session is `error`;
- a side that vanishes without a close frame, or whose connection fails on a
  send or a receive, gets the other side closed with 1011 (recorded as 1006
  for the side that failed), the session is `error`.

The session row's ``client_close_code`` / ``server_close_code`` are the
status codes of the close frame on that side's connection: the one the side
sent if it closed first, otherwise the one rtproxy sent it; 1005 is a close
frame without a code and 1006 no close frame at all. No code outside the
sendable set above is ever put in a frame.

The upstream URL may carry credentials (``https://user:token@gw``): they go
upstream as a Basic ``Authorization`` header (replacing the client's) and are
masked everywhere rtproxy stores or prints the URL.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ..protocols import Api, classify_handshake, model_from_handshake
from ..protocols.secrets import (
    mask,
    redact_headers,
    redact_query,
    redact_subprotocols,
    redact_text,
    redact_url,
    url_credentials,
)
from ..protocols.wire import CLIENT, SERVER, Direction
from ..store import utcnow
from .recorder import Recorder
from .transport import BINARY as BINARY_FLAG
from .transport import SERVER as SERVER_FLAG

log = logging.getLogger("rtproxy")

MAX_MESSAGE = 16 * 1024 * 1024
#: aiohttp refuses a message whose size is >= max_msg_size; a message of exactly MAX_MESSAGE passes.
_MAX_MSG_SIZE = MAX_MESSAGE + 1
#: Headers that belong to one hop, or to the WebSocket handshake, never relayed.
HOP_HEADERS = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Trailers",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Extensions",
        "Sec-WebSocket-Protocol",
        "Sec-WebSocket-Accept",
        "X-Rtproxy-Token",
    )
)
TOKEN_QUERY = "rtproxy_token"
TOKEN_PROTOCOL = "rtproxy-token."
#: Close codes that may not be sent in a close frame (RFC 6455 §7.4.1).
UNSENDABLE = frozenset({1004, 1005, 1006, 1015})
#: What a close frame without a status code is recorded as (RFC 6455 §7.4.1: "no status code was present").
NO_STATUS = 1005
#: What a connection that ended without a close frame is recorded as.
ABNORMAL = 1006
#: The longest close reason a frame can carry (125 bytes of payload minus the code).
MAX_REASON = 123

_refusal_body: contextvars.ContextVar[list[bytes]] = contextvars.ContextVar("refusal_body")


class _KeepRefusal(aiohttp.ClientResponse):
    """Reads the body of a refused WebSocket upgrade, which aiohttp would drop."""

    async def start(self, connection: Any) -> aiohttp.ClientResponse:
        resp = await super().start(connection)
        holder = _refusal_body.get(None)
        if self.status != 101 and holder is not None:
            holder.append(await self.read())
        return resp


def relay_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in HOP_HEADERS:
            out.add(name, value)
    return out


def ws_url(upstream: str, path_qs: str) -> URL:
    """The upstream WebSocket URL for a request's raw path and query, kept verbatim (no dot-segment folding);
    without the upstream's userinfo, which travels as a header (:func:`upstream_authorization`)."""
    parts = urlsplit(upstream)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    host = parts.netloc.rpartition("@")[2]
    return URL(f"{scheme}://{host}{parts.path.rstrip('/')}{path_qs}", encoded=True)


def http_url(upstream: str, path_qs: str) -> URL:
    """The upstream REST URL for a request's raw path and query, kept verbatim, without the userinfo."""
    parts = urlsplit(upstream)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    host = parts.netloc.rpartition("@")[2]
    return URL(f"{scheme}://{host}{parts.path.rstrip('/')}{path_qs}", encoded=True)


def upstream_authorization(upstream: str) -> str | None:
    """The Basic ``Authorization`` value the upstream URL's userinfo stands for, or None without one."""
    netloc = urlsplit(upstream).netloc
    if "@" not in netloc:
        return None
    user, _, password = netloc.rpartition("@")[0].partition(":")
    return "Basic " + base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()


def sendable(code: int) -> bool:
    """May a close frame carry this status code (RFC 6455 §7.4: defined codes, or 3000–4999)?"""
    return 1000 <= code <= 1014 and code not in UNSENDABLE or 3000 <= code <= 4999


def _reason_bytes(reason: str) -> bytes:
    """A close reason cut to what a frame can carry, on a character boundary (a cut UTF-8 sequence is a 1007)."""
    return reason.encode()[:MAX_REASON].decode("utf-8", "ignore").encode()


async def close_ws(ws: Any, code: int | None, reason: str = "", timeout: float = 5.0) -> None:
    """Close a WebSocket with `code`, or with a close frame that carries no code when `code` is None.

    aiohttp's ``close()`` always packs a code; for a code-less close its writer's ``close`` is shadowed for
    the one call, so aiohttp's closing handshake runs unchanged around an empty close payload. Failures of a
    connection that is already gone are swallowed: closing is best effort, bounded by `timeout`.
    """
    message = _reason_bytes(reason)
    writer: Any = getattr(ws, "_writer", None)
    shadow = code is None and callable(getattr(writer, "send_frame", None))
    if shadow:

        async def close_without_code(code: int = 1000, message: bytes | str = b"") -> None:
            try:
                await writer.send_frame(b"", WSMsgType.CLOSE)
            finally:
                writer._closing = True

        writer.close = close_without_code
    try:
        await asyncio.wait_for(ws.close(code=1000 if code is None else code, message=message), timeout)
    except (TimeoutError, asyncio.TimeoutError, ConnectionError, aiohttp.ClientError, RuntimeError):
        pass
    finally:
        if shadow:
            del writer.close


@dataclass(slots=True)
class _End:
    """How a pump ended: `side`'s connection ended it, with `msg` (what its receive returned) or `error`
    (a receive from it or a send to it that raised); `dropped` frames were received and never forwarded."""

    side: Direction
    msg: aiohttp.WSMessage | None = None
    error: BaseException | None = None
    dropped: int = 0


class Relay:
    """One client WebSocket connection relayed to the upstream and recorded."""

    def __init__(self, proxy: Proxy, request: web.Request) -> None:
        self.proxy = proxy
        self.request = request
        self.recorder = proxy.recorder
        self.session_id = ""
        self.seq = -1
        self.t0 = time.monotonic()
        self.counts = {CLIENT: 0, SERVER: 0}
        self.nbytes = {CLIENT: 0, SERVER: 0}
        self.client_ws: web.WebSocketResponse | None = None
        self.upstream_ws: aiohttp.ClientWebSocketResponse | None = None
        self.ended: dict[str, Any] = {}
        self.dropped = {CLIENT: 0, SERVER: 0}  # frames received from that side and never forwarded

    def _session_fields(self, offered: list[str]) -> dict[str, Any]:
        req = self.request
        query = redact_query(_strip_token(req).partition("?")[2])
        kind = classify_handshake(req.path, req.query_string, req.headers, offered)
        peer = req.transport.get_extra_info("peername") if req.transport else None
        return {
            "path": req.path,
            "query": query,
            "model": model_from_handshake(kind, req.query_string),
            "api": kind.api.value,
            "variant": kind.variant,
            "dialect": kind.variant if kind.api is Api.REALTIME else None,
            "upstream": self.proxy.upstream_shown,
            "client_addr": f"{peer[0]}:{peer[1]}" if peer else None,
            "request_headers": redact_headers(req.headers.items()),
            "label": self.proxy.label,
        }

    async def run(self) -> web.StreamResponse:
        req = self.request
        offered = [p.strip() for p in req.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        offered = [p for p in offered if not p.startswith(TOKEN_PROTOCOL)]
        fields = self._session_fields(offered)
        fields["subprotocol"] = ", ".join(redact_subprotocols(offered)) or None
        holder: list[bytes] = []
        token = _refusal_body.set(holder)
        url = ws_url(self.proxy.upstream, _strip_token(req))  # verbatim: dot segments too
        try:
            connecting = self.proxy.client.ws_connect(
                url,
                headers=self.proxy.upstream_headers(req.headers),
                protocols=offered,
                compress=15 if _offers_deflate(req.headers) else 0,
                max_msg_size=_MAX_MSG_SIZE,
                autoclose=False,
                autoping=True,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
                ssl=self.proxy.upstream_ssl,
            )
            self.upstream_ws = await asyncio.wait_for(connecting, self.proxy.connect_timeout)
        except aiohttp.WSServerHandshakeError as e:
            body = holder[0] if holder else b""
            return self._refused(fields, e.status, e.headers, body, f"upstream answered {e.status}")
        except (TimeoutError, asyncio.TimeoutError):
            return self._unreachable(
                fields, 504, f"upstream did not answer the handshake within {self.proxy.connect_timeout:g} s"
            )
        except (aiohttp.ClientError, OSError, ValueError) as e:
            reason = self.proxy.scrub(f"cannot reach upstream {self.proxy.upstream_shown}: {e or type(e).__name__}")
            return self._unreachable(fields, 502, reason)
        finally:
            _refusal_body.reset(token)

        upstream = self.upstream_ws
        protocol = upstream.protocol
        client = web.WebSocketResponse(
            protocols=(protocol,) if protocol else (),
            compress=True,
            max_msg_size=_MAX_MSG_SIZE,
            autoclose=False,
            autoping=True,
        )
        for name, value in upstream._response.headers.items():
            if name.lower() not in HOP_HEADERS and name.lower() not in ("date", "server", "content-type"):
                client.headers.add(name, value)
        fields["response_headers"] = redact_headers(upstream._response.headers.items())
        fields["subprotocol"] = protocol or fields["subprotocol"]
        self.t0 = time.monotonic()
        self.session_id = self.recorder.open_session(**fields)
        try:
            await client.prepare(req)
        except (ConnectionError, aiohttp.ClientConnectionError) as e:
            await close_ws(upstream, 1001, "client went away during handshake")
            self._finish(status="error", reason=f"client went away during the handshake: {e}")
            return client
        self.client_ws = client
        self.proxy.relays.add(self)
        try:
            await self._relay(client, upstream)
        finally:
            self.proxy.relays.discard(self)
            await self.proxy.note_finished(self.session_id)
        return client

    async def _relay(self, client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
        """Run both pumps until one ends, close the other side to match, and end the session whatever happens."""
        up = asyncio.ensure_future(self._pump(client, upstream, CLIENT))
        down = asyncio.ensure_future(self._pump(upstream, client, SERVER))
        try:
            done, _ = await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
            first, other = (up, down) if up in done else (down, up)
            await self._close_other(first.result(), client, upstream)
            try:
                self._note_dropped(await asyncio.wait_for(other, 5.0))
            except (TimeoutError, asyncio.TimeoutError):
                pass
        except Exception as e:  # a bug of ours must still end the session, not leave it `open`
            log.warning("rtproxy: session %s: relay failed: %r", self.session_id, e)
            self.ended.setdefault("reason", f"relay failed: {type(e).__name__}: {e}")
            self.ended["status"] = "error"
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            for ws in (client, upstream):
                if not ws.closed:
                    await close_ws(ws, 1011, "rtproxy: relay ended", timeout=1.0)
            self._finish()

    async def _pump(self, src: Any, dst: Any, direction: Direction) -> _End:
        """Copy frames from src to dst until src ends or a send to dst fails; says how it ended.

        Per frame: receive, forward, hand to the recorder (a copy into its ring). A frame whose send
        failed is not recorded. Counts live in locals on the way and land on the relay when the pump ends.
        """
        record, receive, clock = self.recorder.record_payload, src.receive, time.monotonic
        sid, t0 = self.session_id, self.t0
        send = dst.send_frame  # a text frame is encoded once: the bytes sent are the bytes recorded
        text, binary = WSMsgType.TEXT, WSMsgType.BINARY
        side = SERVER_FLAG if direction is SERVER else 0
        count = nbytes = 0
        try:
            while True:
                try:
                    msg: aiohttp.WSMessage = await receive()
                except Exception as e:  # aiohttp reports most failures as messages; anything else ends this side
                    return _End(direction, error=e)
                t = clock() - t0
                kind = msg.type
                if kind is text:
                    payload, flags = msg.data.encode(), side  # valid UTF-8: aiohttp checked it
                elif kind is binary:
                    payload, flags = msg.data, side | BINARY_FLAG
                else:
                    return _End(direction, msg=msg)
                self.seq = seq = self.seq + 1
                try:
                    await send(payload, kind)
                except Exception as e:  # the other side's connection failed under the send
                    if self.seq == seq:  # give its number back: seq stays gap-free unless the other side took one
                        self.seq = seq - 1
                    return _End(SERVER if direction is CLIENT else CLIENT, error=e, dropped=1)
                record(sid, seq, t, flags, payload)
                count += 1
                nbytes += len(payload)
        finally:
            self.counts[direction] += count
            self.nbytes[direction] += nbytes

    def _note_dropped(self, end: _End) -> None:
        if end.dropped:
            self.dropped[CLIENT if end.side is SERVER else SERVER] += end.dropped

    async def _close_other(self, end: _End, client: Any, upstream: Any) -> None:
        """Close the side still open the way the first side ended, and note both codes."""
        side = end.side
        src, dst = (client, upstream) if side is CLIENT else (upstream, client)
        me, other = ("client", "server") if side is CLIENT else ("server", "client")
        who = "client" if side is CLIENT else "upstream"
        ended = self.ended
        self._note_dropped(end)
        ended.setdefault("closed_by", "proxy" if self.proxy.stopping else who)
        if self.proxy.stopping:  # our own 1001 ended this side: the other side gets the same
            for key in ("client", "server"):
                ended.setdefault(f"{key}_close_code", 1001)
                ended.setdefault(f"{key}_close_reason", "rtproxy shutting down")
            await close_ws(dst, 1001, "rtproxy shutting down")
            return
        msg = end.msg
        echo = False
        code: int
        out_code: int | None
        if msg is not None and msg.type is WSMsgType.CLOSE:
            received = int(msg.data)
            reason = str(msg.extra or "")
            if received == 0:  # aiohttp's word for a close frame without a status code
                code, out_code, echo = NO_STATUS, None, True
            elif sendable(received):
                code = out_code = received
                echo = True
            else:
                code = out_code = 1002
                reason = f"{who} broke the protocol: Invalid close code: {received}"
                ended["status"] = "error"
                await close_ws(src, 1002, reason)
        elif msg is not None and msg.type is WSMsgType.ERROR and isinstance(msg.data, aiohttp.WebSocketError):
            code = int(msg.data.code)  # aiohttp has closed src with this code already
            out_code = code if sendable(code) else 1002
            reason = f"{who} broke the protocol: {msg.data}"
            ended["status"] = "error"
        else:
            code, out_code = ABNORMAL, 1011
            failure = end.error if end.error is not None else msg.data if msg is not None else None
            if isinstance(failure, BaseException):
                reason = f"{who} connection failed: {type(failure).__name__}: {failure}"
            else:
                reason = f"{who} vanished without a close frame"
            ended["status"] = "error"
            if not src.closed:
                await close_ws(src, 1011, reason, timeout=1.0)
        stored = self.proxy.scrub(reason)  # a close reason or an error message may quote a key: relayed, not kept
        if ended.get("status") == "error":
            ended.setdefault("reason", stored)
        ended.setdefault(f"{me}_close_code", code)
        ended.setdefault(f"{me}_close_reason", stored)
        ended.setdefault(f"{other}_close_code", NO_STATUS if out_code is None else out_code)
        ended.setdefault(f"{other}_close_reason", stored)
        await close_ws(dst, out_code, reason)
        if echo:
            await close_ws(src, out_code, reason)

    async def shutdown(self) -> None:
        """Close both sides with 1001 (the proxy is going away)."""
        self.ended.setdefault("closed_by", "proxy")
        self.ended.setdefault("reason", "proxy shut down")
        await asyncio.gather(
            *(
                ws.close(code=1001, message=b"rtproxy shutting down")
                for ws in (self.client_ws, self.upstream_ws)
                if ws is not None and not ws.closed
            ),
            return_exceptions=True,
        )

    def _finish(self, **fields: Any) -> None:
        ended = {**self.ended, **fields}
        status = ended.pop("status", "closed")
        dropped = (("client", self.dropped[CLIENT]), ("upstream", self.dropped[SERVER]))
        notes = [f"{n} frame(s) from the {who} never forwarded" for who, n in dropped if n]
        if notes:
            ended["reason"] = "; ".join([ended["reason"], *notes] if ended.get("reason") else notes)
        self.recorder.update_session(
            self.session_id,
            status=status,
            ended_at=utcnow(),
            duration=time.monotonic() - self.t0,
            client_events=self.counts[CLIENT],
            server_events=self.counts[SERVER],
            client_bytes=self.nbytes[CLIENT],
            server_bytes=self.nbytes[SERVER],
            **ended,
        )
        if self.proxy.on_session_end is not None:  # e.g. --otlp's exporter: it only queues the id
            self.proxy.on_session_end(self.session_id)

    def _refused(self, fields: dict[str, Any], status: int, headers: Any, body: bytes, reason: str) -> web.Response:
        detail = redact_text(body[:500].decode("utf-8", "replace")) if body else ""
        self.recorder.open_session(
            **fields,
            status="rejected",
            reason=f"{reason}: {detail}" if detail else reason,
            ended_at=utcnow(),
            server_close_code=status,
        )
        out_headers: CIMultiDict[str] = CIMultiDict()
        if headers is not None:
            for name, value in headers.items():
                if name.lower() not in HOP_HEADERS and name.lower() not in ("content-encoding", "date", "server"):
                    out_headers.add(name, value)
        return web.Response(status=status, body=body, headers=out_headers)

    def _unreachable(self, fields: dict[str, Any], status: int, reason: str) -> web.Response:
        self.recorder.open_session(**fields, status="rejected", reason=reason, ended_at=utcnow())
        log.warning("rtproxy: %s", reason)
        kind = "upstream_timeout" if status == 504 else "upstream_unreachable"
        error = {"type": kind, "code": kind, "message": f"rtproxy: {reason}"}
        return web.json_response({"error": error}, status=status)


def _offers_deflate(headers: Mapping[str, str]) -> bool:
    """Did the client offer permessage-deflate? Then (and only then) offer it upstream too."""
    return "permessage-deflate" in headers.get("Sec-WebSocket-Extensions", "").lower()


def _strip_token(request: web.Request) -> str:
    """The request's raw path and query, minus rtproxy's own access token."""
    if TOKEN_QUERY not in request.query:
        return request.raw_path
    path, _, query = request.raw_path.partition("?")
    kept = "&".join(p for p in query.split("&") if not p.startswith(f"{TOKEN_QUERY}="))
    return path + (f"?{kept}" if kept else "")


class Proxy:
    """The aiohttp application: ``make_app()``, then ``shutdown()`` on exit."""

    def __init__(
        self,
        recorder: Recorder,
        *,
        upstream: str = "https://api.openai.com",
        label: str | None = None,
        auth_token: str | None = None,
        connect_timeout: float = 10.0,
        upstream_ssl: Any = True,
    ) -> None:
        self.recorder = recorder
        self.upstream = upstream.rstrip("/")
        #: The upstream as rtproxy stores and prints it: userinfo masked.
        self.upstream_shown = redact_url(self.upstream)
        self._credentials = url_credentials(self.upstream)
        self._authorization = upstream_authorization(self.upstream)
        self.label = label
        self.auth_token = auth_token
        self.connect_timeout = connect_timeout
        self.upstream_ssl = upstream_ssl
        self.relays: set[Relay] = set()
        self.finished: list[str] = []  # session ids whose relay has ended, in order
        #: Called with a session id once its end is recorded; must not block (the event loop calls it).
        self.on_session_end: Callable[[str], None] | None = None
        self._changed = asyncio.Condition()
        self.stopping = False
        self._client: aiohttp.ClientSession | None = None

    def scrub(self, text: str) -> str:
        """Text with the upstream URL's credentials masked (an error message can quote the URL)."""
        text = text.replace(self.upstream, self.upstream_shown)
        for secret in self._credentials:
            text = text.replace(secret, mask(secret))
        return redact_text(text)

    def upstream_headers(self, headers: Mapping[str, str]) -> CIMultiDict[str]:
        """A client's headers as they go upstream: hop-by-hop ones dropped; the URL's userinfo, if any, as
        the Basic Authorization (aiohttp refuses both a URL's credentials and an Authorization header)."""
        out = relay_headers(headers)
        if self._authorization is not None:
            out["Authorization"] = self._authorization
        return out

    @property
    def client(self) -> aiohttp.ClientSession:
        if self._client is None:
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),  # a WebSocket holds its connection for its whole life
                response_class=_KeepRefusal,
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self.connect_timeout, sock_connect=self.connect_timeout, sock_read=None
                ),
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
                trust_env=False,
            )
        return self._client

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_MESSAGE, middlewares=[self._guard])
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.auth_token is not None and not self._authorised(request):
            return web.json_response(
                {
                    "error": {
                        "type": "rtproxy_unauthorized",
                        "message": "rtproxy: this proxy needs its access token "
                        "(header X-Rtproxy-Token, query rtproxy_token=, or subprotocol rtproxy-token.TOKEN)",
                    }
                },
                status=401,
            )
        return await handler(request)  # type: ignore[no-any-return]

    def _authorised(self, request: web.Request) -> bool:
        assert self.auth_token is not None
        offered = request.headers.get("X-Rtproxy-Token") or request.query.get(TOKEN_QUERY)
        if offered is None:
            for p in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
                if p.strip().startswith(TOKEN_PROTOCOL):
                    offered = p.strip()[len(TOKEN_PROTOCOL) :]
        return offered is not None and hmac.compare_digest(offered.encode(), self.auth_token.encode())

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await Relay(self, request).run()
        return await self.forward_http(request)

    async def forward_http(self, request: web.Request) -> web.StreamResponse:
        """Relay a REST call, stream the answer back, record the exchange."""
        started, t0 = utcnow(), time.monotonic()
        body = await request.read()
        url = http_url(self.upstream, _strip_token(request))
        record: dict[str, Any] = {
            "started_at": started,
            "method": request.method,
            "path": request.path,
            "query": redact_query(request.query_string),
            "request_headers": redact_headers(request.headers.items()),
            "request_body": body,
            "request_size": len(body),
        }
        try:
            async with self.client.request(
                request.method,
                url,
                headers=self.upstream_headers(request.headers),
                data=body or None,
                allow_redirects=False,
                ssl=self.upstream_ssl,
            ) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for name, value in upstream.headers.items():
                    if name.lower() not in HOP_HEADERS:
                        response.headers.add(name, value)
                await response.prepare(request)
                kept = bytearray()
                size = 0
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                    size += len(chunk)
                    if len(kept) < 65536:
                        kept += chunk[: 65536 - len(kept)]
                await response.write_eof()
                record.update(
                    status=upstream.status,
                    response_headers=redact_headers(upstream.headers.items()),
                    response_body=_decoded(bytes(kept), upstream.headers),
                    response_size=size,
                )
                return response
        except (aiohttp.ClientError, OSError, TimeoutError, asyncio.TimeoutError, ValueError) as e:
            reason = self.scrub(f"cannot reach upstream {self.upstream_shown}: {e or type(e).__name__}")
            record.update(status=502, error=reason)
            return web.json_response(
                {"error": {"type": "upstream_unreachable", "message": f"rtproxy: {reason}"}}, status=502
            )
        finally:
            record["duration_ms"] = (time.monotonic() - t0) * 1000
            self.recorder.record_http(**record)

    async def note_finished(self, session_id: str) -> None:
        self.finished.append(session_id)
        async with self._changed:
            self._changed.notify_all()

    async def wait_finished(self, count: int, timeout: float = 10.0) -> list[str]:
        """Wait until `count` relays have ended (tests and benchmarks use this)."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.finished) >= count), timeout)
        return self.finished[:count]

    async def shutdown(self) -> None:
        """Close every open session with 1001 on both sides."""
        self.stopping = True
        await asyncio.gather(*(r.shutdown() for r in list(self.relays)), return_exceptions=True)

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.shutdown()

    async def _on_cleanup(self, app: web.Application) -> None:
        if self._client is not None:
            await self._client.close()


def _decoded(body: bytes, headers: CIMultiDictProxy[str]) -> bytes:
    """A response body as it reads, for the record (gzip/deflate undone)."""
    encoding = headers.get("Content-Encoding", "").lower()
    if encoding in ("gzip", "deflate"):
        import zlib

        try:
            return zlib.decompressobj(wbits=47).decompress(body)
        except zlib.error:
            return f"<{len(body)} bytes, {encoding}-encoded>".encode()
    return body
