"""The key-manager API in-process (a TestClient over the real app, store and database): Barbican's answers,
project scoping, encryption at rest, the in-use guard, payload replacement and the bad inputs."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient

from quadriga.api.auth import NoAuth
from quadriga.db import models as m
from quadriga.db.migrate import upgrade
from quadriga.db.session import Database
from quadriga.keymanager import SecretNotFound
from quadriga.keymanager.api import create_app
from quadriga.keymanager.crypto import KeyFileError, PayloadCipher, cipher_for
from quadriga.keymanager.store import LocalSecrets
from tests.support.api_harness import _database, _drop
from tests.support.certs import TestCA

A, B = {"X-Project-Id": "project-a"}, {"X-Project-Id": "project-b"}
BASE = "http://testserver"
MARKER = "quadriga-payload-marker-7f3e"


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, LocalSecrets, Path, list]]:
    """The client, the store, its directory and the controller's wake-ups (one entry each)."""
    tmp = tmp_path_factory.mktemp("km")
    db = _database(tmp)
    upgrade(db.engine)
    store = LocalSecrets(db, cipher_for(tmp, []))
    wakes: list[None] = []
    app = create_app(store, NoAuth("demo"), wake=lambda: wakes.append(None))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, store, tmp, wakes
    _drop(db)


@pytest.fixture
def client(env) -> TestClient:
    return env[0]


@pytest.fixture
def store(env) -> LocalSecrets:
    return env[1]


def store_secret(client: TestClient, headers: dict = A, **body) -> str:
    r = client.post("/v1/secrets/", json=body, headers=headers)
    assert r.status_code == 201, r.text
    ref = r.json()["secret_ref"]
    assert r.headers["location"] == ref and ref.startswith(f"{BASE}/v1/secrets/")
    return ref


def pem_secret(client: TestClient, pem: str, headers: dict = A, name: str = "cert") -> str:
    return store_secret(
        client, headers, name=name, payload=pem, payload_content_type="text/plain", secret_type="certificate"
    )


def error(r, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == status and body["title"] and set(body) == {"code", "title", "description"}
    return body["description"]


def test_version_documents_answer_as_barbican_does(client):
    r = client.get("/")
    assert r.status_code == 300
    (v1,) = r.json()["versions"]["values"]
    assert v1["id"] == "v1" and v1["status"] == "stable" and v1["links"][0]["href"] == f"{BASE}/v1/"
    r = client.get("/", headers={"OpenStack-API-Version": "key-manager 1.1"})
    (v1,) = r.json()["versions"]
    assert (v1["status"], v1["min_version"], v1["max_version"]) == ("CURRENT", "1.0", "1.1")
    assert r.headers["openstack-api-version"] == "key-manager 1.1"
    assert client.get("/v1").json()["version"]["id"] == "v1"
    error(client.get("/", headers={"OpenStack-API-Version": "key-manager 9.9"}), 406)


def test_pem_secret_round_trip_and_metadata(client, store, ca):
    server = ca.issue("www.example.test", ["www.example.test"])
    ref = pem_secret(client, server.cert_pem)
    meta = client.get(ref.removeprefix(BASE), headers={**A, "OpenStack-API-Version": "key-manager 1.1"}).json()
    assert meta["secret_ref"] == ref and meta["status"] == "ACTIVE" and meta["secret_type"] == "certificate"
    assert meta["content_types"] == {"default": "text/plain"} and meta["consumers"] == []
    assert meta["name"] == "cert" and meta["created"] and meta["expiration"] is None
    payload = client.get(ref.removeprefix(BASE) + "/payload", headers={**A, "Accept": "text/plain"})
    assert payload.status_code == 200 and payload.headers["content-type"].startswith("text/plain")
    assert payload.text == server.cert_pem.strip()  # Barbican strips the JSON strings it stores
    # Old clients read the payload from the secret itself, choosing it with Accept.
    old = client.get(ref.removeprefix(BASE), headers={**A, "Accept": "text/plain"})
    assert old.text == server.cert_pem.strip()
    fetched = store.fetch(ref, "project-a")
    assert fetched.secret is not None and fetched.secret.payload == server.cert_pem.strip().encode()
    assert fetched.secret.content_type == "text/plain" and fetched.secret.secret_type == "certificate"


def test_pkcs12_base64_round_trip(client, store, ca):
    bundle = ca.issue("p12.example.test").pkcs12()
    ref = store_secret(
        client,
        payload=base64.b64encode(bundle).decode(),
        payload_content_type="application/octet-stream",
        payload_content_encoding="base64",
    )
    r = client.get(ref.removeprefix(BASE) + "/payload", headers={**A, "Accept": "application/octet-stream"})
    assert r.content == bundle and r.headers["content-type"] == "application/octet-stream"
    assert store.fetch(ref, "project-a").secret.payload == bundle
    # Binary payloads cannot be read as text.
    error(client.get(ref.removeprefix(BASE) + "/payload", headers={**A, "Accept": "text/plain"}), 406)


def test_payloads_are_encrypted_at_rest_and_never_logged(env, caplog):
    client, store, tmp, _ = env
    caplog.set_level(logging.DEBUG)
    ref = store_secret(client, payload=MARKER, payload_content_type="text/plain")
    secret_id = ref.rsplit("/", 1)[1]
    with store.db.read() as s:
        raw = s.get(m.Secret, secret_id).encrypted_payload
    assert raw and MARKER.encode() not in raw  # a Fernet token, not the payload
    assert store.cipher.decrypt(raw) == MARKER.encode()
    if store.db.is_sqlite:  # nor anywhere in the database's files
        for path in tmp.glob("test.sqlite*"):
            assert MARKER.encode() not in path.read_bytes()
    assert MARKER not in caplog.text
    assert oct((tmp / "secrets.key").stat().st_mode & 0o777) == "0o600"


def test_wrong_key_is_a_clear_error_naming_the_file_and_rotation_works(env, tmp_path):
    client, store, _, _ = env
    store_secret(client, payload="rotate me", payload_content_type="text/plain")
    new = tmp_path / "new.key"
    new.write_bytes(Fernet.generate_key())
    with pytest.raises(KeyFileError, match=str(new)):
        LocalSecrets(store.db, PayloadCipher([new])).check_key()
    rotated = LocalSecrets(store.db, PayloadCipher([new, *store.cipher.paths]))
    rotated.check_key()  # the old key still opens the old payloads
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    with pytest.raises(KeyFileError, match=f"{bad} does not hold a Fernet key"):
        PayloadCipher([bad])
    with pytest.raises(KeyFileError, match="missing.key"):
        PayloadCipher([tmp_path / "missing.key"])


def test_list_pages_and_filters_by_name(client):
    names = [f"page-{i}" for i in range(3)]
    for name in names:
        store_secret(client, {"X-Project-Id": "lister"}, name=name, payload="x", payload_content_type="text/plain")
    page = client.get("/v1/secrets?limit=2&offset=0", headers={"X-Project-Id": "lister"}).json()
    assert page["total"] == 3 and [s["name"] for s in page["secrets"]] == names[:2]
    assert page["next"] == f"{BASE}/v1/secrets?limit=2&offset=2" and "previous" not in page
    last = client.get("/v1/secrets?limit=2&offset=2", headers={"X-Project-Id": "lister"}).json()
    assert [s["name"] for s in last["secrets"]] == names[2:] and "next" not in last and last["previous"]
    one = client.get("/v1/secrets?name=page-1", headers={"X-Project-Id": "lister"}).json()
    assert one["total"] == 1 and one["secrets"][0]["name"] == "page-1"
    assert client.get("/v1/secrets", headers={"X-Project-Id": "nobody"}).json() == {"secrets": [], "total": 0}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"payload": "x", "payload_content_type": "application/x-unknown"}, 400, "payload_content_type is not one"),
        ({"payload": "x"}, 400, "'payload_content_type' must also be supplied"),
        (
            {
                "payload": "@@@not base64",
                "payload_content_type": "application/octet-stream",
                "payload_content_encoding": "base64",
            },
            400,
            "Invalid payload for payload_content_encoding",
        ),  # fmt: skip
        (
            {"payload": "eA==", "payload_content_type": "application/octet-stream", "payload_content_encoding": "gzip"},
            400,
            "payload_content_encoding",
        ),  # fmt: skip
        ({"payload": "x", "payload_content_type": "application/octet-stream"}, 400, "payload_content_encoding"),
        ({"payload": "  ", "payload_content_type": "text/plain"}, 400, "must be non empty"),
        ({"payload": "x", "payload_content_type": "text/plain", "secret_type": "bogus"}, 400, "secret_type"),
        ({"payload": "x", "payload_content_type": "text/plain", "expiration": "2001-01-01T00:00:00Z"}, 400, "before"),
        ({"payload": "x", "payload_content_type": "text/plain", "bit_length": -1}, 400, "bit_length"),
        ({"payload": "x" * (64 * 1024 + 1), "payload_content_type": "text/plain"}, 413, "too large"),
        (["not", "an", "object"], 400, "is not of type 'object'"),
        ({"expiration": "9999-12-31T23:59:59-05:00"}, 400, "Invalid date"),  # past year 9999 in UTC
        ({"name": "a\x00b"}, 400, "NUL"),  # PostgreSQL cannot store it
    ],
)
def test_bad_secrets_are_refused_and_nothing_is_stored(client, body, status, words):
    before = client.get("/v1/secrets", headers=A).json()["total"]
    assert words in error(client.post("/v1/secrets", json=body, headers=A), status)
    assert client.get("/v1/secrets", headers=A).json()["total"] == before


def test_garbage_and_huge_requests(client):
    before = client.get("/v1/secrets", headers=A).json()["total"]
    r = client.post("/v1/secrets", content=b"\x00garbage{", headers={**A, "Content-Type": "application/json"})
    assert error(r, 400) == "Malformed JSON"
    huge = base64.b64encode(b"\x01" * (10 * 1024 * 1024)).decode()
    body = {"payload": huge, "payload_content_type": "application/octet-stream", "payload_content_encoding": "base64"}
    assert "too large" in error(client.post("/v1/secrets", json=body, headers=A), 413)
    error(client.post("/v1/secrets", content=b"x=1", headers={**A, "Content-Type": "text/plain"}), 415)
    for text in (b"[" * 100_000 + b"]" * 100_000, b'{"name": "\\ud800"}'):  # too deep; a lone surrogate
        r = client.post("/v1/secrets", content=text, headers={**A, "Content-Type": "application/json"})
        assert error(r, 400) == "Malformed JSON"
    assert client.get("/v1/secrets", headers=A).json()["total"] == before
    for path in ("/v1/secrets/%00", "/v1/secrets?name=%00", "/v1/containers/x%00"):
        assert "NUL" in error(client.get(path, headers=A), 400)
    huge = "99999999999999999999999"  # past the database's integers: an empty page, not a 500
    assert client.get(f"/v1/secrets?offset={huge}&limit={huge}&bits={huge}", headers=A).json()["secrets"] == []


def test_another_projects_objects_are_not_found(client, store, ca):
    ref = pem_secret(client, ca.issue("b.example.test").cert_pem, headers=B)
    path = ref.removeprefix(BASE)
    for r in (
        client.get(path, headers=A),
        client.get(path + "/payload", headers=A),
        client.delete(path, headers=A),
        client.put(path, content=b"new", headers={**A, "Content-Type": "text/plain"}),
    ):
        assert error(r, 404) == "Secret not found."
    with pytest.raises(SecretNotFound):
        store.fetch(ref, "project-a")
    body = {"type": "certificate", "secret_refs": [{"name": "certificate", "secret_ref": ref}]}
    assert "doesn't exist" in error(client.post("/v1/containers", json=body, headers=A), 404)
    container = client.post("/v1/containers", json=body, headers=B).json()["container_ref"]
    assert error(client.get(container.removeprefix(BASE), headers=A), 404) == "Secrets container not found."
    with pytest.raises(SecretNotFound):
        store.fetch(container, "project-a")
    with pytest.raises(SecretNotFound):
        store.fetch("http://elsewhere/v2/images/whatever", "project-b")
    error(client.get("/v1/secrets/not-a-uuid", headers=B), 404)


def certificate_container(client: TestClient, ca: TestCA, headers: dict = A) -> tuple[str, str, str]:
    issued = ca.issue("tls.example.test", ["tls.example.test"])
    cert = pem_secret(client, issued.cert_pem, headers)
    key = store_secret(
        client, headers, payload=issued.key_pem, payload_content_type="text/plain", secret_type="private"
    )
    body = {
        "name": "tls",
        "type": "certificate",
        "secret_refs": [{"name": "certificate", "secret_ref": cert}, {"name": "private_key", "secret_ref": key}],
    }
    r = client.post("/v1/containers/", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["container_ref"], cert, key


def test_certificate_container_round_trip(client, store, ca):
    ref, cert, key = certificate_container(client, ca)
    shown = client.get(ref.removeprefix(BASE), headers=A).json()
    assert shown["container_ref"] == ref and shown["type"] == "certificate" and shown["status"] == "ACTIVE"
    assert {r["name"]: r["secret_ref"] for r in shown["secret_refs"]} == {"certificate": cert, "private_key": key}
    listed = client.get("/v1/containers?name=tls", headers=A).json()
    assert ref in [c["container_ref"] for c in listed["containers"]]
    fetched = store.fetch(ref, "project-a")
    assert fetched.container_type == "certificate" and set(fetched.secrets) == {"certificate", "private_key"}
    assert fetched.secrets["private_key"].payload.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert client.delete(ref.removeprefix(BASE), headers=A).status_code == 204
    error(client.get(ref.removeprefix(BASE), headers=A), 404)
    assert client.get(cert.removeprefix(BASE), headers=A).status_code == 200  # its secrets stay


def test_read_acls_let_the_users_they_name_read_and_only_the_project_changes_them(client, store, ca):
    """Barbican's ACL API, as Octavia's barbican_acl auth uses it: GET, then PUT with a user added."""
    ref, cert, _ = certificate_container(client, ca)
    quadriga = {"X-Project-Id": "service", "X-User-Id": "quadriga-user"}
    for target in (ref, cert):
        path = target.removeprefix(BASE)
        assert client.get(path + "/acl", headers=A).json() == {"read": {"project-access": True}}
        error(client.get(path, headers=quadriga), 404)
        r = client.put(path + "/acl", json={"read": {"users": ["quadriga-user"]}}, headers=A)
        assert r.status_code == 200 and r.json() == {"acl_ref": target + "/acl"}, r.text
        read = client.get(path + "/acl", headers=A).json()["read"]
        assert (read["users"], read["project-access"]) == (["quadriga-user"], True) and read["created"]
        assert client.get(path, headers=quadriga).status_code == 200
        # another project's user is not named: nothing; nor may anyone but the project see or change the ACL
        error(client.get(path, headers={**B, "X-User-Id": "someone"}), 404)
        error(client.get(path + "/acl", headers=quadriga), 404)
        error(client.put(path + "/acl", json={"read": {"users": ["x"]}}, headers=B), 404)
        error(client.delete(path, headers=quadriga), 404)
    assert client.get(cert.removeprefix(BASE) + "/payload", headers=quadriga).text.startswith("-----BEGIN")
    # PATCH changes what it names; DELETE drops the ACL
    path = cert.removeprefix(BASE)
    assert client.patch(path + "/acl", json={"read": {"project-access": False}}, headers=A).status_code == 200
    read = client.get(path + "/acl", headers=A).json()["read"]
    assert (read["users"], read["project-access"]) == (["quadriga-user"], False)
    assert client.delete(path + "/acl", headers=A).status_code == 200
    error(client.get(path, headers=quadriga), 404)
    for bad in ({"write": {}}, {"read": {"users": "x"}}, {"read": {"users": [1]}}, {"read": {"project-access": 1}}):
        assert "does not match schema 'ACL'" in error(client.put(path + "/acl", json=bad, headers=A), 400)
    error(client.get("/v1/orders/" + "0" * 32 + "/acl", headers=A), 404)
    # a deleted container takes its ACL with it
    assert client.delete(ref.removeprefix(BASE), headers=A).status_code == 204
    with store.db.read() as s:
        assert s.get(m.SecretACL, ref.rsplit("/", 1)[1]) is None


@pytest.mark.parametrize(
    ("refs", "words"),
    [
        ({"private_key": 0}, "minimum required reference names are 'certificate'"),
        ({"certificate": 0, "bogus": 1}, "reference names are allowed"),
        ({"certificate": 0, "intermediates": 0}, "Duplicate secret ids"),
    ],
)
def test_bad_containers_are_refused(client, ca, refs, words):
    secrets = [pem_secret(client, ca.issue(f"c{i}.test").cert_pem) for i in range(2)]
    body = {"type": "certificate", "secret_refs": [{"name": n, "secret_ref": secrets[i]} for n, i in refs.items()]}
    before = client.get("/v1/containers", headers=A).json()["total"]
    assert words in error(client.post("/v1/containers", json=body, headers=A), 400)
    assert client.get("/v1/containers", headers=A).json()["total"] == before
    error(client.post("/v1/containers", json={"name": "no type"}, headers=A), 400)


def add_users(db: Database, listener_refs: dict, pool_refs: dict) -> tuple[str, str]:
    """A listener and a pool with these refs, on an ACTIVE load balancer."""
    with db.write() as s:
        lb = m.LoadBalancer(project_id="project-a", provider="noop", provisioning_status="ACTIVE", applied_revision=1)
        s.add(lb)
        s.flush()
        listener = m.Listener(
            project_id="project-a",
            load_balancer_id=lb.id,
            protocol="TERMINATED_HTTPS",
            protocol_port=443,
            provisioning_status="ACTIVE",
            **listener_refs,
        )
        pool = m.Pool(
            project_id="project-a",
            load_balancer_id=lb.id,
            protocol="HTTP",
            lb_algorithm="ROUND_ROBIN",
            provisioning_status="ACTIVE",
            **pool_refs,
        )
        s.add_all([listener, pool])
    return listener.id, pool.id


def tls_users(client: TestClient, store: LocalSecrets, ca: TestCA, default_ref: str) -> tuple[str, ...]:
    """A listener with `default_ref` and an SNI certificate container, a pool with a CA secret: (the SNI
    container, its private_key secret, the CA secret, the listener's id, the pool's id)."""
    sni_container, _, sni_key = certificate_container(client, ca)
    ca_secret = pem_secret(client, ca.cert_pem, name="ca")
    listener_id, pool_id = add_users(
        store.db,
        {"default_tls_container_ref": default_ref, "sni_container_refs": [sni_container]},
        {"ca_tls_container_ref": ca_secret},
    )
    return sni_container, sni_key, ca_secret, listener_id, pool_id


def test_objects_in_use_cannot_be_deleted(client, store, ca):
    container, cert, key = certificate_container(client, ca)
    _, sni_key, ca_secret, listener_id, pool_id = tls_users(client, store, ca, container)
    for ref, user in ((container, listener_id), (key, listener_id), (sni_key, listener_id), (ca_secret, pool_id)):
        words = error(client.delete(ref.removeprefix(BASE), headers=A), 409)
        assert user in words and "in use" in words
    assert client.get(key.removeprefix(BASE) + "/payload", headers=A).status_code == 200  # nothing deleted
    with store.db.write() as s:
        s.get(m.Listener, listener_id).provisioning_status = "DELETED"
        s.get(m.Pool, pool_id).provisioning_status = "DELETED"
    assert client.delete(container.removeprefix(BASE), headers=A).status_code == 204
    assert client.delete(key.removeprefix(BASE), headers=A).status_code == 204
    assert client.delete(ca_secret.removeprefix(BASE), headers=A).status_code == 204


def test_put_replaces_the_payload_behind_the_same_ref(client, store, ca):
    old, new = ca.issue("renew.test"), ca.issue("renew.test")
    ref = pem_secret(client, old.cert_pem)
    path = ref.removeprefix(BASE)
    r = client.put(path, content=new.cert_pem.encode(), headers={**A, "Content-Type": "text/plain"})
    assert r.status_code == 204, r.text
    assert store.fetch(ref, "project-a").secret.payload == new.cert_pem.encode()
    bundle = new.pkcs12()
    r = client.put(
        path,
        content=base64.b64encode(bundle),
        headers={**A, "Content-Type": "application/octet-stream", "Content-Encoding": "base64"},
    )
    assert r.status_code == 204
    fetched = store.fetch(ref, "project-a").secret
    assert fetched.payload == bundle and fetched.content_type == "application/octet-stream"
    error(client.put(path, content=b"", headers={**A, "Content-Type": "text/plain"}), 400)
    error(client.put(path, content=b"{}", headers={**A, "Content-Type": "application/json"}), 415)
    error(client.put(path, content=b"x" * (64 * 1024 + 1), headers={**A, "Content-Type": "text/plain"}), 413)
    assert store.fetch(ref, "project-a").secret.payload == bundle
    # A secret stored without a payload is filled by PUT, as in Barbican.
    empty = store_secret(client, name="later")
    error(client.get(empty.removeprefix(BASE) + "/payload", headers=A), 404)
    assert "content_types" not in client.get(empty.removeprefix(BASE), headers=A).json()
    r = client.put(empty.removeprefix(BASE), content=b"filled", headers={**A, "Content-Type": "text/plain"})
    assert r.status_code == 204  # a secret no listener or pool uses takes any payload, as in Barbican
    assert store.fetch(empty, "project-a").secret.payload == b"filled"


def put_payload(client: TestClient, ref: str, payload: bytes | str) -> object:
    """PUT a PKCS12 bundle (bytes) or PEM text."""
    content_type = "text/plain" if isinstance(payload, str) else "application/octet-stream"
    return client.put(ref.removeprefix(BASE), content=payload, headers={**A, "Content-Type": content_type})


def pkcs12_secret(client: TestClient, bundle: bytes) -> str:
    return store_secret(
        client,
        payload=base64.b64encode(bundle).decode(),
        payload_content_type="application/octet-stream",
        payload_content_encoding="base64",
    )


def statuses(store: LocalSecrets, listener_id: str, pool_id: str) -> tuple:
    """(load balancer status, revision, listener status, pool status)."""
    with store.db.read() as s:
        listener, pool = s.get(m.Listener, listener_id), s.get(m.Pool, pool_id)
        lb = s.get(m.LoadBalancer, listener.load_balancer_id)
        return lb.provisioning_status, lb.revision, listener.provisioning_status, pool.provisioning_status


def test_a_secret_in_use_takes_only_a_payload_every_user_can_load(env, ca):
    client, store, _, wakes = env
    www, other = ca.issue("www.renew.test", ["www.renew.test"]), ca.issue("other.renew.test", ["other.renew.test"])
    p12 = pkcs12_secret(client, www.pkcs12())
    _, key, ca_secret, listener_id, pool_id = tls_users(client, store, ca, p12)
    before, woken = statuses(store, listener_id, pool_id), len(wakes)
    expired = ca.issue("www.renew.test", ["www.renew.test"], days=-1).pkcs12()
    for ref, payload, user, reason in (
        (p12, "not a certificate", listener_id, "neither a PKCS12 bundle nor PEM"),
        (p12, www.cert_pem + other.key_pem, listener_id, "does not match the certificate"),
        (p12, expired, listener_id, "expired on"),
        (key, other.key_pem, f"{listener_id}, which uses secret {key.rsplit('/', 1)[1]} (sni_container_refs)", "match"),
        (ca_secret, www.cert_pem, pool_id, "is not a CA certificate"),
    ):
        old = client.get(ref.removeprefix(BASE) + "/payload", headers=A).content
        words = error(put_payload(client, ref, payload), 400)
        assert user in words and reason in words and "PRIVATE KEY" not in words, words
        assert client.get(ref.removeprefix(BASE) + "/payload", headers=A).content == old
    assert statuses(store, listener_id, pool_id) == before and len(wakes) == woken


def test_a_renewed_secret_in_use_is_rolled_out_and_waits_for_a_busy_load_balancer(env, ca, caplog):
    client, store, _, wakes = env
    p12 = pkcs12_secret(client, ca.issue("www.renew.test", ["www.renew.test"]).pkcs12())
    listener_id, pool_id = add_users(store.db, {"default_tls_container_ref": p12}, {})
    renewed, woken = ca.issue("www.renew.test", ["www.renew.test"]).pkcs12(), len(wakes)
    caplog.set_level(logging.INFO, "quadriga.keymanager")
    assert put_payload(client, p12, renewed).status_code == 204
    # The load balancer goes PENDING_UPDATE with the listener as the change's subject; the controller is woken.
    assert statuses(store, listener_id, pool_id) == ("PENDING_UPDATE", 2, "PENDING_UPDATE", "ACTIVE")
    assert len(wakes) == woken + 1
    with store.db.read() as s:
        lb_id = s.get(m.Listener, listener_id).load_balancer_id
    assert len([r for r in caplog.records if lb_id in r.getMessage()]) == 1
    # While that change is applied, another replacement is refused: the apply reads one payload or the other.
    words = error(put_payload(client, p12, ca.issue("www.renew.test", ["www.renew.test"]).pkcs12()), 409)
    assert lb_id in words and "retry" in words
    assert client.get(p12.removeprefix(BASE) + "/payload", headers=A).content == renewed
    assert len(wakes) == woken + 1


def test_an_expired_secret_is_gone(client, store):
    ref = store_secret(client, payload="soon", payload_content_type="text/plain", expiration="2999-01-01T00:00:00Z")
    assert client.get(ref.removeprefix(BASE), headers=A).json()["expiration"] == "2999-01-01T00:00:00"
    with store.db.write() as s:
        s.get(m.Secret, ref.rsplit("/", 1)[1]).expiration = m.utcnow()
    error(client.get(ref.removeprefix(BASE), headers=A), 404)
    with pytest.raises(SecretNotFound):
        store.fetch(ref, "project-a")


def test_paging_links_keep_the_filters_encoded(client):
    headers = {"X-Project-Id": "pager"}
    for _ in range(2):
        store_secret(client, headers, name="a b&c", payload="x", payload_content_type="text/plain")
    page = client.get("/v1/secrets", params={"name": "a b&c", "limit": 1}, headers=headers).json()
    assert page["total"] == 2 and page["next"] == f"{BASE}/v1/secrets?limit=1&offset=1&name=a+b%26c"


def test_deleting_a_secret_takes_it_out_of_unused_containers(client, store, ca):
    container, cert, key = certificate_container(client, ca)
    assert client.delete(key.removeprefix(BASE), headers=A).status_code == 204
    shown = client.get(container.removeprefix(BASE), headers=A).json()
    assert [r["secret_ref"] for r in shown["secret_refs"]] == [cert]  # as in Barbican


def test_project_lookups_are_refused_so_clients_use_names_as_ids(client):
    # The CLI resolves project names at the auth endpoint, which is this API (see config.clouds_yaml).
    assert "No identity service" in error(client.get("/v1/projects/demo"), 403)
    error(client.get("/v1/projects", params={"name": "demo"}), 403)
