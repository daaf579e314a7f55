"""How fast does `rtproxy replay` play a 200-response agent run over the Responses WebSocket mode?

    python benchmarks/responses_replay.py                       # 200 responses, 3 repetitions
    python benchmarks/responses_replay.py --responses 20 --repeat 1 --quick

The recording is synthetic and shaped as the SDK's models require: an agent loop on one socket where each of the
first N-1 responses streams a function call (arguments in deltas) and the client answers with the call's output
(``previous_response_id``), the last one a streamed text answer, each ``response.completed`` with usage. It is
served by ``rtproxy replay FILE --once --report R`` (its own process, ``ordered``: each request's input compared)
to the real ``openai`` SDK client (``client.responses.connect()``) that runs the loop.

The SDK builds its event models the first time it parses one; the client parses one event before the run so
that one-off cost is not counted as the replay's. Printed (median of the repetitions): the session time (connect
to the last ``response.completed``) and the median and p99 time from a ``response.create`` sent to the first
replayed event of its answer. Bars: < 1 s total, < 20 ms first event. The replay's report must show no mismatch.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from benchmarks._common import median, percentile  # noqa: E402
from rtproxy.protocols.wire import Direction, Frame  # noqa: E402
from rtproxy.recording import write_recording  # noqa: E402

MODEL = "gpt-5-agent"
TOOL = {
    "type": "function",
    "name": "lookup",
    "description": "Look a thing up.",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    "strict": True,
}
#: An event parsed once before the run, so the SDK's one-off model building is not counted as replay latency.
WARM_UP = orjson.dumps(
    {
        "type": "response.created",
        "sequence_number": 0,
        "response": {
            "id": "resp_warm",
            "object": "response",
            "created_at": 1,
            "model": MODEL,
            "status": "in_progress",
            "output": [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        },
    }
)
READY = re.compile(r"replaying .* on ws://127\.0\.0\.1:(\d+)")


def _response(rid: str, status: str, output: list[Any], usage: Any = None) -> dict[str, Any]:
    out = {"id": rid, "object": "response", "created_at": 1, "model": MODEL, "status": status, "output": output}
    out |= {"parallel_tool_calls": True, "tool_choice": "auto", "tools": []}
    if usage is not None:
        out["usage"] = usage
    return out


def _usage(k: int) -> dict[str, Any]:
    return {
        "input_tokens": 100 + 20 * k,
        "input_tokens_details": {"cached_tokens": 20 * k, "cache_write_tokens": 0},
        "output_tokens": 12,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 112 + 20 * k,
    }


def request(k: int, previous: str | None, call_id: str | None) -> dict[str, Any]:
    """The client's k-th request (what the benchmark client sends, and the recording holds)."""
    body: dict[str, Any] = {"type": "response.create", "model": MODEL, "tools": [TOOL]}
    if previous is None:
        body["input"] = "Look up everything, one thing at a time."
    else:
        body["previous_response_id"] = previous
        body["input"] = [{"type": "function_call_output", "call_id": call_id, "output": f"result {k - 1}"}]
    return body


def synth(n: int) -> list[Frame]:
    """An agent run of `n` responses: n-1 function calls answered by the client, then a text answer."""
    frames: list[Frame] = []
    t = 0.0

    def add(direction: Direction, event: dict[str, Any]) -> None:
        nonlocal t
        t += 0.001
        frames.append(Frame(len(frames), t, direction, orjson.dumps(event).decode()))

    previous = call_id = None
    for k in range(n):
        add(Direction.CLIENT, request(k, previous, call_id))
        rid, seq = f"resp_{k:05d}", iter(range(100))

        def ev(kind: str, **fields: Any) -> dict[str, Any]:
            return {"type": kind, "sequence_number": next(seq), **fields}  # noqa: B023 - used at once

        add(Direction.SERVER, ev("response.created", response=_response(rid, "in_progress", [])))
        add(Direction.SERVER, ev("response.in_progress", response=_response(rid, "in_progress", [])))
        if k < n - 1:
            iid, call_id = f"fc_{k:05d}", f"call_{k:05d}"
            args = orjson.dumps({"q": f"thing {k}"}).decode()
            item = {"id": iid, "type": "function_call", "call_id": call_id, "name": "lookup", "arguments": ""}
            add(Direction.SERVER, ev("response.output_item.added", output_index=0, item=item))
            for delta in (args[:6], args[6:]):
                add(
                    Direction.SERVER,
                    ev("response.function_call_arguments.delta", item_id=iid, output_index=0, delta=delta),
                )
            add(
                Direction.SERVER,
                ev("response.function_call_arguments.done", item_id=iid, output_index=0, arguments=args),
            )
            done = {**item, "arguments": args, "status": "completed"}
            add(Direction.SERVER, ev("response.output_item.done", output_index=0, item=done))
            output = [done]
        else:
            iid, text = f"msg_{k:05d}", "All things looked up."
            msg = {"id": iid, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
            add(Direction.SERVER, ev("response.output_item.added", output_index=0, item=msg))
            for word in text.split(" "):
                add(
                    Direction.SERVER,
                    ev(
                        "response.output_text.delta",
                        item_id=iid,
                        output_index=0,
                        content_index=0,
                        delta=word,
                        logprobs=[],
                    ),
                )
            part = {"type": "output_text", "text": text, "annotations": []}
            output = [{**msg, "status": "completed", "content": [part]}]
            add(Direction.SERVER, ev("response.output_item.done", output_index=0, item=output[0]))
        add(Direction.SERVER, ev("response.completed", response=_response(rid, "completed", output, _usage(k))))
        previous = rid
    return frames


async def client(url: str, n: int) -> tuple[float, list[float]]:
    """The agent loop with the real SDK: (session seconds, ms from each request sent to its first event)."""
    from openai import AsyncOpenAI

    sdk = AsyncOpenAI(api_key="sk-bench-" + "x" * 24, websocket_base_url=url)
    firsts: list[float] = []
    t0 = time.perf_counter()
    async with asyncio.timeout(120), sdk.responses.connect() as conn:
        conn.parse_event(WARM_UP)  # the SDK builds its event models on first use: not the replay's time
        previous = call_id = None
        for k in range(n):
            sent = time.perf_counter()
            await conn.send(request(k, previous, call_id))  # type: ignore[arg-type]
            first = True
            async for event in conn:
                if first:
                    firsts.append((time.perf_counter() - sent) * 1000)
                    first = False
                if event.type == "error":
                    raise SystemExit(f"replay error: {event.error.message}")
                if event.type == "response.output_item.done" and event.item.type == "function_call":
                    call_id = event.item.call_id
                if event.type == "response.completed":
                    previous = event.response.id
                    break
    return time.perf_counter() - t0, firsts


def serve(path: Path, report: Path) -> tuple[subprocess.Popen[str], int]:
    exe = shutil.which("rtproxy", path=os.path.dirname(sys.executable)) or shutil.which("rtproxy") or "rtproxy"
    argv = [exe, "replay", str(path), "--port", "0", "--once", "--report", str(report)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for _ in range(200):
        line = proc.stdout.readline()
        m = READY.search(line)
        if m:
            return proc, int(m.group(1))
        if not line:
            break
    proc.kill()
    raise SystemExit(f"replay did not start: {proc.communicate()[0]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--responses", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="Say so in the output (a small run while developing).")
    args = ap.parse_args()
    totals, medians, p99s = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "agent.jsonl"
        write_recording(
            path, {"id": "bench", "api": "responses", "path": "/v1/responses", "model": MODEL}, synth(args.responses)
        )
        for rep in range(args.repeat):
            report = Path(tmp) / f"report-{rep}.json"
            proc, port = serve(path, report)
            try:
                total, firsts = asyncio.run(client(f"ws://127.0.0.1:{port}/v1", args.responses))
                out, _ = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            result = orjson.loads(report.read_bytes())
            if proc.returncode != 0 or not result["ok"]:
                raise SystemExit(f"replay reported mismatches (exit {proc.returncode}): {out}")
            totals.append(total)
            medians.append(median(firsts))
            p99s.append(percentile(firsts, 99))
            print(f"rep {rep + 1}: {total:.3f} s total, first event median {medians[-1]:.2f} ms, p99 {p99s[-1]:.2f} ms")
    total, med, p99 = median(totals), median(medians), median(p99s)
    label = " (quick run)" if args.quick else ""
    print(
        f"{args.responses} responses{label}: total {total:.3f} s (bar < 1 s) · first replayed event "
        f"median {med:.2f} ms, p99 {p99:.2f} ms (bar < 20 ms)"
    )
    ok = total < 1.0 and p99 < 20.0
    print("PASS" if ok else "OVER THE BAR")


if __name__ == "__main__":
    main()
