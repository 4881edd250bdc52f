"""Names and limits shared by the API, the controller and the data plane (Octavia's values)."""

ACTIVE = "ACTIVE"
PENDING_CREATE = "PENDING_CREATE"
PENDING_UPDATE = "PENDING_UPDATE"
PENDING_DELETE = "PENDING_DELETE"
DELETED = "DELETED"
ERROR = "ERROR"
PENDING_STATUSES = (PENDING_CREATE, PENDING_UPDATE, PENDING_DELETE)

ONLINE = "ONLINE"
OFFLINE = "OFFLINE"
DEGRADED = "DEGRADED"
DRAINING = "DRAINING"
NO_MONITOR = "NO_MONITOR"

MAX_INT32 = 2147483647
MAX_TIMEOUT = 2073600000
MAX_QUOTA = 2000000000
MAX_L7RULES_PER_POLICY = 50
PAGE_MAX_LIMIT = 1000
MAX_BODY_BYTES = 1024 * 1024

# Listener protocol -> pool protocols it may use (Octavia's VALID_LISTENER_POOL_PROTOCOL_MAP).
LISTENER_POOL_PROTOCOLS: dict[str, set[str]] = {
    "TCP": {"HTTP", "HTTPS", "PROXY", "PROXYV2", "TCP"},
    "HTTP": {"HTTP", "PROXY", "PROXYV2"},
    "HTTPS": {"HTTPS", "PROXY", "PROXYV2", "TCP"},
    "TERMINATED_HTTPS": {"HTTP", "PROXY", "PROXYV2"},
    "UDP": {"UDP"},
    "SCTP": {"SCTP"},
    "PROMETHEUS": set(),
}

# Listeners on one port collide when they share the transport protocol.
L4_PROTOCOL = {
    "TCP": "TCP",
    "HTTP": "TCP",
    "HTTPS": "TCP",
    "TERMINATED_HTTPS": "TCP",
    "PROMETHEUS": "TCP",
    "UDP": "UDP",
    "SCTP": "SCTP",
}

HTTP_LISTENER_PROTOCOLS = {"HTTP", "TERMINATED_HTTPS"}
TLS_LISTENER_PROTOCOLS = {"TERMINATED_HTTPS"}

INSERT_HEADERS_HTTP = {
    "X-Forwarded-For",
    "X-Forwarded-Port",
    "X-Forwarded-Proto",
    "X-Forwarded-IP",
    "X-Client-IP",
    "X-Real-IP",
}
INSERT_HEADERS_TLS = {
    "X-SSL-Client-Verify",
    "X-SSL-Client-Has-Cert",
    "X-SSL-Client-DN",
    "X-SSL-Client-CN",
    "X-SSL-Issuer",
    "X-SSL-Client-SHA1",
    "X-SSL-Client-Not-Before",
    "X-SSL-Client-Not-After",
}

DEFAULT_TLS_VERSIONS = ["TLSv1.2", "TLSv1.3"]
DEFAULT_ALPN_PROTOCOLS = ["h2", "http/1.1", "http/1.0"]

# Quota resource names: API key -> Quota column and the name used in the 403 message.
QUOTA_RESOURCES = {
    "loadbalancer": ("load_balancer", "Load Balancer"),
    "listener": ("listener", "Listener"),
    "pool": ("pool", "Pool"),
    "healthmonitor": ("health_monitor", "Health Monitor"),
    "member": ("member", "Member"),
    "l7policy": ("l7policy", "L7 Policy"),
    "l7rule": ("l7rule", "L7 Rule"),
}
