"""Pyramid gates (§5): which reasons, in which order, in which words."""

from collections.abc import Sequence
from decimal import Decimal as D

import pytest

from config.domain_files import DEFAULT_CONFIG_DIR, load_portfolio_config
from core.gates import join_reasons, pyramid_gate_failures
from core.specs import PortfolioConfig

CFG = load_portfolio_config(DEFAULT_CONFIG_DIR / "portfolio.json")
PV = D("30")
BASE_ENTRY, BASE_STOP = D("52000"), D("51550")  # 1R = 450
PROFITABLE = [(BASE_ENTRY, 2)]


def failures(price: D, atr: D = D("500"), last_pyramid_price: D = BASE_ENTRY,
             layers: Sequence[tuple[D, int]] = PROFITABLE, base_entry: D = BASE_ENTRY,
             base_stop: D = BASE_STOP, cfg: PortfolioConfig = CFG) -> list[str]:
    return pyramid_gate_failures(price, atr, base_entry, base_stop, last_pyramid_price, layers,
                                 PV, cfg)


def test_all_gates_pass() -> None:
    assert failures(D("52500")) == []


def test_every_failure_is_reported_in_order() -> None:
    # Moved 400 of 450 needed; (52,400 − 52,290) / 500 = 0.22 ATR;
    # P&L (400 × 1 − 110 × 4) × 30 = −1,200.
    reasons = failures(D("52400"), last_pyramid_price=D("52290"),
                       layers=[(D("52000"), 1), (D("52510"), 4)])

    assert join_reasons(reasons) == (
        "Price not > 1R (moved 400, need 450) | ATR spacing 0.22 < 0.5"
        " | Instrument P&L negative: ₹-1,200")


def test_one_r_gate_can_be_turned_off() -> None:
    cfg = PortfolioConfig.model_validate({**CFG.model_dump(), "use_1r_gate": False})

    assert failures(D("52400"), cfg=cfg) == []
    assert failures(D("52400")) == ["Price not > 1R (moved 400, need 450)"]


def test_one_r_numbers_are_printed_plainly() -> None:
    reasons = failures(D("52400.50"), base_entry=D("52000.00"), base_stop=D("51549.50"))

    assert reasons == ["Price not > 1R (moved 400.5, need 450.5)"]


def test_one_r_reason_when_price_fell() -> None:
    reasons = failures(D("51900"), last_pyramid_price=D("51000"))

    assert reasons[0] == "Price not > 1R (moved -100, need 450)"


def test_atr_spacing_boundary_passes() -> None:
    # 52,700 − 52,450 = 250 = 0.5 × 500.
    assert failures(D("52700"), last_pyramid_price=D("52450")) == []
    assert failures(D("52700"), last_pyramid_price=D("52451")) == ["ATR spacing 0.49 < 0.5"]


def test_atr_spacing_ratio_is_never_rounded_up_to_the_threshold() -> None:
    # 249.9 / 500 = 0.4998: printed 0.49, not 0.50.
    assert failures(D("52700"), last_pyramid_price=D("52450.1")) == ["ATR spacing 0.49 < 0.5"]


def test_atr_spacing_threshold_is_printed_as_configured() -> None:
    cfg = PortfolioConfig.model_validate({**CFG.model_dump(), "atr_pyramid_spacing": "0.75"})

    assert failures(D("52700"), last_pyramid_price=D("52450"), cfg=cfg) == [
        "ATR spacing 0.50 < 0.75"]


def test_zero_atr_fails_spacing() -> None:
    reasons = failures(D("52700"), atr=D("0"))

    assert len(reasons) == 1
    assert reasons[0].startswith("ATR spacing")
    assert "0.5" in reasons[0]


def test_zero_pnl_fails_the_profit_gate() -> None:
    # +500 × 1 and −250 × 2 cancel out.
    reasons = failures(D("52500"), layers=[(D("52000"), 1), (D("52750"), 2)])

    assert reasons == ["Instrument P&L negative: ₹0"]


def test_pnl_is_printed_with_thousands_separators() -> None:
    # (500 × 1 − 1,500 × 36) × 30 = −1,605,000.
    reasons = failures(D("52500"), layers=[(D("52000"), 1), (D("54000"), 36)])

    assert reasons == ["Instrument P&L negative: ₹-1,605,000"]


def test_profit_gate_uses_every_open_layer() -> None:
    assert failures(D("52500"), layers=[(D("52000"), 2), (D("52600"), 1)]) == []
    assert failures(D("52500"), layers=[(D("52000"), 2), (D("52600"), 11)]) == [
        "Instrument P&L negative: ₹-3,000"]


@pytest.mark.parametrize(("reasons", "joined"), [
    ([], ""), (["one"], "one"), (["one", "two", "three"], "one | two | three"),
])
def test_join_reasons(reasons: list[str], joined: str) -> None:
    assert join_reasons(reasons) == joined
