"""`rtproxy` with frames not recorded: what the relay code costs on its own.

``Recorder.record_frame`` and ``record_payload`` (the proxy's hot path) are no-ops.

    python benchmarks/proxy_overhead.py --quick --targets relay,rtproxy \\
        --rtproxy "python benchmarks/rtproxy_unrecorded.py"

Sessions and REST exchanges are still recorded; only frames are not. For measuring, never for use.
"""

import sys

from rtproxy.cli import entry
from rtproxy.record import recorder

recorder.Recorder.record_frame = lambda self, *args, **kwargs: True  # type: ignore[method-assign]
recorder.Recorder.record_payload = lambda self, *args, **kwargs: True  # type: ignore[method-assign]
sys.argv[0] = "rtproxy"
entry()
