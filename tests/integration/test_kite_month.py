"""A month of a GOLD_MINI and a BANK_NIFTY position on Zerodha, across their expiries: the
real kiteconnect client against the fake Kite server, the shipped holiday calendar, the
daemon's roll check and pending-order driver run by hand at the moments they would run.

The fake lists NFO futures expiring on the last Thursday and MCX futures on the 5th. With the
shipped schedule, BANK_NIFTY's November future (expiring Thu 26 Nov) rolls on Mon 23 Nov
(2 trading days before; Tue 24 Nov is an NSE holiday), GOLD_MINI's December future (expiring
Sat 5 Dec, cut-off Wed 2 Dec) on Mon 30 Nov, both at 10:00 IST.

Run with `-s` (or PM_MONTH_JOURNAL=path) to see the month as a journal.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

from config.domain_files import DEFAULT_CONFIG_DIR, load_holidays
from core.signals import INDIA
from live.server import dumps
from tests.integration.test_kite_broker import fake, positions_agree, start_trading
from tests.support.trading import Clock

__all__ = ["fake"]

D = Decimal
CALENDAR = load_holidays(DEFAULT_CONFIG_DIR / "holidays.json")
BANK_NOV, BANK_DEC = "BANKNIFTY26NOVFUT", "BANKNIFTY26DECFUT"
GOLD_DEC, GOLD_JAN = "GOLDM26DECFUT", "GOLDM27JANFUT"


def at(day: date, hour: int = 10, minute: int = 30) -> datetime:
    """IST wall-clock time on `day`, as the aware UTC moment the daemon's clock gives."""
    return datetime.combine(day, time(hour, minute)) - timedelta(hours=5, minutes=30)


class Month:
    def __init__(self, trading, fake):
        self.trading, self.fake = trading, fake
        self.lines: list[str] = []

    async def day(self, day: date, hour: int = 10, minute: int = 30) -> None:
        self.trading.clock.now = at(day, hour, minute).replace(tzinfo=UTC)
        self.fake.state.set_today(day)
        await self.trading.broker._load_contracts()  # the adapter's daily dump refresh

    def prices(self, **by_symbol: str) -> None:
        for symbol, price in by_symbol.items():
            exchange = "NFO" if symbol.startswith("BANK") else "MCX"
            self.fake.state.set_price(symbol, price, exchange)

    async def drive(self) -> None:
        """The daemon's roll check, then its pending-order driver until nothing is due."""
        await self.trading.rollover.check()
        for _ in range(6):
            pending = self.trading.exits.pending()
            if not pending:
                return
            self.trading.clock.now = max(self.trading.clock.now, *(p.due for p in pending))
            await self.trading.exits.attempt_due()

    async def status(self, title: str) -> dict:
        shown = json.loads(dumps(await self.trading.rollover.report()))
        self.note(f"-- /status rollover {title}: " + json.dumps(
            {k: shown[k] for k in ("BANK_NIFTY", "GOLD_MINI")}, sort_keys=True))
        return shown

    def note(self, line: str) -> None:
        self.lines.append(f"{self.trading.clock.now.astimezone(INDIA):%Y-%m-%d %H:%M} IST {line}")


def ledger(postgresql):
    return postgresql.execute(
        "SELECT p.instrument, p.tradingsymbol, p.exit_reason, p.lots, p.entry_price,"
        " p.exit_price, c.amount FROM capital_transactions c"
        " JOIN portfolio_positions p ON p.id = c.position_id"
        " WHERE c.txn_type = 'TRADING_PNL' ORDER BY c.id").fetchall()


async def test_a_month_across_two_expiries_on_zerodha(db, dsn, fake, tmp_path, postgresql):
    clock = Clock(at(date(2026, 11, 11)).replace(tzinfo=UTC))
    fake.state.set_today(date(2026, 11, 11))
    trading = await start_trading(db, dsn, fake, tmp_path, capital="20000000", clock=clock,
                                  calendar=CALENDAR)
    trading.exits._calendar = CALENDAR
    month = Month(trading, fake)
    try:
        await month.day(date(2026, 11, 11))
        month.prices(**{BANK_NOV: "52000", BANK_DEC: "52300", GOLD_DEC: "72000",
                        GOLD_JAN: "72450"})
        bank = await trading.send("BASE_ENTRY", instrument="BANK_NIFTY", price="52000",
                                  stop="51650", atr="350")
        gold = await trading.send("BASE_ENTRY", instrument="GOLD_MINI", price="72000",
                                  stop="71300", atr="700")
        assert bank.outcome == gold.outcome == "executed", (bank, gold)
        bank_lots, gold_lots = bank.result["lots"], gold.result["lots"]
        held = {x.instrument: x.tradingsymbol for x in await db.load_live_layers()}
        assert held == {"BANK_NIFTY": BANK_NOV, "GOLD_MINI": GOLD_DEC}
        month.note(f"entries: BANK_NIFTY {bank_lots} lots {BANK_NOV} @ {bank.result['fill_price']}"
                   f", GOLD_MINI {gold_lots} lots {GOLD_DEC} @ {gold.result['fill_price']}")

        await month.day(date(2026, 11, 18))
        month.prices(**{BANK_NOV: "52600", BANK_DEC: "52900", GOLD_DEC: "72800",
                        GOLD_JAN: "73250"})
        await trading.send("MARKET_DATA", instrument="BANK_NIFTY", position=None,
                           price="52600", atr="350")
        await trading.send("MARKET_DATA", instrument="GOLD_MINI", position=None,
                           price="72800", atr="700")

        # BANK_NIFTY's roll day; before roll_at nothing moves.
        await month.day(date(2026, 11, 23), 9, 45)
        before = await month.status("before BANK_NIFTY's roll")
        assert before["BANK_NIFTY"]["next_roll_day"] == "2026-11-23"
        assert before["BANK_NIFTY"]["entry_contract"]["tradingsymbol"] == BANK_DEC
        assert before["GOLD_MINI"]["next_roll_day"] == "2026-11-30"
        assert before["GOLD_MINI"]["cutoff"] == "2026-12-02"
        await month.drive()
        assert {x.tradingsymbol for x in await db.load_live_layers()} == {BANK_NOV, GOLD_DEC}
        await month.day(date(2026, 11, 23), 10, 5)
        await month.drive()
        layers = {x.instrument: x for x in await db.load_live_layers()}
        assert (layers["BANK_NIFTY"].tradingsymbol, layers["GOLD_MINI"].tradingsymbol) == (
            BANK_DEC, GOLD_DEC)
        bank_roll = await trading.rollover.live_roll("BANK_NIFTY")
        assert bank_roll is None
        await month.status("after BANK_NIFTY's roll")
        assert await positions_agree(trading)

        # NOV still trades until Thursday: the continuous chart quotes it, converted.
        await month.day(date(2026, 11, 25))
        month.prices(**{BANK_NOV: "52700", BANK_DEC: "53000"})
        basis = await trading.rollover.basis("BANK_NIFTY", trading.clock.now)
        assert basis == D("300")  # DEC − NOV at the roll's fills
        await trading.send("MARKET_DATA", instrument="BANK_NIFTY", position=None,
                           price="52700", atr="350")
        [bank_layer] = await db.live_layers("BANK_NIFTY")
        assert bank_layer.highest_close == D("53000")
        month.note(f"BANK_NIFTY alert 52700 (NOV) read as {bank_layer.highest_close} (DEC)")

        await month.day(date(2026, 11, 27))  # NOV expired yesterday
        assert await trading.rollover.basis("BANK_NIFTY", trading.clock.now) == 0

        await month.day(date(2026, 11, 30), 10, 5)
        month.prices(**{GOLD_DEC: "73000", GOLD_JAN: "73460"})
        await month.drive()
        layers = {x.instrument: x for x in await db.load_live_layers()}
        assert layers["GOLD_MINI"].tradingsymbol == GOLD_JAN
        await month.status("after GOLD_MINI's roll")
        assert await trading.broker.positions() == {
            BANK_DEC: layers["BANK_NIFTY"].quantity, GOLD_JAN: gold_lots}

        await month.day(date(2026, 12, 10))
        month.prices(**{BANK_DEC: "53400", GOLD_JAN: "73900"})
        for instrument, price in (("BANK_NIFTY", "53400"), ("GOLD_MINI", "73900")):
            out = await trading.send("EXIT", instrument=instrument, price=price, stop="0",
                                     reason="trend reversal")
            assert out.outcome == "executed", out
        assert await trading.broker.positions() == {}
        assert await db.load_live_layers() == []

        rows = ledger(postgresql)
        assert [(r[0], r[1], r[2]) for r in rows] == [
            ("BANK_NIFTY", BANK_NOV, "ROLL"), ("GOLD_MINI", GOLD_DEC, "ROLL"),
            ("BANK_NIFTY", BANK_DEC, "trend reversal"), ("GOLD_MINI", GOLD_JAN, "trend reversal")]
        point = {"BANK_NIFTY": D("30"), "GOLD_MINI": D("10")}
        for instrument, symbol, reason, lots, entry, exit_, amount in rows:
            assert amount == ((exit_ - entry) * lots * point[instrument]).quantize(D("0.01"))
            month.note(f"P&L {instrument} {symbol} {reason}: {lots} lots {entry} -> {exit_}"
                       f" = {amount}")
        state = await db.portfolio_state()
        assert state.closed_equity == D("20000000") + sum(r[6] for r in rows)
        rolls = postgresql.execute(
            "SELECT instrument, old_tradingsymbol, new_tradingsymbol, close_price, open_price,"
            " spread, pnl FROM rolls ORDER BY id").fetchall()
        for roll in rolls:
            month.note("roll " + " ".join(str(v) for v in roll))
        assert [(r[1], r[2]) for r in rolls] == [(BANK_NOV, BANK_DEC), (GOLD_DEC, GOLD_JAN)]
        month.note(f"ledger closed equity {state.closed_equity}")
    finally:
        await trading.close()
        keep_journal(month.lines)


def keep_journal(lines: list[str]) -> None:
    journal = "\n".join(lines)
    print(journal)
    if os.environ.get("PM_MONTH_JOURNAL"):
        Path(os.environ["PM_MONTH_JOURNAL"]).write_text(journal + "\n")
