"""Cost from usage, by unit, against hand-computed prices (genai-prices' bundled data; no network).

The prices the hand computations use are read from the price data itself (per-million-token and per-hour
rates of the model), so the arithmetic is checked, not a copy of today's price list.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from rtproxy.conversation.cost import Cost, dollars, price_data, price_usage, total

WHEN = "2026-11-30T12:00:00Z"
RECORDINGS = Path(__file__).resolve().parent.parent / "recordings"


def rates(model: str) -> dict[str, Decimal]:
    """The model's rates in the bundled data (per token / per second), for the hand computations."""
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    provider, info = snapshot.find_provider_model(model, None, "openai", None)
    prices = info.get_prices(__import__("datetime").datetime.fromisoformat(WHEN.replace("Z", "+00:00")))
    out: dict[str, Decimal] = {}
    for name in (
        "input_mtok",
        "cache_read_mtok",
        "output_mtok",
        "input_audio_mtok",
        "cache_audio_read_mtok",
        "output_audio_mtok",
        "input_image_mtok",
        "cache_image_read_mtok",
    ):
        value = getattr(prices, name, None)
        if isinstance(value, Decimal):
            out[name] = value / Decimal(1_000_000)
    hours = getattr(prices, "audio_hours", None)
    if isinstance(hours, Decimal):
        out["second"] = hours / Decimal(3600)
    return out


def realtime_usage(
    text: int, audio: int, image: int, cached_text: int, cached_audio: int, out_text: int, out_audio: int
):  # noqa: ANN201, E501, PLR0913
    cached = cached_text + cached_audio
    return {
        "total_tokens": text + audio + image + out_text + out_audio,
        "input_tokens": text + audio + image,
        "output_tokens": out_text + out_audio,
        "input_token_details": {
            "text_tokens": text,
            "audio_tokens": audio,
            "image_tokens": image,
            "cached_tokens": cached,
            "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": cached_audio, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
    }


@pytest.mark.parametrize("model", ["gpt-realtime", "gpt-realtime-mini"])
def test_each_realtime_unit_is_priced_at_its_own_rate(model: str) -> None:
    """Text, audio and image input, cached text and cached audio input, text and audio output: each unit at its
    rate, cached tokens at the cache rate only (they are part of input_tokens: never priced twice)."""
    r = rates(model)
    usage = realtime_usage(text=200, audio=800, image=40, cached_text=100, cached_audio=400, out_text=50, out_audio=250)
    cost = price_usage("realtime", usage, model, when=WHEN)
    expected_in = (
        (200 - 100) * r["input_mtok"]
        + (800 - 400) * r["input_audio_mtok"]
        + 40 * r["input_image_mtok"]
        + 100 * r["cache_read_mtok"]
        + 400 * r["cache_audio_read_mtok"]
    )
    expected_out = 50 * r["output_mtok"] + 250 * r["output_audio_mtok"]
    assert cost.input == expected_in
    assert cost.output == expected_out
    assert cost.total == expected_in + expected_out
    assert cost.priced_as == model


def test_a_cached_token_is_never_priced_twice() -> None:
    """Moving tokens from uncached to cached lowers the price by exactly the rate difference."""
    r = rates("gpt-realtime")
    base = price_usage("realtime", realtime_usage(0, 1000, 0, 0, 0, 0, 0), "gpt-realtime", when=WHEN)
    cached = price_usage("realtime", realtime_usage(0, 1000, 0, 0, 600, 0, 0), "gpt-realtime", when=WHEN)
    assert base.total is not None and cached.total is not None
    assert base.total - cached.total == 600 * (r["input_audio_mtok"] - r["cache_audio_read_mtok"])
    assert cached.total == 400 * r["input_audio_mtok"] + 600 * r["cache_audio_read_mtok"]


def test_live_is_billed_by_the_second() -> None:
    r = rates("gpt-live-1")
    cost = price_usage("live", {"seconds": 754, "active_seconds": 700, "paused_seconds": 54}, "gpt-live-1", when=WHEN)
    assert cost.total == 754 * r["second"]
    assert cost.input == 0 and cost.output == 0


def test_responses_usage_with_cached_and_reasoning_tokens() -> None:
    model = "gpt-4.1"
    r = rates(model)
    usage = {
        "input_tokens": 5000,
        "input_tokens_details": {"cached_tokens": 3000},
        "output_tokens": 700,
        "output_tokens_details": {"reasoning_tokens": 200},
        "total_tokens": 5700,
    }
    cost = price_usage("responses", usage, model, when=WHEN)
    assert cost.total == 2000 * r["input_mtok"] + 3000 * r["cache_read_mtok"] + 700 * r["output_mtok"]


@pytest.mark.parametrize(
    ("api", "usage", "model", "reason"),
    [
        ("realtime", realtime_usage(1, 1, 0, 0, 0, 1, 1), "gpt-made-up-9", "model gpt-made-up-9 not in price data"),
        ("realtime", realtime_usage(1, 1, 0, 0, 0, 1, 1), None, "no model recorded"),
        ("realtime", None, "gpt-realtime", "no usage recorded"),
        ("live", {"seconds": "many"}, "gpt-live-1", "usage not understood"),
        ("unknown", {"x": 1}, "gpt-realtime", "does not price unknown sessions"),
    ],
)
def test_what_cannot_be_priced_says_why_and_never_guesses(
    api: str, usage: object, model: str | None, reason: str
) -> None:
    cost = price_usage(api, usage, model, when=WHEN)
    assert cost.total is None and not cost.known
    assert reason in (cost.reason or "")
    assert cost.label().startswith("cost unknown (")
    if "not in price data" in reason:
        assert price_data() in cost.label()


def test_a_sum_adds_what_is_known_and_counts_what_is_not() -> None:
    a = Cost(Decimal("0.01"), Decimal("0.004"), Decimal("0.006"), model="gpt-realtime", priced_as="gpt-realtime")
    b = Cost(Decimal("0.02"), Decimal("0.01"), Decimal("0.01"), model="gpt-realtime", priced_as="gpt-realtime")
    c = Cost(None, model="gpt-realtime", reason="no usage recorded")
    s = total([a, b, c])
    assert s.total == Decimal("0.03") and s.input == Decimal("0.014") and s.output == Decimal("0.016")
    assert s.partial == 1 and s.reason == "no usage recorded"
    assert s.label() == "$0.0300 (1 not priced: no usage recorded)"
    assert total([c]).total is None
    assert total([]).label() == "cost unknown (nothing to price)"


def test_labels_and_json() -> None:
    assert dollars(Decimal("12.346")) == "$12.35"
    assert dollars(Decimal("0.0302")) == "$0.0302"
    assert dollars(Decimal(0)) == "$0.00"
    cost = price_usage("live", {"seconds": 60}, "gpt-live-1", when=WHEN)
    data = cost.to_json()
    assert data["currency"] == "USD" and data["price_data"].startswith("genai-prices ")
    assert data["total"] == pytest.approx(float(cost.total or 0))


def test_importing_the_module_loads_no_price_data() -> None:
    """The price database loads on first use: importing rtproxy.conversation.cost costs nothing."""
    import subprocess
    import sys

    code = "import sys, rtproxy.conversation.cost; print('genai_prices' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "False"


def test_a_realtime_session_costs_the_sum_of_its_responses() -> None:
    """recordings/function-call-ga.jsonl: two response.done, each priced from its usage at the session's model."""
    from rtproxy.conversation.cost import session_cost
    from rtproxy.recording import read_recording

    rec = read_recording(RECORDINGS / "function-call-ga.jsonl")
    events = [f.event for f in rec.frames if f.direction.value == "server" and f.event]
    done = [e for e in events if e["type"] == "response.done"]
    cost = session_cost("realtime", rec.session.get("model"), events, when=WHEN)
    assert len(cost.parts) == len(done) == 2
    each = [price_usage("realtime", e["response"]["usage"], rec.session["model"], when=WHEN) for e in done]
    # the scripted server, like the beta dialect, reports cached tokens without their text/audio split: bounds
    assert all(c.bounded for c in each)
    assert cost.total.low == sum(c.low for c in each if c.low is not None)
    assert cost.total.high == sum(c.high for c in each if c.high is not None)
    assert cost.total.partial == 0 and cost.label().endswith("(cached tokens not split into text and audio)")


def test_a_live_session_costs_its_last_seconds_plus_its_backend_responses() -> None:
    """Seconds are cumulative (the last usage is the session's, never a sum); a delegation's backend response is
    priced at its own model."""
    from rtproxy.conversation.cost import session_cost

    r = rates("gpt-live-1")
    backend = {
        "type": "response.completed",
        "response": {
            "id": "resp_1",
            "model": "gpt-4.1",
            "usage": {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 10},
        },
    }
    events = [
        {"type": "session.usage.updated", "usage": {"seconds": 30}},
        {"type": "response.event", "event": backend},
        {"type": "session.usage.updated", "usage": {"seconds": 60}},
        {"type": "session.closed", "usage": {"seconds": 61}},
    ]
    cost = session_cost("live", "gpt-live-1", events, when=WHEN)
    b = rates("gpt-4.1")
    assert [what for what, _ in cost.parts] == ["session seconds", "response resp_1"]
    assert cost.total.total == 61 * r["second"] + 100 * b["input_mtok"] + 10 * b["output_mtok"]
    assert cost.to_json()["parts"][1]["priced_as"] == "gpt-4.1"


def test_cached_tokens_not_split_into_text_and_audio_give_bounds_not_a_guess() -> None:
    """120 input tokens (100 text, 20 audio), 64 of them cached with no split: the dearest reading caches as
    much text as can be (leaving audio uncached), the cheapest as much audio; the two bounds, hand-computed."""
    r = rates("gpt-realtime")
    usage = {
        "total_tokens": 187,
        "input_tokens": 120,
        "output_tokens": 67,
        "input_token_details": {"text_tokens": 100, "audio_tokens": 20, "cached_tokens": 64},
        "output_token_details": {"text_tokens": 17, "audio_tokens": 50},
    }
    cost = price_usage("realtime", usage, "gpt-realtime", when=WHEN)
    out = 17 * r["output_mtok"] + 50 * r["output_audio_mtok"]
    cheap = (100 - 44) * r["input_mtok"] + 44 * r["cache_read_mtok"] + 20 * r["cache_audio_read_mtok"] + out
    dear = (100 - 64) * r["input_mtok"] + 64 * r["cache_read_mtok"] + 20 * r["input_audio_mtok"] + out
    assert cost.total is None and cost.bounded
    assert (cost.low, cost.high) == (cheap, dear)
    assert cost.label() == f"{dollars(cheap)} to {dollars(dear)} (cached tokens not split into text and audio)"


def test_sessions_show_and_diff_print_the_cost(tmp_path: Path) -> None:
    """Real subprocesses on a real database: `sessions` has a COST column and `--json` a cost; `show` prices
    each response and the session and names the price data; `show --json` has the same figures; `diff` puts
    the two costs side by side."""
    import subprocess

    import orjson

    from rtproxy.conversation.cost import session_cost
    from rtproxy.recording import read_recording
    from tests.conftest import rtproxy_exe

    db = str(tmp_path / "c.db")
    live_path = RECORDINGS / "live-voice-delegation.jsonl"

    def run(*args: str) -> str:
        out = subprocess.run([*rtproxy_exe(), *args], capture_output=True, text=True, timeout=60)
        assert out.returncode in (0, 1), out.stderr
        return out.stdout

    run("import", str(live_path), "--db", db)
    rec = read_recording(live_path)
    events = [f.event for f in rec.frames if f.direction.value == "server" and f.event]
    expected = session_cost("live", rec.session.get("model"), events, when=rec.session.get("started_at")).total
    assert expected.total is not None and expected.total > 0
    table = run("sessions", "--db", db)
    assert "COST" in table.splitlines()[0] and dollars(expected.total) in table
    (row,) = orjson.loads(run("sessions", "--db", db, "--json"))
    assert row["cost"]["total"] == pytest.approx(float(expected.total))
    shown = run("show", "latest", "--db", db)
    assert f"cost {dollars(expected.total)} · priced by {price_data()}" in shown
    data = orjson.loads(run("show", "latest", "--db", db, "--json"))
    assert data["cost"]["total"] == pytest.approx(float(expected.total))
    assert [p["what"] for p in data["cost"]["parts"]][0] == "session seconds"
    diff = run("diff", str(RECORDINGS / "same-conversation-realtime.jsonl"), str(live_path))
    (line,) = [x for x in diff.splitlines() if x.strip().startswith("cost ")]
    assert dollars(expected.total) in line
