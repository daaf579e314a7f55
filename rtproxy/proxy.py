"""The recording proxy: an aiohttp app that relays WebSockets and REST calls.

Each WebSocket connection is a :class:`Relay`: the client's handshake is
repeated upstream (same path and query, headers minus hop-by-hop ones, the
same offered subprotocols), then two pumps copy frames both ways. A pump's
loop is receive → forward → hand to the recorder; nothing on it parses or
touches SQLite. Close codes cross over; a side that vanishes without a
close frame gets the other side closed with 1011.
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .protocol import (
    CLIENT,
    SERVER,
    Direction,
    dialect_from_handshake,
    model_from_query,
    redact_headers,
    redact_query,
    redact_subprotocols,
    redact_text,
)
from .store import Recorder, utcnow

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
UNSENDABLE = frozenset({1005, 1006, 1015})

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
    """The upstream WebSocket URL for a request's raw path and query, kept verbatim (no dot-segment folding)."""
    parts = urlsplit(upstream)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return URL(f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}{path_qs}", encoded=True)


def http_url(upstream: str, path_qs: str) -> URL:
    """The upstream REST URL for a request's raw path and query, kept verbatim."""
    parts = urlsplit(upstream)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return URL(f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}{path_qs}", encoded=True)


def _close_code(code: int | None) -> int:
    return 1000 if code is None or code in UNSENDABLE else code


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

    def _session_fields(self, offered: list[str]) -> dict[str, Any]:
        req = self.request
        query = redact_query(_strip_token(req).partition("?")[2])
        dialect = dialect_from_handshake(req.headers, offered)
        peer = req.transport.get_extra_info("peername") if req.transport else None
        return {
            "path": req.path,
            "query": query,
            "model": model_from_query(req.query_string),
            "dialect": dialect.value if dialect else None,
            "upstream": self.proxy.upstream,
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
                headers=relay_headers(req.headers),
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
        except (aiohttp.ClientError, OSError) as e:
            return self._unreachable(fields, 502, f"cannot reach upstream {self.proxy.upstream}: {e}")
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
            await upstream.close(code=1001, message=b"client went away during handshake")
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
        up = asyncio.ensure_future(self._pump(client, upstream, CLIENT))
        down = asyncio.ensure_future(self._pump(upstream, client, SERVER))
        done, _ = await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
        first = up if up in done else down
        side, msg = CLIENT if first is up else SERVER, first.result()
        await self._close_other(side, msg, client, upstream)
        other = down if first is up else up
        try:
            await asyncio.wait_for(other, 5.0)
        except (TimeoutError, asyncio.TimeoutError):
            pass
        self._finish()

    async def _pump(self, src: Any, dst: Any, direction: Direction) -> aiohttp.WSMessage:
        """Copy frames from src to dst until src ends; returns the message that ended it.

        Per frame: receive, forward, hand to the recorder (a copy into its ring).
        Counts live in locals on the way and land on the relay when the pump ends.
        """
        record, receive, clock = self.recorder.record_frame, src.receive, time.monotonic
        sid, t0, value = self.session_id, self.t0, direction.value
        text, binary = WSMsgType.TEXT, WSMsgType.BINARY
        count = nbytes = 0
        try:
            while True:
                msg: aiohttp.WSMessage = await receive()
                t = clock() - t0
                kind, data = msg.type, msg.data
                if kind is text:
                    send = dst.send_str
                elif kind is binary:
                    send = dst.send_bytes
                else:
                    return msg
                self.seq = seq = self.seq + 1
                try:
                    await send(data)
                finally:
                    record(sid, seq, t, value, data)
                    count += 1
                    nbytes += len(data)
        finally:
            self.counts[direction] += count
            self.nbytes[direction] += nbytes

    async def _close_other(self, side: Direction, msg: aiohttp.WSMessage, client: Any, upstream: Any) -> None:
        """Close the side still open the way the first side ended, and note both codes."""
        src, dst = (client, upstream) if side is CLIENT else (upstream, client)
        me, other = ("client", "server") if side is CLIENT else ("server", "client")
        who = "client" if side is CLIENT else "upstream"
        ended = self.ended
        ended.setdefault("closed_by", "proxy" if self.proxy.stopping else who)
        if self.proxy.stopping:  # our own 1001 ended this side: the other side gets the same
            for key in ("client", "server"):
                ended.setdefault(f"{key}_close_code", 1001)
                ended.setdefault(f"{key}_close_reason", "rtproxy shutting down")
            await dst.close(code=1001, message=b"rtproxy shutting down")
            return
        if msg.type is WSMsgType.CLOSE:
            code, reason = int(msg.data), str(msg.extra or "")
            out_code = _close_code(code)
        elif msg.type is WSMsgType.ERROR and isinstance(msg.data, aiohttp.WebSocketError):
            code = out_code = int(msg.data.code)
            reason = f"{who} broke the protocol: {msg.data}"
            ended.setdefault("reason", reason)
            ended["status"] = "error"
        else:
            code, out_code = 1006, 1011
            reason = f"{who} vanished without a close frame"
            ended.setdefault("reason", reason)
            ended["status"] = "error"
        ended.setdefault(f"{me}_close_code", code)
        ended.setdefault(f"{me}_close_reason", reason)
        ended.setdefault(f"{other}_close_code", out_code)
        ended.setdefault(f"{other}_close_reason", reason)
        message = reason.encode()[:123]
        await dst.close(code=out_code, message=message)
        if msg.type is WSMsgType.CLOSE:
            await src.close(code=out_code, message=message)

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
        self.label = label
        self.auth_token = auth_token
        self.connect_timeout = connect_timeout
        self.upstream_ssl = upstream_ssl
        self.relays: set[Relay] = set()
        self.finished: list[str] = []  # session ids whose relay has ended, in order
        self._changed = asyncio.Condition()
        self.stopping = False
        self._client: aiohttp.ClientSession | None = None

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
                headers=relay_headers(request.headers),
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
        except (aiohttp.ClientError, OSError, TimeoutError, asyncio.TimeoutError) as e:
            reason = f"cannot reach upstream {self.upstream}: {e or type(e).__name__}"
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
