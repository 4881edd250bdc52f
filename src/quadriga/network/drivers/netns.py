"""The `netns` network driver (root): one Linux bridge per network, one network namespace per engine.

Layout, for instance `<inst>` (4 hex chars of the agent's state dir, see `instance_for`):

* network N → bridge `qb<inst><hash of N>`, up, with an explicit MAC (so it never changes when ports come and
  go, which would leave engines with a stale neighbour entry for their gateway) and each subnet's gateway
  address with the subnet's prefix, which gives the host its connected route to the VIPs. A subnet without a
  gateway gets no address (a warning says so): the host cannot reach its VIPs and engines get no default route.
* engine E → namespace `qg-<inst>-<E>` (the whole id, so two engines never share one) with `lo` up, and per
  network a veth pair: `qv<inst><hash of E and N>` on the host, enslaved to N's bridge, and `eth0`, `eth1`, …
  in the namespace with the VIPs and a default route per address family via the first VIP's gateway.

Hashes keep interface names within Linux's 15 characters (IFNAMSIZ); each host-side interface carries an alias
naming what it serves (`ip link` shows it), which both tells an operator what it is and lets the driver detect
the (astronomically unlikely) case of two ids hashing alike.

Bridges stay until `cleanup()`, even when no engine uses them any more: a member server on the host listening on
the gateway address keeps working while load balancers come and go. An idle bridge (no engine on it) gives way
to another network of this instance that needs one of its subnets (a deleted network's subnet reused, as a
cloud's tenants do): it is removed, and made again if its network gets an engine later.

ACTIVE_STANDBY engines (`spec.ha`): the namespace gets the engine's own address on the VIP network instead of the
VIPs, which keepalived adds on whichever engine is MASTER (and which plug therefore never removes); HAProxy binds
the VIPs before they arrive (`ip_nonlocal_bind`, set in every namespace).

Neighbours: an engine's veth has a MAC derived from its ids, so when a VIP is added the driver tells the host's
neighbour table the VIP's new owner directly (no stale entry when a VIP moves from one engine to another), and
the namespace re-announces its addresses (gratuitous ARP / unsolicited NA via `arp_notify`/`ndisc_notify`) for
whoever else on the bridge has one cached.

All changes go through `ip -batch` (one process for the host side, one for the namespace) to keep plug fast.
The engines reach their networks and the host; routing further (forwarding, NAT on the host) is not done here."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quadriga.engine.spec import ID_PATTERN, EngineSpec, SubnetSpec
from quadriga.network.drivers.base import NetworkDriver, NetworkError, Plugged

log = logging.getLogger("quadriga.network")

NETNS_DIR = Path("/run/netns")  # where `ip netns` keeps its namespaces
SYS_NET = Path("/sys/class/net")
IP_TIMEOUT = 30.0
CAP_NET_ADMIN_AND_SYS_ADMIN = 1 << 12 | 1 << 21  # bridges and veths; namespaces

# Set in every new namespace: unprivileged ICMP sockets (PING health checks); announce addresses when a device
# comes up or its MAC is set; keep the other VIPs of a subnet when its first (primary) one is removed.
NAMESPACE_SYSCTLS = (
    '"net.ipv4.ping_group_range=0 2147483647"',
    "net.ipv4.conf.all.arp_notify=1",
    "net.ipv4.conf.all.promote_secondaries=1",
    "net.ipv4.conf.default.promote_secondaries=1",
    "net.ipv6.conf.all.ndisc_notify=1",
    "net.ipv4.ip_nonlocal_bind=1",
    "net.ipv6.ip_nonlocal_bind=1",
)


def instance_for(state_dir: Path) -> str:
    """The 4 hex chars that prefix every name an agent with this state directory creates."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:4]


def unavailable() -> str | None:
    """Why the netns driver cannot work on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "it needs root"
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    caps = int(status.get("CapEff", "0"), 16)
    if caps & CAP_NET_ADMIN_AND_SYS_ADMIN != CAP_NET_ADMIN_AND_SYS_ADMIN:
        return "it needs the CAP_NET_ADMIN and CAP_SYS_ADMIN capabilities"
    try:
        result = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=IP_TIMEOUT)
    except FileNotFoundError:
        return "iproute2's `ip` command is not installed"
    if result.returncode != 0:
        return f"`ip netns list` failed: {result.stderr.strip()}"
    return None


def _digest(*parts: str) -> bytes:
    return hashlib.blake2s("\0".join(parts).encode(), digest_size=16).digest()


def _mac(*parts: str) -> str:
    # Locally administered unicast (02:...), stable for the same ids.
    return ":".join(f"{b:02x}" for b in (2, *_digest("mac", *parts)[:5]))


@dataclass(frozen=True)
class _Network:
    """What one network of an engine should look like."""

    network_id: str
    bridge: str
    veth: str
    mac: str  # of the engine's end of the veth
    subnets: tuple[SubnetSpec, ...]  # of its VIPs
    addresses: frozenset[str]  # "vip/prefixlen" (an ACTIVE_STANDBY engine: its own address)
    on_host: frozenset[str]  # those whose subnet has a gateway, so the host has an address there
    floating: frozenset[str] = frozenset()  # VIPs keepalived adds and removes (ACTIVE_STANDBY): left alone


@dataclass
class _Interface:
    """A veth end found in an engine's namespace."""

    name: str
    mac: str  # tells which network it is for (see _Network.mac)
    alias: str
    addresses: set[str]


@dataclass
class _Batch:
    """Commands for one `ip -batch` run, and what to log once they succeeded."""

    netns: str | None = None
    lines: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    def add(self, line: str, event: str | None = None) -> None:
        self.lines.append(line)
        if event:
            self.events.append(event)

    def run(self, force: bool = False) -> str:
        """Run the commands; stop at the first failure unless `force`. Returns stderr."""
        if not self.lines:
            return ""
        argv = ["ip", *(["-n", self.netns] if self.netns else []), *(["-force"] if force else []), "-batch", "-"]
        result = _run(argv, "\n".join(self.lines) + "\n")
        if result.returncode != 0 and not force:
            failed = re.search(r"Command failed -:(\d+)", result.stderr)
            line = self.lines[int(failed.group(1)) - 1] if failed else " / ".join(self.lines)
            detail = re.sub(r"Command failed -:\d+\s*", "", result.stderr).strip()
            where = f" in namespace {self.netns}" if self.netns else ""
            raise NetworkError(f"`ip {line}`{where} failed: {detail or 'no reason given'}")
        for event in self.events:
            log.info("%s", event)
        return result.stderr


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=IP_TIMEOUT)
    except FileNotFoundError as e:
        raise NetworkError("the netns network driver needs iproute2's `ip` command: install iproute2") from e
    except subprocess.TimeoutExpired as e:
        raise NetworkError(f"`{' '.join(argv)}` did not finish within {IP_TIMEOUT:.0f} s") from e


def _read_json(argv: list[str], commands: list[str]) -> list[list[dict[str, Any]]]:
    """Run read-only `ip -j` commands in one batch; one parsed answer per command."""
    result = _run([*argv, "-j", "-batch", "-"], "\n".join(commands) + "\n")
    if result.returncode != 0:
        raise NetworkError(f"`{' '.join(argv)}` could not read {commands}: {result.stderr.strip()}")
    decoder, text, answers, pos = json.JSONDecoder(), result.stdout, [], 0
    while text[pos:].strip():  # ip prints one JSON document per command
        answer, pos = decoder.raw_decode(text, len(text) - len(text[pos:].lstrip()))
        answers.append(answer)
    return answers


def _alias(device: str) -> str | None:
    """The alias of a host device ("" when it has none), or None when there is no such device."""
    try:
        return (SYS_NET / device / "ifalias").read_text().strip()
    except FileNotFoundError:
        return None


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _nodad(address: str) -> str:
    # An IPv6 address must not wait for duplicate address detection, or HAProxy cannot bind it for a second.
    return " nodad" if ":" in address else ""


class NetnsDriver(NetworkDriver):
    """Bridges on the host, one namespace per engine (see the module docstring)."""

    name = "netns"

    def __init__(self, instance: str) -> None:
        if not re.fullmatch(r"[0-9a-f]{4}", instance):
            raise ValueError(f"instance must be 4 lowercase hex characters (see instance_for), not {instance!r}")
        self.instance = instance
        self._lock = threading.Lock()  # plug, unplug and cleanup read, then change the same host objects
        self._warned: set[str] = set()  # subnets without gateway, warned about once
        self._known_subnets: set[tuple[str, str]] = set()  # (bridge, cidr) plugged and checked already

    # --- names ---------------------------------------------------------------------------------------

    def namespace(self, engine_id: str) -> str:
        """The namespace engine `engine_id` runs in."""
        if not re.fullmatch(ID_PATTERN, engine_id):
            raise NetworkError(f"engine id {engine_id!r} is not a plain id (letters, digits, '_', '.', '-')")
        return f"qg-{self.instance}-{engine_id}"

    def bridge(self, network_id: str) -> str:
        """The host bridge of network `network_id`."""
        return f"qb{self.instance}{_digest('bridge', network_id).hex()[:9]}"

    def veth(self, engine_id: str, network_id: str) -> str:
        """The host end of engine `engine_id`'s veth on network `network_id`."""
        return f"qv{self.instance}{_digest('veth', engine_id, network_id).hex()[:9]}"

    # --- the interface -------------------------------------------------------------------------------

    def check_vip(self, address: str, cidr: str | None) -> str | None:
        ip = ipaddress.ip_address(address)
        unusable = (
            ("a loopback address", ip.is_loopback),
            ("the unspecified address", ip.is_unspecified),
            ("a multicast address", ip.is_multicast),
            ("a link-local address", ip.is_link_local),
            ("a reserved address", ip.version == 4 and ip.is_reserved),
        )
        for what, applies in unusable:
            if applies:
                return (
                    f"{address} is {what}, which the netns network driver cannot serve as a VIP: "
                    "put the VIP on an ordinary (private or public) subnet"
                )
        if cidr is not None:
            net = ipaddress.ip_network(cidr, strict=False)
            if ip not in net:
                return f"VIP {address} is not inside its subnet {net}"
            if ip.version == 4 and net.prefixlen < 31 and ip in (net.network_address, net.broadcast_address):
                return f"VIP {address} is the network or broadcast address of {net}"
        return None

    def plug(self, engine_id: str, spec: EngineSpec, process: int | None = None) -> Plugged:
        ns = self.namespace(engine_id)
        networks = self._networks(engine_id, spec)
        with self._lock:
            if process is not None:
                self._name_namespace_of(process, ns, engine_id)
            fresh = self._check_subnets(networks)
            new = not (NETNS_DIR / ns).exists()
            interfaces, gateways = ([], []) if new else self._read_namespace(ns)
            host, inside = _Batch(), _Batch(ns)
            if new:
                host.add(f"netns add {ns}", f"created namespace {ns} for engine {engine_id}")
                host.add(f"netns exec {ns} sysctl -q -e -w {' '.join(NAMESPACE_SYSCTLS)}")
                inside.add("link set lo up")
            taken = {i.name for i in interfaces}
            devices: dict[str, str] = {}  # network id -> device in the namespace
            for net in networks:
                self._plug_bridge(host, net, fresh)
                # The MAC is set when the veth is made, the alias a moment later: either one identifies it.
                mine = [i for i in interfaces if net.mac == i.mac or net.network_id == i.alias][:1]
                interface = mine[0] if mine else self._add_veth(host, engine_id, ns, net, taken)
                interfaces = [i for i in interfaces if i not in mine]
                devices[net.network_id] = interface.name
                self._converge_interface(host, inside, engine_id, net, interface)
            for stale in interfaces:
                inside.add(f"link del {stale.name}", f"removed {stale.name} ({stale.alias}) from namespace {ns}")
            self._converge_routes(inside, spec, devices, gateways)
            host.run()
            inside.run()
            self._known_subnets.update(fresh)
        own = spec.ha.address if spec.ha else (spec.vips[0] if spec.vips else None)
        return Plugged(namespace=ns, lb_network_ip=own, device=devices[networks[0].network_id] if networks else None)

    def unplug(self, engine_id: str) -> None:
        ns = self.namespace(engine_id)
        with self._lock:
            if not (NETNS_DIR / ns).exists():
                return
            # The veths first: deleting a namespace frees its devices only once its last process is gone, and
            # until then a lingering HAProxy would still answer on the VIPs.
            inside = _Batch(ns)
            for interface in self._read_namespace(ns)[0]:
                inside.add(f"link del {interface.name}", f"removed {interface.name} ({interface.alias}) from {ns}")
            inside.run()
            self._warn_about_processes(ns)
            host = _Batch()
            host.add(f"netns del {ns}", f"removed namespace {ns}")
            errors = host.run(force=True)  # someone else may delete it meanwhile: gone is gone
            if (NETNS_DIR / ns).exists():
                raise NetworkError(f"`ip netns del {ns}` failed: {errors.strip() or 'no reason given'}")

    def command_prefix(self, engine_id: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(engine_id)]

    def cleanup(self) -> None:
        with self._lock:
            links, namespaces = self._links(), self._namespaces()
            aliases = {name: _alias(name) for name in links}
            veths = [name for name in links if name.startswith(f"qv{self.instance}")]
            bridges = [name for name in links if name.startswith(f"qb{self.instance}")]
            host = _Batch()
            for name in veths:  # before their namespaces, as in unplug
                host.add(f"link del {name}")
            for ns in namespaces:
                self._warn_about_processes(ns)
                host.add(f"netns del {ns}")
            for name in bridges:
                host.add(f"link del {name}")
            errors = host.run(force=True)  # remove all that can be removed, then say what could not
            self._known_subnets.clear()
            left = self.leftovers()
            for kind, names in (("veth", veths), ("namespace", namespaces), ("bridge", bridges)):
                for name in names:
                    if name not in left:
                        log.info("removed %s %s%s", kind, name, f" ({aliases[name]})" if aliases.get(name) else "")
            if left:
                raise NetworkError(f"cleanup could not remove {left}: {errors.strip() or 'no reason given'}")

    def leftovers(self) -> list[str]:
        return self._namespaces() + self._links()

    def rename(self, engine_id: str, new_id: str, pid: int) -> None:
        old, new = self.namespace(engine_id), self.namespace(new_id)
        with self._lock:
            host = _Batch()
            host.add(f"netns attach {new} {pid}")  # a second name for the namespace process `pid` runs in
            host.add(f"netns del {old}", f"namespace {old} renamed {new}")
            host.run()

    def collect_orphans(self, known: Callable[[], set[str]]) -> list[str]:
        """Remove this instance's namespaces and engine veths whose engine is not `known()` (a crash between
        plugging and recording an engine leaves them). Only names with this instance's tag are considered;
        they are listed under the lock `plug` holds, before `known()` is asked."""
        prefix = f"qg-{self.instance}-"
        with self._lock:
            namespaces = self._namespaces()
            veths = {name: _alias(name) or "" for name in self._links() if name.startswith(f"qv{self.instance}")}
            keep = known()
            doomed: dict[str, str] = {}  # name -> what it is, for the log
            host = _Batch()
            for name, alias in veths.items():
                owner = re.fullmatch(r"quadriga engine (\S+) network \S+", alias)
                if owner and owner.group(1) not in keep:
                    host.add(f"link del {name}")
                    doomed[name] = f"veth {name} ({alias})"
            for ns in namespaces:
                if ns.removeprefix(prefix) in keep:
                    continue
                inside = _Batch(ns)  # the veths first, as in unplug
                for interface in self._read_namespace(ns)[0]:
                    inside.add(f"link del {interface.name}")
                inside.run(force=True)
                self._warn_about_processes(ns)
                host.add(f"netns del {ns}")
                doomed[ns] = f"namespace {ns}"
            errors = host.run(force=True)
            left = set(self.leftovers())
        removed = [what for name, what in doomed.items() if name not in left]
        for what in removed:
            log.warning("collected orphan %s: no engine of this agent owns it", what)
        if len(removed) < len(doomed):
            log.error("orphans not removed: %s: %s", sorted(set(doomed) & left), errors.strip() or "no reason given")
        return removed

    # --- plug, step by step --------------------------------------------------------------------------

    def _name_namespace_of(self, pid: int, ns: str, engine_id: str) -> None:
        """Make `ns` name the namespace HAProxy (`pid`) runs in. `ip netns del` removes only a namespace's name:
        while HAProxy runs in it, the namespace, its veth and the VIPs live on and keep serving. Plugging a
        fresh namespace under that name would move the veth away from HAProxy and blackhole the VIPs, so the
        name is attached to the running namespace again instead."""
        try:
            running = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            return  # gone meanwhile: the next start plugs a fresh namespace
        if _same_file(running, os.stat("/proc/self/ns/net")):
            return  # not in a namespace of its own: nothing to name
        host = _Batch()
        try:
            if _same_file(running, os.stat(NETNS_DIR / ns)):
                return
            host.add(f"netns del {ns}", f"removed namespace {ns}: engine {engine_id}'s HAProxy runs in another one")
        except FileNotFoundError:
            pass
        event = f"namespace {ns} of engine {engine_id} had lost its name while HAProxy {pid} ran in it: named again"
        host.add(f"netns attach {ns} {pid}", event)
        host.run()

    def _networks(self, engine_id: str, spec: EngineSpec) -> list[_Network]:
        """The networks the engine needs, in the order of their first VIP (the first is eth0)."""
        by_network: dict[str, tuple[list[SubnetSpec], list[str], list[str], list[str]]] = {}
        for vip in [*spec.vips, *([spec.ha.address] if spec.ha else [])]:
            subnet = spec.subnet_of(vip)
            if subnet is None:
                raise NetworkError(
                    f"VIP {vip} has no subnet in the spec: the netns driver needs its network and prefix"
                )
            if reason := self.check_vip(vip, subnet.cidr):
                raise NetworkError(reason)
            if subnet.gateway_ip == vip:
                raise NetworkError(f"VIP {vip} is the gateway address of subnet {subnet.id}, which the host holds")
            if subnet.gateway_ip and ipaddress.ip_address(subnet.gateway_ip) not in ipaddress.ip_network(subnet.cidr):
                raise NetworkError(f"gateway {subnet.gateway_ip} of subnet {subnet.id} is outside its {subnet.cidr}")
            subnets, addresses, on_host, floating = by_network.setdefault(subnet.network_id, ([], [], [], []))
            if subnet not in subnets:
                subnets.append(subnet)
            address = f"{vip}/{ipaddress.ip_network(subnet.cidr).prefixlen}"
            if spec.ha is not None and vip in spec.vips:
                floating.append(address)
                continue
            addresses.append(address)
            if subnet.gateway_ip:
                on_host.append(address)
        return [
            _Network(
                network_id=network_id,
                bridge=self.bridge(network_id),
                veth=self.veth(engine_id, network_id),
                mac=_mac(self.instance, engine_id, network_id),
                subnets=tuple(subnets),
                addresses=frozenset(addresses),
                on_host=frozenset(on_host),
                floating=frozenset(floating),
            )
            for network_id, (subnets, addresses, on_host, floating) in by_network.items()
        ]

    def _check_subnets(self, networks: list[_Network]) -> set[tuple[str, str]]:
        """The (bridge, cidr) pairs new to this driver, after checking that the host routes none of them elsewhere
        (which the gateway address on the bridge would cut off)."""
        fresh = {
            (net.bridge, sn.cidr)
            for net in networks
            for sn in net.subnets
            if sn.gateway_ip and ((net.bridge, sn.cidr) not in self._known_subnets or _alias(net.bridge) is None)
        }
        if not fresh:
            return fresh
        (routes,) = _read_json(["ip"], ["route show table all"])
        idle: dict[str, str] = {}  # bridges of this instance with no engine on them that give way -> why
        for route in routes:
            if route.get("table", "main") != "main" or route.get("dst") == "default":
                continue
            dst = ipaddress.ip_network(route["dst"], strict=False)
            for bridge, cidr in fresh:
                subnet = ipaddress.ip_network(cidr)
                if route.get("dev") != bridge and dst.version == subnet.version and dst.overlaps(subnet):
                    if self._idle_bridge(route.get("dev")):
                        idle[route["dev"]] = f"its {dst} is now {subnet} of bridge {bridge}"
                        continue
                    via = f"device {route['dev']}" if route.get("dev") else f"a {route.get('type')} route"
                    raise NetworkError(
                        f"subnet {subnet} overlaps {dst}, which this host already routes via {via}: the netns driver "
                        f"would put {subnet} on bridge {bridge} and cut that traffic off. Use a subnet that is not "
                        "routed on this host (see `ip route`), or remove that route"
                    )
        if idle:
            host = _Batch()
            for bridge, why in sorted(idle.items()):
                host.add(f"link del {bridge}", f"removed idle bridge {bridge} ({_alias(bridge)}): {why}")
            host.run()
            self._known_subnets = {(b, cidr) for b, cidr in self._known_subnets if b not in idle}
        return fresh

    def _idle_bridge(self, device: str | None) -> bool:
        """Whether `device` is a bridge of this instance that no engine's veth is enslaved to."""
        if not device or not device.startswith(f"qb{self.instance}"):
            return False
        try:
            return not any((SYS_NET / device / "brif").iterdir())
        except FileNotFoundError:
            return False

    def _plug_bridge(self, host: _Batch, net: _Network, fresh: set[tuple[str, str]]) -> None:
        alias = f"quadriga network {net.network_id}"
        current = _alias(net.bridge)
        if current is None:
            mac = _mac(self.instance, net.network_id)
            host.add(f"link add {net.bridge} address {mac} type bridge", f"created bridge {net.bridge} ({alias})")
        elif current and current != alias:
            raise NetworkError(
                f"bridge {net.bridge} is {current!r}, not network {net.network_id}: two ids map to one name or "
                f"another program uses it; remove it (`ip link del {net.bridge}`) if nothing needs it"
            )
        host.add(f'link set {net.bridge} alias "{alias}" up')
        for subnet in net.subnets:
            if not subnet.gateway_ip:
                if subnet.id not in self._warned:
                    self._warned.add(subnet.id)
                    log.warning(
                        "subnet %s (%s) of network %s has no gateway_ip: the host gets no address on bridge %s, so "
                        "it cannot reach VIPs on it, and engines get no default route through it",
                        subnet.id,
                        subnet.cidr,
                        net.network_id,
                        net.bridge,
                    )
                continue
            address = f"{subnet.gateway_ip}/{ipaddress.ip_network(subnet.cidr).prefixlen}"
            event = f"bridge {net.bridge} holds gateway {address}" if (net.bridge, subnet.cidr) in fresh else None
            host.add(f"addr replace {address} dev {net.bridge}{_nodad(address)}", event)

    def _add_veth(self, host: _Batch, engine_id: str, ns: str, net: _Network, taken: set[str]) -> _Interface:
        """Create the engine's veth on `net`, its namespace end named after the first free ethN."""
        alias = f"quadriga engine {engine_id} network {net.network_id}"
        old = _alias(net.veth)
        if old is not None:
            if old and old != alias:
                raise NetworkError(
                    f"veth {net.veth} is {old!r}, not {alias!r}: two ids map to one name or another program "
                    f"uses it; remove it (`ip link del {net.veth}`) if nothing needs it"
                )
            host.add(f"link del {net.veth}", f"removed stale veth {net.veth} ({alias}), its peer was elsewhere")
        name = next(f"eth{n}" for n in range(len(taken) + 1) if f"eth{n}" not in taken)
        taken.add(name)
        host.add(
            f"link add {net.veth} type veth peer name {name} netns {ns} address {net.mac}",
            f"created veth {net.veth} ({alias}) with {name} in namespace {ns}",
        )
        return _Interface(name=name, mac=net.mac, alias=net.network_id, addresses=set())

    def _converge_interface(
        self, host: _Batch, inside: _Batch, engine_id: str, net: _Network, interface: _Interface
    ) -> None:
        """Enslave the host end, bring both ends up, and make the VIPs on the namespace end exactly `net`'s."""
        alias = f"quadriga engine {engine_id} network {net.network_id}"
        host.add(f'link set {net.veth} addrgenmode none master {net.bridge} alias "{alias}" up')
        inside.add(f"link set {interface.name} alias {net.network_id} up")
        where = f"{interface.name} of namespace {inside.netns}"
        for address in sorted(interface.addresses - net.addresses - net.floating):
            inside.add(f"addr del {address} dev {interface.name}", f"removed VIP {address} from {where}")
        added = sorted(net.addresses - interface.addresses)
        for address in added:
            inside.add(
                f"addr replace {address} dev {interface.name}{_nodad(address)}", f"added VIP {address} to {where}"
            )
        remade = interface.mac != net.mac  # found by its alias, with a MAC someone changed
        for address in sorted(net.addresses) if remade else added:
            if address in net.on_host:
                # Point the host at the VIP's new owner now: an entry for an engine the VIP left would go stale.
                host.add(f"neigh replace {address.split('/')[0]} lladdr {net.mac} dev {net.bridge} nud stale")
        if added or remade:
            # Setting the MAC (even the same one) makes the kernel announce every address of the device to the
            # others on the bridge (arp_notify / ndisc_notify).
            inside.add(f"link set {interface.name} address {net.mac}")

    def _converge_routes(self, inside: _Batch, spec: EngineSpec, devices: dict[str, str], gateways: list[str]) -> None:
        """One default route per address family, via the gateway of that family's first VIP."""
        wanted: dict[int, tuple[str, str]] = {}
        for vip in spec.vips:
            subnet = spec.subnet_of(vip)
            if subnet and subnet.gateway_ip and ipaddress.ip_address(vip).version not in wanted:
                wanted[ipaddress.ip_address(vip).version] = (subnet.gateway_ip, devices[subnet.network_id])
        for gateway in gateways:
            if ipaddress.ip_address(gateway).version not in wanted:
                inside.add(f"route del default via {gateway}", f"removed default route via {gateway} in {inside.netns}")
        for gateway, device in wanted.values():
            event = None if gateway in gateways else f"default route via {gateway} dev {device} in {inside.netns}"
            inside.add(f"route replace default via {gateway} dev {device}", event)

    # --- reading the current state -------------------------------------------------------------------

    def _read_namespace(self, ns: str) -> tuple[list[_Interface], list[str]]:
        """The veth ends in namespace `ns` with their global addresses, and the gateways of its default routes."""
        addrs, routes = _read_json(["ip", "-d", "-n", ns], ["addr show", "route show table all"])
        interfaces = [
            _Interface(
                name=i["ifname"],
                mac=i["address"],
                alias=i.get("ifalias", ""),
                addresses={
                    f"{a['local']}/{a['prefixlen']}" for a in i.get("addr_info", []) if a.get("scope") == "global"
                },
            )
            for i in addrs
            if i.get("linkinfo", {}).get("info_kind") == "veth"  # not lo, nor the kernel's fallback tunnels
        ]
        gateways = [
            r["gateway"]
            for r in routes
            if r.get("dst") == "default" and r.get("table", "main") == "main" and "gateway" in r
        ]
        return interfaces, gateways

    def _links(self) -> list[str]:
        """This instance's bridges and veth host ends."""
        prefixes = (f"qb{self.instance}", f"qv{self.instance}")
        return sorted(name for name in os.listdir(SYS_NET) if name.startswith(prefixes))

    def _namespaces(self) -> list[str]:
        prefix = f"qg-{self.instance}-"
        return sorted(name for name in os.listdir(NETNS_DIR) if name.startswith(prefix)) if NETNS_DIR.is_dir() else []

    def _warn_about_processes(self, ns: str) -> None:
        """Warn when processes still run in `ns`: deleting its name then leaves the namespace alive, unnamed."""
        try:
            target = os.stat(NETNS_DIR / ns)
        except FileNotFoundError:
            return
        pids = []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    st = os.stat(f"/proc/{entry.name}/ns/net")
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                    pids.append(int(entry.name))
        if pids:
            log.warning("processes %s still run in namespace %s, which lives on unnamed until they exit", pids, ns)
