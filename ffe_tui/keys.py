"""The console's key bindings: one id each, remappable from `[tui] keys` in the configuration.

The footer has room for seven bindings at 80 columns; the rest are listed in help (`?`) and the command palette.
Within the focused pane the arrow keys and j/k move (tab and shift+tab move between panes); those keys are kept for
that and refused for other bindings.
ctrl+k always kills, whatever `kill` is remapped to: the one key that kills from a text field too.
Keys that tmux or the terminal itself take are refused: ctrl+b and ctrl+a are tmux/screen prefixes, ctrl+m/j/i/h
arrive as enter/enter/tab/backspace, ctrl+c and ctrl+z belong to the shell, and ctrl/shift+enter are not told apart
from enter by most terminals. Shift with a character is refused (a terminal sends the character shift makes: `P`
for shift+p), and so is ctrl+shift with a letter (a terminal sends ctrl+p for ctrl+shift+p). ctrl+q and ctrl+c
quit, whatever `quit` is remapped to, asking first as it does. A name Textual does not know (`notakey`) is refused:
no key press would reach it.
"""

from __future__ import annotations

import string
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from ffe_engine.errors import FfeError

if TYPE_CHECKING:
    from textual.binding import Binding

    from ffe_engine.config import Origin

# Where `[tui] keys`, or one binding of it (its id), was set: an Origin, or None for a default.
OriginOf = Callable[[Optional[str]], Optional["Origin"]]


class KeymapError(FfeError):
    """A bad `[tui] keys` entry (one line, naming the binding id)."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class Key:
    id: str
    keys: str  # Textual key names, comma separated
    action: str
    description: str
    footer: bool  # shown in the footer (at most seven)
    priority: bool = False  # works over dialogs too (the kill keys: K only where no text is being typed)
    scope: str = "app"  # "dialog": read by the confirmation dialog, where every other key cancels; "views": one key
    # per view, in the order of VIEWS (taken by the console where no text is being typed)


KEYS: tuple[Key, ...] = (
    Key("kill", "K,ctrl+k", "kill", "Kill switch", True, priority=True),
    Key("pause", "p", "pause", "Pause/resume", True),
    Key("flatten", "F", "flatten", "Flatten", True),
    Key("approve", "a", "approve", "Approve", True),
    Key("reject", "r", "reject", "Reject", True),
    Key("help", "question_mark", "help", "Help", True),
    Key("quit", "q", "quit", "Quit", True),
    Key("approval_mode", "m", "approval_mode", "Approval mode auto/manual", False),
    Key("filter", "slash", "filter_log", "Filter the log by event type", False),
    Key("decisions", "d", "toggle_decisions", "Decisions in the log on/off (off at start)", False),
    Key("view", "v", "next_view", "Next detail pane (votes, gates, breaker…)", False),
    Key("views", ",".join(str(n) for n in range(1, 8)), "", "main trades orders balances profit why health",
        False, scope="views"),
    Key("cancel_order", "c", "cancel_order", "Cancel the selected open order (orders view)", False),
    Key("close_trade", "x", "close_trade", "Close the selected position at market", False),
    Key("palette", "ctrl+p", "command_palette", "Command palette", False, priority=True),
    Key("confirm", "y", "confirm", "Confirm in a dialog (any other key cancels)", False, scope="dialog"),
)

IDS = tuple(k.id for k in KEYS)

# The console's views, in the order of the `views` keys (1 to 7 unless remapped).
VIEWS = ("main", "trades", "orders", "balances", "profit", "why", "health")

# Move within the focused pane (beside the arrow keys), in every table and scrolling pane: not for other bindings.
PANE_KEYS = {"j": "moves down in the focused pane", "k": "moves up in the focused pane",
             "up": "moves up in the focused pane", "down": "moves down in the focused pane",
             "tab": "moves to the next pane", "shift+tab": "moves to the previous pane",
             # The tables and the log take these themselves when focused: a binding would fire elsewhere only.
             "left": "moves in the focused table", "right": "moves in the focused table",
             "home": "scrolls the focused pane to its top", "end": "scrolls the focused pane to its end (the log: "
             "follows the newest line again)", "pageup": "scrolls the focused pane", "pagedown": "scrolls the "
             "focused pane"}

# The keys no binding remaps, listed by help after the bindings (Textual's key names, shown as display shows them):
# help is where every key the console answers is said, these as much as the bindings.
FIXED_KEYS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("up", "down", "j", "k"), "move in the focused pane (a table: its row); PgUp PgDn Home ← → too"),
    (("tab", "shift+tab"), "move to the next or the previous pane"),
    (("end",), "in the log: follow the newest line again, after scrolling up"),
    (("ctrl+q", "ctrl+c"), "quit, as the quit key does (asks first)"),
)

TAKEN = {
    "ctrl+b": "the tmux prefix",
    "ctrl+a": "the screen/tmux prefix",
    "ctrl+m": "sent as enter by terminals",
    "ctrl+j": "sent as enter by terminals",
    "ctrl+i": "sent as tab by terminals",
    "ctrl+h": "sent as backspace by terminals",
    "ctrl+c": "the shell's interrupt key; in the console it quits, asking first",
    "ctrl+q": "it quits the console, asking first",
    "ctrl+z": "the shell's suspend key",
    "ctrl+enter": "not told apart from enter by most terminals",
    "shift+enter": "not told apart from enter by most terminals",
}

# The kill key that works everywhere (text fields and dialogs included): kept whatever `kill` is remapped to, and
# never another binding's.
ALWAYS_KILL = "ctrl+k"

# What operators write in a config file -> Textual's key names.
_ALIASES = {"?": "question_mark", "/": "slash", " ": "space", "esc": "escape", "return": "enter"}

# Textual's key names (textual.keys), kept here so that `ffe config check` checks them without importing Textual:
# a name Textual does not know is a binding no key press can reach.
NAMED_KEYS = frozenset({"escape", "enter", "tab", "backspace", "delete", "insert", "home", "end", "pageup",
                        "pagedown", "up", "down", "left", "right", "space", *(f"f{n}" for n in range(1, 25))})
MODIFIERS = frozenset({"ctrl", "shift", "alt", "meta", "super", "hyper"})
# Textual names a printable character that is not a letter or digit by its Unicode name ("?" is question_mark),
# a few of them shortened.
_SHORTER = {"solidus": "slash", "reverse_solidus": "backslash", "commercial_at": "at", "hyphen_minus": "minus",
            "plus_sign": "plus", "low_line": "underscore"}
CHARACTER_NAMES = frozenset(
    _SHORTER.get(name, name)
    for name in (unicodedata.name(c).lower().replace("-", "_").replace(" ", "_") for c in string.punctuation))


def is_key_name(key: str) -> bool:
    """A key as Textual names it: a printable character or its name, a named key, with modifiers before it."""
    *mods, last = key.split("+") if len(key) > 1 else [key]
    if any(m not in MODIFIERS for m in mods) or len(set(mods)) != len(mods):
        return False
    return (len(last) == 1 and last.isprintable() and not last.isspace()) or last in NAMED_KEYS \
        or last in CHARACTER_NAMES


def _shifted_character(key: str) -> str | None:
    """Why a key of shift with a character is no key at all: a terminal sends the character shift makes (`P`, `?`),
    never shift with one, so no press reaches the binding (`shift+up`, `shift+f5` are keys of their own). With ctrl
    and a letter, a terminal sends the letter's control code, the same whether shift is down or not: ctrl+shift+p
    (or ctrl+P) arrives as ctrl+p."""
    *mods, last = key.split("+") if len(key) > 1 else [key]
    letter = len(last) == 1 and last.isascii() and last.isalpha()
    if letter and (sorted(mods) == ["ctrl", "shift"] or (mods == ["ctrl"] and last.isupper())):
        return f"a terminal sends {'ctrl+' + last.lower()!r} for it, shift or not"
    if mods != ["shift"] or last in NAMED_KEYS:  # (with alt too, a terminal may tell it: Textual names some)
        return None
    if len(last) == 1 and last.isalpha() and last.lower() == last:
        return f"a terminal sends {last.upper()!r} for it: write {last.upper()!r}"
    return "a terminal sends the character shift makes, not shift with a character: write that character"


# ctrl with `[` (or `{`, its shifted key) is the escape character's code: a terminal sends escape for it, with shift
# or alt too (alt adds an escape before it).
_ESCAPE_KEYS = frozenset({"[", "{", "left_square_bracket", "left_curly_bracket"})


def _sent_as_escape(key: str) -> bool:
    *mods, last = key.split("+") if len(key) > 1 else [key]
    return "ctrl" in mods and last in _ESCAPE_KEYS


# alt is sent as an escape before the key; escape and `[` (CSI) or `O` (SS3) begin the sequences a terminal sends for
# other keys (arrows, function keys), so alt with either never arrives as itself.
_SEQUENCE_STARTS = {"[": "[", "left_square_bracket": "[", "O": "O"}
# Modifiers Textual names that terminals reached over SSH or under tmux never send (only a local terminal speaking
# the kitty keyboard protocol does, and tmux does not pass it on): a binding the footer would show and no press fires.
_UNSENT_MODIFIERS = ("meta", "super", "hyper")


def _never_arrives(key: str) -> str | None:
    """Why a key with alt, meta, super or hyper never reaches the console as itself; None when it does."""
    *mods, last = key.split("+") if len(key) > 1 else [key]
    if any(m in _UNSENT_MODIFIERS for m in mods):
        return "a terminal over SSH or under tmux sends no meta, super or hyper: use alt+"
    if "alt" in mods:
        start = _SEQUENCE_STARTS.get(last) or ("O" if last == "o" and "shift" in mods else None)
        if start is not None:
            return f"escape and {start!r} begin a terminal's key sequences: it never arrives as this key"
    return None


def bindings() -> list[Binding]:
    # Textual is imported here, by the console: `ffe config check` validates the keys without it.
    from textual.binding import Binding

    # The kill keys are taken by the console itself before any binding is looked at (ConsoleApp.on_event): as a
    # priority binding, K would also fire inside a text field.
    return [Binding(k.keys, k.action, k.description, show=k.footer, priority=k.priority and k.id != "kill", id=k.id)
            for k in KEYS if k.scope == "app"]


def _normalise(key: str) -> str:
    key = key.strip()
    key = _ALIASES.get(key, key)
    if "+" in key:  # modifiers are case-insensitive, the final key is not (K is shift+k)
        *mods, last = key.split("+")
        key = "+".join([m.lower() for m in mods] + [last])
    return key


def where(settings) -> OriginOf:
    """Where the settings say `[tui] keys`, or one binding of it, was set: a binding's own line or variable
    (FFE_TUI__KEYS__pause), else the table's (its line, FFE_TUI__KEYS)."""
    def origin_of(bid: str | None) -> Origin | None:
        own = settings.set_at("tui", "keys", bid) if bid is not None else None
        return own or settings.origin_of("tui", "keys")
    return origin_of


def _nowhere(bid: str | None) -> Origin | None:
    return None


def _blame(origin_of: OriginOf, bid: str | None, problem: str, whole: bool = False) -> KeymapError:
    """`problem` after where the binding `bid` was set and its key (`tui.keys.pause`; `tui.keys` for the table as a
    `whole`): `config.toml:3: tui.keys.pause: ...`, `environment: FFE_TUI__KEYS: tui.keys.pause: ...`; a variable that
    names the binding itself (`.env:1: FFE_TUI__KEYS__pause: ...`) says the key already."""
    key = "tui.keys" if whole or bid is None else f"tui.keys.{bid}"
    origin = origin_of(bid)
    if origin is None or origin.kind not in ("toml", "dotenv", "env"):
        return KeymapError(f"{key}: {problem}")
    if origin.var is None:
        return KeymapError(f"{origin.where}: {key}: {problem}")
    if bid is not None and origin.var.upper() == f"FFE_TUI__KEYS__{bid}".upper():
        return KeymapError(f"{origin.where}: {origin.var}: {problem}")
    return KeymapError(f"{origin.where}: {origin.var}: {key}: {problem}")


def keymap(keys: dict[str, str], origin_of: OriginOf = _nowhere) -> dict[str, str]:
    """Validate `[tui] keys` (binding id -> key or comma-separated keys) and return Textual's keymap; an error
    says where the binding at fault was set (`origin_of`, see where())."""
    out: dict[str, str] = {}
    for bid, value in keys.items():
        if bid not in IDS:
            raise _blame(origin_of, bid, f"unknown binding id {bid!r} (known: {', '.join(IDS)})", whole=True)
        parts = [_normalise(p) for p in str(value).split(",")]
        if not all(parts) or any(" " in p for p in parts):
            raise _blame(origin_of, bid, f"{value!r} is not a key name such as 'p', 'K' or 'ctrl+k'")
        for p in parts:
            if not is_key_name(p):
                raise _blame(origin_of, bid, f"{p!r} is not a key name (a character such as 'p' or 'K', a named "
                                             "key such as 'space', 'escape' or 'f5', or either after modifiers: "
                                             "'ctrl+k', 'shift+up')")
            if p.lower() in TAKEN:
                raise _blame(origin_of, bid, f"{p!r} cannot be used ({TAKEN[p.lower()]})")
            if _sent_as_escape(p):
                raise _blame(origin_of, bid, f"{p!r} cannot be used (sent as escape by terminals)")
            unsent = _never_arrives(p)
            if unsent is not None:
                raise _blame(origin_of, bid, f"{p!r} cannot be used ({unsent})")
            shifted = _shifted_character(p)
            if shifted is not None:
                raise _blame(origin_of, bid, f"{p!r} cannot be used ({shifted})")
            if p in PANE_KEYS:
                raise _blame(origin_of, bid, f"{p!r} cannot be used (it {PANE_KEYS[p]})")
            if bid == "confirm" and p in ("enter", "escape"):
                raise _blame(origin_of, bid, f"{p!r} cannot be used (it cancels a dialog)")
            if p == ALWAYS_KILL and bid != "kill":
                raise _blame(origin_of, bid, f"{p!r} cannot be used (the kill switch, which works everywhere)")
        if bid == "kill" and ALWAYS_KILL not in parts:
            parts.append(ALWAYS_KILL)
        if bid == "views" and len(parts) != len(VIEWS):
            raise _blame(origin_of, bid, f"{value!r} needs {len(VIEWS)} keys, one per view in this order: "
                                         f"{', '.join(VIEWS)}")
        out[bid] = ",".join(parts)
    # One key, one meaning: within the main screen, and between a dialog and the keys that work over dialogs.
    owner: dict[tuple[str, str], str] = {}
    for k in KEYS:
        for p in out.get(k.id, k.keys).split(","):
            # The view keys are read on the main screen, as the app's own bindings are; the confirm key is no key of
            # the main screen either: pressed twice, a key that opens a dialog would confirm it.
            scopes = ("app", "dialog") if k.priority or k.id == "confirm" else ("app",) if k.scope == "views" \
                else (k.scope,)
            for scope in scopes:
                other = owner.get((scope, p))
                if other is not None:  # blamed on the binding set (the other keeps its default keys)
                    problem = f"key {p!r} is bound to both {other!r} and {k.id!r}"
                    raise _blame(origin_of, k.id if k.id in keys else other, problem, whole=True)
                owner[(scope, p)] = k.id
    return out


def keys_for(binding_id: str, km: dict[str, str]) -> list[str]:
    for k in KEYS:
        if k.id == binding_id:
            return km.get(binding_id, k.keys).split(",")
    raise KeyError(binding_id)


def display_keys(keys: list[str]) -> str:
    """A binding's keys for help: `K, ctrl+k`; a run of digits as `1-7`."""
    if len(keys) > 2 and all(k.isdigit() and len(k) == 1 for k in keys) and \
            [int(k) for k in keys] == list(range(int(keys[0]), int(keys[0]) + len(keys))):
        return f"{keys[0]}-{keys[-1]}"
    return ", ".join(display(k) for k in keys)


def display(key: str) -> str:
    names = {"question_mark": "?", "slash": "/", "space": "space", "end": "End"}
    if key in names:
        return names[key]
    return key.replace("ctrl+", "^") if key.startswith("ctrl+") and len(key) == 6 else key
