"""Content redaction: a recording made shareable, its shape intact.

What people said and what the model answered is replaced by placeholders of
the same shape, so a redacted recording still imports, reassembles, shows
and replays like the original:

* text, transcripts, instructions and tool descriptions: every letter and digit becomes ``x``
  (spaces and punctuation kept, so the length and the word shape stay);
* function arguments and outputs (JSON): string values masked the same way,
  numbers' digits become ``1``, keys and structure kept, still valid JSON;
  streamed argument deltas are masked by the same state machine as the
  final arguments, so the deltas still add up to the ``done`` event;
* audio (appends, deltas, audio content parts): silence of exactly the same
  decoded length in the session's format: PCM16 zeros, G.711 μ-law ``0xFF``,
  A-law ``0xD5``;
* a text frame that is not a JSON object: masked as text; a binary frame:
  zeros of the same length.

Ids, types, times, indices, usage and the order and number of frames are
kept. Pure: :class:`Redactor` is fed frames in order (``feed_frame``) and
returns them redacted; nothing here does I/O.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from .protocols.formats import PCM16, AudioFormat, audio_format, decode_b64, session_audio_formats
from .protocols.wire import CLIENT, Direction, Frame, parse_event

#: The byte that encodes silence in each format (PCM16 silence is two zero bytes).
SILENCE_BYTE = {"pcm16": 0x00, "g711_ulaw": 0xFF, "g711_alaw": 0xD5}

AUDIO_DELTAS = frozenset({"response.audio.delta", "response.output_audio.delta"})
TEXT_DELTAS = frozenset(
    {
        "response.text.delta",
        "response.output_text.delta",
        "response.audio_transcript.delta",
        "response.output_audio_transcript.delta",
        "conversation.item.input_audio_transcription.delta",
        "response.reasoning_summary_text.delta",  # the Responses stream's
        "response.reasoning_text.delta",
        "response.refusal.delta",
    }
)
#: Done events and the field holding the whole text.
TEXT_DONE = {
    "response.text.done": "text",
    "response.output_text.done": "text",
    "response.audio_transcript.done": "transcript",
    "response.output_audio_transcript.done": "transcript",
    "conversation.item.input_audio_transcription.completed": "transcript",
    "conversation.item.input_audio_transcription.segment": "text",
    "response.reasoning_summary_text.done": "text",
    "response.reasoning_text.done": "text",
    "response.refusal.done": "refusal",
}
#: Responses streams: tool input streamed as JSON (MCP arguments) or as free text (a custom tool's input).
JSON_DELTAS = frozenset({"response.function_call_arguments.delta", "response.mcp_call_arguments.delta"})
JSON_DONES = frozenset({"response.function_call_arguments.done", "response.mcp_call_arguments.done"})
#: Events carrying a whole ``response`` object (Realtime's and the Responses stream's).
RESPONSE_EVENTS = frozenset(
    {
        "response.create",
        "response.created",
        "response.done",
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.failed",
        "response.incomplete",
    }
)
SESSION_EVENTS = frozenset(
    {
        "session.update",
        "session.created",
        "session.updated",
        "transcription_session.update",
        "transcription_session.updated",
    }
)
ITEM_EVENTS = frozenset(
    {
        "conversation.item.create",
        "conversation.item.created",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.retrieved",
        "response.output_item.added",
        "response.output_item.done",
    }
)
#: Content part fields that hold words.
PART_TEXT = ("text", "transcript", "refusal")


#: GPT-Live: text the client appends (instructions, commentary, thinking) and the transcripts of both speakers.
LIVE_CONTENT = frozenset({"session.instructions.append", "session.commentary.append", "session.thinking.append"})
LIVE_TRANSCRIPTS = frozenset({"session.input_transcript.delta", "session.output_transcript.delta"})
LIVE_SESSION_EVENTS = frozenset({"session.start", "session.started"})


def mask_text(text: str) -> str:
    """Every letter and digit becomes ``x``; whitespace and punctuation stay."""
    return "".join("x" if c.isalnum() else c for c in text)


def silence(n_bytes: int, fmt: AudioFormat) -> bytes:
    return bytes([SILENCE_BYTE.get(fmt.encoding, 0)]) * n_bytes


class JsonMask:
    """Masks JSON text fed in any pieces: string values → ``x…``, digits → ``1``.

    Keys, punctuation, ``true``/``false``/``null`` and escapes keep their
    place (``\\uXXXX`` becomes ``\\u0078``), so valid JSON stays valid and
    the masked pieces of a stream join into the masked whole.
    """

    _KEEP_BARE = frozenset("truefalsnE+-.")

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.in_string = False
        self.is_key = False
        self.expect_key = False
        self.escape = 0  # 1 just after a backslash; 2..5 inside \\uXXXX

    def feed(self, text: str) -> str:
        out: list[str] = []
        for c in text:
            out.append(self._string(c) if self.in_string else self._bare(c))
        return "".join(out)

    def _string(self, c: str) -> str:
        if self.escape == 1:
            self.escape = 2 if c == "u" else 0
            return c
        if self.escape:
            replacement = "0078"[self.escape - 2]
            self.escape = 0 if self.escape == 5 else self.escape + 1
            return c if self.is_key else replacement
        if c == "\\":
            self.escape = 1
            return c
        if c == '"':
            self.in_string = False
            return c
        return c if self.is_key or not c.isalnum() else "x"

    def _bare(self, c: str) -> str:
        if c == '"':
            self.in_string = True
            self.is_key = self.expect_key and bool(self.stack) and self.stack[-1] == "{"
            return c
        if c in "{[":
            self.stack.append(c)
            self.expect_key = c == "{"
        elif c in "}]":
            if self.stack:
                self.stack.pop()
            self.expect_key = False
        elif c == ",":
            self.expect_key = bool(self.stack) and self.stack[-1] == "{"
        elif c == ":":
            self.expect_key = False
        elif c.isdigit():
            return "1"
        elif c.isalnum() and c not in self._KEEP_BARE:
            return "x"
        return c


def mask_json_text(text: str) -> str:
    """A whole JSON document masked by :class:`JsonMask`; plain text masked as text."""
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return mask_text(text)
    return JsonMask().feed(text)


@dataclass
class RedactionSummary:
    """What a redaction changed, for the command line to print."""

    frames: int = 0
    changed: int = 0
    texts: int = 0
    instructions: int = 0
    arguments: int = 0
    audio_chunks: int = 0
    audio_ms: float = 0.0
    other_frames: int = 0
    formats: set[str] = field(default_factory=set)

    def describe(self) -> str:
        parts = [f"{self.changed} of {self.frames} frames changed"]
        counted = (
            (self.instructions, "instructions"),
            (self.texts, "text/transcript fields"),
            (self.arguments, "function arguments/outputs"),
            (self.other_frames, "non-event frames"),
        )
        for n, what in counted:
            if n:
                parts.append(f"{n} {what}")
        if self.audio_chunks:
            fmts = "/".join(sorted(self.formats))
            parts.append(f"{self.audio_chunks} audio chunks ({self.audio_ms / 1000:.1f} s of {fmts}) silenced")
        return ", ".join(parts)


class Redactor:
    """Feed a session's frames in order; each comes back with its content redacted."""

    def __init__(self) -> None:
        self.summary = RedactionSummary()
        self.input_format: AudioFormat = PCM16
        self.output_format: AudioFormat = PCM16
        self._args: dict[str, JsonMask] = {}  # streamed arguments, per item

    def feed_frame(self, frame: Frame) -> Frame:
        self.summary.frames += 1
        data = frame.data
        if isinstance(data, bytes):
            new: str | bytes = bytes(len(data))
            self.summary.other_frames += bool(data)
        else:
            event = parse_event(data)
            if event is None:
                new = mask_text(data)
                self.summary.other_frames += new != data
            else:
                new = orjson.dumps(event).decode() if self._event(event, frame.direction) else data
        if new == data:
            return frame
        self.summary.changed += 1
        return Frame(frame.seq, frame.t, frame.direction, new)

    # -- events (each returns whether it changed anything) --

    def _event(self, ev: dict[str, Any], direction: Direction) -> bool:
        kind = ev.get("type")
        changed = False
        if (kind in SESSION_EVENTS or kind in LIVE_SESSION_EVENTS) and isinstance(ev.get("session"), dict):
            changed = self._session(ev["session"])
        elif kind == "session.input_audio.append":  # GPT-Live
            changed = self._audio(ev, "audio", self.input_format)
        elif kind == "session.output_audio.delta":
            changed = self._audio(ev, "delta", self.output_format)
        elif kind in LIVE_TRANSCRIPTS:
            changed = self._text(ev, "delta")
        elif kind in LIVE_CONTENT:
            changed = self._text(ev, "content")
        elif kind == "response.event" and isinstance(ev.get("event"), dict):  # a delegation's Responses events
            changed = self._event(ev["event"], direction)
        elif kind == "response.item.create" and isinstance(ev.get("item"), dict):  # the client's tool output
            changed = self._item(ev["item"], direction)
        elif kind == "input_audio_buffer.append":
            changed = self._audio(ev, "audio", self.input_format)
        elif kind in AUDIO_DELTAS:
            changed = self._audio(ev, "delta", self.output_format)
        elif kind in TEXT_DELTAS:
            changed = self._text(ev, "delta")
        elif kind in TEXT_DONE:
            changed = self._text(ev, TEXT_DONE[kind])
        elif kind in JSON_DELTAS and isinstance(ev.get("delta"), str):
            mask = self._args.setdefault(str(ev.get("item_id") or ev.get("call_id")), JsonMask())
            changed = self._set(ev, "delta", mask.feed(ev["delta"]), "arguments")
        elif kind in JSON_DONES and isinstance(ev.get("arguments"), str):
            self._args.pop(str(ev.get("item_id") or ev.get("call_id")), None)
            changed = self._set(ev, "arguments", JsonMask().feed(ev["arguments"]), "arguments")
        elif kind == "response.custom_tool_call_input.delta" and isinstance(ev.get("delta"), str):
            changed = self._set(ev, "delta", mask_text(ev["delta"]), "arguments")
        elif kind == "response.custom_tool_call_input.done" and isinstance(ev.get("input"), str):
            changed = self._set(ev, "input", mask_text(ev["input"]), "arguments")
        elif kind in (
            "response.content_part.added",
            "response.content_part.done",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_part.done",
        ) and isinstance(ev.get("part"), dict):
            changed = self._part(ev["part"], self.output_format)
        elif kind in ITEM_EVENTS and isinstance(ev.get("item"), dict):
            changed = self._item(ev["item"], direction)
        elif kind in RESPONSE_EVENTS and isinstance(ev.get("response"), dict):
            changed = self._response(ev["response"], direction)
        elif kind == "response.create":  # the Responses WebSocket mode: the request body on top
            changed = self._response(ev, direction)
        return changed

    def _session(self, session: dict[str, Any]) -> bool:
        inp, out = session_audio_formats(session)
        audio = session.get("audio")
        if isinstance(audio, dict) and "format" in audio:  # GPT-Live: one format both ways
            inp = out = audio_format(audio["format"])
        self.input_format = inp or self.input_format
        self.output_format = out or self.output_format
        changed = False
        if isinstance(session.get("instructions"), str):
            changed = self._set(session, "instructions", mask_text(session["instructions"]), "instructions")
        return self._tools(session) or changed

    def _tools(self, config: dict[str, Any]) -> bool:
        """Tool descriptions are prompt text too; names and parameter schemas are structure."""
        changed = False
        tools = config.get("tools")
        for tool in tools if isinstance(tools, list) else ():
            if isinstance(tool, dict) and isinstance(tool.get("description"), str):
                changed = self._set(tool, "description", mask_text(tool["description"]), "instructions") or changed
        return changed

    def _response(self, response: dict[str, Any], direction: Direction) -> bool:
        changed = False
        if isinstance(response.get("instructions"), str):
            changed = self._set(response, "instructions", mask_text(response["instructions"]), "instructions")
        changed = self._tools(response) or changed
        if isinstance(response.get("input"), str):
            changed = self._text(response, "input") or changed
        for key in ("output", "input"):
            items = response.get(key)
            if isinstance(items, list):
                for item in items:
                    if isinstance(item, dict):
                        changed = self._item(item, direction) or changed
        return changed

    def _item(self, item: dict[str, Any], direction: Direction) -> bool:
        changed = False
        for key in ("arguments", "output"):
            if isinstance(item.get(key), str):
                changed = self._set(item, key, mask_json_text(item[key]), "arguments") or changed
        if isinstance(item.get("input"), str):  # a custom tool call's input
            changed = self._set(item, "input", mask_text(item["input"]), "arguments") or changed
        if isinstance(item.get("content"), str):  # a Responses input message given as a plain string
            changed = self._text(item, "content") or changed
        for key in ("summary",):  # a reasoning item's summary parts
            parts = item.get(key)
            for part in parts if isinstance(parts, list) else ():
                if isinstance(part, dict):
                    changed = self._text(part, "text") or changed
        content = item.get("content")
        if isinstance(content, list):
            fmt = self.input_format if item.get("role") == "user" or direction is CLIENT else self.output_format
            for part in content:
                if isinstance(part, dict):
                    changed = self._part(part, fmt) or changed
        return changed

    def _part(self, part: dict[str, Any], fmt: AudioFormat) -> bool:
        changed = False
        for key in PART_TEXT:
            changed = self._text(part, key) or changed
        if isinstance(part.get("audio"), str):
            changed = self._audio(part, "audio", fmt) or changed
        return changed

    # -- fields --

    def _text(self, obj: dict[str, Any], key: str) -> bool:
        value = obj.get(key)
        return isinstance(value, str) and self._set(obj, key, mask_text(value), "texts")

    def _audio(self, obj: dict[str, Any], key: str, fmt: AudioFormat) -> bool:
        pcm = decode_b64(obj.get(key))
        quiet = base64.b64encode(silence(len(pcm), fmt)).decode()
        if quiet == obj.get(key):
            return False
        obj[key] = quiet
        self.summary.audio_chunks += 1
        self.summary.audio_ms += fmt.duration_ms(len(pcm))
        self.summary.formats.add(fmt.encoding)
        return True

    def _set(self, obj: dict[str, Any], key: str, value: str, counter: str) -> bool:
        if obj[key] == value:
            return False
        obj[key] = value
        setattr(self.summary, counter, getattr(self.summary, counter) + 1)
        return True


def redact_frames(frames: Iterable[Frame], redactor: Redactor | None = None) -> Iterator[Frame]:
    """Frames redacted one by one (lazily); read the redactor's summary afterwards."""
    r = redactor or Redactor()
    for frame in frames:
        yield r.feed_frame(frame)
