"""Playing and exporting an item's audio: a system player in a subprocess, or a WAV file.

The first of ``aplay``, ``paplay``, ``afplay``, ``ffplay`` found on PATH plays
a temporary WAV without blocking; when none is, the TUI says so and offers
export instead.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..conversation import audio
from ..conversation.live import LiveSession
from ..conversation.realtime import Conversation
from ..conversation.responses_ws import ResponsesSession

PLAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("aplay", ("-q",)),
    ("paplay", ()),
    ("afplay", ()),
    ("ffplay", ("-nodisp", "-autoexit", "-loglevel", "quiet")),
)


def find_player() -> list[str] | None:
    """The command line (without the file) of the first available player, or None."""
    for name, args in PLAYERS:
        path = shutil.which(name)
        if path:
            return [path, *args]
    return None


def play(pcm16: bytes, rate: int, player: list[str]) -> subprocess.Popen[bytes]:
    """Start playing in the background; the temporary file is removed by the OS's tmp cleaner."""
    with tempfile.NamedTemporaryFile(prefix="rtproxy-", suffix=".wav", delete=False) as f:
        audio.write_wav(f, pcm16, rate)
    return subprocess.Popen(
        [*player, f.name], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80] or "audio"


def export_item(directory: Path, session_id: str, item_id: str, pcm16: bytes, rate: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{safe_name(session_id)}-{safe_name(item_id)}.wav"
    audio.write_wav(path, pcm16, rate)
    return path


def conversation_audio(conv: Conversation, speech_started: Mapping[str, float] | None = None) -> tuple[bytes, int]:
    """The stereo PCM16 of `rtproxy export --audio`'s conversation.wav (user left, assistant right) and its rate.

    The same steps as the CLI: every item with audio at the highest rate among
    them, clips in conversation order (:func:`audio.conversation_clips`, a
    barge-in told by ``speech_started``: item id to when its
    ``speech_started`` arrived, see :func:`audio.note_speech_started`), each
    placed no earlier than the clip it answers has ended (:func:`audio.causal_tracks`).
    """
    user, assistant = conv.audio_tracks()
    rate = max((item.audio_rate for _, item in user + assistant), default=24000)
    at_rate: dict[str, bytes] = {}
    for item in conv.items:
        if item.audio_ms > 0:
            pcm = item.pcm16()
            at_rate[item.id] = pcm if item.audio_rate == rate else audio.resample(pcm, item.audio_rate, rate)
    left, right = audio.causal_tracks(audio.conversation_clips(conv, at_rate, speech_started), rate)
    return audio.stereo_mix(left, right, rate), rate


def export_conversation(
    directory: Path, session_id: str, conv: Conversation, speech_started: Mapping[str, float] | None = None
) -> Path | None:
    """The stereo WAV `rtproxy export --audio` writes as conversation.wav (:func:`conversation_audio`);
    None without audio."""
    user, assistant = conv.audio_tracks()
    if not user and not assistant:
        return None
    pcm, rate = conversation_audio(conv, speech_started)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{safe_name(session_id)}-conversation.wav"
    audio.write_wav(path, pcm, rate, channels=2)
    return path


@dataclass
class Outcome:
    """What a play or export request came to, in words for a notification."""

    text: str
    error: bool = False
    process: subprocess.Popen[bytes] | None = None


@dataclass
class AudioJob:
    """Play or export audio of a reducer that another thread may be feeding (hence the lock)."""

    conversation: Conversation | LiveSession | ResponsesSession
    lock: threading.Lock
    session_id: str
    directory: Path
    #: item id to when its ``speech_started`` arrived (:func:`audio.note_speech_started`), for barge-ins
    speech_started: Mapping[str, float] = field(default_factory=dict)

    def run(self, what: str, item_id: str | None) -> Outcome:
        """``what``: ``play`` or ``export`` (the item), or ``conversation`` (the stereo WAV)."""
        if isinstance(self.conversation, LiveSession):
            return self._run_live(self.conversation, what, item_id)
        if isinstance(self.conversation, ResponsesSession):
            return Outcome("a Responses WebSocket session has no audio", True)
        try:
            with self.lock:
                if what == "conversation":
                    path = export_conversation(self.directory, self.session_id, self.conversation, self.speech_started)
                    return Outcome(f"wrote {path}") if path else Outcome("this conversation has no audio", True)
                item = self.conversation.item(item_id or "")
                if item is None or item.audio_ms <= 0:
                    return Outcome("this item has no audio", True)
                pcm, rate, ms = item.pcm16(), item.audio_rate, item.audio_ms
            if what == "export":
                return Outcome(f"wrote {export_item(self.directory, self.session_id, item.id, pcm, rate)}")
            command = find_player()
            if command is None:
                return Outcome("no audio player found (aplay, paplay, afplay, ffplay): press w to export a WAV", True)
            return Outcome(f"playing {item.id} ({ms / 1000:.1f} s) with {command[0]}", process=play(pcm, rate, command))
        except OSError as e:
            return Outcome(f"audio failed: {e.strerror or e}", True)

    def _run_live(self, live: LiveSession, what: str, item_id: str | None) -> Outcome:
        """The same for a GPT-Live session: its turns (``turn-N``), and conversation.wav on the session timeline."""
        try:
            with self.lock:
                if what == "conversation":
                    left, right, rate = audio.live_tracks(live)
                    if not left and not right:
                        return Outcome("this conversation has no audio", True)
                    self.directory.mkdir(parents=True, exist_ok=True)
                    path = self.directory / f"{safe_name(self.session_id)}-conversation.wav"
                    audio.write_wav(path, audio.stereo_mix(left, right, rate), rate, channels=2)
                    return Outcome(f"wrote {path}")
                turns = {f"turn-{t.index + 1}": t for t in live.finish()}
                turn = turns.get(item_id or "")
                if turn is None or turn.audio_bytes <= 0:
                    return Outcome("this item has no audio", True)
                stream = live.input if turn.speaker == "user" else live.output
                pcm, rate, ms = stream.pcm16(turn.audio_start, turn.audio_end), stream.format.rate, turn.audio_ms
            name = item_id or "turn"
            if what == "export":
                return Outcome(f"wrote {export_item(self.directory, self.session_id, name, pcm, rate)}")
            command = find_player()
            if command is None:
                return Outcome("no audio player found (aplay, paplay, afplay, ffplay): press w to export a WAV", True)
            return Outcome(f"playing {name} ({ms / 1000:.1f} s) with {command[0]}", process=play(pcm, rate, command))
        except OSError as e:
            return Outcome(f"audio failed: {e.strerror or e}", True)
