import pytest

from presence import policies

TRUSTED = policies.networks_parse(values=["10.0.0.0/8", "::1/128"])


def test_peer_address_is_used_when_the_peer_is_not_a_trusted_proxy():
    assert policies.client_ip(peer="203.0.113.9", forwarded_for="1.2.3.4", trusted_proxies=TRUSTED) == "203.0.113.9"


def test_forwarded_address_is_used_behind_a_trusted_proxy():
    assert policies.client_ip(peer="10.0.0.2", forwarded_for="203.0.113.9", trusted_proxies=TRUSTED) == "203.0.113.9"


def test_spoofed_leftmost_forwarded_entries_are_ignored():
    forwarded = "6.6.6.6, 203.0.113.9"  # the client wrote 6.6.6.6; the proxy appended the real peer
    assert policies.client_ip(peer="10.0.0.2", forwarded_for=forwarded, trusted_proxies=TRUSTED) == "203.0.113.9"


def test_chained_trusted_proxies_are_skipped():
    forwarded = "203.0.113.9, 10.0.0.7"
    assert policies.client_ip(peer="10.0.0.2", forwarded_for=forwarded, trusted_proxies=TRUSTED) == "203.0.113.9"


def test_malformed_forwarded_header_falls_back_to_the_peer():
    assert policies.client_ip(peer="10.0.0.2", forwarded_for="not-an-ip", trusted_proxies=TRUSTED) == "10.0.0.2"


def test_no_trusted_proxies_means_the_header_is_never_believed():
    assert policies.client_ip(peer="10.0.0.2", forwarded_for="203.0.113.9", trusted_proxies=[]) == "10.0.0.2"


@pytest.mark.parametrize(("connects", "limit", "abuse"), [(10, 10, False), (11, 10, True), (5, 0, False)])
def test_reconnect_abuse_is_more_than_the_limit(connects, limit, abuse):
    assert policies.reconnect_abuse(connects=connects, limit=limit) is abuse


@pytest.mark.parametrize(("silence", "silent"), [(59.9, False), (60.1, True)])
def test_a_connection_is_dead_after_three_heartbeats_of_silence(silence, silent):
    assert policies.connection_silent(now=1000 + silence, last_seen=1000, heartbeat=20) is silent


def test_ip_in_networks_handles_bad_input():
    assert policies.ip_in_networks(ip="10.1.1.1", networks=TRUSTED)
    assert not policies.ip_in_networks(ip=None, networks=TRUSTED)
    assert not policies.ip_in_networks(ip="garbage", networks=TRUSTED)
