from __future__ import annotations

import pytest

from dandelion.io.policy import OutboundPolicy


@pytest.mark.parametrize("address", ["169.254.169.254", "169.254.1.1", "fe80::1",
                                     "100.100.100.200", "::ffff:169.254.169.254"])
def test_link_local_and_metadata_addresses_are_refused_by_default(address):
    assert OutboundPolicy().check_address(address) is not None


def test_metadata_host_names_are_refused_by_default():
    assert OutboundPolicy().check_host("metadata.google.internal") is not None
    assert OutboundPolicy(allow_link_local=True).check_host("metadata.google.internal") is None


def test_loopback_and_public_addresses_pass_by_default():
    p = OutboundPolicy()
    assert p.check_address("127.0.0.1") is None
    assert p.check_address("::1") is None
    assert p.check_host("example.org") is None


def test_deny_list_takes_networks_and_host_patterns():
    p = OutboundPolicy(deny=("10.0.0.0/8", "*.internal.example", "db.local"))
    assert "deny" in p.check_address("10.9.9.9")
    assert "deny" in p.check_host("a.internal.example")
    assert "deny" in p.check_host("DB.local")
    assert p.check_host("example.org") is None


def test_allow_list_refuses_everything_else():
    p = OutboundPolicy(allow=("127.0.0.0/8", "api.example.org"))
    assert p.check_address("127.0.0.2") is None
    assert "allow" in p.check_address("8.8.8.8")
    assert p.check_address("93.184.216.34", host="api.example.org") is None
    hosts_only = OutboundPolicy(allow=("api.example.org",))
    assert "allow" in hosts_only.check_host("other.example.org")


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="neither"):
        OutboundPolicy(deny=("not a rule",))
