"""DNS lookups of :mod:`.dns`: SRV records, their targets' addresses, and the instances.

The one place where dnspython's exceptions become MediaNest errors: NXDOMAIN and empty
answers mean "nothing there", a server that does not answer (timeout, every server failed
or refused) is :class:`~medianest.errors.BackendUnavailable`, anything else
:class:`~medianest.errors.BackendError`.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from medianest.discovery.base import ServiceInstance
from medianest.errors import BackendError, BackendUnavailable, ConfigurationError

_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)


@dataclass(frozen=True)
class SrvTarget:
    """One SRV record with the addresses of its target (``target`` without the final dot)."""

    target: str
    port: int
    priority: int
    weight: int
    addresses: tuple[str, ...]


def make_resolver(nameserver: str, timeout: float, url: str) -> dns.asyncresolver.Resolver:
    """A resolver asking ``nameserver`` (``ip``, ``ip:port``, ``[ipv6]:port``) or, when it is
    empty, the servers of the system configuration."""
    if not nameserver:
        try:
            resolver = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration as exc:
            raise ConfigurationError(
                "dns+srv:// without a nameserver needs /etc/resolv.conf",
                problems=[("discovery", url, "dns+srv://<nameserver ip>[:port]/?...")],
            ) from exc
    else:
        host, port = nameserver, 53
        if host.startswith("["):
            host, _, rest = host[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else 53
        elif host.count(":") == 1:
            host, _, text = host.partition(":")
            port = int(text)
        try:
            ipaddress.ip_address(host)
        except ValueError as exc:
            raise ConfigurationError(
                f"the dns+srv:// nameserver must be an IP address, not {host!r}",
                problems=[("discovery", url, "dns+srv://<nameserver ip>[:port]/?...")],
            ) from exc
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
    resolver.timeout = timeout
    resolver.lifetime = timeout
    return resolver


async def _query(
    resolver: dns.asyncresolver.Resolver, qname: str, rdtype: str, backend: str
) -> dns.resolver.Answer | None:
    try:
        return await resolver.resolve(qname, rdtype, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        raise BackendUnavailable(
            f"DNS did not answer {qname} {rdtype}: {exc}", backend=backend
        ) from exc
    except dns.exception.DNSException as exc:
        raise BackendError(
            f"DNS lookup of {qname} {rdtype} failed: {exc}", backend=backend
        ) from exc


async def resolve_srv(
    resolver: dns.asyncresolver.Resolver, qname: str, backend: str
) -> tuple[list[SrvTarget], float]:
    """The SRV records of ``qname`` with addresses, and the smallest TTL of what was used."""
    answer = await _query(resolver, qname, "SRV", backend)
    if answer is None or answer.rrset is None:
        return [], 0.0
    ttls = [answer.rrset.ttl]
    additional: dict[dns.name.Name, list[str]] = {}
    for rrset in answer.response.additional:
        if rrset.rdtype in _ADDRESS_TYPES:
            additional.setdefault(rrset.name, []).extend(rdata.to_text() for rdata in rrset)
            ttls.append(rrset.ttl)
    records = [rdata for rdata in answer.rrset if rdata.target != dns.name.root]

    async def addresses(target: dns.name.Name) -> tuple[str, ...]:
        if target in additional:
            return tuple(additional[target])
        found: list[str] = []
        for reply in await asyncio.gather(
            *(_query(resolver, target.to_text(), t, backend) for t in ("A", "AAAA"))
        ):
            if reply is not None and reply.rrset is not None:
                found.extend(rdata.to_text() for rdata in reply.rrset)
                ttls.append(reply.rrset.ttl)
        return tuple(found)

    def ordered(addresses: tuple[str, ...]) -> tuple[str, ...]:
        """IPv4 first, each family sorted: answers in another order are the same instance."""
        return tuple(sorted(set(addresses), key=lambda a: (":" in a, a)))

    found = await asyncio.gather(*(addresses(record.target) for record in records))
    targets = [
        SrvTarget(
            target=record.target.to_text(omit_final_dot=True),
            port=record.port,
            priority=record.priority,
            weight=record.weight,
            addresses=ordered(found[index]),
        )
        for index, record in enumerate(records)
        if found[index]
    ]
    return targets, float(min(ttls))


def _endpoint(scheme: str, address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{scheme}://{host}:{port}"


def _instance_id(target: str, port: int) -> str:
    instance_id = f"{target}:{port}"
    if len(instance_id) <= 128:
        return instance_id
    digest = hashlib.sha256(target.encode()).hexdigest()[:12]
    return f"{target[:100]}-{digest}:{port}"


def instances_of(
    name: str, qname: str, targets: list[SrvTarget], scheme: str
) -> list[ServiceInstance]:
    """One instance per distinct ``target:port`` (the lowest-priority record wins)."""
    instances: dict[str, ServiceInstance] = {}
    for srv in sorted(targets, key=lambda t: (t.priority, -t.weight)):
        instance_id = _instance_id(srv.target, srv.port)
        if instance_id in instances:
            continue
        instances[instance_id] = ServiceInstance(
            id=instance_id,
            name=name,
            endpoints=tuple(_endpoint(scheme, a, srv.port) for a in srv.addresses),
            weight=min(max(srv.weight, 1), 1000),
            metadata={
                "priority": str(srv.priority),
                "target": srv.target,
                "srv": qname.rstrip("."),
            },
        )
    return list(instances.values())
