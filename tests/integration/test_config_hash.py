"""Every decision names the configuration it was made under, stored once so it can be replayed."""

from __future__ import annotations

from datetime import timedelta

import pytest

from config.config_hash import config_sha256, effective_config
from core.calendar import TradingCalendar
from core.specs import PortfolioConfig
from tests.support.trading import INSTRUMENTS, PORTFOLIO, Trading


@pytest.fixture
async def trading(db, dsn):
    system = await Trading(db, dsn).start()
    yield system
    await system.close()


async def register(trading: Trading, portfolio: PortfolioConfig = PORTFOLIO) -> str:
    """Start 'the instance' that decides (id `test`) under this configuration, as the daemon
    does at startup; return its hash."""
    body = effective_config(INSTRUMENTS, portfolio, trading.calendar)
    sha256 = config_sha256(body)
    async with trading.db.transaction() as tx:
        await tx.store_configuration(sha256, body)
        await tx.register_instance("test", "host", 8080, "single", "test", sha256)
    return sha256


def decisions(postgresql) -> list[tuple[str, str, str | None]]:
    return postgresql.execute(
        "SELECT signal_type, outcome, config_sha256 FROM signal_log ORDER BY id").fetchall()


def stored(postgresql) -> dict[str, dict]:
    rows = postgresql.execute("SELECT sha256, body FROM configurations").fetchall()
    return {sha256: body for sha256, body in rows}


async def test_every_decision_carries_the_hash_of_its_configuration(trading, postgresql):
    sha256 = await register(trading)
    await trading.send("BASE_ENTRY", price="78500", stop="77800")
    await trading.send("PYRAMID", position="Long_2", price="79000", stop="78500")  # 1R gate
    await trading.send("MARKET_DATA", position=None,  # stale: refused as it is stored
                       at=trading.clock.now - timedelta(hours=1))
    await trading.send("EXIT", position="Long_1", price="79500")
    assert decisions(postgresql) == [("BASE_ENTRY", "executed", sha256),
                                     ("PYRAMID", "blocked", sha256),
                                     ("MARKET_DATA", "rejected", sha256),
                                     ("EXIT", "executed", sha256)]


async def test_a_configuration_is_stored_once_and_its_body_reproduces_the_hash(
        trading, postgresql):
    first = await register(trading)
    assert await register(trading) == first  # a restart under the same configuration
    assert list(stored(postgresql)) == [first]
    [(body,)] = postgresql.execute("SELECT body FROM configurations").fetchall()
    assert config_sha256(body) == first
    assert body == effective_config(INSTRUMENTS, PORTFOLIO, trading.calendar)


async def test_decisions_keep_the_configuration_they_were_made_under(trading, postgresql):
    before = await register(trading)
    await trading.send("BASE_ENTRY", price="78500", stop="77800")
    # A restart with one rule changed and a holiday added: a new hash for what follows.
    trading.calendar = TradingCalendar({"MCX": [trading.clock.now.date() + timedelta(days=40)]})
    after = await register(trading, PORTFOLIO.model_copy(update={"use_1r_gate": False}))
    await trading.send("EXIT", position="Long_1", price="79500")
    assert before != after
    assert [row[2] for row in decisions(postgresql)] == [before, after]
    bodies = stored(postgresql)
    assert set(bodies) == {before, after}
    assert all(config_sha256(body) == sha256 for sha256, body in bodies.items())
    assert bodies[before]["portfolio"]["use_1r_gate"] is True
    assert bodies[after]["portfolio"]["use_1r_gate"] is False
