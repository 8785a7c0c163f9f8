"""Key bindings: ids, remapping from [tui] keys (and the errors for bad entries), the footer's seven keys at 80
columns (laid out again only when the keys it shows change), and help and the command palette reaching the same
actions."""

from __future__ import annotations

import asyncio
import re
import string
from pathlib import Path

import pytest

from textual.app import App
from textual.binding import Binding
from textual.command import CommandPalette
from textual.keys import Keys, _character_to_key
from textual.widgets import Input, Static

from conftest import db_value, ffe_env, run_ffe, starter_config
from ffe_tui import keys
from ffe_tui.panes import KeysFooter
from test_tui_helpers import console, db_path, running, screen_text, status_text, until


def test_every_binding_has_an_id_and_a_remap_replaces_its_keys():
    assert len(set(keys.IDS)) == len(keys.IDS)
    assert all(b.id for b in keys.bindings())
    assert keys.keymap({"kill": "X", "help": "?"}) == {"kill": "X,ctrl+k", "help": "question_mark"}
    assert keys.keys_for("kill", {}) == ["K", "ctrl+k"]
    assert keys.keys_for("kill", {"kill": "X,ctrl+x"}) == ["X", "ctrl+x"]


def test_ctrl_k_stays_a_kill_key_whatever_kill_is_remapped_to():
    assert keys.keymap({"pause": "p", "kill": "K"}) == {"pause": "p", "kill": "K,ctrl+k"}
    assert keys.keymap({"kill": "X,ctrl+x"}) == {"kill": "X,ctrl+x,ctrl+k"}
    assert keys.keymap({"kill": "ctrl+k,K"}) == {"kill": "ctrl+k,K"}
    with pytest.raises(keys.KeymapError, match=re.escape(
            "tui.keys.pause: 'ctrl+k' cannot be used (the kill switch, which works everywhere)")):
        keys.keymap({"kill": "K", "pause": "ctrl+k"})


@pytest.mark.parametrize("entry, message", [
    ({"bogus": "x"}, "unknown binding id 'bogus'"),
    ({"kill": "ctrl+b"}, "tui.keys.kill: 'ctrl+b' cannot be used (the tmux prefix)"),
    ({"pause": "ctrl+m"}, "tui.keys.pause: 'ctrl+m' cannot be used (sent as enter by terminals)"),
    ({"pause": "ctrl+["}, "tui.keys.pause: 'ctrl+[' cannot be used (sent as escape by terminals)"),
    ({"kill": "ctrl+left_square_bracket"},
     "tui.keys.kill: 'ctrl+left_square_bracket' cannot be used (sent as escape by terminals)"),
    ({"pause": "ctrl+{"}, "tui.keys.pause: 'ctrl+{' cannot be used (sent as escape by terminals)"),
    ({"pause": "ctrl+shift+["}, "tui.keys.pause: 'ctrl+shift+[' cannot be used (sent as escape by terminals)"),
    ({"pause": "ctrl+alt+left_curly_bracket"},
     "tui.keys.pause: 'ctrl+alt+left_curly_bracket' cannot be used (sent as escape by terminals)"),
    # alt adds an escape before the key: escape [ and escape O begin the sequences a terminal sends for other keys.
    ({"pause": "alt+["}, "tui.keys.pause: 'alt+[' cannot be used (escape and '[' begin a terminal's key sequences: "
                         "it never arrives as this key)"),
    ({"pause": "alt+left_square_bracket"}, "tui.keys.pause: 'alt+left_square_bracket' cannot be used (escape and "
                                           "'[' begin a terminal's key sequences"),
    ({"pause": "alt+O"}, "tui.keys.pause: 'alt+O' cannot be used (escape and 'O' begin a terminal's key sequences"),
    ({"pause": "alt+shift+o"}, "tui.keys.pause: 'alt+shift+o' cannot be used (escape and 'O' begin a terminal's"),
    ({"pause": "meta+p"}, "tui.keys.pause: 'meta+p' cannot be used (a terminal over SSH or under tmux sends no "
                          "meta, super or hyper: use alt+)"),
    ({"kill": "super+k"}, "tui.keys.kill: 'super+k' cannot be used (a terminal over SSH or under tmux sends no"),
    ({"pause": "ctrl+hyper+p"}, "tui.keys.pause: 'ctrl+hyper+p' cannot be used (a terminal over SSH or under tmux"),
    ({"kill": "p"}, "key 'p' is bound to both 'kill' and 'pause'"),
    ({"confirm": "K"}, "key 'K' is bound to both 'kill' and 'confirm'"),
    # A dialog's confirm key that also opens a dialog: a double press would confirm what the first asked.
    ({"confirm": "p"}, "key 'p' is bound to both 'pause' and 'confirm'"),
    ({"confirm": "F"}, "key 'F' is bound to both 'flatten' and 'confirm'"),
    ({"quit": "y"}, "key 'y' is bound to both 'quit' and 'confirm'"),
    ({"confirm": "escape"}, "tui.keys.confirm: 'escape' cannot be used (it cancels a dialog)"),
    ({"confirm": "enter"}, "tui.keys.confirm: 'enter' cannot be used (it cancels a dialog)"),
    ({"reject": "a b"}, "tui.keys.reject: 'a b' is not a key name"),
    ({"cancel_order": "k"}, "tui.keys.cancel_order: 'k' cannot be used (it moves up in the focused pane)"),
    ({"views": "1,2"}, "tui.keys.views: '1,2' needs 7 keys, one per view in this order: main, trades, orders"),
    ({"views": "1,2,3,4,5,6,x"}, "key 'x' is bound to both 'views' and 'close_trade'"),
    ({"pause": "notakey"}, "tui.keys.pause: 'notakey' is not a key name"),
    ({"help": "F1"}, "tui.keys.help: 'F1' is not a key name"),
    ({"approve": "ctrl+f25"}, "tui.keys.approve: 'ctrl+f25' is not a key name"),
    ({"reject": "cmd+r"}, "tui.keys.reject: 'cmd+r' is not a key name"),
    ({"views": "1,2,3,4,5,6,seven"}, "tui.keys.views: 'seven' is not a key name"),
    # A terminal sends the character shift makes, never shift with it: a binding no key press reaches.
    ({"pause": "shift+p"}, "tui.keys.pause: 'shift+p' cannot be used (a terminal sends 'P' for it: write 'P')"),
    ({"pause": "shift+k"}, "tui.keys.pause: 'shift+k' cannot be used (a terminal sends 'K' for it: write 'K')"),
    ({"help": "shift+slash"}, "tui.keys.help: 'shift+slash' cannot be used (a terminal sends the character shift "
                              "makes, not shift with a character: write that character)"),
    # Nor ctrl+shift with a letter: a terminal sends the letter's control code, the same as for ctrl with it alone.
    ({"pause": "ctrl+shift+p"}, "tui.keys.pause: 'ctrl+shift+p' cannot be used (a terminal sends 'ctrl+p' for it, "
                                "shift or not)"),
    ({"approve": "shift+ctrl+x"}, "tui.keys.approve: 'shift+ctrl+x' cannot be used (a terminal sends 'ctrl+x' for "
                                  "it, shift or not)"),
    ({"pause": "ctrl+P"}, "tui.keys.pause: 'ctrl+P' cannot be used (a terminal sends 'ctrl+p' for it, shift or not)"),
])
def test_bad_key_entries_are_refused_with_the_id_named(entry, message):
    with pytest.raises(keys.KeymapError, match=re.escape(message)):
        keys.keymap(entry)


def test_the_key_names_textual_knows_are_accepted():
    # The console's keys are checked without Textual (config check): against Textual's own names here.
    named = [k.value for k in Keys if not k.value.startswith("<") and k.value not in ("ctrl-at", "return")]
    printable = [_character_to_key(c) for c in string.printable if not c.isspace()] + list("é€")
    bound = {key for k in keys.KEYS for key in k.keys.split(",")} | set(keys.PANE_KEYS) | set(keys.TAKEN)
    for name in named + printable + ["shift+up", "alt+x", "ctrl+shift+f5", "escape", "space", "f24", "?", "/"]:
        textual_name = _character_to_key(name) if len(name) == 1 else name
        if not {name, name.lower(), textual_name} & bound:
            assert keys.keymap({"approval_mode": name}), name


def test_help_names_every_key_the_panes_answer():
    """Every key a pane answers itself (PageUp, Home, left and right in a table) is said in help, with the ones no
    binding remaps: help is where every key the console answers is said."""
    said = {key for fixed, _ in keys.FIXED_KEYS for key in fixed}
    told = " ".join(does for _, does in keys.FIXED_KEYS).split()
    shown = {"pageup": "PgUp", "pagedown": "PgDn", "home": "Home", "left": "←", "right": "→"}
    missing = {k for k in keys.PANE_KEYS if k not in said and shown.get(k) not in told}
    assert not missing, missing


@pytest.mark.parametrize("views, shown", [
    ("f1,f2,f3,f4,f6,f7,f8", "f8 Health"),  # every tab whole, closer together
    ("ctrl+f1,ctrl+f2,ctrl+f3,ctrl+f4,ctrl+f5,ctrl+f6,ctrl+f7", "…"),  # too long even so: cut, and marked
], ids=["fits closer", "cut and marked"])
async def test_the_tab_line_of_remapped_view_keys_is_never_cut_silently(tmp_path, views, shown):
    app = console(tmp_path, speed=4.0, keys={"views": views})
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        await pilot.press(views.split(",")[1])
        await until(pilot, lambda: app.current_view == "trades", "the trades view")
        line = next(ln for ln in screen_text(app).splitlines() if "Main" in ln)
        assert shown in line and line.rstrip().endswith(shown.split()[-1]), line


async def test_the_tab_line_is_drawn_again_for_the_width_a_resize_leaves(tmp_path):
    views = "ctrl+f1,ctrl+f2,ctrl+f3,ctrl+f4,ctrl+f5,ctrl+f6,ctrl+f7"
    app = console(tmp_path, speed=4.0, keys={"views": views})
    async with app.run_test(size=(160, 40)) as pilot:
        await running(pilot)
        await pilot.press("ctrl+f2")
        await until(pilot, lambda: app.current_view == "trades", "the trades view")

        def tabs() -> str:
            return next(ln for ln in screen_text(app).splitlines() if "Main" in ln).rstrip()

        assert tabs().endswith("ctrl+f7 Health"), tabs()  # whole at 160 columns
        await pilot.resize_terminal(80, 24)
        await until(pilot, lambda: tabs().endswith("…"), "the tab line cut with its mark at 80 columns")
        await pilot.resize_terminal(160, 40)
        await until(pilot, lambda: tabs().endswith("ctrl+f7 Health"), "the tab line whole again")


async def test_remapped_view_keys_switch_views_and_help_shows_them(tmp_path):
    app = console(tmp_path, speed=4.0, keys={"views": "f1,f2,f3,f4,f5,f6,f7"})
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        await pilot.press("2")
        assert app.current_view == "main"  # the default key no longer switches
        await pilot.press("f4")
        await until(pilot, lambda: "locked (in orders)" in screen_text(app), "the balances view on f4")
        await pilot.press("question_mark")
        await until(pilot, lambda: "ffe console keys" in screen_text(app), "the help dialog")
        assert "f1, f2, f3, f4, f5, f6, f7" in screen_text(app)


async def test_the_main_view_s_keys_pressed_in_another_view_show_the_main_view_they_act_on(tmp_path):
    """`v` (the next detail pane), `d` (decisions in the log) and `/` (the log's filter) act on the main view: pressed
    in another view, they show it, rather than change a pane nobody sees."""
    app = console(tmp_path, speed=4.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        for key in ("v", "d", "slash"):
            await pilot.press("3")
            assert app.current_view == "orders"
            await pilot.press(key)
            await pilot.pause()
            assert app.current_view == "main", key
            await pilot.press("escape")


@pytest.mark.parametrize("entry, says", [
    ('pause = "p", panic = "x"', "config.toml:3: tui.keys: unknown binding id 'panic'"),
    ('pause = "notakey"', "config.toml:3: tui.keys.pause: 'notakey' is not a key name"),
], ids=["unknown id", "unknown key"])
def test_ffe_run_refuses_a_bad_key_entry_naming_file_line_and_id(tmp_path, entry, says):
    (tmp_path / "config.toml").write_text(f'mode = "paper"\n[tui]\nkeys = {{ {entry} }}\n')
    res = run_ffe(tmp_path, "run", env=ffe_env())
    assert res.returncode == 2
    assert res.stderr.strip().startswith(f"ffe: error: {says}"), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data" / "ffe.db").exists()  # nothing started


async def test_a_remapped_kill_key_works_and_the_old_one_does_not(tmp_path):
    db = db_path(tmp_path)
    app = console(tmp_path, keys={"kill": "X,ctrl+x"})
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        assert "X Kill switch" in screen_text(app)  # the footer shows the remapped key
        await pilot.press("K")
        await pilot.pause(0.3)
        assert "KILL SWITCH" not in screen_text(app)
        await pilot.press("ctrl+x")
        await until(pilot, lambda: "KILL SWITCH" in screen_text(app), "the kill switch on ctrl+x")
        await pilot.press("y")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", "HALTED stored")


async def test_footer_has_at_most_seven_keys_at_80_columns_and_help_lists_every_binding(tmp_path):
    app = console(tmp_path, speed=4.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        footer = [k for k in app.query("FooterKey") if k.display]
        assert 1 <= len(footer) <= 7
        first_line = screen_text(app).split("\n")[-1]
        assert first_line.lstrip().startswith("K Kill switch")
        await pilot.press("question_mark")
        await until(pilot, lambda: "ffe console keys" in screen_text(app), "the help dialog")
        text = screen_text(app)
        for k in keys.KEYS:
            assert k.id in text and k.description[:20] in text, k.id
        await pilot.press("escape")
        await until(pilot, lambda: "ffe console keys" not in screen_text(app), "help to close")


async def test_the_footer_keeps_its_keys_when_focus_moves_and_the_keys_stay_the_same(tmp_path):
    """Each view shown and each table focused moves the focus; the keys the footer shows stay the same, and so do
    its key widgets (Textual's own footer mounts them all anew at every move of focus)."""
    app = console(tmp_path, speed=4.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        await pilot.pause(0.3)
        before = list(app.query("FooterKey"))
        focused = {type(app.focused).__name__}
        for key in ("2", "3", "4", "1", "tab", "tab"):
            await pilot.press(key)
            await pilot.pause(0.1)
            focused.add(type(app.focused).__name__)
        assert len(focused) >= 3, focused  # the focus did move
        after = list(app.query("FooterKey"))
        assert len(after) == len(before) and all(a is b for a, b in zip(after, before))
        assert screen_text(app).split("\n")[-1].lstrip().startswith("K Kill switch")


class Zoomable(Static, can_focus=True):
    BINDINGS = [Binding("z", "zoom", "Zoom in")]


class TwoWidgets(App):
    def compose(self):
        yield Input(id="plain")
        yield Zoomable("zoomable", id="zoomable")
        yield KeysFooter(show_command_palette=False)


async def test_the_footer_shows_the_keys_that_come_and_go_with_the_focus():
    app = TwoWidgets()
    async with app.run_test(size=(80, 10)) as pilot:
        def footer() -> str:
            return " ".join(str(k.render()) for k in app.query("FooterKey"))

        app.query_one("#plain").focus()
        await pilot.pause(0.1)
        assert "Zoom in" not in footer()
        app.query_one("#zoomable").focus()
        await pilot.pause(0.1)
        assert "Zoom in" in footer()
        app.query_one("#plain").focus()
        await pilot.pause(0.1)
        assert "Zoom in" not in footer()


async def test_j_and_k_move_every_focusable_pane_of_every_view_as_down_and_up_do(tmp_path):
    """keys.PANE_KEYS keeps j/k for moving within the focused pane: in each pane Tab reaches (the log, the tables,
    the read views), they do what down and up do there."""
    app = console(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        seen = set()
        for view in keys.VIEWS:
            await pilot.press(app.view_keys[keys.VIEWS.index(view)])
            await until(pilot, lambda: app.current_view == view, f"the {view} view")
            for pane in list(app.screen.focus_chain):
                pane.focus()
                await until(pilot, lambda: app.focused is pane, f"{pane.id} focused")
                bound = app.active_bindings
                for letter, arrow in (("j", "down"), ("k", "up")):
                    assert letter in bound and bound[letter].node is pane, (view, pane.id, letter)
                    assert bound[letter].binding.action == bound[arrow].binding.action, (view, pane.id, letter)
                seen.add(pane.id)
        assert {"positions", "approvals", "log", "trades", "orders", "health"} <= seen, seen


async def test_the_command_palette_reaches_the_same_actions(tmp_path):
    db = db_path(tmp_path)
    app = console(tmp_path, speed=4.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), "the command palette")
        await pilot.press(*"pause", "enter")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "PAUSED", "PAUSED stored")


async def test_ctrl_k_kills_from_the_log_filter_when_kill_is_remapped_to_k_and_help_says_so(tmp_path):
    """`kill = "K"` (the example in docs/config.md): ctrl+k still kills, from inside the log filter too, where K is
    a letter."""
    db = db_path(tmp_path)
    app = console(tmp_path, keys={"pause": "p", "kill": "K"})
    async with app.run_test(size=(80, 24)) as pilot:
        await running(pilot)
        await pilot.press("question_mark")
        shown = await until(pilot, lambda: next((t for t in [screen_text(app)] if "Approval mode" in t), None),
                            "the help dialog's keys")
        assert re.search(r"K, \^k +Kill switch", shown), shown
        await pilot.press("escape")
        await until(pilot, lambda: "ffe console keys" not in screen_text(app), "help to close")
        await pilot.press("slash")
        await until(pilot, lambda: "Filter the log" in screen_text(app), "the filter dialog")
        await pilot.press("ctrl+k")
        await until(pilot, lambda: "KILL SWITCH" in screen_text(app), "the kill switch over the filter dialog")
        await pilot.press("y")
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", "HALTED stored")


def held_open(monkeypatch) -> asyncio.Event:
    """The engine's start held until the event returned is set: the console says STARTING meanwhile, as while a
    live start waits on its exchange."""
    from ffe_engine.host import EngineHost

    gate = asyncio.Event()
    opened = EngineHost.open.__func__

    async def slow_open(cls, *args, **kwargs):
        await gate.wait()
        return await opened(cls, *args, **kwargs)

    monkeypatch.setattr(EngineHost, "open", classmethod(slow_open))
    return gate


async def test_the_kill_switch_pressed_while_the_engine_starts_halts_it_before_it_trades(tmp_path, monkeypatch):
    """The console says STARTING while the engine opens (a live start can wait a while on its exchange). The kill
    switch, pressed then and confirmed, is not dropped: the engine is halted as soon as it has started, before it
    trades, as SIGUSR1 halts a headless start. Pause and flatten, which need a running engine, say so."""
    gate = held_open(monkeypatch)
    db = db_path(tmp_path)
    app = console(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        assert app.engine is None
        for key in ("p", "F"):
            await pilot.press(key)
            await until(pilot, lambda: any("not running yet" in n.message for n in app._notifications),
                        f"{key}: the engine is not running yet")
            app.clear_notifications()
        await pilot.press("ctrl+k")
        await until(pilot, lambda: "KILL SWITCH" in screen_text(app), "the kill switch's dialog")
        assert "as soon as it has started" in screen_text(app)
        await pilot.press("y")
        await pilot.pause(0.2)
        gate.set()
        await until(pilot, lambda: app.snap is not None and "HALTED" in status_text(app), "HALTED on the status line")
        # The state is HALTED in memory first (no order passes the gates from then on), then committed: on a busy
        # machine the status line can show it a moment before the database holds it.
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", "HALTED stored")
        await pilot.pause(1.0)
        assert db_value(db, "SELECT COUNT(*) FROM orders") == 0


@pytest.mark.parametrize("quit_first", [False, True], ids=["failed", "quit-then-failed"])
async def test_the_kill_switch_asked_while_a_start_fails_holds_at_the_next_start(tmp_path, monkeypatch, quit_first):
    """K and y while STARTING, then the start fails (a live start's exchange stops answering), the operator having
    quit meanwhile or not: the console ends saying the halt is kept, and the next start comes up HALTED. It was
    dropped with the failed start, and the next start came up RUNNING."""
    from ffe_engine.errors import FfeError
    from ffe_engine.host import EngineHost

    gate = asyncio.Event()

    async def failing_open(cls, *args, **kwargs):
        await gate.wait()
        raise FfeError("live start check failed on binance: the exchange did not answer; nothing was sent")

    with monkeypatch.context() as patched:
        patched.setattr(EngineHost, "open", classmethod(failing_open))
        app = console(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await halt_asked_while_starting(pilot, app)
            if quit_first:
                await pilot.press("q")
                await pilot.pause(0.2)
            gate.set()
            await until(pilot, lambda: app.start_failure is not None or not app.is_running, "the start failing")
    said = str(app.start_failure)
    assert app.start_failure.exit_code == 1, said
    assert said.endswith("the kill switch asked during the start is kept: the next start comes up HALTED"), said
    again = console(tmp_path)
    async with again.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: again.snap is not None and "HALTED" in status_text(again), "HALTED at the start")
    assert db_value(db_path(tmp_path), "SELECT state FROM engine_state") == "HALTED"


async def halt_asked_while_starting(pilot, app) -> None:
    """ctrl+k and y while the engine is STARTING."""
    await pilot.pause(0.3)
    await pilot.press("ctrl+k")
    await until(pilot, lambda: "KILL SWITCH" in screen_text(app), "the kill switch's dialog")
    await pilot.press("y")
    await pilot.pause(0.2)


async def held_for_the_answer(pilot, app, gate: asyncio.Event) -> None:
    """K while the engine is STARTING, then its start let through with the question still open."""
    await pilot.pause(0.3)
    await pilot.press("K")
    await until(pilot, lambda: "KILL SWITCH" in screen_text(app), "the kill switch's dialog")
    gate.set()
    await until(pilot, lambda: app.engine is not None, "the engine opened")


@pytest.mark.parametrize("answer", ["y", "n"])
async def test_the_kill_switch_asked_while_starting_holds_the_engine_until_it_is_answered(tmp_path, monkeypatch,
                                                                                           answer):
    """K while STARTING, its dialog still open when the engine has started: the engine does not run (nor trade)
    before the operator answers. `y` halts it before its first bar; `n` lets it run."""
    gate = held_open(monkeypatch)
    db = db_path(tmp_path)
    app = console(tmp_path, speed=50.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await held_for_the_answer(pilot, app, gate)
        await pilot.pause(1.5)  # at 50 bars a second, a running engine would be some seventy bars in by now
        assert app.engine.bars == 0 and db_value(db, "SELECT COUNT(*) FROM orders") == 0
        assert "KILL SWITCH" in screen_text(app)
        assert app.engine.liveness.loop_age() < 1.0  # held on purpose, not stalled: no LOOP_STALLED page
        await until(pilot, lambda: "has started and waits for your answer" in screen_text(app),
                    "the question saying the engine waits for it")
        await pilot.press(answer)
        if answer == "y":
            await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", "HALTED stored")
            await pilot.pause(0.5)
            assert db_value(db, "SELECT COUNT(*) FROM orders") == 0
        else:
            await until(pilot, lambda: app.engine.bars > 0, "the engine running")
            assert db_value(db, "SELECT state FROM engine_state") != "HALTED"


async def test_sigusr1_while_the_engine_waits_for_the_kill_switch_s_answer_halts_it_once(tmp_path, monkeypatch):
    """SIGUSR1 while the engine, started, waits for the answer to the kill switch asked during its start: it is
    halted then, the question is closed (it is answered), and a `y` pressed after it halts nothing a second time."""
    gate = held_open(monkeypatch)
    db = db_path(tmp_path)
    app = console(tmp_path, speed=50.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await held_for_the_answer(pilot, app, gate)
        await pilot.pause(0.3)
        app._signal_halt()
        await until(pilot, lambda: db_value(db, "SELECT state FROM engine_state") == "HALTED", "HALTED stored")
        await until(pilot, lambda: "waits for your answer before it runs" not in screen_text(app),
                    "the question closed")
        await pilot.press("y")
        await pilot.pause(0.5)
        kills = db_value(db, "SELECT COUNT(*) FROM events WHERE event = 'kill_switch'")
        assert kills == 1, kills
        assert db_value(db, "SELECT COUNT(*) FROM orders") == 0


async def test_an_engine_held_for_the_kill_switch_s_answer_answers_ffe_ctl_and_its_halt_ends_the_question(
        tmp_path, monkeypatch):
    """Held for the answer, the engine is reachable: `ffe ctl health` and `status` answer (cron and a second
    terminal see it), and `ffe ctl halt` halts it: the question, answered by that, closes; a `y` after it halts
    nothing a second time."""
    starter_config(tmp_path)  # `ffe ctl` run from tmp_path finds the same data directory
    gate = held_open(monkeypatch)
    db = db_path(tmp_path)
    app = console(tmp_path, speed=50.0, monitor={"enabled": False})
    async with app.run_test(size=(80, 24)) as pilot:
        await held_for_the_answer(pilot, app, gate)
        await pilot.pause(0.5)
        health = await asyncio.to_thread(run_ffe, tmp_path, "ctl", "health")
        assert health.returncode == 0, (health.stdout, health.stderr)
        halt = await asyncio.to_thread(run_ffe, tmp_path, "ctl", "halt")
        assert halt.returncode == 0, (halt.stdout, halt.stderr)
        await until(pilot, lambda: "waits for your answer before it runs" not in screen_text(app),
                    "the question closed")
        await pilot.press("y")
        await pilot.pause(0.5)
        assert db_value(db, "SELECT state FROM engine_state") == "HALTED"
        assert db_value(db, "SELECT COUNT(*) FROM events WHERE event = 'kill_switch'") == 1
        assert db_value(db, "SELECT COUNT(*) FROM orders") == 0


async def test_the_first_halt_asked_while_the_engine_starts_is_the_one_recorded(tmp_path, monkeypatch):
    """K and y, then SIGUSR1, both while the engine starts: one halt, recorded as the operator's kill switch (the
    first asked), not taken over by the signal that came after it."""
    gate = held_open(monkeypatch)
    db = db_path(tmp_path)
    app = console(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await halt_asked_while_starting(pilot, app)
        app._signal_halt()
        gate.set()
        await until(pilot, lambda: app.snap is not None and "HALTED" in status_text(app), "HALTED on the status line")
        await pilot.pause(0.5)
        assert db_value(db, "SELECT state FROM engine_state") == "HALTED"
        assert db_value(db, "SELECT reason FROM engine_state") == "kill switch"
        assert db_value(db, "SELECT COUNT(*) FROM events WHERE event = 'kill_switch'") == 1


async def test_sigusr1_while_the_console_starts_its_engine_halts_it_once_started(tmp_path, monkeypatch):
    gate = held_open(monkeypatch)
    app = console(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        app._signal_halt()
        gate.set()
        await until(pilot, lambda: app.snap is not None and "HALTED" in status_text(app), "HALTED on the status line")
        assert db_value(db_path(tmp_path), "SELECT state FROM engine_state") == "HALTED"


async def test_a_halt_asked_for_while_the_engine_starts_holds_though_the_console_stops_before_it_started(tmp_path,
                                                                                                         monkeypatch):
    """K and y while STARTING, then a stop (SIGTERM from systemd, or q) before the start ends: the engine that opens
    is halted before it is closed, and starts again HALTED: the dialog said HALTED is stored."""
    gate = held_open(monkeypatch)
    db = db_path(tmp_path)
    app = console(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await halt_asked_while_starting(pilot, app)
        app._signal_stop("SIGTERM")
        gate.set()
        await until(pilot, lambda: not app.is_running, "the console to exit", timeout=60)
    assert db_value(db, "SELECT state FROM engine_state") == "HALTED"
    assert db_value(db, "SELECT COUNT(*) FROM orders") == 0


async def test_sigusr1_after_a_stop_while_the_engine_starts_still_halts_it(tmp_path, monkeypatch):
    """SIGTERM, then SIGUSR1, while the console's engine opens: the stop does not drop the halt; the engine that
    opens is halted before it is closed."""
    gate = held_open(monkeypatch)
    app = console(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        app._signal_stop("SIGTERM")
        app._signal_halt()
        gate.set()
        await until(pilot, lambda: not app.is_running, "the console to exit", timeout=60)
    assert db_value(db_path(tmp_path), "SELECT state FROM engine_state") == "HALTED"


README = Path(__file__).resolve().parent.parent / "README.md"
ARROWS = {"↑": "up", "↓": "down"}


def readme_console_keys() -> set[str]:
    """The keys in the first column of README's table of the console's keys (`1` … `7`: every digit between)."""
    text = README.read_text()
    table = text[text.index("### The console"):]
    table = table[table.index("| key |"):]
    table = table[:table.index("\n\n")]
    found: set[str] = set()
    for row in table.splitlines()[2:]:
        cell = row.split("|")[1]
        named = [ARROWS.get(k, k) for k in re.findall(r"`([^`]+)`", cell)]
        if "…" in cell and len(named) == 2 and all(k.isdigit() for k in named):
            named = [str(n) for n in range(int(named[0]), int(named[1]) + 1)]
        found.update(named)
    return found


def help_keys(rows: list[tuple[str, str, str]]) -> set[str]:
    found: set[str] = set()
    for shown, _, _ in rows:
        for k in shown.split(", "):
            if re.fullmatch(r"\d-\d", k):
                found.update(str(n) for n in range(int(k[0]), int(k[2]) + 1))
            else:
                found.add(re.sub(r"^\^(.)$", r"ctrl+\1", k))  # ^k: ctrl+k, as help shows it
    return found


async def test_help_lists_every_key_the_readme_documents_end_included_and_the_readme_every_key_help_lists(tmp_path):
    """End in the log follows the newest line again (README): help says so, as it does every other key, also those
    no binding remaps (the moves within and between panes); and every key help lists is in README's table."""
    app = console(tmp_path, speed=4.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await running(pilot)
        await pilot.press("question_mark")
        await until(pilot, lambda: "ffe console keys" in screen_text(app), "the help dialog")
        text = screen_text(app)
        assert re.search(r"End +in the log: follow the newest line", text), text
        rows = [(keys_shown.lower() if keys_shown == "End" else keys_shown, desc, bid)
                for keys_shown, desc, bid in app.screen.rows]
    documented = {k.lower() if k == "End" else k for k in readme_console_keys()}
    listed = help_keys(rows)
    assert documented - listed == set(), "in README, not in help"
    assert listed - documented == set(), "in help, not in README"
