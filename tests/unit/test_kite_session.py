"""The daily token expiry clock and the session store."""

from __future__ import annotations

from datetime import UTC, datetime

from live.brokers.kite_session import KiteSession, next_expiry, save_session


def test_next_expiry_is_the_coming_six_am_in_india():
    before = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)  # 05:30 IST
    after = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)  # 06:30 IST
    assert next_expiry(before) == datetime(2026, 11, 20, 0, 30, tzinfo=UTC)
    assert next_expiry(after) == datetime(2026, 11, 21, 0, 30, tzinfo=UTC)


def test_a_dead_token_gives_way_to_a_new_login(tmp_path):
    session = KiteSession(tmp_path, configured_token="from-env")
    assert session.token() == "from-env"
    session.mark_expired("from-env")
    assert session.token() is None
    save_session(tmp_path, "fresh", "AB1234", None)
    assert session.token() == "fresh"
