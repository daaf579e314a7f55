"""Write SVG screenshots of the TUI's main screens to docs/screenshots/ (for the README).

The same fixed session and scenes as tests/test_tui_snapshots.py, 120×40, headless:

    python docs/make_screenshots.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rtproxy.tui.app import make_app  # noqa: E402
from tests.test_tui import SESSION_META, SIZE, build_db  # noqa: E402
from tests.test_tui_snapshots import (  # noqa: E402
    Scene,
    conversation_scene,
    events_scene,
    sessions_scene,
    timeline_scene,
)

SHOTS: list[tuple[str, str | None, Scene]] = [
    ("sessions", None, sessions_scene),
    ("conversation", SESSION_META["id"], conversation_scene),
    ("events", SESSION_META["id"], events_scene),
    ("timeline", SESSION_META["id"], timeline_scene),
]


async def shoot(name: str, session: str | None, scene: Scene, out: Path) -> Path:
    app = make_app("demo.db", session)
    async with app.run_test(size=SIZE) as pilot:
        await scene(pilot)
        return Path(app.save_screenshot(f"{name}.svg", str(out)))


def main() -> int:
    out = ROOT / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)  # the sessions screen shows the database path: keep it short and the same
        try:
            build_db(Path(tmp) / "demo.db", extra_sessions=2)
            for name, session, scene in SHOTS:
                print(asyncio.run(shoot(name, session, scene, out)))
        finally:
            os.chdir(cwd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
