"""The Responses API's WebSocket mode (``/v1/responses``): paths, catalogue, detection, model, secrets and ids.

Facts from the ``openai`` SDK (3.57): ``client.responses.connect()`` (and ``client.beta.responses.connect()``, the
multi-agent beta, at the same path with no marker) opens ``/responses`` under the base URL. The client sends
``ResponsesClientEvent`` (``response.create``, whose body is ``POST /v1/responses``'s plus the WebSocket-only
``stream_id``; ``response.steer``), the server ``ResponsesServerEvent`` (the streaming events, each with a
``sequence_number``). The beta adds ``response.inject`` and its ``response.inject.created``/``failed``. The catalogue
below is both, pinned to the SDK by ``tests/test_protocols.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

API = "responses"
BETA = "beta"

#: The upgrade path after any prefix (``/v1``, Azure's ``/openai/v1``, a gateway's own).
PATHS: tuple[tuple[re.Pattern[str], str | None], ...] = ((re.compile(r"(?:/.*)?/responses"), None),)

BETA_CLIENT_EVENTS = frozenset({"response.inject"})
BETA_SERVER_EVENTS = frozenset({"response.inject.created", "response.inject.failed"})

CLIENT_EVENTS: frozenset[str] = frozenset({"response.create", "response.steer", *BETA_CLIENT_EVENTS})

SERVER_EVENTS: frozenset[str] = frozenset(
    {
        "error",
        "response.audio.delta",
        "response.audio.done",
        "response.audio.transcript.delta",
        "response.audio.transcript.done",
        "response.code_interpreter_call.completed",
        "response.code_interpreter_call.in_progress",
        "response.code_interpreter_call.interpreting",
        "response.code_interpreter_call_code.delta",
        "response.code_interpreter_call_code.done",
        "response.compaction.compacting",
        "response.completed",
        "response.content_part.added",
        "response.content_part.done",
        "response.created",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.failed",
        "response.file_search_call.completed",
        "response.file_search_call.in_progress",
        "response.file_search_call.searching",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.image_generation_call.completed",
        "response.image_generation_call.generating",
        "response.image_generation_call.in_progress",
        "response.image_generation_call.partial_image",
        "response.in_progress",
        "response.incomplete",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_list_tools.completed",
        "response.mcp_list_tools.failed",
        "response.mcp_list_tools.in_progress",
        "response.output_item.added",
        "response.output_item.done",
        "response.output_text.annotation.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.queued",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_part.done",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.refusal.delta",
        "response.refusal.done",
        "response.shell_call_command.added",
        "response.shell_call_command.delta",
        "response.shell_call_command.done",
        "response.shell_call_output_content.delta",
        "response.shell_call_output_content.done",
        "response.steer.accepted",
        "response.steer.failed",
        "response.steer.pending",
        "response.web_search_call.completed",
        "response.web_search_call.in_progress",
        "response.web_search_call.searching",
        *BETA_SERVER_EVENTS,
    }
)

#: Where the model is: ``model`` of the client's ``response.create`` (the request body, on top), and
#: ``response.model`` of the server's events that carry the whole response.
MODEL_SERVER_EVENTS = frozenset(
    {
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.failed",
        "response.incomplete",
    }
)
#: Fields of a ``response.create`` body (top level) no other API's ``response.create`` has.
REQUEST_FIELDS = frozenset(
    {"model", "input", "instructions", "tools", "previous_response_id", "stream_id", "conversation", "reasoning"}
)

#: Ids: ``stream_id`` (WebSocket-only: which of the socket's concurrent responses an event belongs to),
#: ``response.id`` / ``response_id``, ``item_id``, ``previous_response_id``; ``sequence_number`` orders a stream.
ID_FIELDS = ("stream_id", "response_id", "item_id", "previous_response_id", "call_id", "sequence_number")
#: Secrets: the ``Authorization`` header, and MCP tools' ``authorization`` and ``headers`` in ``tools``.
SECRET_FIELDS = ("authorization", "headers")


def handshake_variant(
    variant: str | None, query: str, headers: Mapping[str, str], subprotocols: Sequence[str]
) -> str | None:
    """The beta connects exactly as the GA client does: nothing to tell at the handshake."""
    return variant


def refine_variant(variant: str | None, direction: str, event_type: str, event: Mapping[str, Any] | None) -> str | None:
    """The multi-agent beta, once one of its own events shows."""
    if variant is None and event_type in (BETA_CLIENT_EVENTS if direction == "client" else BETA_SERVER_EVENTS):
        return BETA
    return None


def claims(direction: str, event_type: str, event: Mapping[str, Any] | None) -> bool:
    """Is an event whose name other APIs share plainly Responses by its shape? A client ``response.create`` with
    request fields on top, or a server event of the catalogue with an integer ``sequence_number`` (Realtime's and
    Live's events have none)."""
    if event is None:
        return False
    if direction == "client":
        return (
            event_type == "response.create"
            and not isinstance(event.get("response"), Mapping)
            and any(f in event for f in REQUEST_FIELDS)
        )
    seq = event.get("sequence_number")
    return event_type in SERVER_EVENTS and isinstance(seq, int) and not isinstance(seq, bool)


def settled(variant: str | None) -> bool:
    """Settled from the handshake: a session that never uses the beta's events cannot prove it is not the beta,
    so callers need not wait (:func:`refine_variant` still names it if they keep looking)."""
    return True


def model_from_event(direction: str, event_type: str, event: Mapping[str, Any] | None) -> str | None:
    """``model`` of the client's ``response.create``; ``response.model`` of ``response.created`` and the other
    events carrying the whole response."""
    if event is None:
        return None
    if direction == "client":
        model = event.get("model") if event_type == "response.create" else None
    else:
        response = event.get("response") if event_type in MODEL_SERVER_EVENTS else None
        model = response.get("model") if isinstance(response, Mapping) else None
    return model if isinstance(model, str) and model else None


def model_from_query(query: str) -> str | None:
    """Responses names no model in the URL."""
    return None


#: Responses has no session id of its own.
SESSION_ID_EVENTS: frozenset[str] = frozenset()


def api_session_id_from_path(path: str) -> str | None:
    """Responses connections have no session of the API's own."""
    return None


def api_session_id_from_event(direction: str, event_type: str, event: Mapping[str, Any] | None) -> str | None:
    return None
