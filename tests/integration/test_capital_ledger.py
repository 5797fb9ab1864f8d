"""The capital ledger: every row moves closed equity and its high-water mark in one commit."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.errors import InsufficientEquity, PortfolioNotSeeded
from core.models import LedgerType
from tests.support.factories import open_layer

D = Decimal


async def seeded(db, capital: str = "5000000"):
    async with db.transaction() as tx:
        return await tx.seed_portfolio(D(capital))


async def append(db, txn_type, amount: str, position_id=None):
    async with db.transaction() as tx:
        return await tx.append_ledger(txn_type, D(amount), position_id=position_id)


def ledger_rows(postgresql):
    return postgresql.execute(
        "SELECT txn_type, amount, equity_before, equity_after FROM capital_transactions "
        "ORDER BY id").fetchall()


async def test_golden_v16_gold_close_raises_closed_equity_and_high(db, postgresql):
    await seeded(db)
    layer = await open_layer(db, lots=3, entry_price=D("78500"))
    pnl = (D("79000") - layer.entry_price) * layer.lots * D("10")  # pv 10
    entry = await append(db, LedgerType.TRADING_PNL, str(pnl), position_id=layer.id)
    state = await db.portfolio_state()
    assert entry.amount == D("15000")
    assert (state.closed_equity, state.equity_high) == (D("5015000"), D("5015000"))
    assert ledger_rows(postgresql)[-1] == ("TRADING_PNL", D("15000"), D("5000000"), D("5015000"))


async def test_deposit_withdraw_and_pnl_chain(db, postgresql):
    await seeded(db)
    first, second = await open_layer(db), await open_layer(db, instrument="COPPER")
    await append(db, LedgerType.DEPOSIT, "1000000")
    await append(db, LedgerType.TRADING_PNL, "15000", first.id)
    await append(db, LedgerType.TRADING_PNL, "-100000", second.id)  # a loss keeps the high
    state = await db.portfolio_state()
    assert (state.closed_equity, state.equity_high) == (D("5915000"), D("6015000"))
    await append(db, LedgerType.WITHDRAW, "500000")
    state = await db.portfolio_state()
    # A withdrawal takes the high-water mark down with it: sizing never uses money not there.
    assert (state.closed_equity, state.equity_high) == (D("5415000"), D("5515000"))
    rows = ledger_rows(postgresql)
    assert [r[0] for r in rows] == ["DEPOSIT", "DEPOSIT", "TRADING_PNL", "TRADING_PNL",
                                    "WITHDRAW"]
    for earlier, later in zip(rows, rows[1:], strict=False):
        assert later[2] == earlier[3]  # each row starts where the previous ended
    assert rows[-1][3] == state.closed_equity
    stored = postgresql.execute(
        "SELECT closed_equity, equity_high FROM portfolio_state").fetchone()
    assert stored == (state.closed_equity, state.equity_high)


async def test_seeding_happens_once(db, postgresql):
    assert await seeded(db, "5000000")
    assert not await seeded(db, "9000000")
    assert (await db.portfolio_state()).initial_capital == D("5000000")
    assert len(ledger_rows(postgresql)) == 1


async def test_overdraft_is_refused_and_changes_nothing(db, postgresql):
    await seeded(db, "1000")
    with pytest.raises(InsufficientEquity):
        await append(db, LedgerType.WITHDRAW, "1000.01")
    assert (await db.portfolio_state()).closed_equity == D("1000")
    assert len(ledger_rows(postgresql)) == 1


async def test_unseeded_ledger_is_refused(db):
    with pytest.raises(PortfolioNotSeeded):
        await append(db, LedgerType.DEPOSIT, "1")


async def test_one_pnl_row_per_layer(db, postgresql):
    import psycopg

    await seeded(db)
    layer = await open_layer(db)
    await append(db, LedgerType.TRADING_PNL, "100", layer.id)
    with pytest.raises(psycopg.errors.UniqueViolation):
        await append(db, LedgerType.TRADING_PNL, "100", layer.id)
    assert (await db.portfolio_state()).closed_equity == D("5000100")
