"""TLS through a real engine: one agent and one HAProxy engine for the module, real TLS clients (Python ssl,
httpx with HTTP/2, `openssl s_client`), members on loopback (plain HTTP, and TLS members that ask for the
engine's client certificate).

The engine's listeners, on one VIP:
  8443  TERMINATED_HTTPS, default certificate www + SNI certificate api, TLSv1.3 only, ALPN h2 and http/1.1,
        HSTS, client authentication OPTIONAL (client CA + CRL), X-SSL-* headers; SSL_* L7 rules route a
        client with a certificate to pool "certified", one whose CN is "admin" to pool "admins".
  9443  TERMINATED_HTTPS, client authentication MANDATORY (client CA + CRL), default pool "plain".
  8444  TERMINATED_HTTPS to pool "reencrypt": TLS members verified against their CA, the engine's client
        certificate presented, an HTTPS health monitor.
  8080  HTTP to pool "wrongca": the same TLS member verified against a CA that did not sign it."""

from __future__ import annotations

import json
import logging
import shutil
import ssl
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from quadriga.agent.agent import Agent
from quadriga.agent.engine import EngineRejected
from quadriga.agent.haproxy import Haproxy
from quadriga.certs.tls import TLSBundle
from quadriga.engine import spec as s
from quadriga.network.drivers.loopback import LoopbackDriver
from tests.agent.helpers import OPTIONS, Backend, engines_state_dir, new_vip, wait_for
from tests.support.certs import Issued, TestCA
from tests.support.servers import SelfSigned, TlsBackend
from tests.support.traffic import Answer, KeepAlive, connection, parse, read_all, request_bytes

ENGINE = "tls-engine"
OPTIONAL, MANDATORY, REENCRYPT, PLAIN_HTTP = 8443, 9443, 8444, 8080
WWW, API = "www.example.test", "api.example.test"


# --- the PKI, the members and the engine ---------------------------------------------------------------------------


@dataclass
class Pki:
    root: TestCA  # signs the engine's server certificates (through an intermediate for www)
    clients: TestCA  # the listeners' client CA
    members: TestCA  # signs the TLS members' certificates
    www: Issued
    api: Issued
    alice: Issued  # a good client
    admin: Issued  # a good client named "admin"
    mallory: Issued  # revoked
    eve: Issued  # from a CA nobody trusts
    engine_client: Issued  # what the engine presents to TLS members
    crl: str  # the client CA's, revoking mallory (made once: every spec of the module carries the same file)
    directory: Path  # PEM files for the clients

    def file(self, name: str, content: str) -> str:
        path = self.directory / name
        path.write_text(content)
        path.chmod(0o600)
        return str(path)

    def client_files(self, issued: Issued) -> tuple[str, str]:
        cn = issued.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        return self.file(f"{cn}.crt", issued.cert_pem + issued.chain_pem), self.file(f"{cn}.key", issued.key_pem)


def bundle(cert_id: str, issued: Issued, names: tuple[str, ...] = ()) -> s.CertificateSpec:
    pem = TLSBundle(issued.cert_pem, issued.key_pem, (issued.chain_pem,) if issued.chain else (), names).combined_pem()
    return s.CertificateSpec(id=cert_id, kind="certificate", pem=pem, names=names)


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    root = TestCA("tls test root")
    intermediate = TestCA("tls test intermediate", parent=root)
    clients, members = TestCA("tls test clients"), TestCA("tls test members")
    mallory = clients.issue("mallory", client=True)
    clients.revoke(mallory)
    directory = Path(tempfile.mkdtemp(prefix="qa-pki-"))
    try:
        yield Pki(
            root=root,
            clients=clients,
            members=members,
            www=intermediate.issue(WWW, [WWW]),
            api=root.issue(API, [API]),
            alice=clients.issue("alice", client=True),
            admin=clients.issue("admin", client=True),
            mallory=mallory,
            eve=TestCA("nobody trusts this").issue("eve", client=True),
            engine_client=clients.issue("engine-client", client=True),
            crl=clients.crl_pem(),
            directory=directory,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Members:
    plain: Backend
    certified: Backend
    admins: Backend
    tls: TlsBackend


def tls_member(pki: Pki, name: str) -> TlsBackend:
    """A started TLS member with a certificate of the members' CA that asks for a client certificate."""
    # The engine passes the client's server name on and verifies the member against it (as Octavia).
    issued = pki.members.issue(name, [WWW])
    member = TlsBackend(name, certificate=SelfSigned(issued.cert_pem.encode(), issued.key_pem.encode()))
    member.context.verify_mode = ssl.CERT_OPTIONAL
    member.context.load_verify_locations(cadata=pki.clients.cert_pem)
    return member.start()


@pytest.fixture(scope="module")
def members(pki: Pki) -> Iterator[Members]:
    started = Members(Backend("plain"), Backend("certified"), Backend("admins"), tls_member(pki, "tls-member"))
    try:
        yield started
    finally:
        for backend in (started.plain, started.certified, started.admins, started.tls):
            backend.stop()


def _pool(pool_id: str, member: Backend, **kw) -> s.PoolSpec:
    return s.PoolSpec(
        id=pool_id,
        protocol="HTTP",
        lb_algorithm="ROUND_ROBIN",
        members=(s.MemberSpec(id=member.name, address="127.0.0.1", protocol_port=member.port),),
        **kw,
    )


def _tls_listener(listener_id: str, port: int, pool_id: str, default: str, **kw) -> s.ListenerSpec:
    tls = kw.pop("tls", {})
    return s.ListenerSpec(
        id=listener_id,
        protocol="TERMINATED_HTTPS",
        protocol_port=port,
        default_pool_id=pool_id,
        tls=s.ListenerTLSSpec(default_certificate=default, **tls),
        **kw,
    )


def _rule(rule_id: str, rule_type: str, value: str, **kw) -> s.L7RuleSpec:
    return s.L7RuleSpec(id=rule_id, type=rule_type, compare_type="EQUAL_TO", value=value, **kw)


def engine_spec(pki: Pki, members: Members, *, revision: int = 1, www: Issued | None = None) -> s.EngineSpec:
    https_check = s.HealthMonitorSpec(type="HTTPS", delay=1, timeout=1, max_retries=1, max_retries_down=1)
    client_auth = {"client_ca": "ca-clients", "client_crl": "crl-clients"}
    # A renewed certificate is new content: a new file (real specs name files by their content digest).
    www_id = "crt-www" if www is None else f"crt-www-{revision}"
    optional = _tls_listener(
        "optional",
        OPTIONAL,
        "plain",
        www_id,
        tls={
            "sni_certificates": ("crt-api",),
            "versions": ("TLSv1.3",),
            "alpn_protocols": ("h2", "http/1.1"),
            "client_authentication": "OPTIONAL",
            "hsts_max_age": 31536000,
            "hsts_include_subdomains": True,
            **client_auth,
        },
        insert_headers=("X-Forwarded-Proto", "X-SSL-Client-CN", "X-SSL-Client-Has-Cert", "X-SSL-Client-Verify"),
        l7policies=(
            s.L7PolicySpec(
                id="admins",
                action="REDIRECT_TO_POOL",
                position=1,
                redirect_pool_id="admins",
                rules=(_rule("cn-admin", "SSL_DN_FIELD", "admin", key="CN"),),
            ),
            s.L7PolicySpec(
                id="certified",
                action="REDIRECT_TO_POOL",
                position=2,
                redirect_pool_id="certified",
                rules=(_rule("has-cert", "SSL_CONN_HAS_CERT", "True"), _rule("verified", "SSL_VERIFY_RESULT", "0")),
            ),
        ),
    )
    mandatory = _tls_listener(
        "mandatory", MANDATORY, "plain", www_id, tls={"client_authentication": "MANDATORY", **client_auth}
    )
    reencrypt = _tls_listener("reencrypt", REENCRYPT, "reencrypt", www_id)
    plain_http = s.ListenerSpec(id="http", protocol="HTTP", protocol_port=PLAIN_HTTP, default_pool_id="wrongca")
    certificates = (
        bundle(www_id, www or pki.www, (WWW,)),
        bundle("crt-api", pki.api, (API,)),
        bundle("crt-engine", pki.engine_client),
        s.CertificateSpec(id="ca-clients", kind="ca", pem=pki.clients.cert_pem),
        s.CertificateSpec(id="crl-clients", kind="crl", pem=pki.crl),
        s.CertificateSpec(id="ca-members", kind="ca", pem=pki.members.cert_pem),
        s.CertificateSpec(id="ca-root", kind="ca", pem=pki.root.cert_pem),
    )
    return s.EngineSpec(
        revision=revision,
        loadbalancer_id="lb",
        vips=(VIP,),
        listeners=(optional, mandatory, reencrypt, plain_http),
        pools=(
            _pool("plain", members.plain),
            _pool("certified", members.certified),
            _pool("admins", members.admins),
            _pool(
                "reencrypt",
                members.tls,
                health_monitor=https_check,
                tls=s.PoolTLSSpec(certificate="crt-engine", ca="ca-members"),
            ),
            _pool("wrongca", members.tls, health_monitor=https_check, tls=s.PoolTLSSpec(ca="ca-root")),
        ),
        certificates=certificates,
    )


VIP = new_vip()


@pytest.fixture(scope="module")
def engine(pki: Pki, members: Members) -> Iterator[Agent]:
    with engines_state_dir() as state_dir:
        agent = Agent(state_dir, LoopbackDriver(), options=OPTIONS)
        try:
            agent.apply(ENGINE, engine_spec(pki, members))
            yield agent
        finally:
            agent.shutdown()


# --- clients -------------------------------------------------------------------------------------------------------


@dataclass
class Reply:
    answer: Answer
    server_cn: str
    version: str | None
    alpn: str | None


def context(pki: Pki, client: Issued | None = None, *, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client that verifies the engine's certificate against the root CA (names are checked by the tests)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=pki.root.cert_pem)
    if client is not None:
        ctx.load_cert_chain(*pki.client_files(client))
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


def unverified() -> ssl.SSLContext:
    """A client that takes any certificate (the renewed one comes from another CA)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


def served_certificate(port: int) -> bytes:
    """The certificate (DER) the engine serves for WWW, after a complete GET."""
    with connection(VIP, port) as sock, unverified().wrap_socket(sock, server_hostname=WWW) as tls:
        tls.sendall(request_bytes("/"))
        assert parse(read_all(tls)).status == 200
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


def https_get(
    pki: Pki,
    port: int,
    path: str = "/",
    *,
    server_name: str | None = WWW,
    client: Issued | None = None,
    max_version: ssl.TLSVersion | None = None,
) -> Reply:
    ctx = context(pki, client, max_version=max_version)
    ctx.set_alpn_protocols(["http/1.1"])
    with connection(VIP, port) as sock, ctx.wrap_socket(sock, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        cn = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        tls.sendall(request_bytes(path, host=server_name or VIP))
        raw = read_all(tls)
        if not raw:
            raise ConnectionError("the engine closed the connection without an answer")
        return Reply(parse(raw), str(cn), tls.version(), tls.selected_alpn_protocol())


def refused(pki: Pki, port: int, **kw) -> bool:
    """The engine refused the handshake (with TLS 1.3 a refused client certificate shows at the first read)."""
    try:
        https_get(pki, port, **kw)
    except (ssl.SSLError, ConnectionError):
        return True
    return False


def s_client(pki: Pki, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"{VIP}:{port}", "-CAfile", pki.file("root.pem", pki.root.cert_pem), *args],
        input="",
        capture_output=True,
        text=True,
        timeout=15,
    )


# --- TERMINATED_HTTPS ----------------------------------------------------------------------------------------------


def test_sni_picks_the_certificate_and_the_default_serves_unknown_names(engine, pki):
    assert https_get(pki, OPTIONAL, server_name=API).server_cn == API
    assert https_get(pki, OPTIONAL, server_name=WWW).server_cn == WWW
    assert https_get(pki, OPTIONAL, server_name="unknown.example.test").server_cn == WWW
    assert https_get(pki, OPTIONAL, server_name=None).server_cn == WWW
    # openssl s_client verifies the chain (www comes with its intermediate) and sees the same choice.
    api = s_client(pki, OPTIONAL, "-servername", API)
    assert f"subject=CN = {API}" in api.stdout and "Verify return code: 0 (ok)" in api.stdout
    other = s_client(pki, OPTIONAL, "-servername", "other.example.test")
    assert f"subject=CN = {WWW}" in other.stdout and "Verify return code: 0 (ok)" in other.stdout


def test_tls_versions_are_enforced(engine, pki):
    assert https_get(pki, OPTIONAL).version == "TLSv1.3"
    assert refused(pki, OPTIONAL, max_version=ssl.TLSVersion.TLSv1_2)
    assert s_client(pki, OPTIONAL, "-tls1_2").returncode != 0
    assert s_client(pki, OPTIONAL, "-tls1_3").returncode == 0
    assert https_get(pki, MANDATORY, client=pki.alice, max_version=ssl.TLSVersion.TLSv1_2).version == "TLSv1.2"


def lowered(echo: str) -> dict[str, str]:
    """The headers a member's /echo saw, by lower-case name (HAProxy sends HTTP/2 requests' names lower-case)."""
    return {name.lower(): value for name, value in json.loads(echo).items()}


def test_h2_is_negotiated_and_hsts_and_x_ssl_headers_are_sent(engine, pki, members):
    with httpx.Client(http2=True, verify=context(pki, pki.alice), trust_env=False, timeout=5.0) as client:
        answer = client.get(f"https://{VIP}:{OPTIONAL}/echo")
    assert answer.status_code == 200 and answer.http_version == "HTTP/2"
    assert answer.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains;"
    assert answer.headers["x-backend"] == "certified"
    seen = lowered(answer.text)
    assert seen["x-ssl-client-cn"] == "alice"
    assert seen["x-ssl-client-has-cert"] == "1" and seen["x-ssl-client-verify"] == "0"
    assert seen["x-forwarded-proto"] == "https"
    anonymous = https_get(pki, OPTIONAL, "/echo")
    assert anonymous.alpn == "http/1.1" and anonymous.answer.headers["x-backend"] == "plain"
    assert lowered(anonymous.answer.text)["x-ssl-client-has-cert"] == "0"


def test_optional_client_authentication_routes_by_the_ssl_rules(engine, pki):
    assert https_get(pki, OPTIONAL).answer.text == "plain"
    assert https_get(pki, OPTIONAL, client=pki.alice).answer.text == "certified"
    assert https_get(pki, OPTIONAL, client=pki.admin).answer.text == "admins"
    # OPTIONAL still verifies a certificate that is presented.
    assert refused(pki, OPTIONAL, client=pki.eve)
    assert refused(pki, OPTIONAL, client=pki.mallory)


def test_mandatory_client_authentication(engine, pki):
    assert https_get(pki, MANDATORY, client=pki.alice).answer.text == "plain"
    assert refused(pki, MANDATORY)  # no certificate
    assert refused(pki, MANDATORY, client=pki.eve)  # untrusted
    assert refused(pki, MANDATORY, client=pki.mallory)  # revoked (CRL)
    cert, key = pki.client_files(pki.alice)
    assert "Verify return code: 0 (ok)" in s_client(pki, MANDATORY, "-cert", cert, "-key", key).stdout


# --- re-encryption -------------------------------------------------------------------------------------------------


def member_status(engine: Agent, pool: str, member: str = "tls-member") -> str | None:
    report = engine.report(ENGINE)
    return report.members.get(pool, {}).get(member) if report else None


def test_a_tls_member_gets_tls_with_the_engine_client_certificate(engine, pki, members):
    wait_for(lambda: member_status(engine, "reencrypt") == "UP", "the HTTPS health monitor to mark the member UP")
    members.tls.client_certificates.clear()
    reply = https_get(pki, REENCRYPT, "/echo")
    assert reply.answer.status == 200 and reply.answer.headers["x-backend"] == "tls-member"
    assert "engine-client" in client_names(members.tls)  # it spoke TLS and presented the engine's certificate
    assert WWW in members.tls.server_names  # the client's SNI, passed on


def test_a_member_the_ca_did_not_sign_is_down_and_not_used(engine, pki):
    wait_for(lambda: member_status(engine, "wrongca") == "DOWN", "the HTTPS health monitor to mark the member DOWN")
    with httpx.Client(trust_env=False, timeout=5.0) as client:
        assert client.get(f"http://{VIP}:{PLAIN_HTTP}/").status_code == 503


def client_names(member: TlsBackend) -> set[str]:
    """The common names of the client certificates a TLS member was shown."""
    return {dict(rdn[0] for rdn in cert["subject"])["commonName"] for cert in member.client_certificates if cert}


def worker_pid(engine: Agent) -> int:
    return int(Haproxy(engine.engines_dir / ENGINE).runtime.show_info()["Pid"])


def test_a_member_added_to_a_tls_pool_at_runtime_gets_tls(engine, pki, members):
    second = tls_member(pki, "tls-member-2")
    revision = engine.report(ENGINE).revision
    try:
        spec = engine_spec(pki, members, revision=revision + 1)
        added = _pool("reencrypt", second).members
        pools = tuple(
            p.model_copy(update={"members": p.members + added}) if p.id == "reencrypt" else p for p in spec.pools
        )
        worker = worker_pid(engine)
        engine.apply(ENGINE, spec.model_copy(update={"pools": pools}))
        assert worker_pid(engine) == worker  # the runtime API added it: no reload
        wait_for(lambda: member_status(engine, "reencrypt", "tls-member-2") == "UP", "the added member's check")
        answered = {https_get(pki, REENCRYPT).answer.headers["x-backend"] for _ in range(6)}
        assert answered == {"tls-member", "tls-member-2"}
        assert "engine-client" in client_names(second)
    finally:
        engine.apply(ENGINE, engine_spec(pki, members, revision=revision + 2))
        second.stop()


# --- certificate life cycle ----------------------------------------------------------------------------------------


def test_a_renewed_certificate_is_served_after_a_reload_that_drops_no_connection(engine, pki, members, caplog):
    caplog.set_level(logging.DEBUG)
    directory = engine.engines_dir / ENGINE
    old_file = directory / "files" / "crt-www"
    assert old_file.exists() and stat.S_IMODE(old_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((directory / "spec.json").stat().st_mode) == 0o600  # it holds private keys
    renewed = TestCA("tls test root 2").issue(WWW, [WWW])
    errors: list[BaseException] = []
    done = threading.Event()
    handshakes = 0

    def hammer() -> None:
        nonlocal handshakes
        ctx = unverified()
        while not done.is_set() and handshakes < 2000:
            try:
                with connection(VIP, REENCRYPT) as sock, ctx.wrap_socket(sock, server_hostname=WWW) as tls:
                    tls.sendall(request_bytes("/"))
                    assert parse(read_all(tls)).status == 200
                handshakes += 1
            except (OSError, AssertionError) as exc:
                errors.append(exc)

    ctx = context(pki)
    with connection(VIP, OPTIONAL) as sock, ctx.wrap_socket(sock, server_hostname=WWW) as tls:
        kept = KeepAlive(tls)
        assert kept.get("/").status == 200
        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            wait_for(lambda: handshakes >= 20, "handshakes before the reload")
            revision = engine.report(ENGINE).revision + 1
            engine.apply(ENGINE, engine_spec(pki, members, revision=revision, www=renewed))
            before = handshakes
            wait_for(lambda: handshakes >= before + 20, "handshakes after the reload")
        finally:
            done.set()
            thread.join(timeout=30)
        # The connection opened before the reload is still served (by the old worker).
        assert kept.get("/").status == 200
    assert errors == [], f"{len(errors)} of {handshakes} connections failed around the reload: {errors[:3]}"
    assert served_certificate(OPTIONAL) == renewed.cert.public_bytes(serialization.Encoding.DER)  # new handshakes
    assert not old_file.exists()  # pruned once the new config serves
    assert "PRIVATE KEY" not in caplog.text
    assert stat.S_IMODE((directory / "files" / f"crt-www-{revision}").stat().st_mode) == 0o600


def test_a_certificate_haproxy_cannot_load_is_rejected_and_the_engine_keeps_serving(engine, pki, members, caplog):
    caplog.set_level(logging.DEBUG)
    served, certificate = engine.report(ENGINE).revision, served_certificate(OPTIONAL)
    mismatched = Issued(pki.www.cert, pki.api.key, pki.www.chain)  # a key that is not the certificate's
    with pytest.raises(EngineRejected) as rejected:
        engine.apply(ENGINE, engine_spec(pki, members, revision=served + 1, www=mismatched))
    assert engine.report(ENGINE).revision == served and served_certificate(OPTIONAL) == certificate
    # Neither the reason nor the logs carry key material.
    for text in (rejected.value.reason, caplog.text):
        assert "PRIVATE KEY" not in text and pki.api.key_pem.splitlines()[1] not in text
