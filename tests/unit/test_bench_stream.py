"""The benchmark's alert stream stays valid and distinct, so `make bench` measures real work."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from bench.stream import alert_body, bench_instruments, write_bench_config
from config.domain_files import load_instruments, load_portfolio_config
from core.signals import freshness, parse_signal


def test_alerts_are_valid_fresh_and_never_duplicates(tmp_path):
    instruments = write_bench_config(tmp_path, 8)
    table = load_instruments(tmp_path / "instruments.json")
    portfolio = load_portfolio_config(tmp_path / "portfolio.json")
    now = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    signals = [parse_signal(alert_body(i, instruments, "s", now), table) for i in range(800)]
    assert len({s.fingerprint for s in signals}) == 800
    window: dict[tuple, list] = {}
    for s in signals:
        assert freshness(s, now, portfolio.max_signal_age_s, portfolio.max_future_skew_s) is None
        if s.signal_type.value != "MARKET_DATA":
            window.setdefault((s.instrument, s.signal_type, s.position), []).append(s.timestamp)
    for stamps in window.values():
        gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)]
        assert min(gaps, default=61) > portfolio.dedup_window_s
    kinds = {s.signal_type.value for s in signals}
    assert kinds == {"BASE_ENTRY", "PYRAMID", "EXIT", "MARKET_DATA"}


def test_bench_instruments_clone_the_shipped_specs(tmp_path):
    write_bench_config(tmp_path, 4)
    table = load_instruments(tmp_path / "instruments.json")
    clone = table[bench_instruments(1)[0].name]
    assert clone.point_value == Decimal("10") and clone.lot_size == 100  # GOLD_MINI's
