"""Intent purposes as stored with their intents: the JSON round trip and old rows."""

import json
from decimal import Decimal as D

import pytest

from core.intents import EntryPurpose, ExitPurpose, purpose_from_json, purpose_to_json


def test_entry_purpose_round_trips() -> None:
    purpose = EntryPurpose(layer="Long_2", trade_id=7, initial_stop=D("52000.05"),
                           atr=D("350.1250"), limiter="geometric", quoted=True)

    loaded = purpose_from_json(json.loads(json.dumps(purpose_to_json(purpose))))

    assert loaded == purpose
    assert isinstance(loaded, EntryPurpose)
    assert str(loaded.initial_stop) == "52000.05"
    assert str(loaded.atr) == "350.1250"


def test_base_entry_purpose_round_trips_without_a_trade_id() -> None:
    purpose = EntryPurpose(layer="Long_1", trade_id=None, initial_stop=D("77800"),
                           atr=D("700"), limiter="risk")

    assert purpose_from_json(purpose_to_json(purpose)) == purpose


def test_entry_purpose_stores_money_as_exact_text() -> None:
    purpose = EntryPurpose(layer="Long_1", trade_id=None, initial_stop=D("77800.10"),
                           atr=D("700"), limiter="risk")

    assert purpose_to_json(purpose) == {
        "kind": "entry", "layer": "Long_1", "trade_id": None, "initial_stop": "77800.10",
        "atr": "700", "limiter": "risk", "quoted": False}


def test_exit_purpose_round_trips_with_position_ids_a_tuple() -> None:
    purpose = ExitPurpose(reason="PM_STOP_HIT", position_ids=(3, 1, 2))

    stored = json.loads(json.dumps(purpose_to_json(purpose)))
    loaded = purpose_from_json(stored)

    assert stored == {"kind": "exit", "reason": "PM_STOP_HIT", "position_ids": [3, 1, 2]}
    assert loaded == purpose
    assert loaded.position_ids == (3, 1, 2)  # type: ignore[union-attr]
    assert isinstance(loaded.position_ids, tuple)  # type: ignore[union-attr]


def test_stored_entry_shape_loads() -> None:
    stored = {"kind": "entry", "layer": "Long_1", "trade_id": None, "initial_stop": "77800",
              "atr": "700", "limiter": "risk", "quoted": False}

    assert purpose_from_json(stored) == EntryPurpose(
        layer="Long_1", trade_id=None, initial_stop=D("77800"), atr=D("700"), limiter="risk",
        quoted=False)


def test_stored_exit_shape_loads() -> None:
    stored = {"kind": "exit", "reason": "EXIT_ALL", "position_ids": [1, 2]}

    assert purpose_from_json(stored) == ExitPurpose(reason="EXIT_ALL", position_ids=(1, 2))


def test_entry_row_written_before_quoted_existed_loads_unquoted() -> None:
    stored = {"kind": "entry", "layer": "Long_2", "trade_id": 7, "initial_stop": "78600",
              "atr": "700", "limiter": "geometric"}

    loaded = purpose_from_json(stored)

    assert loaded == EntryPurpose(layer="Long_2", trade_id=7, initial_stop=D("78600"),
                                  atr=D("700"), limiter="geometric", quoted=False)


def test_quoted_entry_loads_quoted() -> None:
    stored = {"kind": "entry", "layer": "Long_1", "trade_id": None, "initial_stop": "77800",
              "atr": "700", "limiter": "risk", "quoted": True}

    assert purpose_from_json(stored).quoted is True  # type: ignore[union-attr]


@pytest.mark.parametrize("stored", [{"kind": "transfer"}, {}, {"kind": None}])
def test_unknown_kind_raises(stored: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="unknown intent purpose kind"):
        purpose_from_json(stored)


# --- roll purposes and retries ----------------------------------------------------------------


def test_roll_close_leg_round_trips_without_an_attempt() -> None:
    from core.intents import RollPurpose

    purpose = RollPurpose(roll_id=12, leg="close", position_ids=(3, 1))

    stored = json.loads(json.dumps(purpose_to_json(purpose)))
    loaded = purpose_from_json(stored)

    assert stored == {"kind": "roll", "roll_id": 12, "leg": "close", "position_ids": [3, 1]}
    assert loaded == purpose
    assert isinstance(loaded, RollPurpose)
    assert loaded.position_ids == (3, 1)


def test_roll_open_leg_round_trips_with_its_attempt_and_retry_of() -> None:
    from core.intents import RollPurpose

    purpose = RollPurpose(roll_id=12, leg="open", position_ids=(3,), attempt=2, retry_of=41)

    stored = json.loads(json.dumps(purpose_to_json(purpose)))

    assert stored == {"kind": "roll", "roll_id": 12, "leg": "open", "position_ids": [3],
                      "attempt": 2, "retry_of": 41}
    assert purpose_from_json(stored) == purpose


def test_roll_with_an_unknown_leg_raises() -> None:
    stored = {"kind": "roll", "roll_id": 12, "leg": "sideways", "position_ids": [3]}

    with pytest.raises(ValueError, match="unknown roll leg 'sideways'"):
        purpose_from_json(stored)


def test_exit_retried_counts_the_attempt_and_records_the_refused_intent() -> None:
    purpose = ExitPurpose(reason="PM_STOP_HIT", position_ids=(3, 1, 2))

    first = purpose.retried(55, (1, 2))
    second = first.retried(58, (2,))

    assert first == ExitPurpose(reason="PM_STOP_HIT", position_ids=(1, 2), attempt=1,
                                retry_of=55)
    assert second == ExitPurpose(reason="PM_STOP_HIT", position_ids=(2,), attempt=2,
                                 retry_of=58)
    assert purpose_from_json(purpose_to_json(second)) == second


def test_roll_retried_keeps_the_roll_and_leg() -> None:
    from core.intents import RollPurpose

    purpose = RollPurpose(roll_id=12, leg="close", position_ids=(3, 1))

    first = purpose.retried(70, (3, 1))
    second = first.retried(74, (1,))

    assert first == RollPurpose(roll_id=12, leg="close", position_ids=(3, 1), attempt=1,
                                retry_of=70)
    assert second == RollPurpose(roll_id=12, leg="close", position_ids=(1,), attempt=2,
                                 retry_of=74)


def test_first_exit_attempt_stores_no_attempt_key() -> None:
    stored = purpose_to_json(ExitPurpose(reason="EXIT_ALL", position_ids=(1, 2)))

    assert stored == {"kind": "exit", "reason": "EXIT_ALL", "position_ids": [1, 2]}
    assert "attempt" not in stored and "retry_of" not in stored
