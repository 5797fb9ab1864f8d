"""Initial stops and the trailing ratchet (§6)."""

from decimal import Decimal as D

import pytest

from config.domain_files import DEFAULT_CONFIG_DIR, load_instruments, load_portfolio_config
from core.specs import PortfolioConfig
from core.stops import Trail, initial_stop, trail_stop

SPECS = load_instruments(DEFAULT_CONFIG_DIR / "instruments.json")
CFG = load_portfolio_config(DEFAULT_CONFIG_DIR / "portfolio.json")
ATR_CFG = PortfolioConfig.model_validate({**CFG.model_dump(), "stop_source": "atr"})
BN = SPECS["BANK_NIFTY"]  # trailing_atr_mult 2.5


def test_signal_stop_is_the_default() -> None:
    assert initial_stop(D("52000"), D("51650"), D("400"), BN, CFG) == D("51650")


def test_atr_stop_ignores_the_signal_stop() -> None:
    # 52,000 − 1.5 × 350 = 51,475.
    assert initial_stop(D("52000"), D("51650"), D("350"), BN, ATR_CFG) == D("51475")


def test_atr_stop_needs_no_signal_stop() -> None:
    assert initial_stop(D("52000"), None, D("350"), BN, ATR_CFG) == D("51475")


def test_signal_stop_source_without_a_stop_is_a_bug() -> None:
    with pytest.raises(ValueError, match="no stop"):
        initial_stop(D("52000"), None, D("350"), BN, CFG)


def test_trail_rises_with_a_new_high() -> None:
    # 53,000 − 2.5 × 200 = 52,500.
    trail = trail_stop(D("52000"), D("51650"), D("53000"), D("200"), BN)

    assert trail == Trail(highest_close=D("53000"), current_stop=D("52500"), hit=False)


def test_trail_never_moves_down() -> None:
    highest, stop = D("53000"), D("52500")
    for price, atr in [(D("52800"), D("200")), (D("52900"), D("400")), (D("52600"), D("50"))]:
        trail = trail_stop(highest, stop, price, atr, BN)

        assert trail.current_stop >= stop
        highest, stop = trail.highest_close, trail.current_stop

    assert (highest, stop) == (D("53000"), D("52875"))


def test_wider_atr_keeps_the_stop() -> None:
    # 53,000 − 2.5 × 400 = 52,000 is below the current 52,500.
    trail = trail_stop(D("53000"), D("52500"), D("52800"), D("400"), BN)

    assert (trail.highest_close, trail.current_stop) == (D("53000"), D("52500"))


def test_trail_uses_the_highest_close_not_the_price() -> None:
    # A lower close does not lower the high: 53,000 − 2.5 × 100 = 52,750.
    trail = trail_stop(D("53000"), D("52000"), D("52900"), D("100"), BN)

    assert trail.current_stop == D("52750")


@pytest.mark.parametrize(("price", "hit"), [(D("52501"), False), (D("52500"), False),
                                            (D("52499.95"), True)])
def test_hit_only_strictly_below_the_stop(price: D, hit: bool) -> None:
    assert trail_stop(D("53000"), D("52500"), price, D("400"), BN).hit is hit


def test_hit_is_judged_against_the_raised_stop() -> None:
    # A new high of 54,750 raises the stop to 54,750 − 2.5 × 100 = 54,500; the next close,
    # 54,400, is below the raised stop though far above the old 52,500.
    first = trail_stop(D("53000"), D("52500"), D("54750"), D("100"), BN)
    second = trail_stop(first.highest_close, first.current_stop, D("54400"), D("100"), BN)

    assert (first.current_stop, first.hit) == (D("54500"), False)
    assert second.hit is True
