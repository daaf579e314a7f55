"""Command palette entries: one per action of the screen on top (and the app's own)."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

APP_ACTIONS = (
    ("Help", "Every key of rtproxy tui", "app.help"),
    ("Sessions", "Back to the sessions table", "app.sessions"),
    ("Quit", "Leave rtproxy tui", "app.quit"),
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
