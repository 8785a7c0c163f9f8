"""Dialogs: confirmation (defaults to cancel), the log filter and help.

The kill switch keys are dispatched by the app before any dialog sees a key, so they work over every dialog
(ctrl+k always; K only where no text field has focus, since there it is a letter).
"""

from __future__ import annotations

from typing import Callable

from rich.table import Table
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from .state import EVENT_NAMES

# The keys that move help (one too long for the screen) rather than close it: key -> the scroll's method.
HELP_SCROLL = {"up": "scroll_up", "k": "scroll_up", "down": "scroll_down", "j": "scroll_down",
               "pageup": "scroll_page_up", "pagedown": "scroll_page_down", "home": "scroll_home", "end": "scroll_end"}
HELP_AROUND = 3  # rows of the help dialog beside its scroll: its border (the title in it) and the line of its keys


class ConfirmScreen(ModalScreen[bool]):
    """Confirms on the confirm key (y); every other key, enter and escape included, cancels.

    `on_confirm` runs synchronously inside the key handler, before the dialog closes, so the confirmed action
    (the kill switch above all) starts without waiting for a screen refresh.
    """

    def __init__(self, kind: str, title: str, body: str | Callable[[], str], confirm_keys: list[str],
                 verb: str | Callable[[], str], on_confirm: Callable[[], None] | None = None) -> None:
        super().__init__(classes=f"confirm -{kind}")
        self.kind = kind
        self.title_text = title
        self._body = body  # or what writes it from the engine's figures as they are (refresh_body)
        self.confirm_keys = confirm_keys
        self._verb = verb  # or what says it from the same figures as the body
        self.on_confirm = on_confirm
        self.answered = False

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text(self.title_text, style="bold"), id="dialog-title")
            yield Static(Text(self.body), id="dialog-body")
            yield Static(self._keys(), id="dialog-keys")

    def _keys(self) -> Text:
        keys = "/".join(self.confirm_keys)
        return Text.assemble((f" {keys} ", "bold reverse"), f" {self.verb}    ", (" any other key ", "reverse"),
                             " cancel (default)")

    @property
    def body(self) -> str:
        return self._body() if callable(self._body) else self._body

    @property
    def verb(self) -> str:
        return self._verb() if callable(self._verb) else self._verb

    def refresh_body(self) -> None:
        """A body (and its key's word) written from the engine's figures (open orders, positions) follows them while
        it is asked."""
        for name, text in (("#dialog-body", Text(self.body) if callable(self._body) else None),
                           ("#dialog-keys", self._keys() if callable(self._verb) else None)):
            if text is None:
                continue
            for shown in self.query(name).results(Static):  # none before the dialog is composed
                if str(shown.content) != text.plain:  # every tick asks; only a change is drawn again
                    shown.update(text)

    def on_key(self, event: events.Key) -> None:
        event.stop()
        event.prevent_default()
        if self.answered or not self.is_active:
            # A key that reached this dialog after another screen opened on top of it (keys are queued per
            # screen): dismissing now would close that other screen. The dialog stays until answered again.
            return
        self.answered = True
        confirmed = event.key in self.confirm_keys
        if confirmed and self.on_confirm is not None:
            self.on_confirm()
        self.dismiss(confirmed)


class FilterScreen(ModalScreen[str | None]):
    """Asks for the log filter: event types, comma or space separated; a leading - hides a type."""

    def __init__(self, current: str) -> None:
        super().__init__(classes="filter")
        self.current = current
        self._early: list[str] = []  # typed before the field had the focus

    def type_early(self, character: str) -> None:
        """A key typed before the field had the focus: it replaces the current filter, as typing into the field
        does (its text is selected when it takes the focus), and what follows is added to it."""
        self._early.append(character)
        if self.is_mounted:
            self._show_early()

    def on_mount(self) -> None:
        self._show_early()

    def _show_early(self) -> None:
        if self._early:
            field = self.query_one("#filter-input", Input)
            field.select_on_focus = False
            field.value = "".join(self._early)
            field.cursor_position = len(field.value)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text("Filter the log by event type", style="bold"), id="dialog-title")
            yield Static(Text("types: " + " ".join(EVENT_NAMES), style="dim"), id="dialog-body")
            yield Input(value=self.current, placeholder="e.g. order fill   or   -decision   (empty: all)",
                        id="filter-input")
            yield Static("enter apply    escape cancel", id="dialog-keys")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.is_active:
            self.dismiss(event.value.strip())

    def on_key(self, event: events.Key) -> None:
        if event.key == "escape":
            event.stop()
            if self.is_active:
                self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """Every binding with its key (after remapping). It scrolls when the screen is too short for it (80x24): the
    scroll keys move it, any other key closes."""

    def __init__(self, rows: list[tuple[str, str, str]], palette_key: str, notes: str = "") -> None:
        super().__init__(classes="help")
        self.rows = rows
        self.palette_key = palette_key
        self.notes = notes

    def compose(self) -> ComposeResult:
        t = Table(box=None, padding=(0, 1), show_edge=False)
        t.add_column("key", style="bold", no_wrap=True)
        t.add_column("does")
        t.add_column("id", style="dim", no_wrap=True)
        for keys, desc, bid in self.rows:
            t.add_row(keys, desc, bid)
        with Vertical(id="dialog") as dialog:
            dialog.border_title = "ffe console keys"  # in the border: one more row for the keys at 80x24
            with VerticalScroll(id="help-body", can_focus=False):
                yield Static(t, id="dialog-body")
                yield Static(Text(f"{self.notes} " if self.notes else "") + Text(
                    f'Remap in config.toml: [tui] keys = {{ id = "key" }}.  {self.palette_key}: command palette.'),
                    id="help-notes")
            yield Static(Text.assemble((" up/down j/k PgUp/PgDn Home/End ", "reverse"), " scroll   ",
                                       (" any other key ", "bold reverse"), " closes"), id="dialog-keys")

    def on_mount(self) -> None:
        self._fit()

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        # What the screen leaves beside the dialog's border (2, the title in it) and the line under the scroll (1):
        # the scroll gets no more, so that line stays on screen.
        self.query_one("#help-body", VerticalScroll).styles.max_height = max(3, self.size.height - HELP_AROUND)

    def on_key(self, event: events.Key) -> None:
        event.stop()
        event.prevent_default()
        move = HELP_SCROLL.get(event.key)
        if move is not None:
            getattr(self.query_one("#help-body", VerticalScroll), move)(animate=False)
        elif self.is_active:
            self.dismiss(None)
