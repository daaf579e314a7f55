"""Command palette entries: one per action of the screen on top (and the app's own)."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

APP_ACTIONS = (
    ("Help", "Every key of rtproxy tui", "app.help"),
    ("Sessions", "Back to the sessions table", "app.sessions"),
    ("Quit", "Leave rtproxy tui", "app.quit"),
)

#: (title, help, action) of the session screen's actions, for the palette.
SESSION_ACTIONS = (
    ("Show conversation", "The reassembled conversation", "show_tab('conversation')"),
    ("Show events", "Every event, filterable", "show_tab('events')"),
    ("Show timeline", "Turn latency and tokens", "show_tab('timeline')"),
    ("Play item audio", "Play the highlighted item through a system player", "play"),
    ("Export item WAV", "Write the highlighted item's audio to a WAV file", "export_item"),
    ("Export conversation WAV", "Write the whole conversation as a stereo WAV", "export_conversation"),
    ("Filter events by type", "Globs like response.* or -*.delta", "focus_filter('types')"),
    ("Filter events by id", "An item or response id (or prefix)", "focus_filter('ids')"),
    ("Search event payloads", "Free text in the JSON of events", "focus_filter('text')"),
    ("Cycle direction filter", "Both, client → server, server → client", "cycle_direction"),
    ("Toggle delta runs", "Collapse runs of deltas into one line, or not", "toggle_collapse"),
    ("Clear event filters", "Show every event", "clear_filters"),
    ("Jump to the event's item", "From the Events tab to the item in the conversation", "event_item"),
    ("Back to the item", "From its events back to the conversation", "back_to_item"),
    ("Back to sessions", "The sessions table", "back"),
)


class ActionsProvider(Provider):
    """Lists the ``COMMAND_ACTIONS`` of the active screen, then the app's."""

    def _actions(self) -> list[tuple[str, str, str]]:
        screen_actions = getattr(self.screen, "COMMAND_ACTIONS", ())
        return [*screen_actions, *APP_ACTIONS]

    async def _run(self, action: str) -> None:
        target = self.app if action.startswith("app.") else self.screen
        await target.run_action(action.removeprefix("app."))

    async def discover(self) -> Hits:
        for title, help_text, action in self._actions():
            yield DiscoveryHit(title, partial(self._run, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, action in self._actions():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(self._run, action), help=help_text)
