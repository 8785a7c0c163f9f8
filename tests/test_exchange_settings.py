"""[exchange] settings a real user trips over, checked at start with an error that says what to set; and a refused
live start leaves nothing behind. Real ccxt; the fake Binance where a start gets that far."""

from __future__ import annotations

import pytest

from fake_exchange import ccxt_options, exchange_settings
from ffe_engine.venues.base import VenueError
from ffe_engine.venues.ccxt_venue import CcxtVenue, check_settings
from live_helpers import BTC, fx, live_config, live_env, run_ffe_async, write_config  # noqa: F401

RUN = ("run", "--headless", "--live")


def test_the_suites_settings_pass(fx):
    check_settings(exchange_settings(fx))


def test_an_url_section_ccxt_does_not_have_is_named_with_the_ones_it_has(fx):
    urls = {"public": fx.url + "/api/v3", "private": fx.url + "/api/v3", "spot": fx.url + "/api/v3"}
    with pytest.raises(VenueError, match=r"exchange.api_urls: ccxt's binance has no URL section 'spot'; "
                                         r"its sections are .*\bprivate, public\b"):
        check_settings(exchange_settings(fx, api_urls=urls))


def test_replaced_urls_need_the_spot_sections(fx):
    with pytest.raises(VenueError, match=r"exchange.api_urls: set private too .*public, private"):
        check_settings(exchange_settings(fx, api_urls={"public": fx.url + "/api/v3"}))


@pytest.mark.parametrize("options", [{}, {"fetchCurrencies": False, "fetchMargins": False},
                                     {**ccxt_options(), "fetchMarkets": {"types": ["spot", "linear"]}}])
def test_replaced_urls_need_the_options_that_keep_ccxt_on_them(fx, options):
    with pytest.raises(VenueError) as info:
        check_settings(exchange_settings(fx, options=options))
    assert str(info.value) == ('exchange.options: with exchange.api_urls set, keep ccxt\'s binance to those '
                               'sections: options = {' + ", ".join(
                                   f"{k} = {v}" for k, v in {**options, "fetchMarkets": '{types = ["spot"]}',
                                                             "fetchCurrencies": "false",
                                                             "fetchMargins": "false"}.items()) + "}")


def test_a_settle_window_shorter_than_the_receive_window_is_refused(fx):
    settings = exchange_settings(fx, options={**ccxt_options(), "recvWindow": 5000}, settle_window_ms=2000)
    with pytest.raises(VenueError, match=r"exchange.settle_window_ms: 2000 is shorter than .*recvWindow = 5000 ms"
                                         r".*set exchange.settle_window_ms to at least 5000"):
        check_settings(settings)
    check_settings(exchange_settings(fx, options={**ccxt_options(), "recvWindow": 5000}, settle_window_ms=5000))


@pytest.mark.parametrize("exchange_id", ["kraken", "okx", "coinbase"])
def test_orders_only_go_to_an_exchange_whose_orders_ffe_can_find_by_its_own_id(fx, exchange_id):
    # The order path resolves an unanswered order by its client order id (look it up, cancel it, resend it with the
    # same id): ffe's ids and Binance's lookups. Elsewhere the id is refused (OKX: [a-z0-9]{1,32}; Kraken: a 32-bit
    # integer) or an order cannot be found by it (Coinbase), and an order in doubt could never be settled.
    with pytest.raises(VenueError) as info:
        check_settings(exchange_settings(fx, id=exchange_id, api_urls={}, options={}))
    assert str(info.value).startswith("exchange.id: ffe places orders on binance only (")
    assert f"orders on {exchange_id!r} are not supported" in str(info.value)
    assert 'market.source = "exchange"' in str(info.value)


@pytest.mark.parametrize("rate_limit_ms", [None, 250, 0])
def test_the_rate_limit_is_ccxt_s_own_unless_set(fx, rate_limit_ms):
    # ccxt spaces the requests by the exchange's weights times its rateLimit (binance: 50 ms): unset keeps that; an
    # operator who must go slower (or whose gateway does its own pacing: 0) sets exchange.rate_limit_ms.
    venue = CcxtVenue(exchange_settings(fx, rate_limit_ms=rate_limit_ms), [BTC])
    bucket = venue.exchange.tokenBucket
    assert venue.exchange.enableRateLimit
    if rate_limit_ms is None:
        assert venue.exchange.rateLimit == 50 and bucket["refillRate"] == 1 / 50
    elif rate_limit_ms:
        assert venue.exchange.rateLimit == rate_limit_ms and bucket["refillRate"] == 1 / rate_limit_ms
    else:
        assert venue.exchange.rateLimit == 0 and bucket["refillRate"] > 1e9  # no waiting between requests


async def test_a_section_left_out_at_run_time_says_which_key_to_set(fx):
    # past the start check (options not given for an exchange ffe has no table for is the user's call): the call
    # that needs the section says so
    venue = CcxtVenue(exchange_settings(fx, options={}), [BTC], read_attempts=1)
    try:
        with pytest.raises(VenueError, match=r"exchange.api_urls has no URL for ccxt's 'sapi' section; add it, or "
                                             r"keep ccxt to the sections given with exchange.options"):
            await venue.connect()
    finally:
        await venue.close()


def records_written(cwd) -> list[str]:
    """Files the run left besides its config, its output and its lock files (the data directory's and the control
    socket's: taken before anything else, so that a second engine is refused first)."""
    return sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*")
                  if p.is_file() and p.suffix not in (".toml", ".stdout", ".stderr", ".lock"))


@pytest.mark.parametrize("case", ["bad-secret", "no-flag", "bad-options", "other-exchange"])
async def test_a_refused_live_start_creates_no_database_or_audit_file(tmp_path, fx, case):
    config = live_config(fx)
    if case == "bad-options":
        config["exchange"] = {**config["exchange"], "options": {"recvWindow": 1500}}
    if case == "other-exchange":
        config["exchange"] = {**config["exchange"], "id": "kraken", "api_urls": {}, "options": {}}
    write_config(tmp_path, config)
    args = RUN if case != "no-flag" else ("run", "--headless")
    env = live_env(fx, secret="wrong-secret-Hq8sPz41") if case == "bad-secret" else live_env(fx)
    p = await run_ffe_async(tmp_path, *args, env=env)
    assert p.proc.returncode == 2, p.stderr
    (line,) = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert line.startswith("ffe: error: "), line
    if case == "bad-options":
        assert "exchange.options" in line and "fetchCurrencies = false" in line, line
    if case == "other-exchange":
        assert line.startswith("ffe: error: config.toml:"), line
        assert "exchange.id: ffe places orders on binance only" in line, line
    assert records_written(tmp_path) == []  # no database, no audit file
    assert fx.requests_to("POST /api/v3/order") == []


@pytest.mark.parametrize("key", ["RECVWINDOW", "recvwindow", "adjustfortimedifference"])
def test_an_option_written_in_another_case_than_ccxts_is_named_with_ccxts_spelling(fx, key):
    # Environment names are upper case by habit (FFE_EXCHANGE__OPTIONS__RECVWINDOW): ccxt would pass such a key
    # over without a word, and the settle window's check would not see the receive window it sets.
    spelled = {"RECVWINDOW": "recvWindow", "recvwindow": "recvWindow"}.get(key, "adjustForTimeDifference")
    with pytest.raises(VenueError) as info:
        check_settings(exchange_settings(fx, options={**ccxt_options(), key: 60000}))
    assert str(info.value) == (f"exchange.options: ccxt's binance has no option {key!r}: it reads {spelled!r} "
                               "(options are matched by their exact spelling)")
