"""`rtproxy` with frames not recorded: what the relay code costs on its own.

``Recorder.record_frame`` and ``record_payload`` (the proxy's hot path) are no-ops: the ``unrecorded`` stage of
``rtproxy_stages.py``, kept under this name for ``proxy_overhead.py --rtproxy``.

    python benchmarks/proxy_overhead.py --quick --targets relay,rtproxy \\
        --rtproxy "python benchmarks/rtproxy_unrecorded.py"

Sessions and REST exchanges are still recorded; only frames are not. For measuring, never for use.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rtproxy_stages import run  # noqa: E402

run("unrecorded")
