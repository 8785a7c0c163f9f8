"""ccxt imported for the one exchange a run speaks to (ffe_engine/venues/ccxt_loader.py), and whole for any code that
asks more of it. Each check runs in a fresh interpreter: the test process has ccxt imported already."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def fresh(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


LOADED = """
    import json, sys
    from types import SimpleNamespace

    NOT_EXCHANGES = ("base", "static_dependencies", "abstract", "pro", "async_support")

    def exchange_modules():
        \"\"\"The exchanges' modules imported, sync and async (not ccxt's base, its packages or its helpers).\"\"\"
        return sorted(m for m in sys.modules if m.rpartition(".")[0] in ("ccxt", "ccxt.async_support")
                      and m.rpartition(".")[2] not in NOT_EXCHANGES)

    def settings(exchange_id):
        return SimpleNamespace(id=exchange_id, timeout_ms=1000, options={}, sandbox=False, api_urls=None)
"""


def test_an_engine_s_exchange_imports_that_exchange_alone_not_the_hundred_others():
    out = fresh(LOADED + """
    from ffe_engine.venues.ccxt_venue import build_exchange
    exchange = build_exchange(settings("binanceus"), credentials=False)
    print(json.dumps({"class": type(exchange).__module__ + "." + type(exchange).__name__,
                      "modules": exchange_modules()}))
    """)
    assert out["class"] == "ccxt.async_support.binanceus.binanceus"
    # binanceus is built on binance: the two, and nothing else
    assert out["modules"] == ["ccxt.async_support.binance", "ccxt.async_support.binanceus"], out["modules"]


def test_code_that_uses_ccxt_whole_after_the_engine_finds_what_a_plain_import_gives():
    probe = """
    import ccxt, ccxt.async_support as ca
    from ccxt.base import errors
    names = sorted(n for n in dir(ca) if not n.startswith("_"))
    print(json.dumps({
        "exchanges": ccxt.exchanges, "async_exchanges": ca.exchanges,
        "classes": all(isinstance(getattr(ca, i), type) and getattr(ca, i).__name__ == i for i in ca.exchanges),
        "sync_classes": all(isinstance(getattr(ccxt, i), type) for i in ccxt.exchanges),
        "names": names, "errors_are_ccxt_s": ca.NetworkError is errors.NetworkError is ccxt.NetworkError,
        "precision": [ca.TICK_SIZE, ca.DECIMAL_PLACES]}))
    """
    plain = fresh(LOADED + probe)
    after = fresh(LOADED + """
    from ffe_engine.venues import ccxt_loader
    assert ccxt_loader.exchange_class("kraken").__name__ == "kraken"
    assert ccxt_loader.exchange_class("binance").__name__ == "binance"
    """ + probe)
    assert plain["classes"] and plain["sync_classes"] and plain["errors_are_ccxt_s"]
    assert after == plain


def test_every_exchange_ccxt_has_is_found_by_its_id_without_running_ccxt_s_package_files():
    import ccxt

    out = fresh(LOADED + f"""
    from ffe_engine.venues.ccxt_loader import exchange_class
    found = {{i: exchange_class(i) for i in {ccxt.exchanges!r}}}
    import ccxt.async_support as ca
    ran = [p for p in ("ccxt", "ccxt.async_support") if "exchanges" in vars(sys.modules[p])]
    print(json.dumps({{"not_found": [i for i, c in found.items() if c is None or c.__name__ != i],
                      "named_by_class": [i for i, c in found.items() if getattr(ca, i) is c], "packages_ran": ran}}))
    """)
    assert out["not_found"] == []
    assert out["named_by_class"] == ccxt.exchanges
    assert out["packages_ran"] == []


def test_an_exchange_id_ccxt_does_not_have_is_none_and_the_start_names_the_key():
    out = fresh(LOADED + """
    from ffe_engine.venues.ccxt_loader import exchange_class
    from ffe_engine.venues.base import VenueError
    from ffe_engine.venues.ccxt_venue import build_exchange
    ids = ["no_such_exchange", "base", "Binance", "binance.us", "_private", "", "exchange", "__init__"]
    try:
        build_exchange(settings("krakn"))
    except VenueError as exc:
        message = str(exc)
    print(json.dumps({"found": [i for i in ids if exchange_class(i) is not None], "message": message,
                      "modules": exchange_modules()}))
    """)
    assert out["found"] == []
    assert out["message"] == "exchange.id: 'krakn' is not a ccxt exchange id"
    assert out["modules"] == []
