"""The outbound policy: which hosts the I/O engine may talk to.

By default every address is allowed except link-local ones (``169.254.0.0/16``,
``fe80::/10``) and the cloud metadata services, so a function cannot read a node's
credentials.  ``deny`` adds networks or host names to refuse; a non-empty ``allow`` list
refuses everything it does not name.  Host names are checked as written and every address
they resolve to is checked before a connection is made (so DNS cannot smuggle a denied
address in).

>>> p = OutboundPolicy(deny=("10.0.0.0/8",))
>>> p.check_address("10.1.2.3") is not None
True
>>> p.check_address("169.254.169.254")
'169.254.169.254 is a link-local or metadata address'
>>> OutboundPolicy().check_address("127.0.0.1") is None
True
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Union

import attrs

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: Refused unless ``allow_link_local`` is set: link-local ranges and metadata endpoints.
LINK_LOCAL = (
    "169.254.0.0/16", "fe80::/10", "100.100.100.200/32", "fd00:ec2::254/128",
)
#: Host names of metadata services, refused with the link-local addresses.
METADATA_HOSTS = ("metadata.google.internal", "metadata", "instance-data")


def _split_rules(rules: Iterable[str]) -> tuple[tuple[Network, ...], tuple[str, ...]]:
    networks: list[Network] = []
    hosts: list[str] = []
    for rule in rules:
        rule = str(rule).strip()
        try:
            networks.append(ipaddress.ip_network(rule, strict=False))
        except ValueError:
            if not rule or " " in rule:
                raise ValueError(f"outbound rule {rule!r} is neither a network nor a host "
                                 "name") from None
            hosts.append(rule.lower().rstrip("."))
    return tuple(networks), tuple(hosts)


def _host_matches(host: str, patterns: Iterable[str]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in patterns:
        if pattern.startswith("*.") and (host.endswith(pattern[1:]) or host == pattern[2:]):
            return True
        if host == pattern:
            return True
    return False


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(text.strip("[]").split("%")[0])
    except ValueError:
        return None
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped or addr


@attrs.frozen
class OutboundPolicy:
    """Where I/O functions may send requests.

    Attributes:
        allow: networks (``127.0.0.0/8``) or host names (``api.example.org``,
            ``*.example.org``); when non-empty, everything else is refused.
        deny: networks or host names that are always refused.
        allow_link_local: permit link-local and metadata addresses (off by default).
        schemes: URL schemes that may be used.
    """

    allow: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    deny: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    allow_link_local: bool = False
    schemes: tuple[str, ...] = attrs.field(default=("http", "https"), converter=tuple)
    _allow: tuple[tuple[Network, ...], tuple[str, ...]] = attrs.field(init=False, repr=False)
    _deny: tuple[tuple[Network, ...], tuple[str, ...]] = attrs.field(init=False, repr=False)
    _link_local: tuple[Network, ...] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_allow", _split_rules(self.allow))
        object.__setattr__(self, "_deny", _split_rules(self.deny))
        object.__setattr__(self, "_link_local", _split_rules(LINK_LOCAL)[0])

    def check_host(self, host: str) -> str | None:
        """Why a host name (as written in a URL) is refused, or ``None``."""
        addr = _address(host)
        if addr is not None:
            return self.check_address(str(addr))
        if not self.allow_link_local and _host_matches(host, METADATA_HOSTS):
            return f"{host} is a metadata service"
        if _host_matches(host, self._deny[1]):
            return f"{host} is on the deny list"
        allow_nets, allow_hosts = self._allow
        if (allow_nets or allow_hosts) and not _host_matches(host, allow_hosts) \
                and not allow_nets:
            return f"{host} is not on the allow list"
        return None

    def check_address(self, address: str, host: str | None = None) -> str | None:
        """Why connecting to ``address`` (resolved from ``host``) is refused, or ``None``."""
        addr = _address(address)
        if addr is None:
            return f"{address!r} is not an IP address"
        if not self.allow_link_local and (addr.is_link_local or
                                          any(addr in n for n in self._link_local)):
            return f"{addr} is a link-local or metadata address"
        deny_nets, deny_hosts = self._deny
        if any(addr in n for n in deny_nets if n.version == addr.version):
            return f"{addr} is on the deny list"
        allow_nets, allow_hosts = self._allow
        if allow_nets or allow_hosts:
            if any(addr in n for n in allow_nets if n.version == addr.version):
                return None
            if host is not None and _host_matches(host, allow_hosts):
                return None
            return f"{addr} is not on the allow list"
        return None
