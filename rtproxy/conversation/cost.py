"""What a response, a turn or a session cost, from its recorded usage, priced by ``genai-prices``.

``genai-prices`` is a maintained price database (OpenAI's Realtime, GPT-Live and Responses models among
them) with the rules we would otherwise get wrong: audio tokens priced apart from text, cached input tokens
priced once at the cache rate (``input_tokens`` includes them; they are never added on top), GPT-Live billed
by the second. When a server does not say how many cached tokens were audio, the cost is the two bounds,
never one guess between them. Its bundled data needs no network; :func:`price_data` says which data priced a figure.

A model the data does not know, or a usage the API did not send, is a :class:`Cost` with no total and a
reason, never a guess. Pure (no I/O); ``genai_prices`` is imported on first use, so importing this module
costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any

#: How each API's usage is read: the ``genai-prices`` extractor ("API flavor") and where it finds the usage.
#: Realtime's is ``response.usage`` of ``response.done``; Responses' the response's ``usage``; GPT-Live's the
#: session's cumulative ``usage`` (``seconds``), whose last value is the session's, never a sum.
FLAVORS: Mapping[str, str] = {"realtime": "realtime", "responses": "responses", "live": "live"}


@cache
def price_data() -> str:
    """Which price data prices here, e.g. ``genai-prices 0.2.3 (bundled data)``."""
    import genai_prices
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    when = f"updated {snapshot.timestamp:%Y-%m-%d}" if snapshot.from_auto_update else "bundled data"
    return f"genai-prices {genai_prices.__version__} ({when})"


@dataclass(frozen=True, slots=True)
class Cost:
    """A price in US dollars, split into input and output; ``total`` None means unknown, ``reason`` says why.

    ``partial`` counts the parts of a sum that could not be priced (their reasons in ``reason``).
    """

    total: Decimal | None
    input: Decimal | None = None
    output: Decimal | None = None
    model: str | None = None  # as the session named it
    priced_as: str | None = None  # the price data's model id
    reason: str | None = None
    partial: int = 0
    low: Decimal | None = None  # bounds, when the usage leaves the price open (cached tokens not split)
    high: Decimal | None = None

    @property
    def known(self) -> bool:
        return self.total is not None

    @property
    def bounded(self) -> bool:
        return self.total is None and self.low is not None and self.high is not None

    def label(self) -> str:
        """``$0.0302``, ``$0.0302 (2 responses not priced)``, ``$0.0010 to $0.0014 (…)`` or ``cost unknown (…)``."""
        if self.total is None:
            if self.low is not None and self.high is not None:
                return f"{dollars(self.low)} to {dollars(self.high)} ({self.reason})"
            return f"cost unknown ({self.reason})" if self.reason else "cost unknown"
        text = dollars(self.total)
        if self.partial:
            text += f" ({self.partial} not priced: {self.reason})" if self.reason else f" ({self.partial} not priced)"
        return text

    def brief(self) -> str:
        """For a table cell: ``$0.0302``, ``$0.0302+`` (some parts not priced), ``≤$0.0043`` (bounded: at most
        the upper bound, a true statement and no guess) or ``?`` (the label says why)."""
        if self.total is not None:
            return dollars(self.total) + ("+" if self.partial else "")
        if self.high is not None:
            return f"≤{dollars(self.high)}"
        return "?"

    def to_json(self) -> dict[str, Any]:
        return {
            "total": None if self.total is None else float(self.total),
            "input": None if self.input is None else float(self.input),
            "output": None if self.output is None else float(self.output),
            "currency": "USD",
            "model": self.model,
            "priced_as": self.priced_as,
            "price_data": price_data(),
            "low": None if self.low is None else float(self.low),
            "high": None if self.high is None else float(self.high),
            "reason": self.reason,
            "partial": self.partial,
        }


def dollars(value: Decimal) -> str:
    """Four significant decimals for cents and below, two for dollars: ``$0.0302``, ``$0.0004``, ``$12.34``."""
    if value >= 1:
        return f"${value:,.2f}"
    if value == 0:
        return "$0.00"
    return f"${value:.4f}" if value >= Decimal("0.0001") else f"${value:.2e}"


def unknown(reason: str, model: str | None = None) -> Cost:
    return Cost(None, model=model, reason=reason)


def price_usage(api: str, usage: Any, model: str | None, *, when: datetime | str | None = None) -> Cost:
    """The cost of one usage record of `api` (``realtime``: a ``response.done`` response's ``usage``;
    ``responses``: a response's ``usage``; ``live``: a session usage with ``seconds``) for `model`, at the
    prices in force `when` (a datetime or an ISO time; None: now)."""
    flavor = FLAVORS.get(api)
    if flavor is None:
        return unknown(f"rtproxy does not price {api} sessions", model)
    if not isinstance(model, str) or not model:
        return unknown("no model recorded", None)
    if not isinstance(usage, Mapping) or not usage:
        return unknown("no usage recorded", model)
    from genai_prices import extract_usage

    data: dict[str, Any] = {"model": model}
    if api == "realtime":
        data["response"] = {"usage": usage}
    else:
        data["usage"] = usage
    try:
        extracted = extract_usage(data, provider_id="openai", api_flavor=flavor)
    except LookupError:
        return unknown(f"model {model} not in price data {price_data()}", model)
    except (ValueError, TypeError) as e:  # a usage of a shape the extractor refuses (missing or non-numeric)
        return unknown(f"usage not understood: {e}", model)
    if api == "realtime" and _unsplit_cache(usage):
        return _bounds(extracted, usage, model, when)
    try:
        calc = extracted.calc_price(genai_request_timestamp=_moment(when))
    except (LookupError, ValueError, TypeError) as e:
        return unknown(f"model {model} has no price in {price_data()} for this usage: {e}", model)
    return Cost(calc.total_price, calc.input_price, calc.output_price, model=model, priced_as=calc.model.id)


def _unsplit_cache(usage: Mapping[str, Any]) -> bool:
    """Cached input tokens reported without saying how many were text and how many audio (the beta dialect,
    and older GA servers), while both kinds were sent: the price is open between two bounds."""
    details = usage.get("input_token_details")
    if not isinstance(details, Mapping) or isinstance(details.get("cached_tokens_details"), Mapping):
        return False
    cached = details.get("cached_tokens")
    return (
        isinstance(cached, int)
        and cached > 0
        and bool(details.get("text_tokens"))
        and bool(details.get("audio_tokens"))
    )


def _bounds(extracted: Any, usage: Mapping[str, Any], model: str, when: datetime | str | None) -> Cost:
    """The cheapest and dearest reading of cached tokens not split into text and audio: as many as can be of
    the dearer kind cached, then of the cheaper; never one price picked between them."""
    details = usage["input_token_details"]
    cached, text, audio = int(details["cached_tokens"]), int(details["text_tokens"]), int(details["audio_tokens"])
    prices: list[Any] = []
    for audio_first in (True, False):
        cached_audio = min(cached, audio) if audio_first else max(0, cached - text)
        extracted.usage.cache_audio_read_tokens = cached_audio
        extracted.usage.cache_text_read_tokens = cached - cached_audio
        try:
            prices.append(extracted.calc_price(genai_request_timestamp=_moment(when)))
        except (LookupError, ValueError, TypeError) as e:
            return unknown(f"model {model} has no price in {price_data()} for this usage: {e}", model)
    low, high = sorted(prices, key=lambda c: c.total_price)
    reason = "cached tokens not split into text and audio"
    if low.total_price == high.total_price:
        return Cost(low.total_price, low.input_price, low.output_price, model=model, priced_as=low.model.id)
    return Cost(None, model=model, priced_as=low.model.id, reason=reason, low=low.total_price, high=high.total_price)


def total(costs: Iterable[Cost]) -> Cost:
    """The sum of `costs`: the known ones added, the unknown ones counted in ``partial`` (a sum with no known
    part is unknown)."""
    known: list[Cost] = []
    reasons: list[str] = []
    partial = 0
    models: set[str] = set()
    low = high = Decimal(0)
    bounded = False
    for cost in costs:
        if cost.model:
            models.add(cost.model)
        if cost.bounded:
            bounded = True
            low += cost.low or Decimal(0)
            high += cost.high or Decimal(0)
            if cost.reason and cost.reason not in reasons:
                reasons.append(cost.reason)
            continue
        if cost.total is None:
            partial += cost.partial + 1
            if cost.reason and cost.reason not in reasons:
                reasons.append(cost.reason)
        else:
            known.append(cost)
            partial += cost.partial
            if cost.reason and cost.reason not in reasons:
                reasons.append(cost.reason)
    model = models.pop() if len(models) == 1 else None
    reason = "; ".join(reasons) or None
    exact = sum((c.total for c in known if c.total is not None), Decimal(0))
    if bounded:
        return Cost(None, model=model, reason=reason, partial=partial, low=low + exact, high=high + exact)
    if not known:
        return Cost(None, model=model, reason=reason or "nothing to price")
    return Cost(
        sum((c.total for c in known if c.total is not None), Decimal(0)),
        sum((c.input or Decimal(0) for c in known), Decimal(0)),
        sum((c.output or Decimal(0) for c in known), Decimal(0)),
        model=model,
        priced_as=known[0].priced_as if len({c.priced_as for c in known}) == 1 else None,
        reason=reason,
        partial=partial,
    )


def _moment(when: datetime | str | None) -> datetime | None:
    if when is None or isinstance(when, datetime):
        return when if when is None or when.tzinfo else when.replace(tzinfo=UTC)
    try:
        moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- a session's cost, from the events that carry usage ---------------------------------------------------

#: The server events that carry each API's usage. GPT-Live's backend responses (a delegation's Responses
#: model, billed apart at its own prices) arrive inside ``response.event``.
USAGE_EVENTS: Mapping[str, frozenset[str]] = {
    "realtime": frozenset({"response.done"}),
    "responses": frozenset({"response.completed", "response.failed", "response.incomplete"}),
    "live": frozenset({"session.usage.updated", "session.closed", "response.event"}),
}
_RESPONSE_ENDS = USAGE_EVENTS["responses"]


@dataclass(frozen=True, slots=True)
class SessionCost:
    """A session's cost: its parts (one per response, or Live's seconds and each backend response), and their
    sum."""

    total: Cost
    parts: tuple[tuple[str, Cost], ...] = ()

    def label(self) -> str:
        return self.total.label()

    def to_json(self) -> dict[str, Any]:
        return {**self.total.to_json(), "parts": [{"what": what, **cost.to_json()} for what, cost in self.parts]}


def session_cost(
    api: str | None, model: str | None, events: Iterable[Mapping[str, Any]], *, when: datetime | str | None = None
) -> SessionCost:
    """The cost of a session of `api` whose `model` is the session's, from its server `events` (all of them, or
    just those of :data:`USAGE_EVENTS`), at the prices in force `when` (the session's start)."""
    api = api or "realtime"
    if api not in FLAVORS:
        return SessionCost(unknown(f"rtproxy does not price {api} sessions", model))
    wanted = USAGE_EVENTS[api]
    parts: list[tuple[str, Cost]] = []
    live_usage: Mapping[str, Any] | None = None
    for event in events:
        kind = event.get("type")
        if kind not in wanted:
            continue
        if api == "live":
            if kind == "response.event":
                inner = event.get("event")
                if isinstance(inner, Mapping) and inner.get("type") in _RESPONSE_ENDS:
                    parts.append(_response_part(inner, None, when))
            elif isinstance(event.get("usage"), Mapping):
                live_usage = event["usage"]  # cumulative: the last one is the session's
            continue
        if api == "realtime":
            response = event.get("response")
            rid = response.get("id") if isinstance(response, Mapping) else None
            usage = response.get("usage") if isinstance(response, Mapping) else None
            parts.append((f"response {rid or '?'}", price_usage("realtime", usage, model, when=when)))
        else:
            parts.append(_response_part(event, model, when))
    if api == "live":
        parts.insert(0, ("session seconds", price_usage("live", live_usage, model, when=when)))
    return SessionCost(total(cost for _, cost in parts), tuple(parts))


def _response_part(event: Mapping[str, Any], model: str | None, when: datetime | str | None) -> tuple[str, Cost]:
    """A Responses response's part of the cost, at its own model (the session's when it names none)."""
    response = event.get("response")
    if not isinstance(response, Mapping):
        return ("response ?", unknown("no usage recorded", model))
    own = response.get("model")
    rid = response.get("id")
    return (f"response {rid or '?'}", price_usage("responses", response.get("usage"), own or model, when=when))
