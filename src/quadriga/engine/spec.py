"""The declarative config of one engine: everything an agent needs to run a load balancer's HAProxy.

This is the contract between the controller and the agent. It travels as JSON (`spec.model_dump_json()`,
`EngineSpec.model_validate_json(...)`), so it is self-contained: plain values, no database objects, and
nothing the agent would have to look up. It holds the *desired* state after the change being applied:
objects on their way out (PENDING_DELETE) are not in it.

Every value here may come from a tenant. The models check what HAProxy needs to be safe (ids made of
a few plain characters, addresses that are IP addresses, no NUL bytes in free text, references that
point at objects in the same spec, protocol pairs HAProxy accepts), so that `render` can produce a valid
config from any spec that validates. Rendering still quotes every free-text value itself.

TLS material travels in the spec itself (`EngineSpec.certificates`: PEM files by content digest), so the
agent needs no access to the key manager. UDP listeners and pools are served by the engine's UDP proxy
(`quadriga.udp`, configured by `quadriga.engine.udp`), not by HAProxy. Not here: SCTP (this kernel has no
SCTP sockets); `quadriga.engine.build` refuses it with `UnsupportedFeature`."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from quadriga import constants as c

SCHEMA_VERSION = 1

# --- value types -----------------------------------------------------------------------------------

# Object ids become HAProxy proxy, server and ACL names, so they are restricted to characters that need
# no quoting anywhere: UUIDs and other plain names. (':' is kept out: it separates pool and listener ids
# in backend names.)
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]

# RFC 9110 token: what a header or cookie name in an L7 rule can be.
HTTP_TOKEN_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,255}$"
HttpToken = Annotated[str, StringConstraints(pattern=HTTP_TOKEN_PATTERN)]

# A session persistence cookie name: printable ASCII without spaces (what the API accepts).
CookieName = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,255}$")]

EXPECTED_CODES_PATTERN = r"^(\d{3}(\s*,\s*\d{3})*)$|^(\d{3}-\d{3})$"
_SURROGATE = re.compile("[\ud800-\udfff]")
DOMAIN_NAME_PATTERN = r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?$"


def _text(value: str) -> str:
    # NUL cannot be represented in an HAProxy config (its strings are C strings), and a lone surrogate
    # (which JSON's "\\udxxx" escapes can produce) is no character at all; every other character can be
    # represented, quoted, so these are the only ones free text may not hold.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if _SURROGATE.search(value):
        raise ValueError("must not contain lone surrogates")
    return value


def _ip(value: str) -> str:
    return str(ipaddress.ip_address(value))


def _cidr(value: str) -> str:
    return str(ipaddress.ip_network(value, strict=False))


def _domain(value: str) -> str:
    if not re.fullmatch(DOMAIN_NAME_PATTERN, value):
        raise ValueError("is not a valid domain name")
    return value


def _path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must start with '/'")
    return value


Text = Annotated[str, AfterValidator(_text)]
IPAddress = Annotated[str, AfterValidator(_ip)]
Cidr = Annotated[str, AfterValidator(_cidr)]
Port = Annotated[int, Field(ge=1, le=65535)]
Timeout = Annotated[int, Field(ge=0, le=c.MAX_TIMEOUT)]
Retries = Annotated[int, Field(ge=1, le=10)]

ListenerProtocol = Literal["HTTP", "HTTPS", "TCP", "PROMETHEUS", "TERMINATED_HTTPS", "UDP"]
PoolProtocol = Literal["HTTP", "HTTPS", "TCP", "PROXY", "PROXYV2", "UDP"]
Algorithm = Literal["ROUND_ROBIN", "LEAST_CONNECTIONS", "SOURCE_IP", "SOURCE_IP_PORT"]
PersistenceType = Literal["SOURCE_IP", "HTTP_COOKIE", "APP_COOKIE"]
MonitorType = Literal["HTTP", "HTTPS", "TCP", "PING", "TLS-HELLO", "UDP-CONNECT"]
# What checks a UDP pool's members (Octavia's list for UDP pools); UDP-CONNECT checks nothing else.
UDP_MONITOR_TYPES = frozenset({"UDP-CONNECT", "HTTP", "TCP", "PING"})
HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "OPTIONS", "CONNECT", "PATCH"]
PolicyAction = Literal["REJECT", "REDIRECT_TO_URL", "REDIRECT_TO_POOL", "REDIRECT_PREFIX"]
RuleType = Literal[
    "HOST_NAME", "PATH", "FILE_TYPE", "HEADER", "COOKIE", "SSL_CONN_HAS_CERT", "SSL_VERIFY_RESULT", "SSL_DN_FIELD"
]
CompareType = Literal["REGEX", "STARTS_WITH", "ENDS_WITH", "CONTAINS", "EQUAL_TO"]
RedirectCode = Literal[301, 302, 303, 307, 308]
INSERT_HEADERS = frozenset(c.INSERT_HEADERS_HTTP | c.INSERT_HEADERS_TLS)


def _insert_header(value: str) -> str:
    if value not in INSERT_HEADERS:
        raise ValueError(f"{value!r} is not a header the engine inserts")
    return value


InsertHeader = Annotated[str, AfterValidator(_insert_header)]
TLSVersion = Literal["SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
AlpnProtocol = Literal["h2", "http/1.1", "http/1.0"]
ClientAuthentication = Literal["NONE", "OPTIONAL", "MANDATORY"]
# An OpenSSL cipher list (Octavia's check): letters, digits and the list's punctuation only.
CIPHERS_PATTERN = r"^[A-Za-z0-9_:+!@=.-]{1,2048}$"
Ciphers = Annotated[str, StringConstraints(pattern=CIPHERS_PATTERN)]

SUPPORTED_LISTENER_PROTOCOLS = frozenset(get_args(ListenerProtocol))
SUPPORTED_POOL_PROTOCOLS = frozenset(get_args(PoolProtocol))
SUPPORTED_MONITOR_TYPES = frozenset(get_args(MonitorType))
SUPPORTED_RULE_TYPES = frozenset(get_args(RuleType))


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- TLS -------------------------------------------------------------------------------------------


class CertificateSpec(_Spec):
    """One PEM file an engine needs: a certificate with its chain and key (`crt`), CA certificates
    (`ca-file`) or a CRL (`crl-file`). `id` is a digest of the content, so a file's name changes with it:
    a config that is then rejected never changes what the running config reads."""

    id: Id
    kind: Literal["certificate", "ca", "crl"]
    pem: Annotated[Text, Field(min_length=1, max_length=1_000_000)]
    names: tuple[Annotated[str, Field(max_length=255)], ...] = ()  # a certificate's DNS names (SNI)


class ListenerTLSSpec(_Spec):
    """A TERMINATED_HTTPS listener's TLS side; the ids are CertificateSpec ids of the engine spec."""

    default_certificate: Id  # served when the client's server name matches no SNI certificate
    sni_certificates: tuple[Id, ...] = ()
    versions: tuple[TLSVersion, ...] = ("TLSv1.2", "TLSv1.3")
    ciphers: Ciphers | None = None
    alpn_protocols: tuple[AlpnProtocol, ...] = ()
    client_authentication: ClientAuthentication = "NONE"
    client_ca: Id | None = None
    client_crl: Id | None = None
    hsts_max_age: Annotated[int, Field(ge=0, le=c.MAX_INT32)] | None = None  # None: no HSTS header
    hsts_include_subdomains: bool = False
    hsts_preload: bool = False

    @model_validator(mode="after")
    def _check(self) -> ListenerTLSSpec:
        if not self.versions:
            raise ValueError("a TLS listener needs at least one TLS version")
        if self.client_authentication != "NONE" and self.client_ca is None:
            raise ValueError("client authentication needs a client CA")
        if self.client_crl is not None and self.client_ca is None:
            raise ValueError("a client CRL needs a client CA")
        return self


class PoolTLSSpec(_Spec):
    """Re-encryption to a pool's members (`tls_enabled`): the client certificate the engine presents, the CA
    it verifies members against (none: not verified, as Octavia) and that CA's CRL."""

    certificate: Id | None = None
    ca: Id | None = None
    crl: Id | None = None
    versions: tuple[TLSVersion, ...] = ("TLSv1.2", "TLSv1.3")
    ciphers: Ciphers | None = None
    alpn_protocols: tuple[AlpnProtocol, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> PoolTLSSpec:
        if self.crl is not None and self.ca is None:
            raise ValueError("a CRL needs a CA")
        return self


# --- L7 --------------------------------------------------------------------------------------------


class L7RuleSpec(_Spec):
    id: Id
    type: RuleType
    compare_type: CompareType
    key: HttpToken | None = None
    value: Annotated[Text, Field(max_length=1024)]
    invert: bool = False
    admin_state_up: bool = True

    @model_validator(mode="after")
    def _check(self) -> L7RuleSpec:
        if self.type in ("HEADER", "COOKIE", "SSL_DN_FIELD") and self.key is None:
            raise ValueError(f"L7 rule {self.id}: type {self.type} needs a key")
        if self.type not in ("HEADER", "COOKIE", "SSL_DN_FIELD") and self.key is not None:
            raise ValueError(f"L7 rule {self.id}: type {self.type} takes no key")
        if self.type == "FILE_TYPE" and self.compare_type not in ("EQUAL_TO", "REGEX"):
            raise ValueError(f"L7 rule {self.id}: FILE_TYPE supports only EQUAL_TO and REGEX")
        if self.type in ("SSL_CONN_HAS_CERT", "SSL_VERIFY_RESULT") and self.compare_type != "EQUAL_TO":
            raise ValueError(f"L7 rule {self.id}: {self.type} supports only EQUAL_TO")
        if self.type == "SSL_VERIFY_RESULT" and not re.fullmatch("[0-9]{1,9}", self.value):
            raise ValueError(f"L7 rule {self.id}: SSL_VERIFY_RESULT compares with an X509 verify result number")
        return self


class L7PolicySpec(_Spec):
    id: Id
    action: PolicyAction
    position: Annotated[int, Field(ge=1)]
    admin_state_up: bool = True
    # None for REDIRECT_TO_POOL means its pool is going away: the policy is then inactive.
    redirect_pool_id: Id | None = None
    redirect_url: Annotated[Text, Field(min_length=1, max_length=2048)] | None = None
    redirect_prefix: Annotated[Text, Field(min_length=1, max_length=2048)] | None = None
    redirect_http_code: RedirectCode | None = None
    rules: tuple[L7RuleSpec, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> L7PolicySpec:
        if self.action == "REDIRECT_TO_URL" and not self.redirect_url:
            raise ValueError(f"L7 policy {self.id}: REDIRECT_TO_URL needs redirect_url")
        if self.action == "REDIRECT_PREFIX" and not self.redirect_prefix:
            raise ValueError(f"L7 policy {self.id}: REDIRECT_PREFIX needs redirect_prefix")
        return self


# --- listeners -------------------------------------------------------------------------------------


class ListenerSpec(_Spec):
    id: Id
    protocol: ListenerProtocol
    protocol_port: Port
    admin_state_up: bool = True
    connection_limit: Annotated[int, Field(ge=-1, le=c.MAX_INT32)] = -1  # -1 (or 0): the engine's default
    # Milliseconds; 0 means "the default" (as in Octavia), except timeout_tcp_inspect where 0 means "none".
    timeout_client_data: Timeout = 50000
    timeout_member_connect: Timeout = 5000
    timeout_member_data: Timeout = 50000
    timeout_tcp_inspect: Timeout = 0
    insert_headers: tuple[InsertHeader, ...] = ()  # the headers turned on
    allowed_cidrs: tuple[Cidr, ...] = ()  # empty: every source is allowed
    default_pool_id: Id | None = None
    l7policies: tuple[L7PolicySpec, ...] = ()
    tls: ListenerTLSSpec | None = None  # exactly for TERMINATED_HTTPS

    @model_validator(mode="after")
    def _check(self) -> ListenerSpec:
        http = self.protocol in c.HTTP_LISTENER_PROTOCOLS
        if not http and self.insert_headers:
            raise ValueError(f"listener {self.id}: insert_headers need an HTTP listener")
        if not http and self.l7policies:
            raise ValueError(f"listener {self.id}: L7 policies need an HTTP listener")
        if (self.tls is not None) != (self.protocol == "TERMINATED_HTTPS"):
            raise ValueError(f"listener {self.id}: TLS settings go with TERMINATED_HTTPS listeners, and only there")
        if self.protocol == "PROMETHEUS" and self.default_pool_id:
            raise ValueError(f"listener {self.id}: a PROMETHEUS listener has no default pool")
        _unique([p.id for p in self.l7policies], f"listener {self.id}: L7 policy")
        _unique([r.id for p in self.l7policies for r in p.rules], f"listener {self.id}: L7 rule")
        return self


# --- pools -----------------------------------------------------------------------------------------


class SessionPersistenceSpec(_Spec):
    type: PersistenceType
    cookie_name: CookieName | None = None
    # UDP pools only (Octavia's): how long a client stays with its member, and the netmask that groups clients.
    persistence_timeout: Annotated[int, Field(ge=0, le=c.MAX_INT32)] | None = None  # seconds
    persistence_granularity: IPAddress | None = None

    @model_validator(mode="after")
    def _check(self) -> SessionPersistenceSpec:
        if self.type == "APP_COOKIE" and not self.cookie_name:
            raise ValueError("APP_COOKIE session persistence needs a cookie_name")
        return self


class HealthMonitorSpec(_Spec):
    type: MonitorType
    delay: Annotated[int, Field(ge=0, le=c.MAX_INT32)]  # seconds
    timeout: Annotated[int, Field(ge=0, le=c.MAX_INT32)]  # seconds
    max_retries: Retries  # successes to go up
    max_retries_down: Retries = 3  # failures to go down
    http_method: HttpMethod | None = None
    url_path: Annotated[Text, Field(max_length=2048), AfterValidator(_path)] | None = None
    expected_codes: Annotated[str, StringConstraints(pattern=EXPECTED_CODES_PATTERN, max_length=64)] | None = None
    http_version: float | None = None
    domain_name: Annotated[str, AfterValidator(_domain)] | None = None
    admin_state_up: bool = True

    @model_validator(mode="after")
    def _check(self) -> HealthMonitorSpec:
        if self.http_version not in (None, 1.0, 1.1):
            raise ValueError("http_version must be 1.0 or 1.1")
        if self.expected_codes and "-" in self.expected_codes:
            low, high = (int(x) for x in self.expected_codes.split("-"))
            if low > high:
                raise ValueError(f"expected_codes range {self.expected_codes} is empty")
        return self


class MemberSpec(_Spec):
    id: Id
    address: IPAddress
    protocol_port: Port
    weight: Annotated[int, Field(ge=0, le=256)] = 1
    backup: bool = False
    admin_state_up: bool = True
    monitor_address: IPAddress | None = None
    monitor_port: Port | None = None


class PoolSpec(_Spec):
    id: Id
    protocol: PoolProtocol
    lb_algorithm: Algorithm
    admin_state_up: bool = True
    session_persistence: SessionPersistenceSpec | None = None
    health_monitor: HealthMonitorSpec | None = None
    members: tuple[MemberSpec, ...] = ()
    tls: PoolTLSSpec | None = None  # re-encrypt to the members (tls_enabled)

    @model_validator(mode="after")
    def _check(self) -> PoolSpec:
        _unique([m.id for m in self.members], f"pool {self.id}: member")
        hm, sp = self.health_monitor, self.session_persistence
        if self.protocol == "UDP":
            if self.tls is not None:
                raise ValueError(f"pool {self.id}: a UDP pool has no TLS")
            if sp is not None and sp.type != "SOURCE_IP":
                raise ValueError(f"pool {self.id}: a UDP pool persists sessions by SOURCE_IP only")
            if hm is not None and hm.type not in UDP_MONITOR_TYPES:
                raise ValueError(f"pool {self.id}: a UDP pool cannot have a {hm.type} health monitor")
        elif hm is not None and hm.type == "UDP-CONNECT":
            raise ValueError(f"pool {self.id}: UDP-CONNECT health monitors are for UDP pools")
        return self


# --- the engine ------------------------------------------------------------------------------------


class SubnetSpec(_Spec):
    """A subnet a VIP lives on: what a network driver needs to plug the VIP in."""

    id: Id
    network_id: Id
    cidr: Cidr
    gateway_ip: IPAddress | None = None


class HASpec(_Spec):
    """This engine's half of an ACTIVE_STANDBY pair: keepalived (VRRP, unicast to the peer) moves the VIPs to
    whichever of the two serves, and HAProxy's peers protocol shares the stick tables between them. The two
    engines' specs differ only here."""

    role: Literal["MASTER", "BACKUP"]  # the nominal role; the higher priority wins the first election
    priority: Annotated[int, Field(ge=1, le=254)]
    vrid: Annotated[int, Field(ge=1, le=255)]  # the VRRP router id, the same on both engines
    name: Id  # this engine's peer name (its engine id)
    address: IPAddress  # this engine's own address on the VIP network (VRRP source, HAProxy peers)
    peer_name: Id
    peer_address: IPAddress
    advert_ms: Annotated[int, Field(ge=10, le=40950)] = 250  # VRRPv3 advertisement interval (keepalived advert_int)

    @model_validator(mode="after")
    def _check(self) -> HASpec:
        if self.name == self.peer_name or self.address == self.peer_address:
            raise ValueError("an engine cannot be its own peer")
        if ipaddress.ip_address(self.address).version != ipaddress.ip_address(self.peer_address).version:
            raise ValueError("the engine and its peer need addresses of one IP version")
        if self.advert_ms % 10:
            raise ValueError("advert_ms must be a multiple of 10 (VRRPv3 counts centiseconds)")
        return self


class EngineSpec(_Spec):
    schema_version: Literal[1] = SCHEMA_VERSION
    revision: Annotated[int, Field(ge=0)]
    loadbalancer_id: Id
    admin_state_up: bool = True
    vips: tuple[IPAddress, ...] = ()
    subnets: tuple[SubnetSpec, ...] = ()  # the subnets of the VIPs (empty: the driver needs none)
    listeners: tuple[ListenerSpec, ...] = ()
    pools: tuple[PoolSpec, ...] = ()
    certificates: tuple[CertificateSpec, ...] = ()  # the TLS files listeners and pools refer to by id
    ha: HASpec | None = None  # None: a SINGLE engine that holds its VIPs itself

    @model_validator(mode="after")
    def _check(self) -> EngineSpec:
        _unique(list(self.vips), "VIP")
        if self.ha is not None:
            if not self.vips or not self.subnets:
                raise ValueError("an ACTIVE_STANDBY engine needs VIPs and their subnets")
            for address in (self.ha.address, self.ha.peer_address):
                if address in self.vips:
                    raise ValueError(f"engine address {address} is one of the VIPs")
                if self.subnet_of(address) != self.subnet_of(self.vips[0]):
                    raise ValueError(f"engine address {address} is not on the subnet of VIP {self.vips[0]}")
        _unique([sn.id for sn in self.subnets], "subnet")
        if self.subnets:
            for vip in self.vips:
                if self.subnet_of(vip) is None:
                    raise ValueError(f"VIP {vip} is on none of the spec's subnets")
        _unique([li.id for li in self.listeners], "listener")
        _unique([p.id for p in self.pools], "pool")
        ports = [(c.L4_PROTOCOL[li.protocol], li.protocol_port) for li in self.listeners]
        if len(set(ports)) != len(ports):
            raise ValueError(f"two listeners share a port: {sorted(ports)}")
        if self.listeners and not self.vips:
            raise ValueError("listeners need at least one VIP")
        _unique([cert.id for cert in self.certificates], "certificate")
        self._check_certificate_refs()
        pools = {p.id: p for p in self.pools}
        for li in self.listeners:
            refs = [li.default_pool_id] + [p.redirect_pool_id for p in li.l7policies if p.action == "REDIRECT_TO_POOL"]
            for pool_id in filter(None, refs):
                if pool_id not in pools:
                    raise ValueError(f"listener {li.id} refers to pool {pool_id}, which is not in the spec")
                if pools[pool_id].protocol not in c.LISTENER_POOL_PROTOCOLS[li.protocol]:
                    raise ValueError(
                        f"listener {li.id} ({li.protocol}) cannot use pool {pool_id} ({pools[pool_id].protocol})"
                    )
        return self

    def _check_certificate_refs(self) -> None:
        kinds = {cert.id: cert.kind for cert in self.certificates}
        refs: list[tuple[str, str | None, str]] = []
        for li in self.listeners:
            if li.tls is not None:
                refs += [(f"listener {li.id}", li.tls.default_certificate, "certificate")]
                refs += [(f"listener {li.id}", sni, "certificate") for sni in li.tls.sni_certificates]
                refs += [(f"listener {li.id}", li.tls.client_ca, "ca"), (f"listener {li.id}", li.tls.client_crl, "crl")]
        for pool in self.pools:
            if pool.tls is not None:
                refs += [(f"pool {pool.id}", pool.tls.certificate, "certificate")]
                refs += [(f"pool {pool.id}", pool.tls.ca, "ca"), (f"pool {pool.id}", pool.tls.crl, "crl")]
        for owner, cert_id, kind in refs:
            if cert_id is not None and kinds.get(cert_id) != kind:
                raise ValueError(f"{owner} refers to {kind} {cert_id}, which is not in the spec")

    def certificate(self, cert_id: str) -> CertificateSpec:
        for cert in self.certificates:
            if cert.id == cert_id:
                return cert
        raise KeyError(cert_id)

    def subnet_of(self, address: str) -> SubnetSpec | None:
        ip = ipaddress.ip_address(address)
        return next((sn for sn in self.subnets if ip in ipaddress.ip_network(sn.cidr)), None)

    def pool(self, pool_id: str) -> PoolSpec:
        for pool in self.pools:
            if pool.id == pool_id:
                return pool
        raise KeyError(pool_id)


def _unique(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value} appears twice")
        seen.add(value)


def expand_expected_codes(codes: str) -> list[int]:
    """'200' -> [200]; '200, 202' -> [200, 202]; '200-204' -> [200, ..., 204]."""
    if "-" in codes:
        low, high = (int(x) for x in codes.split("-"))
        return list(range(low, high + 1))
    return [int(x) for x in re.split(r"\s*,\s*", codes.strip())]
