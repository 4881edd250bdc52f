"""Cross-field and cross-object validation rules of the Octavia v2 API, in one place.

Each function takes the *resulting* attribute values of an object (after a POST or a PUT has been
merged) and raises a 4xx with Octavia's message when they break a rule."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from typing import Any

from quadriga import constants as c
from quadriga.api.errors import BadRequest, Conflict, Validation

EXPECTED_CODES = re.compile(r"^(\d{3}(\s*,\s*\d{3})*)\Z|^(\d{3}-\d{3})\Z")
HEADER_NAME = re.compile(r"^[a-zA-Z0-9!#$%&'*+\-.^_`|~]+\Z")
DOMAIN_NAME = re.compile(r"^(?=.{1,253}\Z)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?\Z")
DN_FIELDS = {"CN", "OU", "O", "L", "ST", "C", "SN", "DC", "EMAIL", "E", "GN", "UID"}
HTTP_MONITOR_FIELDS = ("http_method", "url_path", "expected_codes", "http_version", "domain_name")
TLS_LISTENER_FIELDS = ("tls_ciphers", "tls_versions", "alpn_protocols")


def listener_pool_compatible(listener_protocol: str, pool_protocol: str) -> None:
    if pool_protocol not in c.LISTENER_POOL_PROTOCOLS[listener_protocol]:
        raise Validation(
            f"The pool protocol '{pool_protocol}' is invalid while the listener protocol is '{listener_protocol}'."
        )


def listener(v: dict[str, Any], vip_addresses: list[str]) -> None:
    """`v` holds every attribute of the listener as it will be stored."""
    proto = v["protocol"]
    tls = proto in c.TLS_LISTENER_PROTOCOLS
    if tls and not (v.get("default_tls_container_ref") or v.get("sni_container_refs")):
        raise Validation(
            "An SNI or default certificate container reference must be provided for TERMINATED_HTTPS listeners."
        )
    if not tls:
        if v.get("default_tls_container_ref") or v.get("sni_container_refs"):
            raise Validation(f"Certificate container references are not allowed on {proto} protocol listeners.")
        if (
            v.get("client_authentication", "NONE") != "NONE"
            or v.get("client_ca_tls_container_ref")
            or v.get("client_crl_container_ref")
        ):
            raise Validation(f"TLS client authentication is not allowed on {proto} protocol listeners.")
        for field in TLS_LISTENER_FIELDS:
            if v.get(field):
                raise Validation(f"{field} is only valid for TERMINATED_HTTPS listeners, not for {proto}.")
        if v.get("hsts_max_age") is not None or v.get("hsts_include_subdomains") or v.get("hsts_preload"):
            raise Validation("The HSTS feature can only be used for listeners using the TERMINATED_HTTPS protocol.")
    if (v.get("hsts_include_subdomains") or v.get("hsts_preload")) and v.get("hsts_max_age") is None:
        raise Validation("hsts_include_subdomains and hsts_preload require hsts_max_age to be set.")
    auth = v.get("client_authentication") or "NONE"
    if auth != "NONE" and not v.get("client_ca_tls_container_ref"):
        raise Validation(f"Client authentication setting {auth} requires a client CA container reference.")
    if v.get("client_crl_container_ref") and not v.get("client_ca_tls_container_ref"):
        raise Validation(
            "A client authentication CA reference is required to specify a client authentication revocation list."
        )
    _insert_headers(proto, v.get("insert_headers") or {})
    if proto == "PROMETHEUS" and v.get("default_pool_id"):
        raise Validation("PROMETHEUS listeners cannot have a default pool.")
    _allowed_cidrs(v.get("allowed_cidrs") or [], vip_addresses)
    if tls and v.get("tls_versions") is not None and not v["tls_versions"]:
        raise Validation("tls_versions must not be empty for a TERMINATED_HTTPS listener.")


def _insert_headers(protocol: str, headers: dict[str, str]) -> None:
    if not headers:
        return
    if protocol not in c.HTTP_LISTENER_PROTOCOLS:
        raise Validation(f"The protocol {protocol} does not support insert_headers.")
    allowed = c.INSERT_HEADERS_HTTP | (c.INSERT_HEADERS_TLS if protocol == "TERMINATED_HTTPS" else set())
    for name, value in headers.items():
        if name not in allowed:
            raise BadRequest(f"{name} is not a valid option for insert_headers")
        if str(value).lower() not in ("true", "false"):
            raise Validation(f"Header {name} value '{value}' is invalid: use 'true' or 'false'.")


def _allowed_cidrs(cidrs: list[str], vip_addresses: list[str]) -> None:
    versions = {ipaddress.ip_address(a).version for a in vip_addresses if a}
    for cidr in cidrs:
        net = ipaddress.ip_network(cidr, strict=False)
        if versions and net.version not in versions:
            raise Validation(f"CIDR {cidr} IP version incompatible with all VIPs {vip_addresses} IP version.")


def session_persistence(sp: dict[str, Any] | None, pool_protocol: str) -> None:
    if not sp:
        return
    kind = sp["type"]
    if kind == "APP_COOKIE" and not sp.get("cookie_name"):
        raise Validation("Cookie names are required for APP_COOKIE session persistence.")
    if kind != "APP_COOKIE" and sp.get("cookie_name"):
        raise Validation(f"Cookie names are not supported for {kind} session persistence.")
    l4_only = pool_protocol in ("UDP", "SCTP")
    if not l4_only and (sp.get("persistence_timeout") is not None or sp.get("persistence_granularity") is not None):
        raise Validation("persistence_timeout and persistence_granularity is only for UDP and SCTP protocol pools.")
    if l4_only and kind != "SOURCE_IP":
        raise Validation(f"Session persistence of type {kind} is not supported for {pool_protocol} protocol pools.")
    if kind in ("HTTP_COOKIE", "APP_COOKIE") and pool_protocol not in ("HTTP", "HTTPS", "PROXY", "PROXYV2", "TCP"):
        raise Validation(f"Session persistence of type {kind} is not supported for {pool_protocol} protocol pools.")


def pool(v: dict[str, Any]) -> None:
    session_persistence(v.get("session_persistence"), v["protocol"])
    if v.get("crl_container_ref") and not v.get("ca_tls_container_ref"):
        raise Validation("A CA reference is required to specify a certificate revocation list.")
    if v["protocol"] in ("UDP", "SCTP") and (v.get("tls_enabled") or v.get("tls_container_ref")):
        raise Validation(f"TLS is not supported for {v['protocol']} protocol pools.")
    if v.get("alpn_protocols") is not None and not v["alpn_protocols"]:
        raise Validation("alpn_protocols must not be empty when set.")


def health_monitor(v: dict[str, Any], pool_protocol: str) -> None:
    kind = v["type"]
    if kind in ("HTTP", "HTTPS"):
        if v.get("expected_codes") is not None and not EXPECTED_CODES.match(v["expected_codes"]):
            raise BadRequest(
                f"Invalid input for field/attribute expected_codes. Value: '{v['expected_codes']}'. "
                "Value should match the pattern ^(\\d{3}(\\s*,\\s*\\d{3})*)$|^(\\d{3}-\\d{3})$"
            )
        if v.get("url_path") is not None:
            parsed = urllib.parse.urlparse(v["url_path"])
            if not v["url_path"].startswith("/") or parsed.scheme or parsed.netloc:
                raise Validation(f"URL path {v['url_path']} is not a valid path: it must start with '/'.")
        if v.get("domain_name"):
            if not DOMAIN_NAME.match(v["domain_name"]):
                raise Validation(f"domain_name {v['domain_name']} is not a valid domain name.")
            if v.get("http_version") != 1.1:
                raise Validation("http_version 1.1 is required for a domain_name.")
    else:
        for field in HTTP_MONITOR_FIELDS:
            if v.get(field) is not None:
                raise Validation(f"{field} is not a valid option for health monitors of type {kind}")
    if pool_protocol == "UDP" and kind not in ("UDP-CONNECT", "HTTP", "TCP", "PING"):
        raise Validation(f"The health monitor type {kind} is not supported for UDP pools.")
    if pool_protocol == "SCTP" and kind not in ("SCTP", "HTTP", "TCP", "PING"):
        raise Validation(f"The health monitor type {kind} is not supported for SCTP pools.")
    if kind == "UDP-CONNECT" and pool_protocol != "UDP":
        raise Validation(f"The health monitor type UDP-CONNECT is not supported for {pool_protocol} pools.")
    if kind == "SCTP" and pool_protocol != "SCTP":
        raise Validation(f"The health monitor type SCTP is not supported for {pool_protocol} pools.")
    if pool_protocol in ("UDP", "SCTP") and v["delay"] < v["timeout"]:
        raise Validation(
            f"The request delay value {v['delay']} should be larger than the request timeout value {v['timeout']}."
        )


def _url(value: str, field: str) -> None:
    parsed = urllib.parse.urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or any(ch in value for ch in "\r\n "):
        raise Validation(f"{field} '{value}' is not a valid URL.")


L7POLICY_ARGS = "Invalid L7 Policy arguments:"  # Octavia's InvalidL7PolicyArgs


def l7policy(v: dict[str, Any]) -> None:
    action = v["action"]
    if action == "REDIRECT_TO_POOL" and not v.get("redirect_pool_id"):
        raise BadRequest(f"{L7POLICY_ARGS} redirect_pool_id or redirect_pool must not be None")
    if action == "REDIRECT_TO_URL":
        if not v.get("redirect_url"):
            raise BadRequest(f"{L7POLICY_ARGS} redirect_url must not be None")
        _url(v["redirect_url"], "redirect_url")
    if action == "REDIRECT_PREFIX":
        if not v.get("redirect_prefix"):
            raise BadRequest(f"{L7POLICY_ARGS} redirect_prefix must not be None")
        _url(v["redirect_prefix"], "redirect_prefix")
    if v.get("redirect_http_code") is not None and action not in ("REDIRECT_TO_URL", "REDIRECT_PREFIX"):
        raise Validation(f"redirect_http_code is only valid for REDIRECT_TO_URL and REDIRECT_PREFIX, not for {action}.")


def normalize_l7policy_action(v: dict[str, Any]) -> None:
    """Octavia clears the redirect fields an action does not use, and defaults the redirect code."""
    action = v["action"]
    if action != "REDIRECT_TO_POOL":
        v["redirect_pool_id"] = None
    if action != "REDIRECT_TO_URL":
        v["redirect_url"] = None
    if action != "REDIRECT_PREFIX":
        v["redirect_prefix"] = None
    if action in ("REDIRECT_TO_URL", "REDIRECT_PREFIX"):
        v["redirect_http_code"] = v.get("redirect_http_code") or 302
    else:
        v["redirect_http_code"] = None


def l7rule(v: dict[str, Any]) -> None:
    kind, compare, value, key = v["type"], v["compare_type"], v["value"], v.get("key")
    if "\r" in value or "\n" in value:
        raise Validation("L7 rule values must not contain CR or LF characters.")
    if kind in ("HEADER", "COOKIE", "SSL_DN_FIELD") and not key:
        raise Validation(f"L7 rules of type {kind} require a key.")
    if kind not in ("HEADER", "COOKIE", "SSL_DN_FIELD") and key:
        raise Validation(f"L7 rules of type {kind} do not use a key.")
    if kind == "HEADER" and not HEADER_NAME.match(key or ""):
        raise Validation(f"Invalid header name '{key}'.")
    if kind == "COOKIE" and not HEADER_NAME.match(key or ""):
        raise Validation(f"Invalid cookie name '{key}'.")
    if kind == "SSL_DN_FIELD" and (key or "").upper() not in DN_FIELDS:
        raise Validation(f"Invalid SSL_DN_FIELD key '{key}': use one of {', '.join(sorted(DN_FIELDS))}.")
    if kind == "FILE_TYPE" and compare not in ("EQUAL_TO", "REGEX"):
        raise Validation("FILE_TYPE rules only support the EQUAL_TO and REGEX compare types.")
    if kind == "SSL_CONN_HAS_CERT" and (compare != "EQUAL_TO" or value.lower() != "true"):
        raise Validation("SSL_CONN_HAS_CERT rules must use compare type EQUAL_TO and the value 'True'.")
    if kind == "SSL_VERIFY_RESULT" and (compare != "EQUAL_TO" or not re.fullmatch("[0-9]{1,9}", value)):
        raise Validation("SSL_VERIFY_RESULT rules must use compare type EQUAL_TO and a numeric value.")
    if compare == "REGEX":
        try:
            re.compile(value)
        except re.error as exc:
            raise Validation(f"Unable to parse regular expression: {exc}") from None
    elif kind in ("HEADER", "COOKIE", "HOST_NAME", "PATH", "FILE_TYPE") and re.search(r"[\s\"']", value):
        raise Validation(f"L7 rule value '{value}' contains whitespace or quotes; use a REGEX rule to match them.")


def too_many_rules(count: int, policy_id: str) -> None:
    if count >= c.MAX_L7RULES_PER_POLICY:
        raise Conflict(f"Too many rules on L7 policy {policy_id}")
