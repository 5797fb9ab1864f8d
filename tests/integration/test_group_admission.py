"""Group commit at intake: alerts arriving together share one commit, each still answered only
once stored, dedup exact; what needs no order is decided in that commit; past capacity an
alert is refused unstored (503, Retry-After) instead of answered late."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from decimal import Decimal as D
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.models import AdmissionRequest, Outcome, SignalOutcome, SignalStatus
from core.signals import parse_signal, storable_payload
from live.group_commit import Overloaded
from live.inbox import Inbox
from live.server import build_app
from tests.integration.test_operator_controls import ROOMY, enter
from tests.support.factories import new_signal
from tests.support.trading import INSTRUMENTS, Trading, signal_payload


@pytest.fixture
async def trading(db, dsn):
    trading = await Trading(db, dsn).start()
    await db.load_cache()  # as recovery does: the whole book cached
    trading.inbox.start_processing()
    trading.readiness.started()
    yield trading
    await trading.close()


async def submit(inbox: Inbox, trading: Trading, kind: str, **fields: Any) -> Any:
    fields.setdefault("at", trading.clock.now)
    payload = signal_payload(kind, **fields)
    return await inbox.submit(parse_signal(payload, INSTRUMENTS), storable_payload(payload),
                              trading.clock.now)


def rows(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()


def batches(trading: Trading) -> tuple[float | None, float | None]:
    """(commits, alerts) of the admissions so far, from the daemon's histogram."""
    sample = trading.metrics.registry.get_sample_value
    return sample("pm_admission_batch_size_count"), sample("pm_admission_batch_size_sum")


async def test_concurrent_alerts_share_commits_and_keep_arrival_order(trading, dsn):
    instruments = list(INSTRUMENTS)
    at = trading.clock.now
    answers = await asyncio.gather(*(
        submit(trading.inbox, trading, "EXIT", instrument=instruments[n % len(instruments)],
               position="ALL", at=at + timedelta(seconds=61 * n)) for n in range(120)))
    ids = [admission.signal_id for admission, _ in answers]
    assert all(admission.accepted for admission, _ in answers)
    assert ids == sorted(ids) and len(set(ids)) == 120  # ids follow arrival
    commits, alerts = batches(trading)
    assert alerts == 120 and commits < 60  # shared: far fewer commits than alerts
    stored = rows(dsn, "SELECT id FROM signal_log ORDER BY id")
    assert [row[0] for row in stored] == ids


async def test_repeats_inside_one_batch_are_duplicates_of_the_one_stored(trading, dsn):
    at = trading.clock.now
    same = [submit(trading.inbox, trading, "BASE_ENTRY", at=at) for _ in range(20)]
    refires = [submit(trading.inbox, trading, "BASE_ENTRY", at=at + timedelta(seconds=s))
               for s in range(1, 40, 2)]
    answers = await asyncio.gather(*same, *refires)
    accepted = [admission for admission, _ in answers if admission.accepted]
    assert len(accepted) == 1
    assert {admission.signal_id for admission, _ in answers} == {accepted[0].signal_id}
    assert rows(dsn, "SELECT count(*) FROM signal_log") == [(1,)]


async def test_a_signal_needing_no_order_is_decided_in_its_admission(trading, dsn):
    admission, outcome = await submit(trading.inbox, trading, "MARKET_DATA", position=None)
    assert outcome == SignalOutcome(admission.signal_id, Outcome.IGNORED, "no open layers")
    [(status, stored, reason)] = rows(dsn, "SELECT status, outcome, reason FROM signal_log")
    assert (status, stored, reason) == ("processed", "ignored", "no open layers")
    audit = rows(dsn, "SELECT details->>'outcome' FROM execution_log "
                      "WHERE event = 'signal_decided' AND signal_id = %s", admission.signal_id)
    events = rows(dsn, "SELECT data->>'outcome' FROM event_outbox WHERE type = 'signal.decided'")
    assert audit == [("ignored",)] and events == [("ignored",)]
    assert batches(trading) == (1, 1)  # one commit for the signal and its decision


async def test_a_signal_behind_one_left_to_the_worker_waits_for_it(trading, dsn):
    """An entry and a bar of the same flat instrument in one batch: the bar is not decided
    against the flat book at admission — it trails the layer the entry opens."""
    at = trading.clock.now
    (entry, entry_answer), (bar, bar_answer) = await asyncio.gather(
        submit(trading.inbox, trading, "BASE_ENTRY", at=at),
        submit(trading.inbox, trading, "MARKET_DATA", position=None, price="79500",
               at=at + timedelta(seconds=1)))
    assert entry_answer is None and bar_answer is None  # both go to the instrument's worker
    entered = await trading.inbox.wait_for_decision(entry.signal_id, 10)
    trailed = await trading.inbox.wait_for_decision(bar.signal_id, 10)
    assert entered is not None and entered.outcome is Outcome.EXECUTED
    assert trailed is not None and trailed.outcome is Outcome.EXECUTED
    assert trailed.result.get("stops")  # it saw the layer: its stop moved up


async def test_a_bar_that_moves_nothing_is_decided_in_its_admission_unless_the_venue_acts(
        db, dsn):
    """A held instrument's bar that trails no stop is decided at admission — but not one at
    a broker stop's trigger: the stop may have fired a moment ago, so the worker reads it."""
    trading = await Trading(db, dsn, config=ROOMY).start()
    await db.load_cache()
    trading.inbox.start_processing()
    trading.readiness.started()
    try:
        await enter(trading)  # GOLD_MINI base at 78500, stop 76930, ATR 785
        async with trading.engine.locks("GOLD_MINI"):
            await trading.stops.sync_locked("GOLD_MINI")  # a GTT rests at 76930
        commits, alerts = batches(trading)
        quiet, answer = await submit(trading.inbox, trading, "MARKET_DATA", position=None,
                                     price="78000", atr=D(785))
        assert answer is not None and answer.outcome is Outcome.EXECUTED
        assert batches(trading) == (commits + 1, alerts + 1)  # one commit, decision included
        [(status,)] = rows(dsn, "SELECT status FROM signal_log WHERE id = %s",
                           quiet.signal_id)
        assert status == SignalStatus.PROCESSED
        trading.clock.advance(61)
        at_trigger, answer = await submit(trading.inbox, trading, "MARKET_DATA",
                                          position=None, price="76930", atr=D(785))
        assert answer is None  # left to the worker, which reads the venue's stop
        decided = await trading.inbox.wait_for_decision(at_trigger.signal_id, 10)
        assert decided is not None and decided.outcome is Outcome.EXECUTED
        assert rows(dsn, "SELECT status FROM paper_stops") == [("active",)]
    finally:
        await trading.close()


async def test_the_intake_never_waits_for_an_instrument_someone_else_is_about_to_take(
        trading):
    """A stop round holds GOLD_MINI's lock and a retry is queued for it: the lock is free for
    an instant but promised. An alert batch holding one GOLD_MINI and one SILVER_MINI alert
    does not wait for either (nor deadlock with one that takes locks in another order): the
    GOLD_MINI alert goes to its worker, the SILVER_MINI one is answered at once."""
    lock = trading.engine.locks("GOLD_MINI")
    await lock.acquire()
    released = asyncio.Event()

    async def queued_retry() -> None:
        async with lock:
            await released.wait()

    retry = asyncio.create_task(queued_retry())
    await asyncio.sleep(0)  # queued for the lock
    gold = asyncio.ensure_future(submit(trading.inbox, trading, "MARKET_DATA", position=None))
    silver = asyncio.ensure_future(submit(trading.inbox, trading, "MARKET_DATA",
                                          instrument="SILVER_MINI", position=None))
    # Released after the alerts are queued and before their batch is decided: the lock is
    # free for an instant, promised to the retry, which has not run yet.
    asyncio.get_running_loop().call_soon(lock.release)
    (silver_admission, silver_outcome) = await asyncio.wait_for(silver, 2)
    assert silver_outcome is not None and silver_outcome.outcome is Outcome.IGNORED
    gold_admission, gold_outcome = await asyncio.wait_for(gold, 2)
    assert gold_outcome is None  # left to its worker, which waits its turn for the lock
    released.set()
    await retry
    decided = await trading.inbox.wait_for_decision(gold_admission.signal_id, 10)
    assert decided is not None and decided.outcome is Outcome.IGNORED


async def test_a_decision_that_fails_at_admission_leaves_the_batch_stored(trading, dsn,
                                                                          monkeypatch):
    decide = trading.engine.decide_at_admission

    def fails_on_gold(item: Any) -> Any:
        if item.signal.instrument == "GOLD_MINI":
            raise ValueError("a broken layer")
        return decide(item)

    monkeypatch.setattr(trading.engine, "decide_at_admission", fails_on_gold)
    (gold, gold_outcome), (silver, silver_outcome) = await asyncio.gather(
        submit(trading.inbox, trading, "MARKET_DATA", position=None),
        submit(trading.inbox, trading, "MARKET_DATA", instrument="SILVER_MINI",
               position=None))
    assert gold.accepted and silver.accepted
    assert gold_outcome is None and silver_outcome is not None  # the worker decides gold
    decided = await trading.inbox.wait_for_decision(gold.signal_id, 10)
    assert decided is not None and decided.outcome is Outcome.IGNORED
    assert rows(dsn, "SELECT count(*) FROM signal_log WHERE status = 'processed'") == [(2,)]


async def test_alerts_stored_by_an_admission_whose_answer_was_lost_are_still_taken(
        trading, dsn, monkeypatch):
    """The commit of an entry lands but its answer does not (the connection drops): the
    sender hears a fault, and the stored entry is found and carried out all the same —
    before the next bar of its instrument, which trails the layer the entry opened instead
    of being decided at admission against a flat book."""
    admit = trading.db.admit_signals
    failures = [psycopg.OperationalError("server closed the connection unexpectedly")]

    async def answer_lost(*args: Any, **kwargs: Any) -> Any:
        admitted = await admit(*args, **kwargs)
        if failures:
            raise failures.pop()
        return admitted

    monkeypatch.setattr(trading.db, "admit_signals", answer_lost)
    with pytest.raises(psycopg.OperationalError):
        await submit(trading.inbox, trading, "BASE_ENTRY")
    later, _ = await submit(trading.inbox, trading, "MARKET_DATA", position=None,
                            price="79500", at=trading.clock.now + timedelta(seconds=1))
    trailed = await trading.inbox.wait_for_decision(later.signal_id, 10)
    assert trailed is not None and trailed.outcome is Outcome.EXECUTED
    assert trailed.result.get("stops")  # it saw the entry's layer
    assert rows(dsn, "SELECT signal_type, outcome FROM signal_log ORDER BY processed_at") == [
        ("BASE_ENTRY", "executed"), ("MARKET_DATA", "executed")]


def bar(instrument: str, delta_s: float = 0) -> AdmissionRequest:
    """A bar decided `ignored` at admission (no open layers)."""
    return AdmissionRequest(new_signal("MARKET_DATA", instrument, None, delta_s=delta_s), None,
                            Outcome.IGNORED, "no open layers")


async def test_a_deposed_leaders_decision_is_not_kept(db, dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE leader_fence SET epoch = 5")
    db.epoch = 4  # a newer term (5) holds the fence
    [stale] = await db.admit_signals([bar("GOLD_MINI")], 60, "old-leader")
    assert stale.accepted and stale.outcome is None
    db.epoch = 5
    [kept] = await db.admit_signals([bar("SILVER_MINI", 1)], 60, "leader")
    assert kept.outcome is Outcome.IGNORED
    assert rows(dsn, "SELECT id, status FROM signal_log ORDER BY id") == [
        (stale.signal_id, SignalStatus.RECEIVED), (kept.signal_id, SignalStatus.PROCESSED)]


async def test_on_a_pair_a_decision_never_overtakes_an_alert_still_waiting(db, dsn):
    """The other node stored an alert of the instrument that the leader has not taken yet:
    a later alert of it is left undecided too, for the worker to take in order."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE leader_fence SET epoch = 5")
    db.epoch = 5
    await db.admit_signals([AdmissionRequest(new_signal("BASE_ENTRY"))], 60, "standby")
    [behind, elsewhere] = await db.admit_signals(
        [bar("GOLD_MINI", 1), bar("SILVER_MINI", 2)], 60, "leader")
    assert behind.accepted and behind.outcome is None
    assert elsewhere.outcome is Outcome.IGNORED


async def test_past_its_budget_an_alert_is_refused_unstored_and_said_so(db, dsn):
    trading = await Trading(db, dsn).start()
    trading.inbox = inbox = Inbox(db, trading.engine, INSTRUMENTS, trading.config,
                                  processed_by="test", clock=trading.clock,
                                  metrics=trading.metrics, admit_budget_s=0.2)
    client = TestClient(TestServer(build_app(trading.context())))
    await client.start_server()
    blocker = await psycopg.AsyncConnection.connect(dsn)
    try:
        # The first admission's commit is held up (the table locked), as on a saturated
        # server; alerts behind it wait past the budget.
        await blocker.execute("LOCK TABLE signal_log IN EXCLUSIVE MODE")
        first = asyncio.ensure_future(submit(inbox, trading, "BASE_ENTRY"))
        await asyncio.sleep(0.05)
        behind = [asyncio.ensure_future(submit(
            inbox, trading, "EXIT", position="ALL",
            at=trading.clock.now + timedelta(seconds=61 * n))) for n in range(1, 4)]
        await asyncio.sleep(0.3)
        assert inbox.overloaded
        body = {**signal_payload("MARKET_DATA", position=None), "secret": "s3cret"}
        started = asyncio.get_running_loop().time()
        response = await client.post("/webhook", data=_json(body))
        assert response.status == 503 and response.headers["Retry-After"] == "1"
        assert (await response.json())["error"] == "overloaded"
        assert asyncio.get_running_loop().time() - started < 0.1  # shed at once
        await blocker.rollback()
        admission, _ = await first
        assert admission.accepted  # in a commit already: stored and answered
        for refused in behind:
            with pytest.raises(Overloaded):
                await refused
        assert rows(dsn, "SELECT id FROM signal_log") == [(admission.signal_id,)]
        assert not inbox.overloaded
    finally:
        await blocker.close()
        await client.close()
        await inbox.stop(1)
        await trading.close()


def _json(body: dict[str, Any]) -> str:
    from live.server import dumps

    return dumps(body)


async def test_behind_its_instrument_an_alert_is_accepted_at_once_not_late(trading):
    """Past capacity the workers fall behind: a webhook whose instrument has signals queued
    ahead of it is answered 202 `accepted` as soon as it is stored, instead of holding the
    sender for the decision wait (and answering after TradingView has given up)."""
    client = TestClient(TestServer(build_app(trading.context())))
    await client.start_server()
    lock = trading.engine.locks("GOLD_MINI")
    await lock.acquire()  # the worker is busy with what came before
    try:
        at = trading.clock.now
        queued = [asyncio.ensure_future(submit(trading.inbox, trading, "EXIT", position="ALL",
                                               at=at + timedelta(seconds=61 * n)))
                  for n in range(4)]
        await asyncio.gather(*queued)
        body = {**signal_payload("EXIT", position="ALL", at=at + timedelta(seconds=61 * 5)),
                "secret": "s3cret"}
        started = asyncio.get_running_loop().time()
        response = await client.post("/webhook", data=_json(body))
        assert response.status == 202 and (await response.json())["status"] == "accepted"
        assert asyncio.get_running_loop().time() - started < 0.5  # the wait is 2 s
    finally:
        lock.release()
        await client.close()


async def test_a_late_loop_is_a_late_alert(trading):
    """When the loop itself runs late, an alert read now was sent that long before: past
    the admission budget it is refused unstored, and the decision wait is shortened."""
    task = asyncio.create_task(trading.inbox.lag.run())
    try:
        await asyncio.sleep(0.05)
        time.sleep(1.2)  # noqa: ASYNC251 - the loop stuck: nothing is read meanwhile
        await asyncio.sleep(0.05)
        assert trading.inbox.unseen_wait_s >= 1.1
        assert trading.inbox.overloaded
    finally:
        task.cancel()
