"""The `?` screen: what every key does."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# rtproxy tui

**Everywhere**: `?` this help · `ctrl+p` command palette (every action is there) · `q` quit · `escape` back

## Sessions
`enter` open the session · `/` filter (any text: id, model, status, label) · `d` delete (asks first) · `r` reload.
The list refreshes by itself while the proxy records; live sessions say **● live**.

## Session
`1` Conversation · `2` Events · `3` Timeline · `escape` back to the sessions.

**Conversation**: `↑/↓` move between items · `enter` (or double click) show the item's events ·
`p` play the item's audio · `w` export it as WAV · `W` export the whole conversation as a stereo WAV
(user left, assistant right).

**Events**: `↑/↓ pgup/pgdn home/end` move · `enter` open or close a run of deltas · `c` collapse runs on/off ·
`t` filter by type glob (`response.*`, `-*.delta` excludes) · `i` filter by item or response id ·
`s` search text in payloads · `D` cycle direction (all, client →, server ←) · `x` clear filters ·
`o` jump to the selected event's item in the conversation · `b` back to the item you came from.

**Timeline**: per response, trigger → created → first audio → done as bars; the slowest tenth are marked.

A session that is still recording shows **LIVE** and follows new events; the cursor stays where you put it
(it follows the tail only when it was on the last line).
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog"):
            yield Markdown(HELP)
