"""What every genrun server that listens on a port checks, shared by genrun-serve and
genrun-view: whether an address is loopback, and which Host header values a request may
carry (loopback's names, the address served on, the names the operator adds), so that a
web page elsewhere cannot reach the port through DNS rebinding."""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def allowed_hosts(host: str, names: list[str]) -> list[str]:
    """The Host header values accepted: loopback, the address served on, and the names the
    operator gives (--allowed-host); each with any port."""
    hosts = [*LOOPBACK_NAMES, *(url_host(n) for n in names)]
    if host not in ("0.0.0.0", "::"):
        hosts.append(url_host(host))
    return list(dict.fromkeys(hosts))


def host_allowed(header: str, hosts: list[str]) -> bool:
    """Whether a Host header (NAME or NAME:PORT, [IPv6]:PORT) names one of `hosts`."""
    name = header.strip().lower()
    if name.startswith("["):
        name = name[: name.find("]") + 1] if "]" in name else ""
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    return bool(name) and name in {h.lower() for h in hosts}
