"""auth_strategy = keystone against a real Keystone (tests/support/keystone.py) and a real `quadriga serve`.

One Keystone and one quadriga (noop provider) for the module. quadriga's load-balancer, network and
key-manager endpoints are in Keystone's catalog, so the OpenStack CLI needs nothing but a password login.
quadriga trusts a validated token for CACHE_SECONDS and gives Keystone TIMEOUT seconds to answer."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from starlette.requests import Request

from quadriga.api.errors import ServiceUnavailable
from quadriga.api.keystone import KeystoneAuth
from tests.clients.conftest import OpenStackCLI
from tests.support.keystone import Keystone
from tests.support.server import QuadrigaServer

pytestmark = pytest.mark.keystone

CACHE_SECONDS = 4.0
TIMEOUT = 2.0
LBS = "/v2/lbaas/loadbalancers"


@pytest.fixture(scope="module")
def server(keystone: Keystone, tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuadrigaServer]:
    config = tmp_path_factory.mktemp("keystone-auth") / "quadriga.toml"
    config.write_text(keystone.quadriga_config(cache_seconds=CACHE_SECONDS, timeout=TIMEOUT))
    # project-a owns the seeded `private` network, as the demo project does under noauth
    with QuadrigaServer(
        auth_strategy="keystone",
        provider="noop",
        default_project=keystone.projects["project-a"],
        extra_args=["--config", str(config)],
    ) as srv:
        keystone.populate(load_balancer=srv.lb_url, network=srv.net_url + "/", key_manager=srv.keymanager_url)
        yield srv


@pytest.fixture(scope="module")
def api(server: QuadrigaServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.lb_url, timeout=30, trust_env=False) as client:
        yield client


def get(api: httpx.Client, path: str, token: str | None) -> httpx.Response:
    return api.get(path, headers={"X-Auth-Token": token} if token is not None else {})


def assert_fault(resp: httpx.Response, status: int, keystone: Keystone, text: str) -> None:
    """Octavia's fault body; a 401 also tells the client where to authenticate."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["faultcode"] == ("Client" if status < 500 else "Server") and text in body["faultstring"], body
    if status == 401:
        assert resp.headers["www-authenticate"] == f'Keystone uri="{keystone.auth_url}"'


@pytest.fixture(scope="module")
def lb_of_a(keystone: Keystone, server: QuadrigaServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A load balancer created by member-a with the real CLI, through the catalog."""
    clouds = tmp_path_factory.mktemp("clouds") / "clouds.yaml"
    clouds.write_text(yaml.safe_dump({"clouds": {"quadriga": keystone.cloud_config("member-a", "project-a")}}))
    cli = OpenStackCLI(Path(sys.executable).parent / "openstack", server.client_env(clouds))
    lb = cli("loadbalancer", "create", "--name", "lb-of-a", "--vip-subnet-id", "private-subnet", "--wait")
    assert lb["project_id"] == keystone.projects["project-a"] and lb["provisioning_status"] == "ACTIVE"
    listed = cli("loadbalancer", "list")
    assert [row["id"] for row in listed] == [lb["id"]]
    secret = cli("secret", "store", "--name", "s-of-a", "--payload", "not-a-real-secret", fmt=True)
    assert secret["Secret href"].startswith(server.keymanager_url + "/v1/secrets/")
    return lb


def test_password_login_through_the_catalog_creates_and_lists(lb_of_a: dict[str, Any], api: httpx.Client) -> None:
    assert lb_of_a["name"] == "lb-of-a"


def test_projects_are_isolated(keystone: Keystone, lb_of_a: dict[str, Any], api: httpx.Client) -> None:
    a, b = keystone.token("member-a", project="project-a"), keystone.token("member-b", project="project-b")
    assert get(api, f"{LBS}/{lb_of_a['id']}", a).json()["loadbalancer"]["id"] == lb_of_a["id"]
    assert get(api, LBS, b).json()["loadbalancers"] == []
    assert_fault(get(api, f"{LBS}/{lb_of_a['id']}", b), 403, keystone, "Policy does not allow")
    create = {"loadbalancer": {"vip_subnet_id": lb_of_a["vip_subnet_id"], "project_id": keystone.projects["project-a"]}}
    assert_fault(api.post(LBS, json=create, headers={"X-Auth-Token": b}), 403, keystone, "Policy does not allow")
    # reader-a reads A's, cannot write; a system-scoped admin sees every project's
    reader = keystone.token("reader-a", project="project-a")
    assert [lb["id"] for lb in get(api, LBS, reader).json()["loadbalancers"]] == [lb_of_a["id"]]
    assert (
        api.put(f"{LBS}/{lb_of_a['id']}", json={"loadbalancer": {}}, headers={"X-Auth-Token": reader}).status_code
        == 403
    )
    system = keystone.token("admin", system=True)
    assert lb_of_a["id"] in [lb["id"] for lb in get(api, LBS, system).json()["loadbalancers"]]


@pytest.mark.parametrize(
    ("token", "text"),
    [
        (None, "Authentication required"),
        ("", "Authentication required"),
        ("not a token", "not a token"),
        ("gAAAAABnot-a-fernet-token", "invalid, expired or revoked"),
        ("x" * 20000, "not a token"),
    ],
    ids=["missing", "empty", "spaces", "garbage", "huge"],
)
def test_missing_or_malformed_token_is_401(keystone: Keystone, api: httpx.Client, token: str | None, text: str) -> None:
    assert_fault(get(api, LBS, token), 401, keystone, text)


def test_unscoped_token_is_401_and_domain_scoped_is_403(keystone: Keystone, api: httpx.Client) -> None:
    assert_fault(get(api, LBS, keystone.token("member-a")), 401, keystone, "not scoped to a project")
    domain = keystone.token("domain-admin", domain="Default")
    assert_fault(get(api, LBS, domain), 403, keystone, "scoped to the domain 'Default'")


def test_revoked_token_is_401_and_a_cached_one_within_cache_seconds(keystone: Keystone, api: httpx.Client) -> None:
    fresh = keystone.token("member-a", project="project-a")
    keystone.revoke(fresh)
    assert_fault(get(api, LBS, fresh), 401, keystone, "invalid, expired or revoked")

    used = keystone.token("member-a", project="project-a")
    assert get(api, LBS, used).status_code == 200
    keystone.revoke(used)
    revoked_at = time.monotonic()
    while get(api, LBS, used).status_code == 200:  # the cache's answer, for at most CACHE_SECONDS
        assert time.monotonic() - revoked_at < CACHE_SECONDS + 1, "a revoked token outlived the cache lifetime"
        time.sleep(0.2)
    assert_fault(get(api, LBS, used), 401, keystone, "invalid, expired or revoked")


def test_expired_token_is_401_even_when_cached(keystone: Keystone, api: httpx.Client) -> None:
    token, expires_at = keystone.short_lived_token("member-a", "project-a", seconds=2.0)
    assert get(api, LBS, token).status_code == 200  # now cached, for less than CACHE_SECONDS
    time.sleep(max(0.0, expires_at - time.time()) + 0.1)
    assert_fault(get(api, LBS, token), 401, keystone, "invalid, expired or revoked")


def test_all_apis_share_the_authenticator(keystone: Keystone, server: QuadrigaServer, lb_of_a: dict[str, Any]) -> None:
    """The networking and key-manager APIs answer a bad token in their own error formats."""
    token = keystone.token("member-a", project="project-a")
    with httpx.Client(timeout=30, trust_env=False) as http:
        net = http.get(server.net_url + "/v2.0/networks", headers={"X-Auth-Token": "bogus"})
        assert net.status_code == 401 and "NeutronError" in net.json(), net.text
        assert net.headers["www-authenticate"] == f'Keystone uri="{keystone.auth_url}"'
        networks = http.get(server.net_url + "/v2.0/networks", headers={"X-Auth-Token": token}).json()["networks"]
        assert "private" in {n["name"] for n in networks}
        km = http.get(server.keymanager_url + "/v1/secrets", headers={"X-Auth-Token": "bogus"})
        assert km.status_code == 401 and km.headers["www-authenticate"].startswith("Keystone uri=")
        secrets = http.get(server.keymanager_url + "/v1/secrets", headers={"X-Auth-Token": token}).json()
        assert [s["name"] for s in secrets["secrets"]] == ["s-of-a"]  # stored by lb_of_a's CLI login


def test_keystone_down_is_503_within_the_timeout_then_recovers(
    keystone: Keystone, server: QuadrigaServer, api: httpx.Client
) -> None:
    cached = keystone.token("member-a", project="project-a")
    assert get(api, LBS, cached).status_code == 200
    unseen = [keystone.token("member-a", project="project-a") for _ in range(2)]

    keystone.pause()  # accepts connections, never answers
    try:
        started = time.monotonic()
        resp = get(api, LBS, unseen[0])
        assert time.monotonic() - started < TIMEOUT + 1.5
        assert_fault(resp, 503, keystone, "identity service")
        assert "no answer within" in resp.json()["faultstring"]
        assert get(api, LBS, cached).status_code == 200  # validated a moment ago: no need to ask
    finally:
        keystone.resume()
    assert get(api, LBS, unseen[0]).status_code == 200

    keystone.stop()  # connection refused
    try:
        started = time.monotonic()
        resp = get(api, LBS, unseen[1])
        assert time.monotonic() - started < TIMEOUT + 1.5
        assert_fault(resp, 503, keystone, "cannot connect")
        with httpx.Client(timeout=30, trust_env=False) as http:
            net = http.get(server.net_url + "/v2.0/networks", headers={"X-Auth-Token": unseen[1]})
        assert net.status_code == 503 and "identity service" in net.json()["NeutronError"]["message"]
    finally:
        keystone.start()
    assert get(api, LBS, unseen[1]).status_code == 200


def request_with(token: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [(b"x-auth-token", token.encode())]})


def test_a_wrong_service_password_is_503_saying_so(keystone: Keystone) -> None:
    auth = KeystoneAuth(keystone.service_settings(password="wrong"))
    try:
        with pytest.raises(ServiceUnavailable, match="service user 'quadriga' cannot log in.*check \\[keystone\\]"):
            auth.authenticate(request_with(keystone.token("member-a", project="project-a")))
    finally:
        auth.close()


def test_the_cache_keeps_at_most_cache_size_tokens(keystone: Keystone) -> None:
    auth = KeystoneAuth(keystone.service_settings(cache_size=1, timeout=0.5))
    first, second = (
        keystone.token(user, project=p) for user, p in (("member-a", "project-a"), ("member-b", "project-b"))
    )
    try:
        assert auth.authenticate(request_with(first)).project_id == keystone.projects["project-a"]
        ctx = auth.authenticate(request_with(second))
        assert (ctx.project_id, ctx.user_id) == (keystone.projects["project-b"], keystone.info["users"]["member-b"])
        assert {"member", "reader"} <= ctx.roles  # member implies reader in Keystone's default roles
        keystone.pause()
        try:
            assert auth.authenticate(request_with(second)).project_id == keystone.projects["project-b"]
            with pytest.raises(ServiceUnavailable):  # evicted by `second`: Keystone must be asked
                auth.authenticate(request_with(first))
        finally:
            keystone.resume()
    finally:
        auth.close()
