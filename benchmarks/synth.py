"""Synthetic Realtime sessions: realistic event streams for benchmarks and tests.

Import it (``sys.path`` must hold the repository root, or run from there)::

    from benchmarks.synth import voice_session, text_session, write_db, write_jsonl

    session, frames = voice_session(60)                  # a one-hour 24 kHz voice call, GA dialect
    session, frames = voice_session(5, dialect="beta", audio_format="g711_ulaw")
    session, frames = text_session(100_000)              # text turns and function calls
    sid = write_db("bench.db", session, frames)          # through Store.import_session
    write_jsonl("bench.jsonl", session, frames)          # through recording.write_recording

or from the command line::

    python benchmarks/synth.py --minutes 60 --db bench.db
    python benchmarks/synth.py --text 200000 --dialect beta --jsonl text.jsonl

A voice session streams microphone audio from the client in 20 ms
``input_audio_buffer.append`` chunks for its whole length, with server VAD
(``speech_started`` / ``speech_stopped`` / ``committed``), user transcripts
arriving after the item, assistant responses whose audio is generated
faster than it plays, a function call every 7th turn and a barge-in
(``conversation.item.truncate``) every 11th. Real sessions send a few
transcript deltas per second of speech; these send ``transcript_rate`` per
second (default 70) so that an hour is about 400k events, half of them
audio, the size the benchmark bars are set for. Everything is seeded:
the same arguments give the same frames.
"""

from __future__ import annotations

import argparse
import base64
import heapq
import math
import random
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

if __package__ in (None, ""):  # run as a script: make `rtproxy` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rtproxy.conversation import audio
from rtproxy.protocols.wire import CLIENT, SERVER, Direction, Frame  # noqa: E402

__all__ = ["voice_session", "text_session", "write_db", "write_jsonl", "count_audio"]

Event = dict[str, Any]

WORDS = (
    "the weather in Paris is mild today with a light breeze from the west and a chance of rain "
    "later this evening so you might want to bring an umbrella if you are heading out for dinner "
    "I can also look up restaurants nearby book a table or check the train times for tomorrow"
).split()

_TEXT = " ".join(WORDS) + ". "

_GA_NAMES = {
    "text.delta": "response.output_text.delta",
    "text.done": "response.output_text.done",
    "audio.delta": "response.output_audio.delta",
    "audio.done": "response.output_audio.done",
    "transcript.delta": "response.output_audio_transcript.delta",
    "transcript.done": "response.output_audio_transcript.done",
}
_BETA_NAMES = {
    "text.delta": "response.text.delta",
    "text.done": "response.text.done",
    "audio.delta": "response.audio.delta",
    "audio.done": "response.audio.done",
    "transcript.delta": "response.audio_transcript.delta",
    "transcript.done": "response.audio_transcript.done",
}
_FORMATS = {  # encoding -> (sample rate, beta name, GA object)
    "pcm16": (24000, "pcm16", {"type": "audio/pcm", "rate": 24000}),
    "g711_ulaw": (8000, "g711_ulaw", {"type": "audio/pcmu"}),
    "g711_alaw": (8000, "g711_alaw", {"type": "audio/pcma"}),
}


def _tone(ms: float, freq: float, rate: int, phase: int = 0, amplitude: float = 0.3) -> bytes:
    """PCM16 of a tone with a syllable-like envelope (five syllables a second)."""
    n = int(rate * ms / 1000)
    syl = rate // 5
    return b"".join(
        struct.pack(
            "<h",
            int(
                32767
                * amplitude
                * math.sin(math.pi * ((phase + i) % syl) / syl)
                * math.sin(2 * math.pi * freq * (phase + i) / rate)
            ),
        )
        for i in range(n)
    )


def _encode(pcm: bytes, encoding: str) -> bytes:
    if encoding == "g711_ulaw":
        return audio.ulaw_encode(pcm)
    if encoding == "g711_alaw":
        return audio.alaw_encode(pcm)
    return pcm


class _Builder:
    """Collects timed events (other than the regular mic stream) of one session."""

    def __init__(self, dialect: str, seed: int) -> None:
        self.ga = dialect == "ga"
        self.names = _GA_NAMES if self.ga else _BETA_NAMES
        self.rng = random.Random(seed)
        self.events: list[tuple[float, int, Direction, Event]] = []
        self.n = 0
        self.last_item: str | None = None
        self.previous: dict[str, str | None] = {}
        self.cursor = self.rng.randrange(len(_TEXT))

    def id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n:06d}"

    def add(self, t: float, direction: Direction, event: Event) -> None:
        event = {"type": event.pop("type"), "event_id": self.id("event"), **event}
        self.n += 1
        self.events.append((t, self.n, direction, event))

    def words(self, n: int) -> list[str]:
        """``n`` deltas of running text: pieces of one to four characters, as token streams look."""
        out, text, size = [], _TEXT, len(_TEXT)
        randint = self.rng.randint
        for _ in range(n):
            k = randint(1, 4)
            start = self.cursor % size
            piece = text[start : start + k]
            self.cursor += len(piece)
            out.append(piece)
        return out

    def item_added(self, t: float, item: Event) -> None:
        """The server's announcement of an item, in the dialect's words."""
        prev, self.last_item = self.last_item, item["id"]
        self.previous[item["id"]] = prev
        kind = "conversation.item.added" if self.ga else "conversation.item.created"
        self.add(t, SERVER, {"type": kind, "previous_item_id": prev, "item": item})

    def item_done(self, t: float, item: Event) -> None:
        if self.ga:
            self.add(
                t,
                SERVER,
                {"type": "conversation.item.done", "previous_item_id": self.previous.get(item["id"]), "item": item},
            )

    def session_config(self, encoding: str, modalities: list[str], vad: bool) -> Event:
        rate, beta_name, ga_obj = _FORMATS[encoding]
        turn = (
            {
                "type": "server_vad",
                "threshold": 0.5,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 500,
                "create_response": True,
            }
            if vad
            else None
        )
        if self.ga:
            return {
                "id": "sess_synth",
                "object": "realtime.session",
                "type": "realtime",
                "model": "gpt-realtime",
                "output_modalities": modalities,
                "instructions": "You are a helpful assistant.",
                "tools": [TOOL],
                "audio": {
                    "input": {
                        "format": ga_obj,
                        "turn_detection": turn,
                        "transcription": {"model": "gpt-4o-transcribe"},
                    },
                    "output": {"format": ga_obj, "voice": "alloy"},
                },
            }
        return {
            "id": "sess_synth",
            "object": "realtime.session",
            "model": "gpt-4o-realtime-preview",
            "modalities": ["text", "audio"] if "audio" in modalities else ["text"],
            "instructions": "You are a helpful assistant.",
            "voice": "alloy",
            "input_audio_format": beta_name,
            "output_audio_format": beta_name,
            "tools": [TOOL],
            "input_audio_transcription": {"model": "whisper-1"},
            "turn_detection": turn,
        }

    def start(self, t: float, config: Event) -> None:
        self.add(t, SERVER, {"type": "session.created", "session": config})
        patch = {"instructions": config["instructions"]}
        self.add(t + 0.05, CLIENT, {"type": "session.update", "session": patch})
        self.add(t + 0.09, SERVER, {"type": "session.updated", "session": config})

    def response(
        self,
        t: float,
        *,
        audio_chunks: list[str] | None,
        chunk_ms: float,
        n_chunks: int,
        n_text: int,
        rid: str | None = None,
        function: bool = False,
        trailing_user: tuple[str, int] | None = None,
    ) -> tuple[str, str, float, float]:
        """One response from ``response.created`` at ``t``; returns (response id, item id, first audio t, done t)."""
        rid = rid or self.id("resp")
        iid = self.id("item")
        base = {"id": rid, "object": "realtime.response", "output": [], "usage": None, "metadata": None}
        self.add(
            t,
            SERVER,
            {"type": "response.created", "response": {**base, "status": "in_progress", "status_details": None}},
        )
        t += 0.02
        if function:
            item: Event = {
                "id": iid,
                "object": "realtime.item",
                "type": "function_call",
                "status": "in_progress",
                "name": TOOL["name"],
                "call_id": self.id("call"),
                "arguments": "",
            }
        else:
            item = {
                "id": iid,
                "object": "realtime.item",
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
        self.add(t, SERVER, {"type": "response.output_item.added", "response_id": rid, "output_index": 0, "item": item})
        self.item_added(t, dict(item))
        ids = {"response_id": rid, "item_id": iid, "output_index": 0}
        t_first = t + 0.15
        if function:
            args = orjson.dumps(
                {
                    "location": self.rng.choice(["Paris", "Lyon", "Oslo"]),
                    "unit": "celsius",
                    "days": self.rng.randint(1, 5),
                }
            ).decode()
            step = max(1, len(args) // 12)
            for i in range(0, len(args), step):
                t += 0.01
                self.add(
                    t,
                    SERVER,
                    {
                        "type": "response.function_call_arguments.delta",
                        **ids,
                        "call_id": item["call_id"],
                        "delta": args[i : i + step],
                    },
                )
            self.add(
                t,
                SERVER,
                {
                    "type": "response.function_call_arguments.done",
                    **ids,
                    "call_id": item["call_id"],
                    "name": item["name"],
                    "arguments": args,
                },
            )
            done_item = {**item, "status": "completed", "arguments": args}
            t_done = t + 0.01
            usage_audio = 0
        else:
            audio_part = audio_chunks is not None
            kind = ("output_audio" if self.ga else "audio") if audio_part else ("output_text" if self.ga else "text")
            part: Event = {"type": kind, "transcript": ""} if audio_part else {"type": kind, "text": ""}
            pids = {**ids, "content_index": 0}
            self.add(t + 0.01, SERVER, {"type": "response.content_part.added", **pids, "part": dict(part)})
            words = self.words(n_text)
            text_kind = "transcript.delta" if audio_part else "text.delta"
            # audio generated at 2.5x real time; text deltas spread over the same stretch
            gen = (n_chunks * chunk_ms / 1000.0) / 2.5 if audio_part else n_text * 0.004
            for i, w in enumerate(words):
                self.add(
                    t_first + gen * i / max(1, n_text), SERVER, {"type": self.names[text_kind], **pids, "delta": w}
                )
            if audio_chunks is not None:
                for i in range(n_chunks):
                    self.add(
                        t_first + gen * i / n_chunks + 0.0005,
                        SERVER,
                        {"type": self.names["audio.delta"], **pids, "delta": audio_chunks[i % len(audio_chunks)]},
                    )
            t_done = t_first + gen + 0.02
            text = "".join(words)
            if audio_part:
                self.add(t_done, SERVER, {"type": self.names["audio.done"], **pids})
                self.add(t_done, SERVER, {"type": self.names["transcript.done"], **pids, "transcript": text})
                part = {"type": kind, "transcript": text}
            else:
                self.add(t_done, SERVER, {"type": self.names["text.done"], **pids, "text": text})
                part = {"type": kind, "text": text}
            self.add(t_done, SERVER, {"type": "response.content_part.done", **pids, "part": part})
            done_item = {**item, "status": "completed", "content": [part]}
            usage_audio = int(n_chunks * chunk_ms / 50)
        self.add(
            t_done,
            SERVER,
            {"type": "response.output_item.done", "response_id": rid, "output_index": 0, "item": done_item},
        )
        self.item_done(t_done, done_item)
        usage = {
            "total_tokens": 300 + n_text + usage_audio,
            "input_tokens": 300,
            "output_tokens": n_text + usage_audio,
            "input_token_details": {"text_tokens": 200, "audio_tokens": 100, "cached_tokens": 128},
            "output_token_details": {"text_tokens": n_text, "audio_tokens": usage_audio},
        }
        self.add(
            t_done + 0.001,
            SERVER,
            {
                "type": "response.done",
                "response": {
                    **base,
                    "status": "completed",
                    "status_details": None,
                    "output": [done_item],
                    "usage": usage,
                },
            },
        )
        self.add(
            t_done + 0.002,
            SERVER,
            {
                "type": "rate_limits.updated",
                "rate_limits": [{"name": "tokens", "limit": 40000, "remaining": 38000, "reset_seconds": 1.2}],
            },
        )
        return rid, iid, t_first, t_done


TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city.",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}


def _metadata(kind: str, dialect: str, frames: list[Frame], seed: int) -> dict[str, Any]:
    model = "gpt-realtime" if dialect == "ga" else "gpt-4o-realtime-preview"
    n_client = sum(1 for f in frames if f.direction is CLIENT)
    return {
        "id": f"20260101-000000-{kind}{dialect}{seed:02d}",
        "started_at": "2026-01-01T00:00:00.000Z",
        "ended_at": None,
        "path": "/v1/realtime",
        "query": f"model={model}",
        "model": model,
        "dialect": dialect,
        "upstream": "https://api.openai.com",
        "status": "closed",
        "closed_by": "client",
        "client_close_code": 1000,
        "server_close_code": 1000,
        "client_events": n_client,
        "server_events": len(frames) - n_client,
        "client_bytes": sum(len(f.data) for f in frames if f.direction is CLIENT),
        "server_bytes": sum(len(f.data) for f in frames if f.direction is SERVER),
        "duration": frames[-1].t if frames else 0.0,
        "label": f"synthetic {kind}",
    }


def _frames(events: Iterator[tuple[float, int, Direction, Event]]) -> list[Frame]:
    dumps = orjson.dumps
    return [Frame(seq, round(t, 6), d, dumps(ev).decode()) for seq, (t, _, d, ev) in enumerate(events)]


def voice_session(
    minutes: float = 60.0,
    dialect: str = "ga",
    *,
    audio_format: str = "pcm16",
    seed: int = 0,
    append_ms: int = 20,
    chunk_ms: int = 100,
    transcript_rate: float = 70.0,
) -> tuple[dict[str, Any], list[Frame]]:
    """A server-VAD voice conversation of ``minutes`` as (session metadata, frames)."""
    if dialect not in ("ga", "beta") or audio_format not in _FORMATS:
        raise ValueError(f"dialect must be ga or beta, audio_format one of {sorted(_FORMATS)}")
    rate = _FORMATS[audio_format][0]
    b = _Builder(dialect, seed)
    rng = b.rng
    b.start(0.0, b.session_config(audio_format, ["audio"], vad=True))
    voice = [
        base64.b64encode(_encode(_tone(append_ms, 180 + 20 * k, rate, k * 997), audio_format)).decode()
        for k in range(4)
    ]
    quiet = base64.b64encode(_encode(bytes(2 * int(rate * append_ms / 1000)), audio_format)).decode()
    reply = [base64.b64encode(_encode(_tone(chunk_ms, 330, rate, k * 1013), audio_format)).decode() for k in range(5)]
    total = minutes * 60.0
    speech: list[tuple[float, float]] = []  # when the user speaks (session seconds)
    t, turn = 1.0, 0
    while t < total - 4.0:
        turn += 1
        user_s = rng.uniform(3.0, 8.0)
        start, stop = t, t + user_s
        speech.append((start, stop))
        uid = b.id("item")
        b.add(
            start + 0.2,
            SERVER,
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": int((start - 0.3) * 1000), "item_id": uid},
        )
        end_ms = int((stop + 0.5) * 1000)  # 500 ms of silence ends the turn...
        t_stop = stop + 0.5 + append_ms / 1000 + 0.005  # ...noticed once the append holding it has arrived
        b.add(t_stop, SERVER, {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end_ms, "item_id": uid})
        b.add(
            t_stop + 0.01,
            SERVER,
            {"type": "input_audio_buffer.committed", "previous_item_id": b.last_item, "item_id": uid},
        )
        user_item = {
            "id": uid,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        b.item_added(t_stop + 0.012, user_item)
        b.item_done(t_stop + 0.012, user_item)
        # the user's transcript trickles in while the answer is generated
        n_user = max(1, int(user_s * transcript_rate / 2))
        words = b.words(n_user)
        for i, w in enumerate(words):
            b.add(
                t_stop + 0.3 + 0.5 * i / n_user,
                SERVER,
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": uid,
                    "content_index": 0,
                    "delta": w,
                },
            )
        b.add(
            t_stop + 0.81,
            SERVER,
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": uid,
                "content_index": 0,
                "transcript": "".join(words),
            },
        )
        t_resp = t_stop + rng.uniform(0.1, 0.3)
        if turn % 7 == 0:  # a function call, its output, and the spoken answer
            _, fid, _, t_done = b.response(
                t_resp, audio_chunks=None, chunk_ms=chunk_ms, n_chunks=0, n_text=0, function=True
            )
            call = next(ev for _, _, _, ev in reversed(b.events) if ev.get("item", {}).get("id") == fid)
            out = {
                "id": b.id("item"),
                "type": "function_call_output",
                "call_id": call["item"]["call_id"],
                "output": '{"temperature": 18, "sky": "cloudy"}',
            }
            b.add(t_done + 0.05, CLIENT, {"type": "conversation.item.create", "previous_item_id": fid, "item": out})
            b.item_added(t_done + 0.07, {**out, "object": "realtime.item", "status": "completed"})
            b.add(t_done + 0.08, CLIENT, {"type": "response.create"})
            t_resp = t_done + rng.uniform(0.15, 0.3)
        reply_s = rng.uniform(5.0, 14.0)
        n_chunks = int(reply_s * 1000 / chunk_ms)
        _, aid, t_first, t_done = b.response(
            t_resp, audio_chunks=reply, chunk_ms=chunk_ms, n_chunks=n_chunks, n_text=int(reply_s * transcript_rate)
        )
        play_end = t_first + n_chunks * chunk_ms / 1000.0
        if turn % 11 == 0:  # barge-in halfway through the answer
            cut = t_first + (play_end - t_first) / 2
            played_ms = int((cut - t_first) * 1000)
            b.add(
                cut + 0.05,
                CLIENT,
                {"type": "conversation.item.truncate", "item_id": aid, "content_index": 0, "audio_end_ms": played_ms},
            )
            b.add(
                cut + 0.08,
                SERVER,
                {"type": "conversation.item.truncated", "item_id": aid, "content_index": 0, "audio_end_ms": played_ms},
            )
            play_end = cut - 0.2
        t = max(play_end, t_done) + rng.uniform(0.4, 1.5)
    b.events.sort(key=lambda e: (e[0], e[1]))
    frames = _frames(heapq.merge(b.events, _mic(total, append_ms, speech, voice, quiet), key=lambda e: (e[0], e[1])))
    return _metadata("voice", dialect, frames, seed), frames


def _mic(
    total: float, append_ms: int, speech: list[tuple[float, float]], voice: list[str], quiet: str
) -> Iterator[tuple[float, int, Direction, Event]]:
    """The client's microphone: one append every ``append_ms``, tone while the user speaks."""
    k, n = 0, int(total * 1000 / append_ms)
    for i in range(n):
        t = (i + 1) * append_ms / 1000.0
        while k < len(speech) and speech[k][1] < t - append_ms / 1000.0:
            k += 1
        speaking = k < len(speech) and speech[k][0] <= t
        chunk = voice[i % len(voice)] if speaking else quiet
        yield t, -1, CLIENT, {"type": "input_audio_buffer.append", "event_id": f"event_mic{i:07d}", "audio": chunk}


def text_session(n_events: int = 100_000, dialect: str = "ga", *, seed: int = 0) -> tuple[dict[str, Any], list[Frame]]:
    """A typed chat of about ``n_events`` events: user messages, streamed text answers, function calls."""
    if dialect not in ("ga", "beta"):
        raise ValueError("dialect must be ga or beta")
    b = _Builder(dialect, seed)
    rng = b.rng
    b.start(0.0, b.session_config("pcm16", ["text"], vad=False))
    t, turn = 0.5, 0
    while len(b.events) < n_events:
        turn += 1
        uid = b.id("item")
        user = {
            "id": uid,
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "".join(b.words(rng.randint(10, 40)))}],
        }
        b.add(t, CLIENT, {"type": "conversation.item.create", "item": user})
        b.item_added(t + 0.02, {**user, "object": "realtime.item", "status": "completed"})
        b.add(t + 0.03, CLIENT, {"type": "response.create"})
        t_resp = t + rng.uniform(0.1, 0.3)
        if turn % 5 == 0:
            _, fid, _, t_done = b.response(t_resp, audio_chunks=None, chunk_ms=0, n_chunks=0, n_text=0, function=True)
            call = next(ev for _, _, _, ev in reversed(b.events) if ev.get("item", {}).get("id") == fid)
            out = {
                "id": b.id("item"),
                "type": "function_call_output",
                "call_id": call["item"]["call_id"],
                "output": '{"temperature": 18}',
            }
            b.add(t_done + 0.05, CLIENT, {"type": "conversation.item.create", "item": out})
            b.item_added(t_done + 0.07, {**out, "object": "realtime.item", "status": "completed"})
            b.add(t_done + 0.08, CLIENT, {"type": "response.create"})
            t_resp = t_done + rng.uniform(0.1, 0.3)
        _, _, _, t_done = b.response(t_resp, audio_chunks=None, chunk_ms=0, n_chunks=0, n_text=rng.randint(40, 400))
        t = t_done + rng.uniform(1.0, 5.0)
    b.events.sort(key=lambda e: (e[0], e[1]))
    frames = _frames(iter(b.events))
    return _metadata("text", dialect, frames, seed), frames


def count_audio(frames: list[Frame]) -> int:
    """How many frames carry audio (appends and audio deltas)."""
    return sum(
        1 for f in frames if isinstance(f.data, str) and ('.append"' in f.data[:48] or 'audio.delta"' in f.data[:64])
    )


def write_db(path: str | Path, session: dict[str, Any], frames: list[Frame]) -> str:
    """Import the session into an rtproxy database (created if missing); returns its id."""
    from rtproxy.store import Store

    with Store(str(path), create=True) as store:
        return store.import_session(session, frames)


def write_jsonl(path: str | Path, session: dict[str, Any], frames: list[Frame]) -> int:
    """Write the session as a JSONL recording; returns the number of frames."""
    from rtproxy.recording import write_recording

    return write_recording(path, session, frames)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write a synthetic Realtime session to a database and/or JSONL file.")
    p.add_argument("--minutes", type=float, default=None, help="a voice session this long (default 60)")
    p.add_argument("--text", type=int, default=None, metavar="N", help="a text session of about N events instead")
    p.add_argument("--dialect", choices=("ga", "beta"), default="ga")
    p.add_argument("--audio-format", choices=sorted(_FORMATS), default="pcm16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--db", help="import into this rtproxy database")
    p.add_argument("--jsonl", help="write this JSONL recording")
    args = p.parse_args(argv)
    if not args.db and not args.jsonl:
        p.error("give --db and/or --jsonl")
    if args.text is not None:
        session, frames = text_session(args.text, args.dialect, seed=args.seed)
    else:
        minutes = 60.0 if args.minutes is None else args.minutes
        session, frames = voice_session(minutes, args.dialect, audio_format=args.audio_format, seed=args.seed)
    print(f"{len(frames)} frames ({count_audio(frames)} audio), {frames[-1].t:.0f} s", file=sys.stderr)
    if args.db:
        print(write_db(args.db, session, frames))
    if args.jsonl:
        write_jsonl(args.jsonl, session, frames)
        print(args.jsonl)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
