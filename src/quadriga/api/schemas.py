"""Request bodies of the Octavia v2 API: field types, limits and enumerations.

This is the one home of field-level validation. Every model forbids unknown attributes, so an immutable
field in a PUT (which the PUT model does not declare) is a 400, as in Octavia. Rules that span fields or
objects (protocol pairs, TLS dependencies, ...) live in `quadriga.api.validation`."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr
from pydantic_core import PydanticCustomError

from quadriga import constants as c


def _uuid(value: str) -> str:
    try:
        uuid.UUID(value)
    except ValueError:
        raise PydanticCustomError("uuid", "Value should be UUID format") from None
    return value


def _ip(value: str) -> str:
    """Checked, kept as sent (as Octavia: a member added as 2001:db8:0:0:0:0:0:1 reads back so)."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        raise PydanticCustomError("ip", "Value should be IPv4 or IPv6 format") from None


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise PydanticCustomError("cidr", "Value should be IPv4 or IPv6 CIDR format") from None


def _int(value: object) -> object:
    """Integers as Octavia (WSME) takes them: JSON numbers or numeric strings (the CLI sends "100"),
    never booleans or fractions."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise PydanticCustomError("int_type", "Value should be an integer")
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise PydanticCustomError("int_type", "Value should be an integer") from None
    return value


Int = Annotated[int, BeforeValidator(_int)]
UUID = Annotated[StrictStr, AfterValidator(_uuid)]
IP = Annotated[StrictStr, AfterValidator(_ip)]
CIDR = Annotated[StrictStr, AfterValidator(_cidr)]
Str255 = Annotated[StrictStr, Field(max_length=255)]
Tags = list[Str255]
Port = Annotated[Int, Field(ge=1, le=65535)]
Timeout = Annotated[Int, Field(ge=0, le=c.MAX_TIMEOUT)]
Weight = Annotated[Int, Field(ge=0, le=256)]
Retries = Annotated[Int, Field(ge=1, le=10)]
QuotaValue = Annotated[Int, Field(ge=-1, le=c.MAX_QUOTA)]

ListenerProtocol = Literal["TCP", "HTTP", "HTTPS", "TERMINATED_HTTPS", "UDP", "SCTP", "PROMETHEUS"]
PoolProtocol = Literal["TCP", "HTTP", "HTTPS", "PROXY", "PROXYV2", "UDP", "SCTP"]
Algorithm = Literal["ROUND_ROBIN", "LEAST_CONNECTIONS", "SOURCE_IP", "SOURCE_IP_PORT"]
PersistenceType = Literal["SOURCE_IP", "HTTP_COOKIE", "APP_COOKIE"]
MonitorType = Literal["HTTP", "HTTPS", "PING", "TCP", "TLS-HELLO", "UDP-CONNECT", "SCTP"]
HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "OPTIONS", "CONNECT", "PATCH"]
PolicyAction = Literal["REJECT", "REDIRECT_TO_URL", "REDIRECT_TO_POOL", "REDIRECT_PREFIX"]
RuleType = Literal[
    "HOST_NAME", "PATH", "FILE_TYPE", "HEADER", "COOKIE", "SSL_CONN_HAS_CERT", "SSL_VERIFY_RESULT", "SSL_DN_FIELD"
]
CompareType = Literal["REGEX", "STARTS_WITH", "ENDS_WITH", "CONTAINS", "EQUAL_TO"]
ClientAuth = Literal["NONE", "OPTIONAL", "MANDATORY"]
TlsVersion = Literal["SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
AlpnProtocol = Literal["h2", "http/1.1", "http/1.0"]
RedirectCode = Annotated[Literal[301, 302, 303, 307, 308], BeforeValidator(_int)]
HttpVersion = Literal[1.0, 1.1]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProjectOwned(Body):
    project_id: Str255 | None = None
    tenant_id: Str255 | None = None


# --- health monitors -----------------------------------------------------------------------------


class HealthMonitorFields(Body):
    name: Str255 | None = None
    admin_state_up: StrictBool = True
    delay: Int = Field(ge=0, le=c.MAX_INT32)
    timeout: Int = Field(ge=0, le=c.MAX_INT32)
    max_retries: Retries
    max_retries_down: Retries = 3
    http_method: HttpMethod | None = None
    url_path: Annotated[StrictStr, Field(max_length=2048)] | None = None
    expected_codes: Annotated[StrictStr, Field(max_length=64)] | None = None
    http_version: HttpVersion | None = None
    domain_name: Str255 | None = None
    tags: Tags = []


class HealthMonitorSingleCreate(HealthMonitorFields):
    type: MonitorType


class HealthMonitorCreate(HealthMonitorSingleCreate, ProjectOwned):
    pool_id: UUID


class HealthMonitorUpdate(Body):
    name: Str255 | None = None
    admin_state_up: StrictBool | None = None
    delay: Int | None = Field(default=None, ge=0, le=c.MAX_INT32)
    timeout: Int | None = Field(default=None, ge=0, le=c.MAX_INT32)
    max_retries: Retries | None = None
    max_retries_down: Retries | None = None
    http_method: HttpMethod | None = None
    url_path: Annotated[StrictStr, Field(max_length=2048)] | None = None
    expected_codes: Annotated[StrictStr, Field(max_length=64)] | None = None
    http_version: HttpVersion | None = None
    domain_name: Str255 | None = None
    tags: Tags | None = None


# --- members -------------------------------------------------------------------------------------


class MemberSingleCreate(Body):
    name: Str255 | None = None
    admin_state_up: StrictBool = True
    address: IP
    protocol_port: Port
    weight: Weight = 1
    backup: StrictBool = False
    subnet_id: UUID | None = None
    monitor_address: IP | None = None
    monitor_port: Port | None = None
    request_sriov: StrictBool = False
    tags: Tags = []


class MemberCreate(MemberSingleCreate, ProjectOwned):
    pass


class MemberUpdate(Body):
    name: Str255 | None = None
    admin_state_up: StrictBool | None = None
    weight: Weight | None = None
    backup: StrictBool | None = None
    monitor_address: IP | None = None
    monitor_port: Port | None = None
    tags: Tags | None = None


# --- pools ---------------------------------------------------------------------------------------


class SessionPersistence(Body):
    type: PersistenceType
    cookie_name: Annotated[StrictStr, Field(max_length=255, pattern=r"^[\x21-\x7e]+$")] | None = None
    persistence_timeout: Int | None = Field(default=None, ge=0, le=c.MAX_INT32)
    persistence_granularity: IP | None = None


class PoolFields(Body):
    name: Str255 | None = None
    description: Str255 | None = None
    admin_state_up: StrictBool = True
    session_persistence: SessionPersistence | None = None
    tls_enabled: StrictBool = False
    tls_container_ref: Str255 | None = None
    ca_tls_container_ref: Str255 | None = None
    crl_container_ref: Str255 | None = None
    tls_ciphers: Annotated[StrictStr, Field(max_length=2048)] | None = None
    tls_versions: list[TlsVersion] | None = None
    alpn_protocols: list[AlpnProtocol] | None = None
    tags: Tags = []


class PoolSingleCreate(PoolFields):
    protocol: PoolProtocol
    lb_algorithm: Algorithm
    healthmonitor: HealthMonitorSingleCreate | None = None
    members: list[MemberSingleCreate] | None = None


class PoolReference(PoolFields):
    """A pool inside a graph create's listener or policy: either a full definition or just a name that
    refers to a pool defined elsewhere in the same request."""

    protocol: PoolProtocol | None = None
    lb_algorithm: Algorithm | None = None
    healthmonitor: HealthMonitorSingleCreate | None = None
    members: list[MemberSingleCreate] | None = None


class PoolCreate(PoolSingleCreate, ProjectOwned):
    listener_id: UUID | None = None
    loadbalancer_id: UUID | None = None


class PoolUpdate(Body):
    name: Str255 | None = None
    description: Str255 | None = None
    admin_state_up: StrictBool | None = None
    lb_algorithm: Algorithm | None = None
    session_persistence: SessionPersistence | None = None
    tls_enabled: StrictBool | None = None
    tls_container_ref: Str255 | None = None
    ca_tls_container_ref: Str255 | None = None
    crl_container_ref: Str255 | None = None
    tls_ciphers: Annotated[StrictStr, Field(max_length=2048)] | None = None
    tls_versions: list[TlsVersion] | None = None
    alpn_protocols: list[AlpnProtocol] | None = None
    tags: Tags | None = None


# --- L7 rules and policies -----------------------------------------------------------------------


class L7RuleFields(Body):
    type: RuleType
    compare_type: CompareType
    key: Str255 | None = None
    value: Annotated[StrictStr, Field(max_length=255)]
    invert: StrictBool = False
    admin_state_up: StrictBool = True
    tags: Tags = []


class L7RuleSingleCreate(L7RuleFields):
    pass


class L7RuleCreate(L7RuleFields, ProjectOwned):
    pass


class L7RuleUpdate(Body):
    type: RuleType | None = None
    compare_type: CompareType | None = None
    key: Str255 | None = None
    value: Annotated[StrictStr, Field(max_length=255)] | None = None
    invert: StrictBool | None = None
    admin_state_up: StrictBool | None = None
    tags: Tags | None = None


class L7PolicyFields(Body):
    name: Str255 | None = None
    description: Str255 | None = None
    admin_state_up: StrictBool = True
    action: PolicyAction
    redirect_pool_id: UUID | None = None
    redirect_url: Str255 | None = None
    redirect_prefix: Str255 | None = None
    redirect_http_code: RedirectCode | None = None
    position: Int | None = Field(default=None, ge=1, le=c.MAX_INT32)
    tags: Tags = []


class L7PolicySingleCreate(L7PolicyFields):
    redirect_pool: PoolReference | None = None
    rules: list[L7RuleSingleCreate] | None = None


class L7PolicyCreate(L7PolicyFields, ProjectOwned):
    listener_id: UUID
    rules: list[L7RuleSingleCreate] | None = None


class L7PolicyUpdate(Body):
    name: Str255 | None = None
    description: Str255 | None = None
    admin_state_up: StrictBool | None = None
    action: PolicyAction | None = None
    redirect_pool_id: UUID | None = None
    redirect_url: Str255 | None = None
    redirect_prefix: Str255 | None = None
    redirect_http_code: RedirectCode | None = None
    position: Int | None = Field(default=None, ge=1, le=c.MAX_INT32)
    tags: Tags | None = None


# --- listeners -----------------------------------------------------------------------------------


class ListenerMutable(Body):
    """Fields a listener PUT may send; `null` resets a field to its default."""

    name: Str255 | None = None
    description: Str255 | None = None
    admin_state_up: StrictBool | None = None
    connection_limit: Int | None = Field(default=None, ge=-1, le=c.MAX_INT32)
    default_tls_container_ref: Str255 | None = None
    sni_container_refs: list[Str255] | None = None
    default_pool_id: UUID | None = None
    insert_headers: dict[StrictStr, StrictStr] | None = None
    timeout_client_data: Timeout | None = None
    timeout_member_connect: Timeout | None = None
    timeout_member_data: Timeout | None = None
    timeout_tcp_inspect: Timeout | None = None
    client_authentication: ClientAuth | None = None
    client_ca_tls_container_ref: Str255 | None = None
    client_crl_container_ref: Str255 | None = None
    allowed_cidrs: list[CIDR] | None = None
    tls_ciphers: Annotated[StrictStr, Field(max_length=2048)] | None = None
    tls_versions: list[TlsVersion] | None = None
    alpn_protocols: list[AlpnProtocol] | None = None
    hsts_max_age: Int | None = Field(default=None, ge=0, le=c.MAX_INT32)
    hsts_include_subdomains: StrictBool | None = None
    hsts_preload: StrictBool | None = None
    tags: Tags | None = None


class ListenerSingleCreate(ListenerMutable):
    protocol: ListenerProtocol
    protocol_port: Port
    default_pool: PoolReference | None = None
    l7policies: list[L7PolicySingleCreate] | None = None


class ListenerCreate(ListenerSingleCreate, ProjectOwned):
    loadbalancer_id: UUID


class ListenerUpdate(ListenerMutable):
    pass


# --- load balancers ------------------------------------------------------------------------------


class AdditionalVip(Body):
    subnet_id: UUID
    ip_address: IP | None = None
    port_id: UUID | None = None


class LoadBalancerCreate(ProjectOwned):
    name: Str255 | None = None
    description: Str255 | None = None
    admin_state_up: StrictBool = True
    vip_address: IP | None = None
    vip_port_id: UUID | None = None
    vip_subnet_id: UUID | None = None
    vip_network_id: UUID | None = None
    vip_qos_policy_id: UUID | None = None
    vip_sg_ids: list[UUID] | None = None
    additional_vips: list[AdditionalVip] | None = None
    provider: Annotated[StrictStr, Field(max_length=64)] | None = None
    flavor_id: UUID | None = None
    availability_zone: Str255 | None = None
    tags: Tags = []
    listeners: list[ListenerSingleCreate] | None = None
    pools: list[PoolSingleCreate] | None = None


class LoadBalancerUpdate(Body):
    name: Str255 | None = None
    description: Str255 | None = None
    admin_state_up: StrictBool | None = None
    vip_qos_policy_id: UUID | None = None
    vip_sg_ids: list[UUID] | None = None
    tags: Tags | None = None


# --- quotas, flavors, availability zones ---------------------------------------------------------


class QuotaUpdate(Body):
    loadbalancer: QuotaValue | None = None
    load_balancer: QuotaValue | None = None
    listener: QuotaValue | None = None
    member: QuotaValue | None = None
    pool: QuotaValue | None = None
    healthmonitor: QuotaValue | None = None
    health_monitor: QuotaValue | None = None
    l7policy: QuotaValue | None = None
    l7rule: QuotaValue | None = None


class FlavorCreate(Body):
    name: Str255
    description: Str255 | None = None
    enabled: StrictBool = True
    flavor_profile_id: UUID


class FlavorUpdate(Body):
    name: Str255 | None = None
    description: Str255 | None = None
    enabled: StrictBool | None = None


ProfileData = Annotated[StrictStr, Field(max_length=4096)]


class FlavorProfileCreate(Body):
    name: Str255
    provider_name: Str255
    flavor_data: ProfileData


class FlavorProfileUpdate(Body):
    name: Str255 | None = None
    provider_name: Str255 | None = None
    flavor_data: ProfileData | None = None


class AvailabilityZoneCreate(Body):
    name: Str255
    description: Str255 | None = None
    enabled: StrictBool = True
    availability_zone_profile_id: UUID


class AvailabilityZoneUpdate(Body):
    description: Str255 | None = None
    enabled: StrictBool | None = None


class AvailabilityZoneProfileCreate(Body):
    name: Str255
    provider_name: Str255
    availability_zone_data: ProfileData


class AvailabilityZoneProfileUpdate(Body):
    name: Str255 | None = None
    provider_name: Str255 | None = None
    availability_zone_data: ProfileData | None = None
