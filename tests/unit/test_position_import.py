"""The rules of a legacy import: every rejection reason, named by row and field, and the
book a valid file becomes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from core.models import ContractRef, LayerStatus
from core.position_import import MAX_ROWS, check_import, preview_layer
from live.position_import_cli import UnreadableFile, read_rows
from tests.support.factories import new_layer
from tests.support.trading import INSTRUMENTS

NOW = datetime(2026, 11, 20, 5, 0, tzinfo=UTC)
GOLD_DEC = ContractRef("GOLDM26DECFUT", "MCX", date(2026, 12, 5))
GOLD_FEB = ContractRef("GOLDM27FEBFUT", "MCX", date(2027, 2, 5))
CONTRACTS = {"GOLD_MINI": [GOLD_DEC, GOLD_FEB],
             "BANK_NIFTY": [ContractRef("BANKNIFTY26NOVFUT", "NFO", date(2026, 11, 24))],
             "COPPER": [], "SILVER_MINI": []}
FIXTURE = Path(__file__).parents[1] / "fixtures" / "legacy_book.csv"


def row(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "instrument": "GOLD_MINI", "layer": "Long_1", "lots": "3", "entry_price": "78500",
        "initial_stop": "77800", "current_stop": "78000", "entry_time": "2026-11-18T10:15:00",
        "tradingsymbol": "GOLDM26DECFUT", "atr": "700"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def check(*rows: object, book=()):
    return check_import(list(rows), instruments=INSTRUMENTS, contracts=CONTRACTS,
                        book=list(book), now=NOW)


def reasons(*rows: object, book=()) -> list[tuple[int, str, str]]:
    return [(r.row, r.field, r.reason) for r in check(*rows, book=book).rejections]


def test_a_valid_trade_becomes_layers_with_their_risk_and_pyramiding_state():
    result = check(row(), row(layer="long_2", lots="1", entry_price="79600.5",
                              initial_stop="79000", current_stop="",
                              entry_time="2026-11-19T11:00:00+05:30",
                              tradingsymbol="goldm27febfut"))
    assert result.ok and not result.rejections
    base, pyramid = result.layers
    assert (base.quantity, base.risk, base.contract) == (3, Decimal("15000.00"), GOLD_DEC)
    assert base.entry_timestamp == datetime(2026, 11, 18, 4, 45, tzinfo=UTC)  # naive: IST
    # No current stop given: it is the initial one; layers may sit in different contracts.
    assert (pyramid.layer, pyramid.current_stop, pyramid.contract) == (
        "Long_2", Decimal("79000"), GOLD_FEB)
    assert pyramid.risk == Decimal("6005.00")
    [trade] = result.trades()
    assert (trade.base, trade.pyramid_count, trade.last_pyramid_price) == (
        base, 1, Decimal("79600.5"))
    assert preview_layer(base).current_stop == Decimal("78000")


def test_lots_are_counted_in_broker_units_and_a_gap_counts_the_pyramid_taken():
    result = check(row(instrument="BANK_NIFTY", entry_price="52000", initial_stop="51650",
                       current_stop="51650", tradingsymbol="BANKNIFTY26NOVFUT", lots="2"),
                   row(instrument="BANK_NIFTY", layer="Long_4", entry_price="52600",
                       initial_stop="52200", current_stop="52200", lots="1",
                       tradingsymbol="BANKNIFTY26NOVFUT", entry_time="2026-11-19T10:00:00"))
    assert [x.quantity for x in result.layers] == [60, 30]
    assert result.layers[0].risk == Decimal("21000.00")  # 350 × 2 lots × pv 30
    assert result.trades()[0].pyramid_count == 3  # Long_4 open: three pyramids were taken


@pytest.mark.parametrize(("fields", "field", "reason"), [
    ({"instrument": "PLATINUM"}, "instrument", "unknown instrument PLATINUM"),
    ({"instrument": 7}, "instrument", "is not text"),
    ({"layer": "Long_7"}, "layer", "is not a layer name"),
    ({"layer": "Short_1"}, "layer", "the book holds long layers only"),
    ({"lots": "0"}, "lots", "not a positive whole number"),
    ({"lots": "-2"}, "lots", "not a positive whole number"),
    ({"lots": "2.5"}, "lots", "not a positive whole number"),
    ({"lots": True}, "lots", "not a positive whole number"),
    ({"entry_price": "-78500"}, "entry_price", "not a positive decimal"),
    ({"entry_price": "0"}, "entry_price", "not a positive decimal"),
    ({"entry_price": "78,500"}, "entry_price", "not a positive decimal"),
    ({"entry_price": "NaN"}, "entry_price", "not a positive decimal"),
    ({"entry_price": "78500.12345"}, "entry_price", "more than 4 decimal places"),
    ({"initial_stop": "abc"}, "initial_stop", "not a positive decimal"),
    ({"atr": "-1"}, "atr", "not a decimal of at least 0"),
    ({"initial_stop": "78500"}, "initial_stop", "is not below the entry price 78500"),
    ({"initial_stop": "79000", "current_stop": "79500"}, "initial_stop",
     "the book holds long layers only"),
    ({"current_stop": "77000"}, "current_stop",
     "77000 is below the initial stop 77800: a stop only ratchets up"),
    ({"highest_close": "78000"}, "highest_close", "below the entry price"),
    ({"highest_close": "78600", "current_stop": "78700"}, "current_stop",
     "above the highest close 78600"),
    ({"entry_time": "2026-11-21T09:00:00"}, "entry_time", "is in the future"),
    ({"entry_time": "2026-11-18"}, "entry_time", "is not a date and time"),
    ({"entry_time": "yesterday at ten"}, "entry_time", "is unparsable"),
    ({"entry_time": "2026-13-18T10:00:00"}, "entry_time", "is unparsable"),
    ({"tradingsymbol": "SILVERM26NOVFUT"}, "tradingsymbol",
     "is not a listed contract of GOLD_MINI (listed: GOLDM26DECFUT, GOLDM27FEBFUT)"),
    ({"tradingsymbol": "BANKNIFTY26NOVFUT"}, "tradingsymbol",
     "is a contract of BANK_NIFTY, not of GOLD_MINI"),
    ({"tradingsymbol": "GOLD MINI;"}, "tradingsymbol", "is not a tradingsymbol"),
    ({"stop": "77800"}, "stop", "unknown field"),
    ({"lots": None}, "lots", "missing"),
    ({"entry_time": "  "}, "entry_time", "missing"),
])
def test_each_bad_field_is_rejected_with_its_row_field_and_reason(fields, field, reason):
    found = reasons(row(), row(instrument="BANK_NIFTY", entry_price="52000",
                               initial_stop="51650", current_stop="51650",
                               tradingsymbol="BANKNIFTY26NOVFUT"), row(**fields))
    assert any(r[0] == 3 and r[1] == field and reason in r[2] for r in found), found
    assert all(r[0] == 3 for r in found), found


def test_a_pyramid_needs_its_base_in_the_file_and_must_come_after_it():
    assert reasons(row(layer="Long_2")) == [
        (1, "layer", "pyramid Long_2 of GOLD_MINI without its base Long_1 in the file")]
    assert reasons(row(), row(layer="Long_2", entry_time="2026-11-17T10:00:00")) == [
        (2, "entry_time", "pyramid Long_2 entered before its base Long_1 (row 1)")]


def test_a_layer_twice_in_the_file_names_the_first():
    assert reasons(row(), row(lots="1")) == [
        (2, "layer", "GOLD_MINI Long_1 is in the file twice (first in row 1)")]


def test_a_layer_open_in_the_book_or_an_instrument_holding_layers_is_refused():
    held = replace(_layer(new_layer(7, layer="Long_1"), 12), status=LayerStatus.OPEN)
    assert reasons(row(), book=[held]) == [
        (1, "layer", "GOLD_MINI Long_1 is already open in the book (position 12)")]
    found = reasons(row(layer="Long_1", instrument="GOLD_MINI"),
                    row(layer="Long_2", entry_time="2026-11-19T10:00:00"), book=[held])
    assert found[1] == (2, "instrument", "GOLD_MINI already holds open layers in the book "
                                         "(Long_1): an import starts a new trade, into an "
                                         "instrument that is flat")
    closed = replace(held, status=LayerStatus.CLOSED)
    assert check(row(), book=[closed]).ok  # a closed layer is history, not the book


def test_every_row_is_checked_and_nothing_is_valid_unless_all_are():
    result = check(row(lots="x"), row(instrument="BANK_NIFTY", tradingsymbol="NOPE"),
                   "not an object", row(layer="Long_2", entry_price="-1"))
    assert not result.ok
    assert sorted({r.row for r in result.rejections}) == [1, 2, 3, 4]
    assert ("row 3, row: not an object of fields" in
            [r.describe() for r in result.rejections])


def test_an_empty_or_oversized_import_is_refused():
    assert reasons() == [(0, "rows", "the file holds no rows")]
    assert reasons(*[row()] * (MAX_ROWS + 1))[0][2].startswith(f"{MAX_ROWS + 1} rows")


def test_warnings_name_what_is_allowed_but_unusual():
    result = check(row(atr=None), *[row(layer=f"Long_{n}", lots="1", entry_price="79000",
                                        initial_stop="78500", current_stop="78500",
                                        entry_time="2026-11-19T10:00:00")
                                    for n in range(2, 6)])
    assert result.ok
    assert result.warnings == (
        "GOLD_MINI: 4 pyramids taken, more than max_pyramids 3; no further pyramid will be "
        "added", "no atr for GOLD_MINI: counted as 0 in the volatility cap")


def test_the_sample_book_is_valid_over_three_instruments():
    rows = read_rows(FIXTURE)
    paper = {name: [ContractRef(name, spec.exchange, None)] for name, spec in INSTRUMENTS.items()}
    result = check_import(rows, instruments=INSTRUMENTS, contracts=paper, book=[], now=NOW)
    assert result.ok and len(result.layers) == 6
    assert [t.instrument for t in result.trades()] == ["BANK_NIFTY", "COPPER", "GOLD_MINI"]
    assert result.risk == Decimal("77655.00")


@pytest.mark.parametrize(("name", "text", "message"), [
    ("book.csv", "instrument,layer\nGOLD_MINI,Long_1,extra\n",
     "row 1 (line 2) has 3 cells, the header 2"),
    ("book.csv", "instrument,instrument\nGOLD_MINI,GOLD_MINI\n", "distinct, non-empty names"),
    ("book.csv", "", "empty"),
    ("book.json", '{"rows": []}', "not a JSON list of objects"),
    ("book.json", '[{"lots": 1}, 5]', "row 2 is not an object"),
    ("book.json", '[{"lots": [1]}]', "row 1, lots: not a single value"),
    ("book.json", "[{", "not JSON"),
    ("book.txt", "x", "give a .json"),
])
def test_the_cli_names_the_row_it_cannot_read(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UnreadableFile, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_rows(path)


def test_json_numbers_reach_the_daemon_as_the_text_they_were_written_as(tmp_path):
    path = tmp_path / "book.json"
    path.write_text('[{"entry_price": 78500.10, "lots": 3}]')
    assert read_rows(path) == [{"entry_price": "78500.10", "lots": "3"}]


def _layer(new, layer_id: int):
    from core.models import Layer

    return Layer(id=layer_id, status=LayerStatus.OPEN, current_stop=new.initial_stop,
                 highest_close=new.entry_price, exit_price=None, exit_timestamp=None,
                 exit_reason=None, realized_pnl=None, version=1,
                 **{f: getattr(new, f) for f in new.__dataclass_fields__})
