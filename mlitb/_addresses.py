"""What a client's remote address counts as, for the per-address caps of the master's
connections and the data server's pending uploads."""

from __future__ import annotations

import ipaddress


def address_key(address: str) -> str:
    """An IPv4 address as it is; an IPv6 address as its /64 (one host, or one home or office
    network, usually holds a whole /64, so counting single IPv6 addresses would cap nothing);
    an IPv4-mapped IPv6 address as the IPv4 one. Anything else (a Unix socket's path) as it
    is."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
