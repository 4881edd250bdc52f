"""From the database's object tree to an engine spec: a real SQLite database at the newest schema, a tree
written through the ORM, and the spec read back in a fresh session."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from quadriga.certs.tls import CertificateError, TLSBundle
from quadriga.db import models as m
from quadriga.db.migrate import upgrade
from quadriga.db.session import Database
from quadriga.engine import spec as s
from quadriga.engine.build import UnsupportedFeature, spec_from_loadbalancer
from quadriga.engine.render import EnginePaths, render
from quadriga.engine.udp import udp_config
from quadriga.keymanager import KeyManagerUnavailable, SecretNotFound
from quadriga.providers.base import ApplyError, RejectedChange
from quadriga.providers.engine import EngineProvider
from tests.support.scripted_agent import ScriptedAgent

PROJECT = "project-a"
T0 = dt.datetime(2024, 1, 1)


@pytest.fixture
def db(tmp_path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'build.sqlite'}")
    upgrade(database.engine)
    yield database
    database.dispose()


class Tree:
    """Writes objects with increasing creation times, so their order is the order they were added in."""

    def __init__(self, session) -> None:
        self.session = session
        self.n = 0

    def add(self, cls, **kw):
        self.n += 1
        kw.setdefault("project_id", PROJECT)
        kw.setdefault("created_at", T0 + dt.timedelta(seconds=self.n))
        kw.setdefault("provisioning_status", "ACTIVE")
        obj = cls(**kw)
        self.session.add(obj)
        self.session.flush()
        return obj


def build(db: Database, lb_id: str) -> s.EngineSpec:
    with db.read() as session:
        return spec_from_loadbalancer(session.get(m.LoadBalancer, lb_id))


def full_tree(db: Database) -> dict[str, str]:
    """A load balancer using every feature the engine supports; returns the ids by role."""
    with db.write() as session:
        t = Tree(session)
        lb = t.add(
            m.LoadBalancer,
            provider="engine",
            vip_address="10.0.0.10",
            additional_vips=[{"subnet_id": "s2", "ip_address": "fd00::10"}],
            revision=7,
        )
        web = t.add(
            m.Pool,
            load_balancer_id=lb.id,
            protocol="HTTP",
            lb_algorithm="LEAST_CONNECTIONS",
            session_persistence={"type": "APP_COOKIE", "cookie_name": "JSESSIONID"},
        )
        api = t.add(
            m.Pool,
            load_balancer_id=lb.id,
            protocol="PROXYV2",
            lb_algorithm="SOURCE_IP_PORT",
            session_persistence={"type": "SOURCE_IP", "cookie_name": None},
            admin_state_up=False,
        )
        raw = t.add(m.Pool, load_balancer_id=lb.id, protocol="TCP", lb_algorithm="SOURCE_IP")
        t.add(
            m.HealthMonitor,
            pool_id=web.id,
            type="HTTP",
            delay=5,
            timeout=3,
            max_retries=2,
            max_retries_down=4,
            http_method="HEAD",
            url_path="/health",
            expected_codes="200-204",
            http_version=1.1,
            domain_name="www.example.com",
        )
        t.add(m.HealthMonitor, pool_id=raw.id, type="PING", delay=1, timeout=1, max_retries=1, admin_state_up=False)
        m1 = t.add(m.Member, pool_id=web.id, address="10.0.1.1", protocol_port=8080, weight=3)
        m2 = t.add(
            m.Member,
            pool_id=web.id,
            address="10.0.1.2",
            protocol_port=8080,
            weight=0,
            backup=True,
            monitor_address="10.0.2.2",
            monitor_port=9000,
            admin_state_up=False,
        )
        m3 = t.add(m.Member, pool_id=api.id, address="fd00::1:1", protocol_port=443, provisioning_status="ERROR")
        http = t.add(
            m.Listener,
            load_balancer_id=lb.id,
            protocol="HTTP",
            protocol_port=80,
            default_pool_id=web.id,
            connection_limit=1000,
            insert_headers={"X-Forwarded-For": "true", "X-Forwarded-Port": "False", "X-Real-IP": "TRUE"},
            timeout_client_data=1000,
            timeout_member_connect=2000,
            timeout_member_data=3000,
            timeout_tcp_inspect=400,
            allowed_cidrs=["192.0.2.0/24", "2001:db8::/32"],
            provisioning_status="PENDING_UPDATE",
        )
        tcp = t.add(m.Listener, load_balancer_id=lb.id, protocol="TCP", protocol_port=5432, default_pool_id=raw.id)
        t.add(m.Listener, load_balancer_id=lb.id, protocol="PROMETHEUS", protocol_port=9100, admin_state_up=False)
        second = t.add(
            m.L7Policy,
            listener_id=http.id,
            action="REDIRECT_TO_URL",
            redirect_url="https://example.com/x",
            redirect_http_code=301,
            position=2,
        )
        first = t.add(m.L7Policy, listener_id=http.id, action="REDIRECT_TO_POOL", redirect_pool_id=api.id, position=1)
        r1 = t.add(m.L7Rule, l7policy_id=first.id, type="PATH", compare_type="STARTS_WITH", value="/api")
        r2 = t.add(
            m.L7Rule,
            l7policy_id=first.id,
            type="HEADER",
            compare_type="REGEX",
            key="X-Version",
            value="^v[0-9]+$",
            invert=True,
            admin_state_up=False,
        )
        r3 = t.add(m.L7Rule, l7policy_id=second.id, type="HOST_NAME", compare_type="EQUAL_TO", value="old.example.com")
        return {
            "lb": lb.id,
            "web": web.id,
            "api": api.id,
            "raw": raw.id,
            "m1": m1.id,
            "m2": m2.id,
            "m3": m3.id,
            "http": http.id,
            "tcp": tcp.id,
            "first": first.id,
            "second": second.id,
            "r1": r1.id,
            "r2": r2.id,
            "r3": r3.id,
        }


def test_the_whole_tree_is_converted(db):
    ids = full_tree(db)
    spec = build(db, ids["lb"])
    assert spec.schema_version == 1
    assert (spec.revision, spec.loadbalancer_id, spec.admin_state_up) == (7, ids["lb"], True)
    assert spec.vips == ("10.0.0.10", "fd00::10")
    http, tcp, prom = spec.listeners
    assert http == s.ListenerSpec(
        id=ids["http"],
        protocol="HTTP",
        protocol_port=80,
        connection_limit=1000,
        timeout_client_data=1000,
        timeout_member_connect=2000,
        timeout_member_data=3000,
        timeout_tcp_inspect=400,
        insert_headers=("X-Forwarded-For", "X-Real-IP"),
        allowed_cidrs=("192.0.2.0/24", "2001:db8::/32"),
        default_pool_id=ids["web"],
        l7policies=(
            s.L7PolicySpec(
                id=ids["first"],
                action="REDIRECT_TO_POOL",
                position=1,
                redirect_pool_id=ids["api"],
                rules=(
                    s.L7RuleSpec(id=ids["r1"], type="PATH", compare_type="STARTS_WITH", value="/api"),
                    s.L7RuleSpec(
                        id=ids["r2"],
                        type="HEADER",
                        compare_type="REGEX",
                        key="X-Version",
                        value="^v[0-9]+$",
                        invert=True,
                        admin_state_up=False,
                    ),
                ),
            ),
            s.L7PolicySpec(
                id=ids["second"],
                action="REDIRECT_TO_URL",
                position=2,
                redirect_url="https://example.com/x",
                redirect_http_code=301,
                rules=(s.L7RuleSpec(id=ids["r3"], type="HOST_NAME", compare_type="EQUAL_TO", value="old.example.com"),),
            ),
        ),
    )
    assert (tcp.protocol, tcp.protocol_port, tcp.default_pool_id, tcp.connection_limit) == ("TCP", 5432, ids["raw"], -1)
    assert (tcp.timeout_client_data, tcp.timeout_member_connect, tcp.timeout_tcp_inspect) == (50000, 5000, 0)
    assert (prom.protocol, prom.admin_state_up, prom.default_pool_id) == ("PROMETHEUS", False, None)

    web, api, raw = spec.pools
    assert web == s.PoolSpec(
        id=ids["web"],
        protocol="HTTP",
        lb_algorithm="LEAST_CONNECTIONS",
        session_persistence=s.SessionPersistenceSpec(type="APP_COOKIE", cookie_name="JSESSIONID"),
        health_monitor=s.HealthMonitorSpec(
            type="HTTP",
            delay=5,
            timeout=3,
            max_retries=2,
            max_retries_down=4,
            http_method="HEAD",
            url_path="/health",
            expected_codes="200-204",
            http_version=1.1,
            domain_name="www.example.com",
        ),
        members=(
            s.MemberSpec(id=ids["m1"], address="10.0.1.1", protocol_port=8080, weight=3),
            s.MemberSpec(
                id=ids["m2"],
                address="10.0.1.2",
                protocol_port=8080,
                weight=0,
                backup=True,
                admin_state_up=False,
                monitor_address="10.0.2.2",
                monitor_port=9000,
            ),
        ),
    )
    assert (api.protocol, api.lb_algorithm, api.admin_state_up) == ("PROXYV2", "SOURCE_IP_PORT", False)
    assert api.session_persistence == s.SessionPersistenceSpec(type="SOURCE_IP")
    assert api.health_monitor is None
    assert api.members == (s.MemberSpec(id=ids["m3"], address="fd00::1:1", protocol_port=443),)  # ERROR kept
    assert raw.health_monitor == s.HealthMonitorSpec(
        type="PING", delay=1, timeout=1, max_retries=1, admin_state_up=False
    )


def test_the_built_spec_renders_a_config_haproxy_accepts(db, check):
    ids = full_tree(db)
    spec = build(db, ids["lb"])
    assert s.EngineSpec.model_validate_json(spec.model_dump_json()) == spec
    config = check(spec)
    assert f"backend {ids['web']}:{ids['http']}" in config
    assert f"backend {ids['raw']}:{ids['tcp']}" in config
    # The api pool is admin-down, so the policy routing to it is inactive (as in Octavia).
    assert f"backend {ids['api']}:{ids['http']}" not in config


def test_pending_delete_objects_are_left_out(db):
    ids = full_tree(db)
    with db.write() as session:
        for cls, key in (
            (m.Member, "m1"),
            (m.L7Rule, "r3"),
            (m.L7Policy, "first"),
            (m.Listener, "tcp"),
            (m.Pool, "api"),
        ):
            session.get(cls, ids[key]).provisioning_status = "PENDING_DELETE"
        session.get(m.Pool, ids["web"]).health_monitor.provisioning_status = "PENDING_DELETE"
    spec = build(db, ids["lb"])
    assert [li.id for li in spec.listeners] == [ids["http"], spec.listeners[1].id]
    assert spec.listeners[1].protocol == "PROMETHEUS"
    assert [p.id for p in spec.pools] == [ids["web"], ids["raw"]]
    web = spec.pool(ids["web"])
    assert [mb.id for mb in web.members] == [ids["m2"]]
    assert web.health_monitor is None
    (policy,) = spec.listeners[0].l7policies
    assert policy.id == ids["second"] and policy.rules == ()


def test_a_pool_going_away_unhooks_its_listener_and_policies(db):
    ids = full_tree(db)
    with db.write() as session:
        session.get(m.Pool, ids["api"]).provisioning_status = "PENDING_DELETE"
        session.get(m.Pool, ids["web"]).provisioning_status = "PENDING_DELETE"
    spec = build(db, ids["lb"])
    http = spec.listeners[0]
    assert http.default_pool_id is None
    assert http.l7policies[0].action == "REDIRECT_TO_POOL" and http.l7policies[0].redirect_pool_id is None
    assert [p.id for p in spec.pools] == [ids["raw"]]


def test_a_load_balancer_going_away_serves_nothing(db):
    ids = full_tree(db)
    with db.write() as session:
        session.get(m.LoadBalancer, ids["lb"]).provisioning_status = "PENDING_DELETE"
    spec = build(db, ids["lb"])
    assert (spec.listeners, spec.pools, spec.admin_state_up) == ((), (), False)


def test_admin_down_load_balancer_is_carried_over(db):
    ids = full_tree(db)
    with db.write() as session:
        session.get(m.LoadBalancer, ids["lb"]).admin_state_up = False
    spec = build(db, ids["lb"])
    assert spec.admin_state_up is False and len(spec.listeners) == 3


def _minimal(db: Database, **objects) -> str:
    """A load balancer with one listener and one pool; `objects` override their fields (and add a health
    monitor, or a REJECT policy with one `rule` or several `rules`)."""
    with db.write() as session:
        t = Tree(session)
        lb = t.add(m.LoadBalancer, provider="engine", vip_address="10.0.0.10")
        pool = t.add(
            m.Pool,
            load_balancer_id=lb.id,
            **({"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"} | objects.get("pool", {})),
        )
        li = t.add(
            m.Listener,
            load_balancer_id=lb.id,
            default_pool_id=pool.id,
            **({"protocol": "HTTP", "protocol_port": 80} | objects.get("listener", {})),
        )
        if "monitor" in objects:
            t.add(m.HealthMonitor, pool_id=pool.id, **objects["monitor"])
        rules = objects.get("rules", [objects["rule"]] if "rule" in objects else [])
        if rules:
            policy = t.add(m.L7Policy, listener_id=li.id, action="REJECT", position=1)
            for rule in rules:
                t.add(m.L7Rule, l7policy_id=policy.id, **rule)
        return lb.id


@pytest.mark.parametrize(
    ("objects", "message"),
    [
        (
            {"listener": {"protocol": "TERMINATED_HTTPS", "default_tls_container_ref": "https://km/v1/secrets/x"}},
            "no key manager to read certificates from",
        ),
        ({"listener": {"protocol": "SCTP"}, "pool": {"protocol": "SCTP"}}, "SCTP is not supported: .* no SCTP"),
        (
            {"pool": {"protocol": "HTTP", "lb_algorithm": "SOURCE_IP", "tls_enabled": True, "tls_container_ref": "r"}},
            "no key manager",
        ),
    ],
)
def test_unsupported_features_are_a_clear_error(db, objects, message):
    lb_id = _minimal(db, **objects)
    with pytest.raises(UnsupportedFeature, match=message):
        build(db, lb_id)


def test_a_udp_listener_and_pool_become_the_udp_proxy_config(db):
    lb_id = _minimal(
        db,
        listener={"protocol": "UDP", "protocol_port": 53, "timeout_client_data": 7000, "connection_limit": 9},
        pool={
            "protocol": "UDP",
            "lb_algorithm": "SOURCE_IP",
            "session_persistence": {
                "type": "SOURCE_IP",
                "persistence_timeout": 60,
                "persistence_granularity": "255.255.255.0",
            },
        },
        monitor={"type": "UDP-CONNECT", "delay": 5, "timeout": 3, "max_retries": 2, "max_retries_down": 4},
    )
    spec = build(db, lb_id)
    config = udp_config(spec)
    assert config is not None
    (li,) = config.listeners
    (pool,) = config.pools
    assert (li.vips, li.port, li.max_flows, li.idle_timeout_s, li.pool_id) == (("10.0.0.10",), 53, 9, 7.0, pool.id)
    assert (pool.algorithm, pool.persistence_s, pool.persistence_prefix) == ("SOURCE_IP", 60, 24)
    assert pool.monitor is not None and (pool.monitor.type, pool.monitor.rise, pool.monitor.fall) == (
        "UDP-CONNECT",
        2,
        4,
    )
    assert "frontend" not in render(spec, EnginePaths.under(Path("/e")))  # HAProxy serves none of it


def test_minimal_tree(db):
    spec = build(db, _minimal(db))
    (li,) = spec.listeners
    (pool,) = spec.pools
    assert li.default_pool_id == pool.id
    assert pool.members == () and pool.health_monitor is None and pool.session_persistence is None


# --- TLS -------------------------------------------------------------------------------------------


class FakeTLS:
    """TLSMaterial over a dict of refs: what the key manager and the loader would have returned."""

    def __init__(self, refs: dict[str, object]) -> None:
        self.refs = refs
        self.asked: list[tuple[str, str, str]] = []

    def _get(self, kind: str, ref: str, project_id: str) -> object:
        self.asked.append((kind, ref, project_id))
        if ref not in self.refs:
            raise CertificateError(f"Secret {ref} does not exist.")
        return self.refs[ref]

    def certificate(self, ref: str, project_id: str) -> TLSBundle:
        return self._get("certificate", ref, project_id)  # type: ignore[return-value]

    def ca_certificates(self, ref: str, project_id: str) -> str:
        return self._get("ca", ref, project_id)  # type: ignore[return-value]

    def crl(self, ref: str, project_id: str) -> str:
        return self._get("crl", ref, project_id)  # type: ignore[return-value]


WWW = TLSBundle("CERT www\n", "KEY www\n", ("CHAIN\n",), ("www.example.com",))
API = TLSBundle("CERT api\n", "KEY api\n", (), ("api.example.com", "*.api.example.com"))
CLIENT = TLSBundle("CERT client\n", "KEY client\n")
TLS_REFS = {
    "ref-www": WWW,
    "ref-www-again": WWW,  # the same content under another ref: one file
    "ref-api": API,
    "ref-client": CLIENT,
    "ref-ca": "CA PEM\n",
    "ref-crl": "CRL PEM\n",
}


def _tls_tree(db: Database, **listener: object) -> str:
    """A TERMINATED_HTTPS listener and a re-encrypting pool using every TLS field; returns the load balancer id."""
    pool = {
        "tls_enabled": True,
        "tls_container_ref": "ref-client",
        "ca_tls_container_ref": "ref-ca",
        "crl_container_ref": "ref-crl",
        "tls_versions": ["TLSv1.3"],
        "tls_ciphers": "ECDHE-ECDSA-AES256-GCM-SHA384",
        "alpn_protocols": ["http/1.1"],
    }
    tls_listener = {
        "protocol": "TERMINATED_HTTPS",
        "protocol_port": 443,
        "default_tls_container_ref": "ref-www",
        "sni_container_refs": ["ref-api", "ref-www-again"],
        "client_authentication": "MANDATORY",
        "client_ca_tls_container_ref": "ref-ca",
        "client_crl_container_ref": "ref-crl",
        "tls_versions": ["TLSv1.2", "TLSv1.3"],
        "alpn_protocols": ["h2", "http/1.1"],
        "hsts_max_age": 31536000,
        "hsts_include_subdomains": True,
        "insert_headers": {"X-SSL-Client-CN": "true", "X-SSL-Client-Verify": "true"},
    }
    rules = [
        {"type": "SSL_CONN_HAS_CERT", "compare_type": "EQUAL_TO", "value": "True"},
        {"type": "SSL_VERIFY_RESULT", "compare_type": "EQUAL_TO", "value": "0"},
        {"type": "SSL_DN_FIELD", "compare_type": "EQUAL_TO", "key": "CN", "value": "bob"},
    ]
    return _minimal(db, pool=pool, listener=tls_listener | listener, rules=rules)


def test_tls_refs_become_certificate_files_named_by_their_content(db):
    lb_id = _tls_tree(db)
    tls = FakeTLS(TLS_REFS)
    with db.read() as session:
        spec = spec_from_loadbalancer(session.get(m.LoadBalancer, lb_id), tls)
    files = {cert.id: cert for cert in spec.certificates}
    # Five distinct contents: www (twice under two refs), api, the client certificate, the CA, the CRL.
    assert sorted(cert.kind for cert in files.values()) == ["ca", "certificate", "certificate", "certificate", "crl"]
    (li,) = spec.listeners
    (pool,) = spec.pools
    www = files[li.tls.default_certificate]
    assert www.pem == "CERT www\nCHAIN\nKEY www\n" and www.names == ("www.example.com",)
    assert [files[i].names for i in li.tls.sni_certificates] == [API.names, WWW.names]
    assert li.tls.sni_certificates[1] == li.tls.default_certificate
    assert files[li.tls.client_ca].pem == "CA PEM\n" and files[li.tls.client_crl].pem == "CRL PEM\n"
    assert li.tls.client_ca == pool.tls.ca and li.tls.client_crl == pool.tls.crl  # one file for both
    assert files[pool.tls.certificate].pem == "CERT client\nKEY client\n"
    assert li.tls.model_dump(exclude={"default_certificate", "sni_certificates", "client_ca", "client_crl"}) == {
        "versions": ("TLSv1.2", "TLSv1.3"),
        "ciphers": None,
        "alpn_protocols": ("h2", "http/1.1"),
        "client_authentication": "MANDATORY",
        "hsts_max_age": 31536000,
        "hsts_include_subdomains": True,
        "hsts_preload": False,
    }
    assert (pool.tls.versions, pool.tls.ciphers, pool.tls.alpn_protocols) == (
        ("TLSv1.3",),
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        ("http/1.1",),
    )
    assert li.insert_headers == ("X-SSL-Client-CN", "X-SSL-Client-Verify")
    assert [(r.type, r.key, r.value) for r in li.l7policies[0].rules] == [
        ("SSL_CONN_HAS_CERT", None, "True"),
        ("SSL_VERIFY_RESULT", None, "0"),
        ("SSL_DN_FIELD", "CN", "bob"),
    ]
    # Every ref is read once, for the project of the object that holds it.
    assert len(tls.asked) == len(set(tls.asked)) == 6
    assert {project for _, _, project in tls.asked} == {PROJECT}
    # The same content gives the same spec: a rebuild changes no file name (no reload).
    with db.read() as session:
        assert spec_from_loadbalancer(session.get(m.LoadBalancer, lb_id), FakeTLS(TLS_REFS)) == spec


def test_renewed_content_behind_a_ref_gets_a_new_file_name(db):
    lb_id = _tls_tree(db)
    renewed = TLS_REFS | {"ref-www": TLSBundle("CERT www 2\n", "KEY www 2\n", (), WWW.names)}
    with db.read() as session:
        lb = session.get(m.LoadBalancer, lb_id)
        before, after = spec_from_loadbalancer(lb, FakeTLS(TLS_REFS)), spec_from_loadbalancer(lb, FakeTLS(renewed))
    assert before.listeners[0].tls.default_certificate != after.listeners[0].tls.default_certificate
    assert before.pools[0].tls == after.pools[0].tls


def test_a_bad_ref_is_the_loaders_error(db):
    lb_id = _tls_tree(db, sni_container_refs=["ref-missing"])
    with db.read() as session, pytest.raises(CertificateError, match="ref-missing does not exist"):
        spec_from_loadbalancer(session.get(m.LoadBalancer, lb_id), FakeTLS(TLS_REFS))


def test_a_terminated_https_listener_without_a_default_certificate_is_refused(db):
    lb_id = _tls_tree(db, default_tls_container_ref=None)
    with db.read() as session, pytest.raises(UnsupportedFeature, match="needs a default_tls_container_ref"):
        spec_from_loadbalancer(session.get(m.LoadBalancer, lb_id), FakeTLS(TLS_REFS))


def test_a_tls_pool_without_refs_needs_no_key_manager(db):
    lb_id = _minimal(db, pool={"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "tls_enabled": True})
    (pool,) = build(db, lb_id).pools
    assert pool.tls == s.PoolTLSSpec()


# --- the provider's use of it ----------------------------------------------------------------------


class Refusing(FakeTLS):
    def __init__(self, error: Exception) -> None:
        super().__init__(TLS_REFS)
        self.error = error

    def crl(self, ref: str, project_id: str) -> str:
        raise self.error


def _apply(db: Database, lb_id: str, tls) -> ScriptedAgent:
    agent = ScriptedAgent()
    provider = EngineProvider(db, {"agent-1": agent}, tls=tls)
    with db.read() as session:
        provider.apply(session.get(m.LoadBalancer, lb_id))
    return agent


def test_the_provider_pushes_the_certificates_it_read(db):
    lb_id = _tls_tree(db)
    agent = _apply(db, lb_id, FakeTLS(TLS_REFS))
    ((_, spec),) = agent.applied
    assert len(spec.certificates) == 5 and spec.listeners[0].tls is not None


@pytest.mark.parametrize(
    ("error", "raised", "message"),
    [
        (CertificateError("The CRL does not parse."), RejectedChange, "The CRL does not parse."),
        (SecretNotFound("ref-crl"), RejectedChange, "TLS secret of load balancer .* is gone: ref-crl"),
        (KeyManagerUnavailable("connection refused"), ApplyError, "key manager is unavailable: connection refused"),
    ],
)
def test_unusable_tls_material_never_reaches_an_engine(db, error, raised, message):
    lb_id = _tls_tree(db)
    agent = ScriptedAgent()
    provider = EngineProvider(db, {"agent-1": agent}, tls=Refusing(error))
    with db.read() as session, pytest.raises(raised, match=message) as caught:
        provider.apply(session.get(m.LoadBalancer, lb_id))
    assert (raised is ApplyError) == (type(caught.value) is ApplyError)  # unavailable: retried, not rejected
    assert agent.applied == []
