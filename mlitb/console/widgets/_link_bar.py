"""One line at the bottom of every screen: is the console connected, and as what."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from .._app_messages import LinkState
from .._display import seconds


def describe_link(state: LinkState) -> Text:
    """The line shown for ``state``; says what happens next when something is wrong."""
    if state.phase == "connected":
        role = ("operator (token accepted)" if state.authorized
                else "read-only: no operator token (--token / MLITB_OPERATOR_TOKEN)")
        return Text.assemble(("● ", "bold green"), f"connected to {state.url} · ", role)
    if state.phase == "connecting":
        return Text.assemble(("◌ ", "bold"), f"connecting to {state.url} …")
    if state.phase == "refused":
        return Text.assemble(("✖ ", "bold red"), (state.message, "bold red"),
                             " — not retrying; restart the console with the right token")
    retry = f"retrying in {seconds(state.retry_in)}" if state.retry_in is not None else ""
    if state.phase == "lost":
        return Text.assemble(("✖ ", "bold yellow"), ("connection lost: ", "bold yellow"),
                             state.message, f" — reconnecting by itself, {retry} "
                             f"(attempt {state.attempt + 1})")
    if state.phase == "unreachable":
        return Text.assemble(("✖ ", "bold red"), (state.message, "bold red"), f" — {retry}")
    return Text(state.message or "closed")


class LinkBar(Static):
    """Shows ``state``; its CSS class says the phase (``-connected``, ``-lost``, ...)."""

    state: reactive[LinkState | None] = reactive(None)

    def watch_state(self, state: LinkState | None) -> None:
        for phase in ("connecting", "connected", "lost", "unreachable", "refused", "closed"):
            self.set_class(state is not None and state.phase == phase, f"-{phase}")
        self.update(describe_link(state) if state is not None else "")
