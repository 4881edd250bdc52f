"""A remote key manager reached with Keystone tokens, as Octavia reaches Barbican (barbican_acl auth).

One real Keystone and two real `quadriga serve`s, both with auth_strategy = keystone: `barbican` serves the
key-manager API (playing the remote Barbican), `octavia` has `[keymanager] url` pointing at it and an engine
provider (it loads certificates). A tenant stores a certificate container in `barbican`; a TERMINATED_HTTPS
listener on `octavia` grants quadriga's service user read access with the tenant's token (ACLs on the
container and its secrets) and loads it with the service token. Another project's ref is a 400 even when
that project granted quadriga read access; Keystone down is a 503; a key manager that refuses quadriga's token
is a KeyManagerUnavailable naming the cause (a 503 at the API)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from quadriga.keymanager import KeyManagerUnavailable
from quadriga.keymanager.remote import RemoteSecrets
from quadriga.service_token import ServiceToken
from tests.support.certs import TestCA
from tests.support.keystone import SERVICE_USER, Keystone
from tests.support.server import QuadrigaServer

pytestmark = pytest.mark.keystone

BARBICAN_CACHE = 1.0  # the key manager asks Keystone again about a token after this
TIMEOUT = 2.0
LBS = "/v2/lbaas/loadbalancers"
LISTENERS = "/v2/lbaas/listeners"


@pytest.fixture(scope="module")
def barbican(keystone: Keystone, tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuadrigaServer]:
    config = tmp_path_factory.mktemp("barbican") / "quadriga.toml"
    config.write_text(keystone.quadriga_config(cache_seconds=BARBICAN_CACHE, timeout=TIMEOUT))
    with QuadrigaServer(auth_strategy="keystone", provider="noop", extra_args=["--config", str(config)]) as srv:
        yield srv


@pytest.fixture(scope="module")
def octavia(
    keystone: Keystone, barbican: QuadrigaServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[QuadrigaServer]:
    config = tmp_path_factory.mktemp("octavia") / "quadriga.toml"
    config.write_text(
        keystone.quadriga_config(cache_seconds=60, timeout=TIMEOUT)
        + f'[keymanager]\nurl = "{barbican.keymanager_url}"\n'
    )
    with QuadrigaServer(
        auth_strategy="keystone",
        provider="noop",
        network_driver="loopback",
        default_project=keystone.projects["project-a"],  # owns the seeded `private` network
        extra_args=["--config", str(config)],
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60, trust_env=False) as client:
        yield client


def store_container(http: httpx.Client, barbican: QuadrigaServer, token: str, name: str) -> str:
    """A certificate container (certificate, private_key) stored with `token`; its ref."""
    issued = TestCA().issue(f"{name}.example.test", [f"{name}.example.test"])
    refs = []
    for part, pem in (("certificate", issued.cert_pem), ("private_key", issued.key_pem)):
        body = {"name": f"{name}-{part}", "payload": pem, "payload_content_type": "text/plain"}
        resp = http.post(barbican.keymanager_url + "/v1/secrets", json=body, headers={"X-Auth-Token": token})
        assert resp.status_code == 201, resp.text
        refs.append({"name": part, "secret_ref": resp.json()["secret_ref"]})
    body = {"name": name, "type": "certificate", "secret_refs": refs}
    resp = http.post(barbican.keymanager_url + "/v1/containers", json=body, headers={"X-Auth-Token": token})
    assert resp.status_code == 201, resp.text
    return resp.json()["container_ref"]


def acl_users(http: httpx.Client, ref: str, token: str) -> list[str]:
    resp = http.get(ref + "/acl", headers={"X-Auth-Token": token})
    assert resp.status_code == 200, resp.text
    return resp.json()["read"].get("users", [])


def wait_lb(http: httpx.Client, octavia: QuadrigaServer, lb_id: str, token: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        lb = http.get(f"{octavia.lb_url}{LBS}/{lb_id}", headers={"X-Auth-Token": token}).json()["loadbalancer"]
        if lb["provisioning_status"] in ("ACTIVE", "ERROR"):
            return lb
        assert time.monotonic() < deadline, f"load balancer {lb_id} still {lb['provisioning_status']}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def lb_of_a(keystone: Keystone, octavia: QuadrigaServer, http: httpx.Client) -> Iterator[dict[str, Any]]:
    token = keystone.token("member-a", project="project-a")
    headers = {"X-Auth-Token": token}
    subnets = http.get(octavia.net_url + "/v2.0/subnets", params={"name": "private-subnet"}, headers=headers)
    assert subnets.status_code == 200, subnets.text
    body = {"loadbalancer": {"vip_subnet_id": subnets.json()["subnets"][0]["id"], "provider": "amphora"}}
    resp = http.post(octavia.lb_url + LBS, json=body, headers=headers)
    assert resp.status_code == 201, resp.text
    lb = wait_lb(http, octavia, resp.json()["loadbalancer"]["id"], token)
    assert lb["provisioning_status"] == "ACTIVE", lb
    yield lb
    http.delete(f"{octavia.lb_url}{LBS}/{lb['id']}", params={"cascade": "true"}, headers=headers)


def create_listener(http: httpx.Client, octavia: QuadrigaServer, lb: dict, token: str, ref: str, port: int):
    body = {
        "listener": {
            "loadbalancer_id": lb["id"],
            "protocol": "TERMINATED_HTTPS",
            "protocol_port": port,
            "default_tls_container_ref": ref,
        }
    }
    return http.post(octavia.lb_url + LISTENERS, json=body, headers={"X-Auth-Token": token})


def test_a_tenant_container_is_granted_to_quadriga_and_loaded(
    keystone: Keystone, barbican: QuadrigaServer, octavia: QuadrigaServer, http: httpx.Client, lb_of_a: dict
) -> None:
    token = keystone.token("member-a", project="project-a")
    ref = store_container(http, barbican, token, "www-a")
    container = http.get(ref, headers={"X-Auth-Token": token}).json()
    service_user = keystone.info["users"][SERVICE_USER]
    assert acl_users(http, ref, token) == []
    # before the grant, quadriga's service user cannot read the tenant's container
    service_token = keystone.token(SERVICE_USER, project="service")
    assert http.get(ref, headers={"X-Auth-Token": service_token}).status_code == 404

    resp = create_listener(http, octavia, lb_of_a, token, ref, 443)
    assert resp.status_code == 201, resp.text
    # Octavia's set_acls: the container and each of its secrets name the service user in their read ACL
    for target in [ref, *(item["secret_ref"] for item in container["secret_refs"])]:
        assert acl_users(http, target, token) == [service_user]
    assert http.get(ref, headers={"X-Auth-Token": service_token}).status_code == 200
    # the controller loaded the certificate with the service token: the listener is live
    lb = wait_lb(http, octavia, lb_of_a["id"], token)
    assert lb["provisioning_status"] == "ACTIVE", lb
    listener = http.get(f"{octavia.lb_url}{LISTENERS}/{resp.json()['listener']['id']}", headers={"X-Auth-Token": token})
    assert listener.json()["listener"]["provisioning_status"] == "ACTIVE", listener.text
    # a second use grants nothing new (the ACL already names the service user)
    assert create_listener(http, octavia, lb_of_a, token, ref, 8443).status_code == 201
    assert acl_users(http, ref, token) == [service_user]
    wait_lb(http, octavia, lb_of_a["id"], token)


def test_another_projects_ref_is_400_even_when_granted_to_quadriga(
    keystone: Keystone, barbican: QuadrigaServer, octavia: QuadrigaServer, http: httpx.Client, lb_of_a: dict
) -> None:
    b = keystone.token("member-b", project="project-b")
    ref_of_b = store_container(http, barbican, b, "www-b")
    service_user = keystone.info["users"][SERVICE_USER]
    container = http.get(ref_of_b, headers={"X-Auth-Token": b}).json()
    for target in [ref_of_b, *(item["secret_ref"] for item in container["secret_refs"])]:
        resp = http.put(target + "/acl", json={"read": {"users": [service_user]}}, headers={"X-Auth-Token": b})
        assert resp.status_code == 200, resp.text  # as if B had used it on a listener of theirs
    a = keystone.token("member-a", project="project-a")
    assert http.get(ref_of_b + "/acl", headers={"X-Auth-Token": a}).status_code == 404
    resp = create_listener(http, octavia, lb_of_a, a, ref_of_b, 9443)
    assert resp.status_code == 400, resp.text
    assert f"Could not retrieve certificate: ['{ref_of_b}']" in resp.json()["faultstring"]
    assert acl_users(http, ref_of_b, b) == [service_user]  # A changed nothing


def test_keystone_down_is_503_with_the_reason(
    keystone: Keystone, barbican: QuadrigaServer, octavia: QuadrigaServer, http: httpx.Client, lb_of_a: dict
) -> None:
    token = keystone.token("member-a", project="project-a")
    ref = store_container(http, barbican, token, "www-down")
    assert http.get(octavia.lb_url + LBS, headers={"X-Auth-Token": token}).status_code == 200  # cached by octavia
    time.sleep(BARBICAN_CACHE + 0.2)  # the key manager must ask Keystone about the next token
    keystone.pause()
    try:
        resp = create_listener(http, octavia, lb_of_a, token, ref, 10443)
    finally:
        keystone.resume()
    assert resp.status_code == 503, resp.text
    fault = resp.json()["faultstring"]
    assert barbican.keymanager_url in fault and "identity service" in fault and "no answer within" in fault, fault

    # quadriga's own login: a key manager client that has no token yet
    keystone.stop()
    service = ServiceToken(keystone.service_settings(timeout=TIMEOUT))
    remote = RemoteSecrets(barbican.keymanager_url, service=service)
    try:
        with pytest.raises(KeyManagerUnavailable, match="no Keystone token for the key manager.*cannot connect"):
            remote.fetch(ref, keystone.projects["project-a"])
    finally:
        remote.close()
        service.close()
        keystone.start()


def test_a_refused_service_token_is_renewed_once(keystone: Keystone, barbican: QuadrigaServer, http: httpx.Client):
    token = keystone.token("member-a", project="project-a")
    ref = store_container(http, barbican, token, "www-renew")
    service = ServiceToken(keystone.service_settings(timeout=TIMEOUT))
    remote = RemoteSecrets(barbican.keymanager_url, service=service)
    try:
        remote.grant_access(ref, token)
        assert set(remote.fetch(ref, "ignored with a token").secrets) == {"certificate", "private_key"}
        first = service.get()
        keystone.revoke(first)
        time.sleep(BARBICAN_CACHE + 0.2)
        assert set(remote.fetch(ref, "").secrets) == {"certificate", "private_key"}
        assert service.get() != first
    finally:
        remote.close()
        service.close()


def test_a_key_manager_refusing_quadrigas_token_is_a_clear_error(barbican: QuadrigaServer, keystone: Keystone):
    """quadriga's service user logs in at another Keystone than the one the key manager trusts."""
    with Keystone() as other:
        other.populate()
        service = ServiceToken(other.service_settings(timeout=TIMEOUT))
        remote = RemoteSecrets(barbican.keymanager_url, service=service)
        try:
            with pytest.raises(KeyManagerUnavailable, match="refuses quadriga's service token .*also with a new token"):
                remote.fetch(barbican.keymanager_url + "/v1/secrets/" + "0" * 32, "")
        finally:
            remote.close()
            service.close()
