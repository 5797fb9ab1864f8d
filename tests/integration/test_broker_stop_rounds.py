"""The startup round of the broker stops over a whole book (paper venue, real PostgreSQL):
the venue is read and the missing stops are placed in one request each, with the same
outcomes, row by row, as one stop at a time — and a round whose answer a crash cut is
adopted from the venue, never placed twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from decimal import Decimal

import psycopg

from core.broker_stops import BROKER_STOP, GTT, stop_levels
from live.brokers.base import StopOrder, VenueStop
from live.brokers.paper import PaperBroker
from live.stop_batches import insert_stops
from tests.integration.test_operator_controls import ROOMY, enter
from tests.support.trading import INSTRUMENTS, Trading

D = Decimal
BOOK = {"GOLD_MINI": 2, "COPPER": 2, "SILVER_MINI": 1}


class CountingPaper(PaperBroker):
    """The paper venue, counting the stop requests it is asked."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.asked: Counter[str] = Counter()

    async def place_stop(self, stop: StopOrder) -> str:
        self.asked["place_stop"] += 1
        return await super().place_stop(stop)

    async def place_stops(self, stops: Sequence[StopOrder]) -> list[str]:
        self.asked["place_stops"] += 1
        return await super().place_stops(stops)

    async def stop_state(self, kind: str, ref: str) -> VenueStop:
        self.asked["stop_state"] += 1
        return await super().stop_state(kind, ref)

    async def stop_states(self, refs: Sequence[str]) -> dict[str, VenueStop]:
        self.asked["stop_states"] += 1
        return await super().stop_states(refs)


async def started(db, dsn) -> Trading:
    trading = Trading(db, dsn, config=ROOMY)
    trading.broker = CountingPaper(dsn, INSTRUMENTS, ROOMY, clock=trading.clock,
                                   calendar=trading.calendar)
    return await trading.start()


async def book(db, dsn) -> Trading:
    """A book of five layers over three instruments, no broker stop yet; closed again."""
    first = await started(db, dsn)
    for instrument, layers in BOOK.items():
        await enter(first, instrument, layers)
    await first.close()
    return first


async def rows(dsn: str, query: str) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        return await (await conn.execute(query)).fetchall()


async def test_a_book_without_stops_gets_one_each_in_one_request(db, dsn):
    await book(db, dsn)
    again = await started(db, dsn)
    try:
        assert await again.recover() == []
        assert again.broker.asked["place_stops"] == 1
        assert again.broker.asked["place_stop"] == again.broker.asked["stop_state"] == 0
        layers = await again.db.all_live_layers()
        assert len(layers) == sum(BOOK.values())
        for layer in layers:  # each at its own stop, down to the tick, resting at the venue
            view = again.stops.view(layer.id)
            wanted = stop_levels(layer, ROOMY.stop_limit_band_percent,
                                 INSTRUMENTS[layer.instrument].tick_size)
            assert (view["kind"], view["status"]) == (GTT, "active")
            assert (D(view["trigger"]), D(view["limit"])) == (wanted.trigger, wanted.limit)
        assert await rows(dsn, "SELECT count(*), count(DISTINCT tag) FROM paper_stops "
                               "WHERE status = 'active'") == [(len(layers), len(layers))]
        assert again.stops.unprotected() == []
    finally:
        await again.close()


async def test_a_round_a_crash_cut_after_the_venue_took_it_is_adopted_not_placed_again(db, dsn):
    first = await book(db, dsn)
    layers = await db.all_live_layers()
    wanted = [(x, GTT, stop_levels(x, ROOMY.stop_limit_band_percent,
                                   INSTRUMENTS[x.instrument].tick_size)) for x in layers]
    async with db.transaction() as tx:  # the round's rows, committed before the venue call
        records = await insert_stops(tx.conn, wanted)
    venue = PaperBroker(dsn, INSTRUMENTS, ROOMY, clock=first.clock)
    await venue.start()
    try:  # the venue took them all; then the crash, before anything was recorded
        refs = await venue.place_stops([first.stops._order(r) for r in records])
    finally:
        await venue.close()

    again = await started(db, dsn)
    try:
        assert await again.recover() == []
        assert again.broker.asked["place_stops"] == again.broker.asked["place_stop"] == 0
        assert sorted(await rows(dsn, "SELECT broker_ref, status FROM broker_stops")) == sorted(
            (ref, "active") for ref in refs)
        assert await rows(dsn, "SELECT count(*) FROM paper_stops") == [(len(layers),)]
    finally:
        await again.close()


async def test_stops_that_fired_or_lapsed_meanwhile_are_settled_the_others_left(db, dsn):
    await book(db, dsn)
    first = await started(db, dsn)
    await first.recover()  # every layer protected
    before = {r[0]: r for r in await rows(dsn, "SELECT id, version FROM broker_stops")}
    (silver,) = await first.db.live_layers("SILVER_MINI")
    copper = (await first.db.live_layers("COPPER"))[0]
    fired = first.stops.of_layer(silver.id)
    cancelled = first.stops.of_layer(copper.id)
    await first.broker.observe(silver.tradingsymbol, fired.trigger_price - 1)  # nobody heard
    await first.broker.cancel_stop(cancelled.kind, cancelled.broker_ref)  # cancelled outside
    await first.close()

    again = await started(db, dsn)
    try:
        reasons = await again.recover()
        assert not [r for r in reasons if r.startswith("unprotected")]
        (closed,) = await again.db.list_positions("closed", 10)
        assert (closed.id, closed.exit_reason) == (silver.id, BROKER_STOP)
        assert again.stops.of_layer(silver.id).status == "triggered"
        assert (await rows(dsn, f"SELECT status, reason FROM broker_stops "
                                f"WHERE id = {cancelled.id}")) == [("lapsed",
                                                                    "gone from the venue")]
        assert again.stops.view(copper.id)["status"] == "active"  # placed again
        untouched = [r for r in await rows(dsn, "SELECT id, version FROM broker_stops")
                     if r[0] not in (fired.id, cancelled.id) and r[0] in before]
        assert untouched == [before[r[0]] for r in untouched] and len(untouched) == 3
        assert again.broker.asked["stop_state"] == 0  # the venue was read in one request
    finally:
        await again.close()


async def test_the_paper_venues_batch_calls_answer_as_its_single_ones(dsn):
    venue = PaperBroker(dsn, INSTRUMENTS, ROOMY)
    await venue.start()
    try:
        orders = [StopOrder(f"BS{n}", GTT, "GOLD_MINI", "GOLDM26JANFUT", n, D(77000 + n),
                            D(76000)) for n in (1, 2, 3)]
        refs = await venue.place_stops(orders)
        assert len(set(refs)) == 3
        states = await venue.stop_states([*refs, "PS999"])
        assert [states[ref] for ref in refs] == [await venue.stop_state(GTT, ref)
                                                 for ref in refs]
        assert "PS999" not in states
        await venue.cancel_stop(GTT, refs[0])
        found = await venue.find_stops(orders, frozenset({refs[1]}))
        assert found == {"BS1": await venue.find_stop(orders[0], frozenset()),
                         "BS3": await venue.find_stop(orders[2], frozenset())}
        assert found["BS1"].state == "gone"
    finally:
        await venue.close()
