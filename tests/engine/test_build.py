"""From the database's object tree to an engine spec: a real SQLite database at the newest schema, a tree
written through the ORM, and the spec read back in a fresh session."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from quadriga.db import models as m
from quadriga.db.migrate import upgrade
from quadriga.db.session import Database
from quadriga.engine import spec as s
from quadriga.engine.build import UnsupportedFeature, spec_from_loadbalancer

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
    """A load balancer with one listener and one pool; `objects` override their fields."""
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
        if "rule" in objects:
            policy = t.add(m.L7Policy, listener_id=li.id, action="REJECT", position=1)
            t.add(m.L7Rule, l7policy_id=policy.id, **objects["rule"])
        return lb.id


@pytest.mark.parametrize(
    ("objects", "message"),
    [
        ({"listener": {"protocol": "TERMINATED_HTTPS"}}, "TERMINATED_HTTPS comes with TLS support"),
        ({"listener": {"protocol": "UDP"}, "pool": {"protocol": "UDP"}}, "UDP is not supported"),
        ({"listener": {"protocol": "SCTP"}, "pool": {"protocol": "SCTP"}}, "SCTP is not supported"),
        ({"pool": {"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "tls_enabled": True}}, "TLS to members"),
        (
            {"rule": {"type": "SSL_CONN_HAS_CERT", "compare_type": "EQUAL_TO", "value": "True"}},
            "SSL_CONN_HAS_CERT comes with TLS support",
        ),
        (
            {"monitor": {"type": "UDP-CONNECT", "delay": 5, "timeout": 3, "max_retries": 2}},
            "UDP-CONNECT is not supported",
        ),
    ],
)
def test_unsupported_features_are_a_clear_error(db, objects, message):
    lb_id = _minimal(db, **objects)
    with pytest.raises(UnsupportedFeature, match=message):
        build(db, lb_id)


def test_minimal_tree(db):
    spec = build(db, _minimal(db))
    (li,) = spec.listeners
    (pool,) = spec.pools
    assert li.default_pool_id == pool.id
    assert pool.members == () and pool.health_monitor is None and pool.session_persistence is None
