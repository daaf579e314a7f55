"""The protocol layer (rtproxy.protocols): paths, detection, models and catalogues, pinned to the openai SDK."""

from __future__ import annotations

import subprocess
import sys
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.beta.beta_responses_client_event import BetaResponsesClientEvent
from openai.types.beta.beta_responses_server_event import BetaResponsesServerEvent
from openai.types.beta.realtime.realtime_client_event import RealtimeClientEvent as BetaRealtimeClientEvent
from openai.types.beta.realtime.realtime_server_event import RealtimeServerEvent as BetaRealtimeServerEvent
from openai.types.live.client_event import ClientEvent as LiveClientEvent
from openai.types.live.connect_client_event import ConnectClientEvent
from openai.types.live.connect_server_event import ConnectServerEvent
from openai.types.live.fork_client_event import ForkClientEvent
from openai.types.live.fork_server_event import ForkServerEvent
from openai.types.live.server_event import ServerEvent as LiveServerEvent
from openai.types.live.session_config import SessionConfig
from openai.types.live.session_resource import SessionResource
from openai.types.live.session_start_event import SessionStartEvent
from openai.types.live.session_started_event import SessionStartedEvent
from openai.types.realtime.realtime_client_event import RealtimeClientEvent
from openai.types.realtime.realtime_server_event import RealtimeServerEvent
from openai.types.responses.responses_client_event import ResponseCreate, ResponsesClientEvent
from openai.types.responses.responses_server_event import ResponsesServerEvent

from rtproxy.protocols import (
    UNKNOWN,
    Api,
    Kind,
    classify_handshake,
    client_event_types,
    event_types,
    model_from_event,
    model_from_handshake,
    refine,
    server_event_types,
    settled,
)

REALTIME, LIVE, RESPONSES = Api.REALTIME, Api.LIVE, Api.RESPONSES
BETA_MODEL = "gpt-4o-realtime-preview"


def sdk_types(alias: Any) -> set[str]:
    """Every `type` Literal of a discriminated union's members (walked, not listed by hand)."""
    found: set[str] = set()
    stack = [alias]
    for _ in range(10_000):
        if not stack:
            break
        t = stack.pop()
        origin = get_origin(t)
        if origin is Annotated:
            stack.append(get_args(t)[0])
        elif origin is Union:
            stack.extend(get_args(t))
        else:
            ann = t.model_fields["type"].annotation
            assert get_origin(ann) is Literal, (t, ann)
            found.update(get_args(ann))
    assert not stack
    return found


# --- the catalogues are the SDK's ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "client", "server"),
    [
        (REALTIME, [RealtimeClientEvent, BetaRealtimeClientEvent], [RealtimeServerEvent, BetaRealtimeServerEvent]),
        (
            LIVE,
            [LiveClientEvent, ConnectClientEvent, ForkClientEvent],
            [LiveServerEvent, ConnectServerEvent, ForkServerEvent],
        ),
        (RESPONSES, [ResponsesClientEvent, BetaResponsesClientEvent], [ResponsesServerEvent, BetaResponsesServerEvent]),
    ],
)
def test_catalogue_equals_sdk(api: Api, client: list[Any], server: list[Any]) -> None:
    """Each API's client and server catalogues hold exactly the event types of the SDK's unions for it."""
    sdk_client = set().union(*(sdk_types(u) for u in client))
    sdk_server = set().union(*(sdk_types(u) for u in server))
    assert set(client_event_types(api)) == sdk_client
    assert set(server_event_types(api)) == sdk_server
    assert event_types(api) == sdk_client | sdk_server


def test_unknown_api_has_no_catalogue() -> None:
    """An unknown API defines no event types."""
    assert event_types(Api.UNKNOWN) == frozenset()


@pytest.mark.parametrize(
    "modules",
    [
        "rtproxy.protocols",
        "rtproxy.conversation.realtime, rtproxy.conversation.audio, rtproxy.replay.player, rtproxy.diff",
    ],
)
def test_import_hygiene(modules: str) -> None:
    """The pure layers (protocols, conversation, the replay's script and player, diff, redact) load no web, TUI,
    CLI or database library, nor the openai SDK."""
    code = (
        f"import sys, {modules}; "
        "print(sorted(m for m in ('aiohttp','websockets','textual','click','sqlite3','openai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "[]"


def test_store_imports_nothing_from_record() -> None:
    """The store is below the recorder: it imports nothing of rtproxy.record (nor aiohttp)."""
    code = (
        "import sys, rtproxy.store; "
        "print(sorted(m for m in sys.modules if m.startswith(('rtproxy.record', 'aiohttp'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "[]"


# --- the handshake ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        ("/v1/realtime", "model=gpt-realtime", Kind(REALTIME, None)),
        ("/realtime/", "", Kind(REALTIME, None)),
        ("/openai/realtime", "api-version=2024-10-01-preview&deployment=d", Kind(REALTIME, None)),
        ("/openai/v1/realtime?model=gpt-realtime", "", Kind(REALTIME, None)),
        ("/v1/live/sessions", "", Kind(LIVE, "primary")),
        ("/live/sessions/", "", Kind(LIVE, "primary")),
        ("/gw/v1/live/sessions?x=1", "", Kind(LIVE, "primary")),
        ("/v1/live/sessions/sess_123/attach", "", Kind(LIVE, "sideband")),
        ("/v1/live/sessions/sess_123/attach/", "a=b", Kind(LIVE, "sideband")),
        ("/v1/live/sessions/sess_123/fork", "", Kind(LIVE, "fork")),
        ("/v1/responses", "", Kind(RESPONSES, None)),
        ("/openai/v1/responses/", "", Kind(RESPONSES, None)),
        ("/v1/realtime/translations", "", UNKNOWN),
        ("/v1/chat/completions", "", UNKNOWN),
        ("/", "", UNKNOWN),
        ("", "", UNKNOWN),
        ("/v1/live/sessions/a/b/attach", "", UNKNOWN),
    ],
)
def test_classify_handshake_paths(path: str, query: str, expected: Kind) -> None:
    """Each API's upgrade paths, under any prefix, with trailing slashes and queries, classify as that API."""
    assert classify_handshake(path, query) == expected


def test_realtime_beta_from_header_and_subprotocol() -> None:
    """A Realtime client asking for the beta (header or subprotocol) is the beta dialect from the handshake on."""
    assert classify_handshake("/v1/realtime", "", {"OpenAI-Beta": "realtime=v1"}) == Kind(REALTIME, "beta")
    kind = classify_handshake("/v1/realtime", "", {}, ["realtime", "openai-beta.realtime-v1"])
    assert kind == Kind(REALTIME, "beta")
    assert not settled(classify_handshake("/v1/realtime"))
    assert settled(kind)


def test_sdk_paths_as_the_sdk_opens_them() -> None:
    """The URLs the SDK itself builds for live.connect, sideband, forks and responses.connect classify right."""
    from openai import OpenAI

    client = OpenAI(api_key="sk-test-not-a-key", base_url="http://127.0.0.1:9/v1")
    urls = {
        Kind(LIVE, "primary"): client.live.connect()._prepare_url(),
        Kind(LIVE, "sideband"): client.live.sideband.connect(session_id="sess_123")._prepare_url(),
        Kind(LIVE, "fork"): client.live.forks.connect(session_id="sess_123")._prepare_url(),
        Kind(RESPONSES, None): client.responses.connect()._prepare_url(),
        Kind(REALTIME, None): client.realtime.connect(model="gpt-realtime")._prepare_url(),
    }
    for kind, url in urls.items():
        assert classify_handshake(url.path, str(url.query, "ascii")) == kind, url


# --- refinement from first events ------------------------------------------------------------------------


def live_start(model: str | None = "gpt-live-1") -> dict[str, Any]:
    if model is None:
        from openai.types.live.fork_session_start_event import ForkSessionStartEvent

        return ForkSessionStartEvent.model_validate({"type": "session.start", "session": {}}).model_dump(mode="json")
    return SessionStartEvent(
        type="session.start", session=SessionConfig(model=model, instructions="hi"), event_id="c1"
    ).model_dump(mode="json", exclude_none=True)


def live_started(model: str = "gpt-live-1") -> dict[str, Any]:
    session = SessionResource(id="sess_123", expires_at=1, model=model, status="active")
    return SessionStartedEvent(type="session.started", event_id="e1", session=session).model_dump(mode="json")


def realtime_created(dialect: str) -> dict[str, Any]:
    if dialect == "ga":
        from openai.types.realtime.session_created_event import SessionCreatedEvent

        return SessionCreatedEvent.model_validate(
            {"type": "session.created", "event_id": "e", "session": {"type": "realtime", "model": "gpt-realtime"}}
        ).model_dump(mode="json", exclude_none=True)
    from openai.types.beta.realtime.session_created_event import SessionCreatedEvent as Beta

    return Beta.model_validate(
        {
            "type": "session.created",
            "event_id": "e",
            "session": {"modalities": ["audio"], "model": BETA_MODEL},
        }
    ).model_dump(mode="json", exclude_none=True)


def responses_create(model: str = "gpt-5") -> dict[str, Any]:
    return ResponseCreate(type="response.create", model=model, input="hello", stream_id="s1").model_dump(
        mode="json", exclude_none=True
    )


def responses_created(model: str = "gpt-5") -> dict[str, Any]:
    from openai.types.responses.response import Response
    from openai.types.responses.response_created_event import ResponseCreatedEvent

    response = Response.model_validate(
        {
            "id": "resp_1",
            "created_at": 0,
            "model": model,
            "object": "response",
            "output": [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        }
    )
    return ResponseCreatedEvent(type="response.created", sequence_number=0, response=response).model_dump(mode="json")


def ev(event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return event["type"], event


def test_realtime_dialect_from_first_server_event() -> None:
    """A Realtime session of unknown dialect learns it from session.created's shape, and then is settled."""
    for dialect in ("ga", "beta"):
        kind = refine(Kind(REALTIME), "server", *ev(realtime_created(dialect)))
        assert kind == Kind(REALTIME, dialect)
        assert settled(kind)
        assert refine(kind, "server", *ev(realtime_created(dialect))) is None


def test_realtime_server_corrects_handshake_dialect() -> None:
    """A server speaking GA corrects a beta guess from the handshake; a client frame does not."""
    assert refine(Kind(REALTIME, "beta"), "server", *ev(realtime_created("ga"))) == Kind(REALTIME, "ga")
    assert refine(Kind(REALTIME, "ga"), "client", "response.text.delta", {}) is None


@pytest.mark.parametrize(
    ("direction", "event", "expected"),
    [
        ("client", live_start(), Kind(LIVE, "primary")),
        ("client", live_start(None), Kind(LIVE, "fork")),
        ("server", live_started(), Kind(LIVE, None)),
        ("server", {"type": "session.paused", "event_id": "e"}, Kind(LIVE, "sideband")),
        ("client", responses_create(), Kind(RESPONSES, None)),
        ("server", responses_created(), Kind(RESPONSES, None)),
        ("client", {"type": "response.inject", "input": []}, Kind(RESPONSES, "beta")),
        ("server", realtime_created("ga"), Kind(REALTIME, "ga")),
        ("server", realtime_created("beta"), Kind(REALTIME, "beta")),
        ("client", {"type": "input_audio_buffer.append", "audio": ""}, Kind(REALTIME, None)),
        ("client", {"type": "response.create", "response": {"instructions": "x"}}, Kind(REALTIME, None)),
    ],
)
def test_unknown_path_becomes_the_api_its_events_show(direction: str, event: dict[str, Any], expected: Kind) -> None:
    """A session on an unknown path whose first event is plainly one API's becomes that API."""
    assert refine(UNKNOWN, direction, *ev(event)) == expected


@pytest.mark.parametrize(
    "event",
    [
        {"type": "error", "error": {"message": "x"}},
        {"type": "response.create"},
        {"type": "session.update", "session": {}},
        {"type": "no.such.event"},
    ],
)
def test_ambiguous_events_teach_nothing(event: dict[str, Any]) -> None:
    """An event name several APIs share, in no shape only one uses, leaves an unknown session unknown."""
    assert refine(UNKNOWN, "client", *ev(event)) is None
    assert refine(UNKNOWN, "server", *ev(event)) is None


def test_live_and_responses_settled_from_path() -> None:
    """Live (path says the variant) and Responses are settled at the handshake; unknown never is."""
    assert settled(classify_handshake("/v1/live/sessions"))
    assert settled(classify_handshake("/v1/live/sessions/sess_1/attach"))
    assert settled(classify_handshake("/v1/responses"))
    assert not settled(UNKNOWN)
    assert refine(Kind(LIVE, "primary"), "client", *ev(live_start())) is None


def test_refine_takes_type_from_event_when_not_given() -> None:
    """With no event_type, refine reads the event's own `type`."""
    assert refine(UNKNOWN, "client", None, live_start()) == Kind(LIVE, "primary")


# --- models ----------------------------------------------------------------------------------------------


def test_models_per_api() -> None:
    """Each API's model comes from where it carries it, and nowhere else."""
    assert model_from_event(Kind(LIVE, "primary"), "client", *ev(live_start("gpt-live-1.1"))) == "gpt-live-1.1"
    assert model_from_event(Kind(LIVE, "primary"), "server", *ev(live_started("gpt-live-1"))) == "gpt-live-1"
    assert model_from_event(Kind(LIVE, "fork"), "client", *ev(live_start(None))) is None
    assert model_from_event(Kind(RESPONSES), "client", *ev(responses_create("gpt-5.1"))) == "gpt-5.1"
    assert model_from_event(Kind(RESPONSES), "server", *ev(responses_created("gpt-5.2"))) == "gpt-5.2"
    assert model_from_event(Kind(REALTIME, "ga"), "server", *ev(realtime_created("ga"))) == "gpt-realtime"
    assert model_from_event(Kind(REALTIME, "beta"), "server", *ev(realtime_created("beta"))) == BETA_MODEL
    assert model_from_event(Kind(REALTIME), "client", *ev(realtime_created("ga"))) is None
    assert model_from_event(UNKNOWN, "client", *ev(live_start())) is None


def test_model_from_handshake() -> None:
    """Realtime names its model in the query (model= or Azure's deployment=); Live and Responses do not."""
    assert model_from_handshake(Kind(REALTIME), "model=gpt-realtime") == "gpt-realtime"
    assert model_from_handshake(Kind(REALTIME), "api-version=x&deployment=my-dep") == "my-dep"
    assert model_from_handshake(Kind(REALTIME), "") is None
    assert model_from_handshake(Kind(LIVE, "primary"), "model=gpt-live-1") is None
    assert model_from_handshake(Kind(RESPONSES), "model=gpt-5") is None


# --- junk never raises -----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
type_names = st.sampled_from(sorted(event_types(REALTIME) | event_types(LIVE) | event_types(RESPONSES)))
events = st.one_of(
    json_values,
    st.builds(lambda t, rest: {**(rest if isinstance(rest, dict) else {}), "type": t}, type_names, json_values),
    st.builds(
        lambda t, s: {"type": t, "session": s, "response": s, "model": s, "sequence_number": s},
        type_names,
        json_values,
    ),
)
kinds = st.builds(Kind, st.sampled_from(list(Api)), st.sampled_from([None, "beta", "ga", "primary", "x"]))


@settings(max_examples=300, deadline=None)
@given(
    kind=kinds, direction=st.sampled_from(["client", "server", "x", None]), etype=json_values | type_names, event=events
)
def test_functions_never_raise_on_junk(kind: Kind, direction: Any, etype: Any, event: Any) -> None:
    """refine, model_from_event and classify_handshake accept any JSON (any type, any shape) without raising."""
    result = refine(kind, direction, etype, event)
    assert result is None or isinstance(result, Kind)
    model = model_from_event(kind, direction, etype, event)
    assert model is None or isinstance(model, str)
    assert isinstance(classify_handshake(etype, event, event, event), Kind)


def test_huge_and_hostile_inputs() -> None:
    """A huge path, a huge type and a mapping that raises on access are handled without raising."""

    class Hostile(dict[str, Any]):
        def get(self, *a: Any, **k: Any) -> Any:
            raise RuntimeError("boom")

    assert classify_handshake("/" + "a/" * 100_000 + "realtime") == UNKNOWN
    assert refine(UNKNOWN, "client", "x" * 1_000_000, {}) is None
    assert refine(Kind(REALTIME), "server", "session.created", Hostile(type="session.created")) is None
    assert model_from_event(Kind(LIVE, "primary"), "client", "session.start", Hostile()) is None
