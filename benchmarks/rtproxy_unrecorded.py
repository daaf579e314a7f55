"""`rtproxy` with frames not recorded (``Recorder.record_frame`` a no-op): what the relay code costs on its own.

    python benchmarks/proxy_overhead.py --quick --targets relay,rtproxy \\
        --rtproxy "python benchmarks/rtproxy_unrecorded.py"

Sessions and REST exchanges are still recorded; only frames are not. For measuring, never for use.
"""

import sys

from rtproxy.cli import entry
from rtproxy.record import recorder

recorder.Recorder.record_frame = lambda self, *args, **kwargs: True  # type: ignore[method-assign]
sys.argv[0] = "rtproxy"
entry()
