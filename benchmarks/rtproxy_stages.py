"""`rtproxy` stopped at one stage of recording: what each stage adds to a round trip. For measuring only.

    python benchmarks/rtproxy_stages.py STAGE proxy --port 0 --db x.db --upstream http://127.0.0.1:PORT

STAGE is one of:

* ``unrecorded`` — ``Recorder.record_frame`` and ``record_payload`` are no-ops (the relay code alone);
* ``unsent``     — frames are batched and sealed as usual, but batches holding only frames are dropped instead
  of being written to the writer's stream (sessions and REST exchanges still go);
* ``unstored``   — batches reach the writer, which decodes them and stores only sessions and REST exchanges,
  not frames (the transport alone);
* ``full``       — rtproxy as it ships.

``benchmarks/recorder_breakdown.py`` runs them side by side. The database of any stage but ``full`` lacks
frames by design.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from rtproxy.cli import entry
from rtproxy.record import recorder
from rtproxy.record.transport import BatchBuilder

WRITER_CODE = "from rtproxy.record.writer import writer_main; writer_main()"
UNSTORED_WRITER_CODE = (
    "from rtproxy.record import writer as w\n"
    "store = w.Writer.write_batch\n"
    "w.Writer.write_batch = lambda self, n, records: store(self, n, [r for r in records if r[0] == w.CONTROL])\n"
    "w.writer_main()"
)
STAGES = ("unrecorded", "unsent", "unstored", "full")


def _drop_frame_batches() -> None:
    seal = recorder.Recorder._seal

    def _seal(self: Any) -> None:
        batch = self._batch
        if batch.records and not batch.controls and self._started and not self._gone.is_set():
            self._seal_scheduled = False
            self._batch = BatchBuilder()
            self._held_bytes -= batch.nbytes
            self._held_frames -= sum(batch.frames.values())
            return
        seal(self)

    recorder.Recorder._seal = _seal  # type: ignore[method-assign]


class _Subprocess:
    """The subprocess module, but the writer is started with frames left unstored."""

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:  # noqa: N802 - the module's name
        if argv[1:3] != ["-c", WRITER_CODE]:  # the recorder starts its writer some other way now: say so
            raise SystemExit(f"rtproxy_stages: unstored: not the writer's command line: {argv[1:3]!r}")
        return subprocess.Popen([argv[0], "-c", UNSTORED_WRITER_CODE, *argv[3:]], **kwargs)


def run(stage: str) -> None:
    """Run the rtproxy command line (``sys.argv[1:]``) stopped at `stage`."""
    if stage == "unrecorded":
        recorder.Recorder.record_frame = lambda self, *args, **kwargs: True  # type: ignore[method-assign]
        recorder.Recorder.record_payload = lambda self, *args, **kwargs: True  # type: ignore[method-assign]
    elif stage == "unsent":
        _drop_frame_batches()
    elif stage == "unstored":
        recorder.subprocess = _Subprocess()  # type: ignore[assignment]
    sys.argv[0] = "rtproxy"
    entry()


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in STAGES:
        print(f"usage: rtproxy_stages.py {{{','.join(STAGES)}}} proxy [options]", file=sys.stderr)
        raise SystemExit(2)
    run(sys.argv.pop(1))


if __name__ == "__main__":
    main()
