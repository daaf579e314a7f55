"""What a response, a turn or a session cost, from its recorded usage, priced by ``genai-prices``.

``genai-prices`` is a maintained price database (OpenAI's Realtime, GPT-Live and Responses models among
them) with the rules we would otherwise get wrong: audio tokens priced apart from text, cached input tokens
priced once at the cache rate (``input_tokens`` includes them; they are never added on top), GPT-Live billed
by the second. Its bundled data needs no network; :func:`price_data` says which data priced a figure.

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

    @property
    def known(self) -> bool:
        return self.total is not None

    def label(self) -> str:
        """``$0.0302``, ``$0.0302 (2 responses not priced)`` or ``cost unknown (…)``."""
        if self.total is None:
            return f"cost unknown ({self.reason})" if self.reason else "cost unknown"
        text = dollars(self.total)
        if self.partial:
            text += f" ({self.partial} not priced: {self.reason})" if self.reason else f" ({self.partial} not priced)"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "total": None if self.total is None else float(self.total),
            "input": None if self.input is None else float(self.input),
            "output": None if self.output is None else float(self.output),
            "currency": "USD",
            "model": self.model,
            "priced_as": self.priced_as,
            "price_data": price_data(),
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
    try:
        calc = extracted.calc_price(genai_request_timestamp=_moment(when))
    except (LookupError, ValueError, TypeError) as e:
        return unknown(f"model {model} has no price in {price_data()} for this usage: {e}", model)
    return Cost(calc.total_price, calc.input_price, calc.output_price, model=model, priced_as=calc.model.id)


def total(costs: Iterable[Cost]) -> Cost:
    """The sum of `costs`: the known ones added, the unknown ones counted in ``partial`` (a sum with no known
    part is unknown)."""
    known: list[Cost] = []
    reasons: list[str] = []
    partial = 0
    models: set[str] = set()
    for cost in costs:
        if cost.model:
            models.add(cost.model)
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
