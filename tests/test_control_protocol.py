"""The control socket's protocol is strictly typed: every command's arguments are checked against the command
table (ffe_engine/api.py, the arguments' models in ffe_engine/control_args.py), a wrong type is an error and never
coerced, and a failing command is answered with its error while the socket stays up. Real engine, real Unix
socket."""

from __future__ import annotations

import json

import pytest
from conftest import engine_session, make_settings

from ffe_engine import fmt
from ffe_engine.api import COMMANDS
from ffe_engine.control import request
from ffe_engine.control_args import ARGS
from ffe_engine.errors import UsageError
from ffe_engine.model import EngineState


async def _raw(path, line: bytes) -> dict:
    import asyncio

    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(line + b"\n")
        await writer.drain()
        return json.loads(await reader.readline())
    finally:
        writer.close()


@pytest.fixture
async def served(tmp_path):
    settings = make_settings(tmp_path, market={"speed": 0.0})
    async with engine_session(settings) as running:
        await running.start_control()
        yield running.engine, settings.socket_path


async def test_a_string_false_never_re_arms_a_halted_engine(served):
    engine, path = served
    await engine.halt(reason="test", by="test")
    answer = await request(path, "resume", {"confirm": "false"})
    assert answer["ok"] is False and answer["error"].startswith("resume: confirm: ")
    assert engine.state is EngineState.HALTED
    answer = await request(path, "resume", {"confirm": 1})
    assert answer["ok"] is False and engine.state is EngineState.HALTED
    answer = await request(path, "resume", {"confirm": True, "by": "test"})
    assert answer["ok"] is True and answer["result"] == "RUNNING"


async def test_wrong_missing_and_unknown_arguments_are_refused_by_name(served):
    engine, path = served
    assert (await request(path, "approve", {}))["error"] == "approve: id: Field required"
    assert (await request(path, "mode", {"mode": "sometimes"}))["error"].startswith("mode: mode: ")
    assert (await request(path, "pause", {"by": "ctl", "force": True}))["error"].startswith("pause: force: ")
    assert (await request(path, "order", {"symbol": "BTC/USD", "side": "buy", "quantity": "1"}))["ok"] is False
    assert (await request(path, "nope", {}))["error"].startswith("unknown command 'nope'")
    assert engine.state is EngineState.RUNNING  # nothing above changed anything


async def test_malformed_requests_are_answered_and_the_socket_stays_up(served):
    engine, path = served
    assert (await _raw(path, b"{not json"))["error"].startswith("not a JSON request")
    assert (await _raw(path, b"[1, 2]"))["error"] == 'a request is {"cmd": NAME, "args": {...}}'
    assert (await _raw(path, b'{"cmd": "pause", "args": [1]}'))["error"] == "pause: args must be an object"
    # An engine-side failure names its type; the next request is served as usual.
    answer = await request(path, "order", {"symbol": "NOPE/USD", "side": "buy", "quantity": 1.0})
    assert answer["ok"] is False and "unknown symbol NOPE/USD" in answer["error"]
    assert (await request(path, "status"))["result"]["state"] == "RUNNING"


def test_ffe_ctl_offers_exactly_the_table_s_ctl_commands(capsys):
    from ffe_cli.main import build_parser

    parser = build_parser()
    for name, command in COMMANDS.items():
        assert command.help
        if command.ctl:
            assert parser.parse_args(["ctl", name]).action == name
        else:
            with pytest.raises(UsageError, match=f"invalid choice: '{name}'"):  # one line, exit 2
                parser.parse_args(["ctl", name])


def test_every_argument_model_belongs_to_a_command_of_the_table():
    assert set(ARGS) <= set(COMMANDS)
    for name, command in COMMANDS.items():  # a command named by `ffe ctl NAME TARGET` takes that argument
        if command.target is not None:
            assert command.target in ARGS[name].model_fields, name
        if command.second is not None:  # and `ffe ctl NAME TARGET SECOND`, that one too
            assert command.second in ARGS[name].model_fields, name


async def test_a_price_the_operator_books_is_within_the_prices_ffe_computes_with(served):
    """`ffe ctl sold-by-hand` and `ffe ctl settle` book the operator's price into the books: one beyond the market
    data's bounds (market/bounds.py), which would overflow the books' arithmetic, is refused by name."""
    engine, path = served
    cash = engine.portfolio.cash
    for cmd, args in (("sold-by-hand", {"symbol": "BTC/USD", "quantity": 0.1}),
                      ("settle", {"id": "ffe-x", "outcome": "filled", "quantity": 0.1})):
        for price in (7e307, 1e-300):
            answer = await request(path, cmd, {**args, "price": price})
            assert answer["ok"] is False and answer["error"].startswith(f"{cmd}: price: "), answer
    assert engine.portfolio.cash == cash


# Free text holding characters a terminal acts on: a colour, a new line that forges a record of its own, a bell, a
# C1 control (CSI, NEL), DEL, a line or paragraph separator, a mark or an override turning the text's direction.
CONTROL_TEXTS = ["\x1b[31mFAKE", "ok\n9999 engine_state HALTED", "a\x07b", "a\x9bb", "a\x85b", "a\tb", "a\rb",
                 "a\x7fb", "a\u2028b", "a\u2029b", "a\u202eb", "a\u2066b", "a\u2069b", "a\u200eb", "a\u200fb",
                 "a\u061cb"]
# Ordinary text that is no control: a no-break space, the ideographic space, an emoji joined by a zero-width joiner,
# Persian written with a zero-width non-joiner.
ORDINARY_TEXTS = ["back at 14\u00a0h", "\u6628\u65e5\u3000\u505c\u6b62", "\U0001f469\u200d\U0001f4bb on it",
                  "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"]


async def test_free_text_holding_control_characters_is_refused_by_name(served):
    """`by`, `reason` and every other text a request carries are stored and printed later (`ffe ctl status`, `ffe
    audit tail`, the console's log): one that holds a control character is refused, naming the argument."""
    engine, path = served
    asks = [("pause", "by", {}), ("pause", "reason", {}), ("halt", "reason", {}), ("status", "by", {}),
            ("approve", "id", {}), ("cancel", "id", {}), ("close", "symbol", {}), ("backup", "to", {}),
            ("order", "symbol", {"side": "buy", "quantity": 0.01})]
    for cmd, name, args in asks:
        for text in CONTROL_TEXTS:
            answer = await request(path, cmd, {**args, name: text})
            assert answer["ok"] is False, (cmd, name, text, answer)
            assert answer["error"].startswith(f"{cmd}: {name}: ") and "control character" in answer["error"], answer
            assert "\n" not in answer["error"] and "\x1b" not in answer["error"], answer
    assert engine.state is EngineState.RUNNING
    # Plain words in any script stay allowed.
    answer = await request(path, "pause", {"by": "José Øster", "reason": "lunch — back at 14:00 ☕"})
    assert answer["ok"] is True and engine.state is EngineState.PAUSED


async def test_ordinary_spaces_and_joiners_are_taken_as_text(served):
    """A no-break space, the ideographic space and the zero-width joiners are written text, nothing a terminal acts
    on: a request holding them is taken, and they are stored and shown as they are."""
    engine, path = served
    for text in ORDINARY_TEXTS:
        answer = await request(path, "pause", {"by": text, "reason": text})
        assert answer["ok"] is True, (text, answer)
        assert engine.state is EngineState.PAUSED and engine.state_reason == text, (text, engine.state_reason)
        assert (await request(path, "resume", {"confirm": True}))["ok"] is True


def test_printable_escapes_controls_and_bidi_marks_only():
    for text in ORDINARY_TEXTS:
        assert fmt.printable(text) == text and fmt.unprintable(text) is None, text
    for text in CONTROL_TEXTS:
        shown = fmt.printable(text)
        assert all(c.isascii() and c.isprintable() for c in shown), (text, shown)  # each control as its escape
        assert fmt.unprintable(text) is not None, text
    assert fmt.printable("a\u2028b\u200fc\x85") == "a\\u2028b\\u200fc\\x85"


async def test_a_request_nested_too_deep_is_answered_in_one_line_and_the_socket_stays_up(served):
    engine, path = served
    for depth in (900, 5000):  # what the parser reads, and past its recursion
        deep = "[" * depth + "]" * depth
        for line in (f'{{"cmd": "pause", "args": {{"reason": {deep}}}}}', f'{{"cmd": {deep}}}',
                     f'{{"cmd": "pause", "instance": {deep}}}', f'{{"cmd": "pause", "args": {deep}}}'):
            answer = await _raw(path, line.encode())
            assert answer["ok"] is False and "\n" not in answer["error"] and len(answer["error"]) < 200, answer
            if depth == 5000:
                assert answer["error"] == "not a JSON request: nested too deep", answer
    assert engine.state is EngineState.RUNNING
    assert (await request(path, "status"))["result"]["state"] == "RUNNING"


async def test_a_data_dir_no_file_name_can_hold_is_refused_by_name(served):
    # A lone surrogate is valid JSON but no file name: the request is refused in one line, not dropped unanswered.
    engine, path = served
    answer = await _raw(path, b'{"cmd": "status", "data_dir": "\\ud800"}')
    assert answer["ok"] is False and answer["error"].startswith("data_dir ") and "\n" not in answer["error"], answer
    assert (await request(path, "status"))["result"]["state"] == "RUNNING"
