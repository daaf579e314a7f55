"""Where credentials travel and how they are masked before anything reaches a file.

Headers, query parameters, subprotocols (the browser's key), URL userinfo, and anything key-shaped
(``sk-…``, ``ek_…``) in a frame.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

# --- secrets --------------------------------------------------------------------

SECRET_HEADERS = frozenset(
    {"authorization", "api-key", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-rtproxy-token"}
)
SECRET_QUERY_PARAMS = frozenset({"api-key", "api_key", "key", "token", "access_token", "rtproxy_token"})
INSECURE_KEY_PROTOCOL = "openai-insecure-api-key."
#: Subprotocols that carry a secret after their prefix (the browser's key; rtproxy's own access token).
SECRET_PROTOCOL_PREFIXES = (INSECURE_KEY_PROTOCOL, "rtproxy-token.")
_SECRET_RE = re.compile(r"(?<![A-Za-z0-9_])(?:sk-|ek_)[A-Za-z0-9_\-]{12,}")
_SECRET_BYTES_RE = re.compile(rb"(?<![A-Za-z0-9_])(?:sk-|ek_)[A-Za-z0-9_\-]{12,}")
_SECRET_MARKERS = ("sk-", "ek_")


def mask(secret: str) -> str:
    """A secret shown so keys can be told apart: ``****abcd`` (last four kept)."""
    tail = secret[-4:] if len(secret) > 12 else ""
    return f"****{tail}"


def redact_header_value(name: str, value: str) -> str:
    lname = name.lower()
    if lname in SECRET_HEADERS:
        scheme, _, token = value.partition(" ")
        if token and scheme.lower() in ("bearer", "basic", "token"):
            return f"{scheme} {mask(token)}"
        return mask(value)
    if lname == "sec-websocket-protocol":
        return ", ".join(redact_subprotocols(p.strip() for p in value.split(",")))
    return redact_text(value)


def redact_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers as a dict, secret values masked (repeated headers joined)."""
    out: dict[str, str] = {}
    for name, value in headers:
        name, value = str(name), str(value)  # multidict keys are a str subclass JSON encoders refuse
        clean = redact_header_value(name, value)
        out[name] = f"{out[name]}, {clean}" if name in out else clean
    return out


def redact_query(query: str) -> str:
    """A query string with secret parameters masked."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(k.lower() in SECRET_QUERY_PARAMS for k, _ in pairs) and not has_secret(query):
        return query
    return urlencode([(k, mask(v) if k.lower() in SECRET_QUERY_PARAMS else redact_text(v)) for k, v in pairs])


def redact_subprotocols(protocols: Iterable[str]) -> list[str]:
    """Subprotocols with the secret part of key-carrying ones masked."""
    out = []
    for p in protocols:
        prefix = next((x for x in SECRET_PROTOCOL_PREFIXES if p.startswith(x)), None)
        out.append(prefix + mask(p[len(prefix) :]) if prefix else p)
    return out


def has_secret(text: str) -> bool:
    """Does this text hold something shaped like a key (``sk-…``, ``ek_…``)?"""
    return any(m in text for m in _SECRET_MARKERS) and _SECRET_RE.search(text) is not None


def redact_text(text: str) -> str:
    """Mask anything in free text that looks like an API or ephemeral key."""
    if not any(m in text for m in _SECRET_MARKERS):
        return text
    return _SECRET_RE.sub(lambda m: mask(m.group(0)), text)


def redact_bytes(data: bytes) -> bytes:
    if not any(m.encode() in data for m in _SECRET_MARKERS):
        return data
    try:
        return redact_text(data.decode("utf-8")).encode("utf-8")
    except UnicodeDecodeError:
        return _SECRET_BYTES_RE.sub(lambda m: mask(m.group(0).decode()).encode(), data)


def url_credentials(url: str) -> list[str]:
    """The secrets a URL's userinfo carries (``https://user:token@gw``), raw and percent-decoded, longest first;
    [] if none. A user name counts from 8 characters on (a key can be the user name), so that scrubbing free text
    of them does not mangle words."""
    netloc = urlsplit(url).netloc
    if "@" not in netloc:
        return []
    userinfo = netloc.rpartition("@")[0]
    user, _, password = userinfo.partition(":")
    found = {
        part for raw in (userinfo, password, user if len(user) >= 8 else "") if raw for part in (raw, unquote(raw))
    }
    return sorted(found, key=len, reverse=True)  # longest first, so a replace never leaves a piece behind


def redact_url(url: str) -> str:
    """A URL with its userinfo masked like any credential (``https://****:****abcd@gw``); the user too, which
    can carry a key (``https://KEY@gw``)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return redact_text(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    shown = mask(unquote(user)) + (f":{mask(unquote(password))}" if colon else "")
    return redact_text(urlunsplit(parts._replace(netloc=f"{shown}@{hostport}")))
