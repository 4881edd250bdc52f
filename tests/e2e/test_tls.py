"""TLS as a tenant uses it: certificates stored in quadriga's Barbican-compatible store (a PKCS12 secret, a PEM
certificate container, a CA and a CRL), a load balancer with TERMINATED_HTTPS listeners and a re-encrypting pool
created through the Octavia API, and real TLS clients (Python ssl, httpx with HTTP/2, `openssl s_client`)
through the VIP of a real engine.

One load balancer for the module:
  443   TERMINATED_HTTPS: default certificate www (PKCS12 with its intermediate), SNI certificate api (PEM
        container), ALPN h2 and http/1.1, default pool "plain" (an HTTP member).
  8443  TERMINATED_HTTPS, client authentication MANDATORY with the client CA and its CRL, pool "plain".
  9443  TERMINATED_HTTPS to pool "reencrypt": tls_enabled, the member verified against its CA, the engine's
        client certificate presented, an HTTPS health monitor."""

from __future__ import annotations

import base64
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from tests.support.certs import Issued, TestCA
from tests.support.dataplane import Cloud, check_target
from tests.support.servers import SelfSigned, TlsBackend
from tests.support.traffic import connection, parse, read_all, request_bytes, tls_get

WWW, API = "www.tls-e2e.test", "api.tls-e2e.test"
FRONT, MUTUAL, REENCRYPT = 443, 8443, 9443


@dataclass
class Pki:
    root: TestCA
    clients: TestCA
    members: TestCA
    www: Issued
    api: Issued
    alice: Issued
    mallory: Issued  # revoked by the clients CA's CRL
    engine_client: Issued
    directory: Path

    def file(self, name: str, content: str) -> str:
        path = self.directory / name
        path.write_text(content)
        return str(path)


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    root = TestCA("tls-e2e root")
    clients, members = TestCA("tls-e2e clients"), TestCA("tls-e2e members")
    mallory = clients.issue("mallory", client=True)
    clients.revoke(mallory)
    with tempfile.TemporaryDirectory(prefix="qa-tls-") as directory:
        yield Pki(
            root=root,
            clients=clients,
            members=members,
            www=TestCA("tls-e2e intermediate", parent=root).issue(WWW, [WWW]),
            api=root.issue(API, [API]),
            alice=clients.issue("alice", client=True),
            mallory=mallory,
            engine_client=clients.issue("engine-client", client=True),
            directory=Path(directory),
        )


# --- the key manager, as a tenant uses it -----------------------------------------------------------------------------


class KeyManager:
    def __init__(self, cloud: Cloud) -> None:
        self.http = httpx.Client(base_url=cloud.server.keymanager_url + "/v1", timeout=30, trust_env=False)

    def store(self, name: str, payload: bytes | str) -> str:
        """A secret: bytes as a base64 application/octet-stream payload (a PKCS12), text as text/plain (PEM)."""
        if isinstance(payload, bytes):
            body = {
                "payload": base64.b64encode(payload).decode(),
                "payload_content_type": "application/octet-stream",
                "payload_content_encoding": "base64",
            }
        else:
            body = {"payload": payload, "payload_content_type": "text/plain"}
        response = self.http.post("/secrets", json={"name": name, **body})
        assert response.status_code == 201, response.text
        return response.json()["secret_ref"]

    def container(self, name: str, **refs: str) -> str:
        secret_refs = [{"name": key, "secret_ref": ref} for key, ref in refs.items()]
        response = self.http.post("/containers", json={"name": name, "type": "certificate", "secret_refs": secret_refs})
        assert response.status_code == 201, response.text
        return response.json()["container_ref"]


@dataclass
class Tls:
    lb: dict
    vip: str
    refs: dict[str, str]
    member: TlsBackend
    keys: KeyManager


@pytest.fixture(scope="module")
def tls(cloud: Cloud, pki: Pki) -> Iterator[Tls]:
    keys = KeyManager(cloud)
    refs = {
        "www": keys.store("www", pki.www.pkcs12()),
        "api_cert": keys.store("api cert", pki.api.cert_pem),
        "api_key": keys.store("api key", pki.api.key_pem),
        "client_ca": keys.store("client ca", pki.clients.cert_pem),
        "client_crl": keys.store("client crl", pki.clients.crl_pem()),
        "member_ca": keys.store("member ca", pki.members.cert_pem),
        "engine_client": keys.store("engine client", pki.engine_client.pkcs12()),
    }
    refs["api"] = keys.container("api", certificate=refs["api_cert"], private_key=refs["api_key"])
    plain = cloud.backend("tls-e2e-plain")
    # The engine passes the client's server name on to TLS members (as Octavia): the member's certificate is
    # verified against that name, so it carries the public name too.
    issued = pki.members.issue("member.tls-e2e.test", ["member.tls-e2e.test", WWW])
    member = TlsBackend(
        "tls-e2e-member", cloud.gateway, certificate=SelfSigned(issued.cert_pem.encode(), issued.key_pem.encode())
    )
    member.context.verify_mode = ssl.CERT_REQUIRED  # the engine must present its client certificate
    member.context.load_verify_locations(cadata=pki.clients.cert_pem)
    member.start()

    def listener(port: int, pool: dict, **fields) -> dict:
        return {
            "protocol": "TERMINATED_HTTPS",
            "protocol_port": port,
            "default_tls_container_ref": refs["www"],
            "default_pool": pool,
            **fields,
        }

    plain_pool = {"name": "plain", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "members": [cloud.member(plain)]}
    reencrypt_pool = {
        "name": "reencrypt",
        "protocol": "HTTP",
        "lb_algorithm": "ROUND_ROBIN",
        "tls_enabled": True,
        "ca_tls_container_ref": refs["member_ca"],
        "tls_container_ref": refs["engine_client"],
        "members": [cloud.member(member)],
        "healthmonitor": {"type": "HTTPS", "delay": 1, "timeout": 1, "max_retries": 1, "url_path": "/"},
    }
    lb = cloud.create_lb(
        name="tls-e2e",
        listeners=[
            listener(FRONT, plain_pool, sni_container_refs=[refs["api"]], alpn_protocols=["h2", "http/1.1"]),
            listener(
                MUTUAL,
                {**plain_pool, "name": "plain-mutual"},
                client_authentication="MANDATORY",
                client_ca_tls_container_ref=refs["client_ca"],
                client_crl_container_ref=refs["client_crl"],
            ),
            listener(REENCRYPT, reencrypt_pool),
        ],
    )
    try:
        yield Tls(lb, lb["vip_address"], refs, member, keys)
    finally:
        cloud.delete_lb(lb["id"])
        member.stop()
        keys.http.close()


# --- clients ----------------------------------------------------------------------------------------------------------


def client_context(pki: Pki, client: Issued | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the names are checked by the tests (the VIP is an address)
    ctx.load_verify_locations(cadata=pki.root.cert_pem)
    if client is not None:
        ctx.load_cert_chain(pki.file("client.crt", client.cert_pem), pki.file("client.key", client.key_pem))
    return ctx


def https(pki: Pki, vip: str, port: int, server_name: str | None = WWW, client: Issued | None = None):
    """One GET over a new TLS connection: (the served certificate, the answer)."""
    with (
        connection(vip, port) as sock,
        client_context(pki, client).wrap_socket(sock, server_hostname=server_name) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
        conn.sendall(request_bytes("/", host=server_name or vip))
        raw = read_all(conn)
        if not raw:
            raise ConnectionError("the engine closed the connection without an answer")
        return x509.load_der_x509_certificate(der), parse(raw)


def common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def refused(pki: Pki, vip: str, port: int, client: Issued | None) -> bool:
    try:
        https(pki, vip, port, client=client)
    except (ssl.SSLError, ConnectionError):
        return True
    return False


# --- the tests --------------------------------------------------------------------------------------------------------


def test_sni_picks_the_stored_certificate_and_h2_is_negotiated(tls: Tls, pki: Pki):
    cert, answer = https(pki, tls.vip, FRONT, server_name=API)  # from the PEM container
    assert (common_name(cert), answer.status, answer.text.strip()) == (API, 200, "tls-e2e-plain")
    cert, _ = https(pki, tls.vip, FRONT, server_name=WWW)  # from the PKCS12, served with its intermediate
    assert common_name(cert) == WWW
    cert, _ = https(pki, tls.vip, FRONT, server_name="unknown.tls-e2e.test")
    assert common_name(cert) == WWW  # the default certificate
    check_target(tls.vip)
    with httpx.Client(verify=client_context(pki), http2=True, trust_env=False, timeout=10) as client:
        response = client.get(f"https://{tls.vip}:{FRONT}/")
    assert (response.http_version, response.text.strip()) == ("HTTP/2", "tls-e2e-plain")
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"{tls.vip}:{FRONT}", "-servername", API]
        + ["-CAfile", pki.file("ca", pki.root.cert_pem)],
        input="",
        capture_output=True,
        text=True,
        timeout=15,
    ).stdout
    assert f"CN = {API}" in out and "Verify return code: 0 (ok)" in out


def test_mutual_tls_accepts_a_good_client_and_refuses_none_and_revoked(tls: Tls, pki: Pki):
    _, answer = https(pki, tls.vip, MUTUAL, client=pki.alice)
    assert answer.status == 200
    assert refused(pki, tls.vip, MUTUAL, client=None)
    assert refused(pki, tls.vip, MUTUAL, client=pki.mallory)  # revoked by the stored CRL


def test_a_reencrypting_pool_talks_tls_to_its_member_with_the_engine_certificate(cloud: Cloud, tls: Tls, pki: Pki):
    cloud.wait_member_status(tls.lb["id"], {"tls-e2e-member": "ONLINE"})  # the HTTPS health monitor
    _, answer = https(pki, tls.vip, REENCRYPT)
    assert (answer.status, answer.text.strip()) == (200, "tls-e2e-member")
    presented = [c for c in tls.member.client_certificates if c]
    assert presented, "the member saw no client certificate"
    assert presented[-1]["subject"] == ((("commonName", "engine-client"),),)


def test_a_secret_in_use_cannot_be_deleted(tls: Tls):
    for ref in (tls.refs["www"], tls.refs["api"], tls.refs["api_key"], tls.refs["client_crl"], tls.refs["member_ca"]):
        path = ref.split("/v1", 1)[1]
        response = tls.keys.http.delete(path)
        assert response.status_code == 409, (ref, response.text)
        assert response.json()["code"] == 409


def test_a_renewed_certificate_is_served_without_a_listener_update_with_no_failed_request(
    cloud: Cloud, tls: Tls, pki: Pki
):
    """Replacing the payload behind the ref is enough: the key manager marks the load balancer for an update
    and new handshakes get the renewed certificate within seconds, no request failing meanwhile. Re-sending
    the ref in a listener update (Octavia's way, needed with another Barbican) keeps serving it."""
    renewed = TestCA("tls-e2e root").issue(WWW, [WWW])  # a new CA: the clients below do not verify
    new = renewed.cert.public_bytes(serialization.Encoding.DER)
    failures: list[BaseException] = []
    served: list[tuple[float, bytes]] = []  # (when, the certificate) of each answered request
    done = threading.Event()

    def hammer() -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        deadline = time.monotonic() + 90
        while not done.is_set() and time.monotonic() < deadline:
            try:
                with connection(tls.vip, FRONT) as sock, ctx.wrap_socket(sock, server_hostname=WWW) as conn:
                    der = conn.getpeercert(binary_form=True)
                    conn.sendall(request_bytes("/"))
                    assert parse(read_all(conn)).status == 200
                served.append((time.monotonic(), der))
            except (OSError, AssertionError) as exc:
                failures.append(exc)

    def wait_until(condition: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.02)

    found = cloud.api.get("/v2/lbaas/listeners", params={"loadbalancer_id": tls.lb["id"]}).json()["listeners"]
    listeners = {li["protocol_port"]: li["id"] for li in found}
    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        wait_until(lambda: len(served) >= 5, 20)
        put_at = time.monotonic()
        path = tls.refs["www"].split("/v1", 1)[1]
        response = tls.keys.http.put(
            path, content=renewed.pkcs12(), headers={"Content-Type": "application/octet-stream"}
        )
        assert response.status_code == 204, response.text
        wait_until(lambda: any(der == new for _, der in served), 15)
        first = next((when for when, der in served if der == new), None)
        assert first is not None, "the renewed certificate was not served within 15 s"
        wait_until(lambda: sum(der == new for _, der in served) >= 20, 20)
        cloud.wait_active(tls.lb["id"])
        body = {"listener": {"default_tls_container_ref": tls.refs["www"]}}
        cloud.change("PUT", f"/v2/lbaas/listeners/{listeners[FRONT]}", tls.lb["id"], body)
        after_update = len(served)
        wait_until(lambda: len(served) >= after_update + 10, 20)
    finally:
        done.set()
        thread.join(timeout=100)
    assert failures == [], f"{len(failures)} of {len(served) + len(failures)} requests failed: {failures[:3]}"
    assert first - put_at < 5, f"the renewed certificate was served {first - put_at:.1f} s after the PUT"
    stale = [when - first for when, der in served if when > first and der != new]
    assert stale == [], f"the old certificate was served after the renewed one: {stale}"
    assert len(served) >= after_update + 10 and all(der == new for _, der in served[after_update:])
    der, _ = tls_get(tls.vip, FRONT, server_name=WWW)
    assert der == new


def test_a_listener_with_an_unusable_stored_certificate_is_refused_and_nothing_is_stored(cloud: Cloud, tls: Tls):
    garbage = tls.keys.store("garbage", "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    before = cloud.api.get(f"/v2/lbaas/listeners?loadbalancer_id={tls.lb['id']}").json()["listeners"]
    body = {
        "loadbalancer_id": tls.lb["id"],
        "protocol": "TERMINATED_HTTPS",
        "protocol_port": 10443,
        "default_tls_container_ref": garbage,
    }
    response = cloud.api.post("/v2/lbaas/listeners", json={"listener": body})
    assert response.status_code == 400, response.text
    assert response.json()["faultstring"].startswith(f"Could not retrieve certificate: ['{garbage}']")
    assert cloud.api.get(f"/v2/lbaas/listeners?loadbalancer_id={tls.lb['id']}").json()["listeners"] == before
    assert (
        cloud.api.get(f"/v2/lbaas/loadbalancers/{tls.lb['id']}").json()["loadbalancer"]["provisioning_status"]
        == "ACTIVE"
    )
