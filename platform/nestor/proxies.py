"""Behind a proxy: the client's address, scheme and host, from the headers of trusted proxies only.

`trusted_proxies` (default: none) lists the addresses and networks of the proxies in front of
Nestor. A request whose peer is one of them may say who the client is, in `Forwarded`
(RFC 7239, as aiohttp's `request.forwarded` parses it) or, without that header, in
`X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host`. Each proxy appends the address
it saw, so the chain is read from the right, past every trusted hop: the first address that is
not a trusted proxy is the client (a client cannot forge its way past that). From any other
peer these headers are ignored, as they must be: anyone can send them.

The handler gets `request.clone(remote=..., scheme=..., host=...)`; the original request keeps
the result under `CLIENT`, for what sees the original (the access log, response headers).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, NamedTuple

from aiohttp import web

from .config import Setting

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(value: list[Any]) -> list[Any]:
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"expected addresses or networks as strings, got {item!r}")
        try:
            ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise ValueError(
                f"{item!r} is not an IP address or network (examples: 127.0.0.1, 10.0.0.0/8, ::1)"
            ) from None
    return value


TRUSTED_PROXIES = Setting(
    "trusted_proxies",
    list,
    [],
    validate=_networks,
    root_only=True,
    help="Addresses or networks of the proxies in front of Nestor (e.g. [\"127.0.0.1\", "
    "\"10.0.0.0/8\"]): only their Forwarded / X-Forwarded-* headers set the client's address, "
    "scheme and host",
)
NETWORKS = web.AppKey("nestor.trusted_networks", tuple)  # TRUSTED_PROXIES, parsed once
# Whether any app of this process trusts a proxy: until one does, no request carries CLIENT
# and the access log does not look for it (it never turns off: an app that trusts none still
# finds no CLIENT on its requests).
IN_USE = False


class Client(NamedTuple):
    """Who the request came from, as the trusted proxies tell it."""

    remote: str | None
    scheme: str
    host: str | None


CLIENT = web.RequestKey("nestor.client", Client)
_HOST = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")


def setup(root: web.Application) -> None:
    """Parse the trusted networks once (called after the configuration is applied)."""
    global IN_USE
    root[NETWORKS] = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in root[TRUSTED_PROXIES])
    IN_USE = IN_USE or bool(root[NETWORKS])


def _trusted(address: str | None, networks: tuple[Network, ...]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # an obfuscated name (RFC 7239 `_hidden`, `unknown`) is nobody we trust
    return any(ip in network for network in networks)


def _address(node: str) -> str:
    """Return the address of a `for` node: `[2001:db8::1]:4711` -> `2001:db8::1`, `1.2.3.4:80` -> `1.2.3.4`."""
    node = node.strip().strip('"')
    if node.startswith("["):
        return node[1 : node.find("]")] if "]" in node else node
    if node.count(":") == 1:
        return node.split(":")[0]
    return node


def resolve(request: web.Request, networks: tuple[Network, ...]) -> Client | None:
    """Return the client the trusted proxies describe, or None when the peer is not trusted or said nothing."""
    if not _trusted(request.remote, networks):
        return None
    hops: list[dict[str, str]]
    if "Forwarded" in request.headers:
        hops = [dict(hop) for hop in request.forwarded]
    elif "X-Forwarded-For" in request.headers:
        chain = _split(request.headers.getall("X-Forwarded-For"))
        protos = _split(request.headers.getall("X-Forwarded-Proto", []))
        hosts = _split(request.headers.getall("X-Forwarded-Host", []))
        hops = [{"for": node} for node in chain]
        for key, values in (("proto", protos), ("host", hosts)):
            if len(values) == len(hops):  # one value per hop
                for hop, value in zip(hops, values):
                    hop[key] = value
            elif values:  # set once, by the proxy in front of us, for the request it received
                for hop in hops:
                    hop[key] = values[-1]
    else:
        return None
    if not hops:
        return None
    chosen = hops[0]
    for hop in reversed(hops):  # the last hop was added by our peer, a trusted proxy
        chosen = hop
        if not _trusted(_address(hop.get("for", "")), networks):
            break
    remote = _address(chosen["for"]) if chosen.get("for") else None
    scheme = chosen.get("proto", "").lower()
    host = chosen.get("host")
    return Client(
        remote=remote or request.remote,
        scheme=scheme if scheme in ("http", "https") else request.scheme,
        host=host if host and _HOST.fullmatch(host) else request.host,
    )


def _split(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def behind_proxy(request: web.Request, networks: tuple[Network, ...]) -> web.Request:
    """Return the request as the handler should see it: a clone when a trusted proxy spoke."""
    client = resolve(request, networks)
    if client is None:
        return request
    request[CLIENT] = client  # before cloning: the clone's state is a copy
    return request.clone(remote=client.remote or "", scheme=client.scheme, host=client.host or "")


def client_address(request: web.BaseRequest) -> str | None:
    """The client's address: as a trusted proxy said, else the peer's."""
    client = request.get(CLIENT)
    return client.remote if client is not None else request.remote


def is_secure(request: web.BaseRequest) -> bool:
    """Whether the client used https (to us, or to the trusted proxy in front of us)."""
    client = request.get(CLIENT)
    return client.scheme == "https" if client is not None else request.secure
