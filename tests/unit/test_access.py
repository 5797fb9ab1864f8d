"""The pure parts of access control: who the client is, which policy the settings make."""

from __future__ import annotations

import os
import stat
from typing import Any

import pytest

from config.errors import ConfigError
from config.settings import Settings
from live.access import (
    AccessPolicy,
    access_policy,
    admin_token,
    forwarded_client,
    is_loopback,
    networks,
    webhook_secret,
)

PROXY = networks("127.0.0.1,10.0.0.0/8", "PM_TRUSTED_PROXIES")


@pytest.fixture
def settings(monkeypatch, tmp_path):
    """Settings from exactly these fields: no PM_* variable of the test run leaks in."""
    for name in [n for n in os.environ if n.startswith("PM_")]:
        monkeypatch.delenv(name)

    def build(**fields: Any) -> Settings:
        return Settings(state_dir=tmp_path, **fields)

    return build


# -- the client behind X-Forwarded-For ----------------------------------------------------

def test_an_untrusted_peer_is_the_client_whatever_it_forwards():
    assert forwarded_client("203.0.113.9", ["198.51.100.1"], PROXY) == "203.0.113.9"


def test_a_trusted_proxy_names_the_right_most_untrusted_hop():
    # The client wrote the left-most entry itself; only the hop the proxy appended counts.
    assert forwarded_client("127.0.0.1", ["6.6.6.6, 198.51.100.7"], PROXY) == "198.51.100.7"


def test_hops_of_trusted_proxies_are_skipped_across_headers():
    assert forwarded_client("127.0.0.1", ["198.51.100.7, 10.1.2.3", "10.0.0.5"],
                            PROXY) == "198.51.100.7"


@pytest.mark.parametrize("header", [[], ["not-an-ip"], ["198.51.100.7, junk"],
                                    ["198.51.100.7:4431"], [""], ["10.0.0.5"]])
def test_a_missing_malformed_or_all_trusted_header_leaves_the_peer(header):
    assert forwarded_client("127.0.0.1", header, PROXY) == "127.0.0.1"


def test_ipv6_and_mapped_ipv4_peers():
    trusted = networks("::1,192.0.2.0/24", "PM_TRUSTED_PROXIES")
    assert forwarded_client("::1", ["2001:db8::5"], trusted) == "2001:db8::5"
    assert forwarded_client("::ffff:192.0.2.1", ["198.51.100.7"], trusted) == "198.51.100.7"
    assert forwarded_client(None, ["198.51.100.7"], trusted) == "unknown"


# -- the policy -----------------------------------------------------------------------------

def test_tokens_are_checked_exactly_and_views_accept_either():
    policy = AccessPolicy("admin-t", view_token="view-t")
    assert policy.admits_admin("admin-t")
    assert not any(policy.admits_admin(t) for t in (None, "", "view-t", "admin-t ", "admin"))
    assert policy.admits_view("view-t") and policy.admits_view("admin-t")
    assert not any(policy.admits_view(t) for t in (None, "", "other"))
    assert AccessPolicy("admin-t", views_open=True).admits_view(None)


def test_views_open_on_loopback_are_not_open_through_a_proxy():
    local = AccessPolicy("admin-t", view_token="view-t", views_open=True)
    assert not local.admits_view(None, via_proxy=True)
    assert local.admits_view("view-t", via_proxy=True)
    anywhere = AccessPolicy("admin-t", views_open=True, views_open_via_proxy=True)
    assert anywhere.admits_view(None, via_proxy=True)


def test_tokens_stay_out_of_the_repr():
    text = repr(AccessPolicy("admin-secret-value", view_token="view-secret-value"))
    assert "secret-value" not in text


def test_the_webhook_allow_list():
    policy = AccessPolicy("t", webhook_allow=networks("52.89.214.238, 192.0.2.0/24", "X"))
    assert policy.admits_webhook_from("52.89.214.238")
    assert policy.admits_webhook_from("192.0.2.200")
    assert not policy.admits_webhook_from("52.89.214.239")
    assert not policy.admits_webhook_from("unknown")
    assert AccessPolicy("t").admits_webhook_from("unknown")  # empty: anyone


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
    ("pm.example.com", False), ("", False)])
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(("host", "require", "views_open", "via_proxy"), [
    ("127.0.0.1", None, True, False), ("0.0.0.0", None, False, False),
    ("127.0.0.1", True, False, False), ("0.0.0.0", False, True, True)])
def test_views_are_open_on_loopback_unless_overridden(settings, host, require, views_open,
                                                      via_proxy):
    policy = access_policy(settings(host=host, views_require_token=require), "a")
    assert (policy.views_open, policy.views_open_via_proxy) == (views_open, via_proxy)


def test_policy_from_settings(settings):
    policy = access_policy(settings(view_token="v", webhook_allow_ips="52.89.214.238,10.0.0.0/8",
                                    trusted_proxies="127.0.0.1"), "a")
    assert (policy.admin_token, policy.view_token) == ("a", "v")
    assert [str(n) for n in policy.webhook_allow] == ["52.89.214.238/32", "10.0.0.0/8"]
    assert [str(n) for n in policy.trusted_proxies] == ["127.0.0.1/32"]
    assert access_policy(settings(view_token=""), "a").view_token is None


def test_a_bad_network_names_the_variable(settings):
    with pytest.raises(ConfigError, match="PM_WEBHOOK_ALLOW_IPS: 'nope' is not an address"):
        access_policy(settings(webhook_allow_ips="52.89.214.238, nope"), "a")


# -- the admin token ------------------------------------------------------------------------

def test_a_configured_token_is_used_as_is(settings, tmp_path):
    assert admin_token(settings(admin_token="configured")) == ("configured", False)
    assert not (tmp_path / "admin_token").exists()


def test_paper_mode_generates_a_private_token_once(settings, tmp_path):
    token, generated = admin_token(settings())
    assert generated and len(token) >= 43  # 32 random bytes
    path = tmp_path / "admin_token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == token
    assert admin_token(settings()) == (token, True)  # reused on the next start


def test_an_empty_token_file_is_replaced(settings, tmp_path):
    (tmp_path / "admin_token").write_text("")
    token, _ = admin_token(settings())
    assert token and (tmp_path / "admin_token").read_text() == token


def test_a_live_broker_needs_a_configured_token(settings):
    with pytest.raises(ConfigError, match="PM_ADMIN_TOKEN must be set to trade with a live"):
        admin_token(settings(broker="zerodha"))
    with pytest.raises(ConfigError, match="PM_ADMIN_TOKEN is empty"):
        admin_token(settings(admin_token=" "))


def test_a_pair_needs_secrets_both_nodes_share(settings):
    """A generated secret would live on one node only: alerts refused after a failover."""
    pair = {"redis_url": "redis://127.0.0.1:6379/0"}
    with pytest.raises(ConfigError, match="PM_ADMIN_TOKEN must be set, the same on both"):
        admin_token(settings(**pair))
    with pytest.raises(ConfigError, match="PM_WEBHOOK_SECRET must be set, the same on both"):
        webhook_secret(settings(**pair))
    assert webhook_secret(settings(**pair, webhook_secret="shared")) == ("shared", False)
