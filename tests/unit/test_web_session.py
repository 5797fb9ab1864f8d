"""The dashboard's session cookie: it proves a login without holding the token, and
nothing else passes for it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from live.web_session import SESSION_S, Grant, SessionKeys


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_cookie_proves_its_grant_until_it_expires():
    clock = Clock()
    keys = SessionKeys("the-admin-token", clock=clock)
    cookie, session = keys.issue(Grant.ADMIN)
    assert "the-admin-token" not in cookie
    assert keys.verify(cookie) == session and session.grant is Grant.ADMIN
    clock.now += SESSION_S - 1
    assert keys.verify(cookie) is not None
    clock.now += 1
    assert keys.verify(cookie) is None


def test_a_cookie_cannot_be_raised_from_view_to_admin_or_carried_to_another_token():
    keys = SessionKeys("the-admin-token")
    cookie, _ = keys.issue(Grant.VIEW)
    raised = cookie.replace(".view.", ".admin.", 1)
    assert keys.verify(raised) is None
    assert SessionKeys("another-token").verify(cookie) is None
    # Both nodes of a pair share the token: either accepts the other's cookie.
    assert SessionKeys("the-admin-token").verify(cookie) is not None


def test_changing_the_view_token_ends_the_sessions_it_opened():
    keys = SessionKeys("the-admin-token", "the-view-token")
    cookie, _ = keys.issue(Grant.VIEW)
    assert SessionKeys("the-admin-token", "the-view-token").verify(cookie) is not None
    assert SessionKeys("the-admin-token", "a-new-view-token").verify(cookie) is None
    assert SessionKeys("the-admin-token").verify(cookie) is None


def test_a_longer_life_cannot_be_written_in():
    keys = SessionKeys("the-admin-token")
    cookie, session = keys.issue(Grant.ADMIN)
    parts = cookie.split(".")
    parts[2] = str(session.expires + 10 * SESSION_S)
    assert keys.verify(".".join(parts)) is None


def test_logging_out_ends_that_session_only():
    keys = SessionKeys("the-admin-token")
    first, session = keys.issue(Grant.ADMIN)
    second, _ = keys.issue(Grant.ADMIN)
    keys.revoke(session)
    assert keys.verify(first) is None and keys.verify(second) is not None


def test_each_session_has_its_own_csrf_token():
    keys = SessionKeys("the-admin-token")
    (cookie_a, a), (cookie_b, b) = keys.issue(Grant.ADMIN), keys.issue(Grant.ADMIN)
    assert a.csrf != b.csrf and a.csrf not in cookie_a and b.csrf not in cookie_b


@given(st.text(max_size=300))
def test_no_other_string_passes_for_a_cookie(text):
    assert SessionKeys("the-admin-token").verify(text) is None
