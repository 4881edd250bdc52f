"""Certificate refs on listeners and pools are resolved through the key manager before anything is
written: each bad input of issue 5 is a 400 with Octavia's "Could not retrieve certificate" text and a
reason, the database unchanged; good PKCS12 and PEM container refs are accepted; a key manager that
cannot be reached is a 503."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import serialization

from quadriga.certs.tls import TLSLoader
from tests.api.test_bad_input import assert_fault, dump, lb_status
from tests.support.api_harness import OTHER, PROJECT, Api, make_api
from tests.support.certs import TestCA
from tests.support.secrets import DictSecrets

LB = "/v2/lbaas/loadbalancers"
LI = "/v2/lbaas/listeners"
POOLS = "/v2/lbaas/pools"


@dataclass
class World:
    api: Api
    store: DictSecrets
    refs: dict[str, str]
    ids: dict[str, str]


def _refs(store: DictSecrets) -> dict[str, str]:
    root = TestCA("api test root")
    mid = TestCA("api test intermediate", parent=root)
    other = TestCA("api test other CA")
    leaf = mid.issue("www.example.com", ["www.example.com"])
    sni = root.issue("api.example.com", ["api.example.com"])
    client = root.issue("client", client=True)
    mid.revoke(leaf)
    # A chain with one more level, stored in the wrong order.
    low = TestCA("api test low", parent=mid)
    deep = low.issue("deep.example.com", ["deep.example.com"])
    pem = serialization.Encoding.PEM
    backwards = "".join(c.public_bytes(pem).decode() for c in reversed(deep.chain))
    put = store.secret
    return {
        "pkcs12": put(PROJECT, leaf.pkcs12()),
        "container": store.container(
            PROJECT, certificate=sni.cert_pem, private_key=sni.key_pem, intermediates=sni.chain_pem
        ),
        "client": put(PROJECT, client.pkcs12()),
        "ca": put(PROJECT, mid.cert_pem + root.cert_pem),
        "crl": put(PROJECT, mid.crl_pem() + root.crl_pem()),
        "crl-partial": put(PROJECT, mid.crl_pem()),
        "garbage": put(PROJECT, b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"),
        "password": put(PROJECT, leaf.pkcs12(b"secret")),
        "huge": put(PROJECT, b"\x30" * (10 * 1024 * 1024)),
        "key-only": put(PROJECT, leaf.key_pem),
        "cert-only": put(PROJECT, leaf.cert_pem),
        "mismatch": put(PROJECT, leaf.cert_pem + leaf.chain_pem + sni.key_pem),
        "wrong-order": put(PROJECT, deep.cert_pem + backwards + deep.key_pem),
        "expired": put(PROJECT, root.issue("old.example.com", ["old.example.com"], days=-1).pkcs12()),
        "nameless": put(PROJECT, root.issue("quadriga internal").pkcs12()),
        "not-a-ca": put(PROJECT, leaf.cert_pem),
        "foreign-crl": put(PROJECT, other.crl_pem()),
        "other-project": put(OTHER, leaf.pkcs12()),
        "missing": "http://127.0.0.1:9311/v1/secrets/00000000-0000-0000-0000-000000000000",
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    store = DictSecrets()
    refs = _refs(store)
    for api in make_api(tmp_path_factory.mktemp("tls_refs"), tls=TLSLoader(store), data_plane=True):
        lb = api.create_lb(name="tls")["id"]
        li = api.create(
            LI, "listener", lb, loadbalancer_id=lb, protocol="TERMINATED_HTTPS", protocol_port=443,
            default_tls_container_ref=refs["pkcs12"],
        )  # fmt: skip
        pool = api.create(
            POOLS, "pool", lb, loadbalancer_id=lb, protocol="HTTP", lb_algorithm="ROUND_ROBIN", tls_enabled=True,
            tls_container_ref=refs["client"],
        )  # fmt: skip
        yield World(api, store, refs, {"lb": lb, "listener": li["id"], "pool": pool["id"]})


def _terminated(lb: str, **fields: object) -> dict:
    return {"listener": {"loadbalancer_id": lb, "protocol": "TERMINATED_HTTPS", "protocol_port": 8443, **fields}}


def refused(world: World, method: str, path: str, body: dict, ref: str, reason: str) -> None:
    api = world.api
    before = dump(api)
    fault = assert_fault(api.req(method, path, body), 400)
    assert fault["faultstring"].startswith(f"Could not retrieve certificate: ['{world.refs[ref]}']. "), fault
    assert reason in fault["faultstring"], fault
    assert "PRIVATE KEY" not in fault["faultstring"]
    assert lb_status(api, world.ids["lb"]) == "ACTIVE"
    assert dump(api) == before, "a refused request wrote to the database"


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("garbage", "does not parse as X.509"),
        ("password", "without a password"),
        ("huge", "more than the 64 KiB allowed"),
        ("key-only", "no certificate"),
        ("cert-only", "no private key"),
        ("mismatch", "does not match the certificate"),
        ("wrong-order", "wrong order"),
        ("expired", "expired on"),
        ("other-project", "No secret or container"),
        ("missing", "No secret or container"),
        ("client", "does not allow TLS server authentication"),
    ],
)
def test_listener_create_refuses_a_bad_default_certificate(world, ref, reason):
    body = _terminated(world.ids["lb"], default_tls_container_ref=world.refs[ref])
    refused(world, "POST", LI, body, ref, reason)


def test_sni_certificate_without_names_is_refused(world):
    body = _terminated(
        world.ids["lb"], default_tls_container_ref=world.refs["pkcs12"], sni_container_refs=[world.refs["nameless"]]
    )
    refused(world, "POST", LI, body, "nameless", "no DNS name")


@pytest.mark.parametrize(
    ("fields", "ref", "reason"),
    [
        ({"default_tls_container_ref": "garbage"}, "garbage", "does not parse"),
        ({"sni_container_refs": ["container", "expired"]}, "expired", "expired on"),
        ({"client_authentication": "MANDATORY", "client_ca_tls_container_ref": "not-a-ca"}, "not-a-ca", "not a CA"),
        (
            {"client_ca_tls_container_ref": "ca", "client_crl_container_ref": "foreign-crl"},
            "foreign-crl",
            "not valid for the certificate authority",
        ),
        (
            {"client_ca_tls_container_ref": "ca", "client_crl_container_ref": "crl-partial"},
            "crl-partial",
            "no CRL for 'CN=api test root'",
        ),
    ],
    ids=["default", "sni", "client-ca", "crl", "crl-partial"],
)
def test_listener_update_refuses_bad_refs(world, fields, ref, reason):
    refs = world.refs
    body = {k: ([refs[r] for r in v] if isinstance(v, list) else refs.get(v, v)) for k, v in fields.items()}
    refused(world, "PUT", f"{LI}/{world.ids['listener']}", {"listener": body}, ref, reason)


def test_pool_refs_are_checked(world):
    lb, refs = world.ids["lb"], world.refs
    create = {"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "tls_enabled": True}
    refused(world, "POST", POOLS, {"pool": create | {"tls_container_ref": refs["mismatch"]}}, "mismatch", "match")
    refused(world, "POST", POOLS, {"pool": create | {"tls_container_ref": refs["pkcs12"]}}, "pkcs12", "clientAuth")
    update = {"ca_tls_container_ref": refs["ca"], "crl_container_ref": refs["foreign-crl"]}
    refused(world, "PUT", f"{POOLS}/{world.ids['pool']}", {"pool": update}, "foreign-crl", "not valid for")


def test_graph_create_refuses_a_bad_ref_and_stores_nothing(world):
    listener = {
        "protocol": "TERMINATED_HTTPS",
        "protocol_port": 443,
        "default_tls_container_ref": world.refs["key-only"],
    }
    body = {"loadbalancer": {"vip_subnet_id": world.api.subnet_id(), "name": "graph", "listeners": [listener]}}
    refused(world, "POST", LB, body, "key-only", "no certificate")


def test_good_refs_are_accepted(world):
    api, refs, lb = world.api, world.refs, world.ids["lb"]
    body = _terminated(
        lb,
        default_tls_container_ref=refs["container"],
        sni_container_refs=[refs["pkcs12"], refs["container"]],
        client_authentication="MANDATORY",
        client_ca_tls_container_ref=refs["ca"],
        client_crl_container_ref=refs["crl"],
    )
    li = api.ok(api.post(LI, body), 201)["listener"]
    api.wait_lb(lb)
    update = {"ca_tls_container_ref": refs["ca"], "crl_container_ref": refs["crl"]}
    api.ok(api.put(f"{POOLS}/{world.ids['pool']}", {"pool": update}), 200)
    api.wait_lb(lb)
    api.ok(api.delete(f"{LI}/{li['id']}"), 204)
    api.wait_lb(lb)


def test_graph_create_with_good_refs(world):
    api, refs = world.api, world.refs
    pool = {"name": "p", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "tls_enabled": True}
    pool |= {"tls_container_ref": refs["client"], "ca_tls_container_ref": refs["ca"]}
    listener = {"protocol": "TERMINATED_HTTPS", "protocol_port": 443, "default_tls_container_ref": refs["pkcs12"]}
    listener |= {"default_pool": {"name": "p"}}
    body = {"vip_subnet_id": api.subnet_id(), "name": "graph", "listeners": [listener], "pools": [pool]}
    lb = api.ok(api.post(LB, {"loadbalancer": body}), 201)["loadbalancer"]
    api.wait_lb(lb["id"])
    api.ok(api.delete(f"{LB}/{lb['id']}?cascade=true"), 204)
    api.wait_lb(lb["id"], "DELETED")


def test_key_manager_down_is_a_503_and_refs_are_fetched_only_when_sent(world):
    api, listener = world.api, f"{LI}/{world.ids['listener']}"
    world.store.down = True
    try:
        before = dump(api)
        r = api.put(listener, {"listener": {"default_tls_container_ref": world.refs["pkcs12"]}})
        assert r.status_code == 503, r.text
        assert r.json()["faultcode"] == "Server" and "key manager is unavailable" in r.json()["faultstring"]
        assert dump(api) == before
        api.ok(api.put(listener, {"listener": {"name": "renamed"}}), 200)  # no ref sent: no fetch
        api.wait_lb(world.ids["lb"])
    finally:
        world.store.down = False


def test_resending_a_ref_rechecks_what_is_behind_it(world):
    """A renewed certificate is picked up by re-sending its ref; so is one that went bad."""
    api, ref = world.api, world.refs["pkcs12"]
    listener = f"{LI}/{world.ids['listener']}"
    stored = world.store.stored[(PROJECT, ref)]
    world.store.stored[(PROJECT, ref)] = world.store.stored[(PROJECT, world.refs["expired"])]
    try:
        fault = assert_fault(api.put(listener, {"listener": {"default_tls_container_ref": ref}}), 400)
        assert "expired on" in fault["faultstring"]
    finally:
        world.store.stored[(PROJECT, ref)] = stored
    api.ok(api.put(listener, {"listener": {"default_tls_container_ref": ref}}), 200)
    api.wait_lb(world.ids["lb"])


def test_the_noop_provider_loads_no_certificate(tmp_path):
    """As Octavia's noop certificate manager: tempest's test_with_noop mode sends made-up refs."""
    for api in make_api(tmp_path, tls=TLSLoader(DictSecrets())):
        lb = api.create_lb(name="noop")["id"]
        made_up = "0f7bd4f0-9b8e-4a43-9f2b-0e4f6c1d2a3b"
        listener = api.create(LI, "listener", lb, **_terminated(lb, default_tls_container_ref=made_up)["listener"])
        assert listener["default_tls_container_ref"] == made_up
        fields = {"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}
        pool = api.create(POOLS, "pool", lb, **fields, tls_container_ref=made_up)
        assert pool["tls_container_ref"] == made_up
        api.ok(api.put(f"{LI}/{listener['id']}", {"listener": {"sni_container_refs": [made_up]}}), 200)
        graph_listener = {"protocol": "TERMINATED_HTTPS", "protocol_port": 443, "default_tls_container_ref": made_up}
        body = {"vip_subnet_id": api.subnet_id(), "name": "graph", "listeners": [graph_listener]}
        graph = api.ok(api.post(LB, {"loadbalancer": body}), 201)["loadbalancer"]
        assert graph["listeners"] and graph["provider"] == "noop"
