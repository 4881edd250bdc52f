"""TLS in the rendered config: TERMINATED_HTTPS binds, client authentication, HSTS, X-SSL headers, SSL_* rules
and re-encryption to members, each config checked by the real `haproxy -c` with real certificates (TestCA)."""

from __future__ import annotations

import stat

import pytest

from quadriga.certs.tls import TLSBundle
from quadriga.engine import spec as s
from quadriga.engine.render import (
    EnginePaths,
    RenderError,
    certificate_path,
    prune_support_files,
    render,
    write_support_files,
)
from tests.engine.test_render import engine, hm, listener, policy, pool, rule, section
from tests.support.certs import TestCA


def certificate(cert_id: str, bundle_of, names: tuple[str, ...] = ()) -> s.CertificateSpec:
    bundle = TLSBundle(bundle_of.cert_pem, bundle_of.key_pem, tuple(c for c in [bundle_of.chain_pem] if c), names)
    return s.CertificateSpec(id=cert_id, kind="certificate", pem=bundle.combined_pem(), names=names)


@pytest.fixture(scope="module")
def pki() -> dict[str, s.CertificateSpec]:
    root = TestCA("render root")
    intermediate = TestCA("render intermediate", parent=root)
    clients = TestCA("render clients")
    revoked = clients.issue("mallory", client=True)
    clients.revoke(revoked)
    return {
        "www": certificate("crt-www", intermediate.issue("www.example.com", ["www.example.com"]), ("www.example.com",)),
        "api": certificate("crt-api", root.issue("api.example.com", ["api.example.com"]), ("api.example.com",)),
        "client": certificate("crt-client", root.issue("engine", client=True)),
        "ca": s.CertificateSpec(id="ca-clients", kind="ca", pem=clients.cert_pem),
        "crl": s.CertificateSpec(id="crl-clients", kind="crl", pem=clients.crl_pem()),
        "root": s.CertificateSpec(id="ca-root", kind="ca", pem=root.cert_pem),
    }


def tls_engine(pki, listener_tls: dict, pool_tls: dict | None = None, **listener_kw) -> tuple[s.EngineSpec, str, str]:
    p = pool(
        health_monitor=hm("HTTPS"),
        tls=s.PoolTLSSpec(**pool_tls) if pool_tls is not None else None,
    )
    li = listener(
        "TERMINATED_HTTPS",
        443,
        default_pool=p,
        tls=s.ListenerTLSSpec(default_certificate="crt-www", **listener_tls),
        **listener_kw,
    )
    return engine((li,), (p,), certificates=tuple(pki.values())), li.id, p.id


def test_a_terminated_https_listener_with_everything(check, pki, tmp_path):
    rules = (
        rule("SSL_CONN_HAS_CERT", "EQUAL_TO", "True", id="has"),
        rule("SSL_VERIFY_RESULT", "EQUAL_TO", "0", id="ok", invert=True),
        rule("SSL_DN_FIELD", "STARTS_WITH", "admin", key="CN", id="dn"),
    )
    spec, li, p = tls_engine(
        pki,
        {
            "sni_certificates": ("crt-api", "crt-www"),
            "versions": ("TLSv1.2", "TLSv1.3"),
            "ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
            "alpn_protocols": ("h2", "http/1.1"),
            "client_authentication": "MANDATORY",
            "client_ca": "ca-clients",
            "client_crl": "crl-clients",
            "hsts_max_age": 31536000,
            "hsts_include_subdomains": True,
            "hsts_preload": True,
        },
        insert_headers=("X-Forwarded-Proto", "X-SSL-Client-CN", "X-SSL-Client-Verify", "X-SSL-Client-DN"),
        l7policies=(policy("REJECT", 1, rules),),
    )
    config = check(spec)
    files = EnginePaths.under(tmp_path).extra_dir
    fe = section(config, f"frontend {li}")
    assert "mode http" in fe
    assert (
        f"bind 127.0.0.1:443 ssl crt {files / 'crt-www'} crt {files / 'crt-api'} "
        f"verify required ca-file {files / 'ca-clients'} crl-file {files / 'crl-clients'} "
        "no-sslv3 no-tlsv10 no-tlsv11 ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384 "
        "alpn h2,http/1.1"
    ) in fe
    assert 'http-response set-header Strict-Transport-Security "max-age=31536000; includeSubDomains; preload;"' in fe
    assert "http-request set-header X-Forwarded-Proto https" in fe
    assert "http-request set-header X-SSL-Client-CN %{+Q}[ssl_c_s_dn(cn)]" in fe
    assert "http-request set-header X-SSL-Client-Verify %[ssl_c_verify]" in fe
    assert "http-request set-header X-SSL-Client-DN %{+Q}[ssl_c_s_dn]" in fe
    assert "acl rule-has ssl_c_used" in fe
    assert "acl rule-ok ssl_c_verify -m int -- 0" in fe
    assert "acl rule-dn ssl_c_s_dn(CN) -m beg -- admin" in fe
    assert "http-request deny if rule-has !rule-ok rule-dn" in fe
    # The files the config reads, private keys among them, are readable by their owner only.
    for cert in spec.certificates:
        path = certificate_path(files, cert.id)
        assert path.read_text() == cert.pem
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_email_dn_field_rule_reads_openssls_email_field(check, pki):
    rules = (rule("SSL_DN_FIELD", "EQUAL_TO", "bob@example.com", key="EMAIL", id="mail"),)
    spec, li, _ = tls_engine(pki, {}, l7policies=(policy("REJECT", 1, rules),))
    assert "acl rule-mail ssl_c_s_dn(emailAddress) -m str -- bob@example.com" in section(check(spec), f"frontend {li}")


@pytest.mark.parametrize(
    ("auth", "expected"),
    [("NONE", "verify none ca-file"), ("OPTIONAL", "verify optional ca-file"), ("MANDATORY", "verify required")],
)
def test_client_authentication_modes(check, pki, auth, expected):
    spec, li, _ = tls_engine(pki, {"client_authentication": auth, "client_ca": "ca-clients"})
    (bind,) = [line for line in section(check(spec), f"frontend {li}") if line.startswith("bind")]
    assert expected in bind and "crl-file" not in bind


def test_tls_versions_become_no_flags_and_no_client_ca_means_no_verify(check, pki):
    spec, li, _ = tls_engine(pki, {"versions": ("TLSv1.3",)})
    (bind,) = [line for line in section(check(spec), f"frontend {li}") if line.startswith("bind")]
    assert bind.endswith("no-sslv3 no-tlsv10 no-tlsv11 no-tlsv12")
    assert "verify" not in bind and "alpn" not in bind and "ciphers" not in bind


@pytest.mark.parametrize("side", ["listener", "pool"])
def test_tls_versions_this_openssl_does_not_negotiate_are_a_clear_error(pki, tmp_path, side):
    old = {"versions": ("TLSv1", "TLSv1.1")}
    spec, _, _ = tls_engine(pki, old if side == "listener" else {}, old if side == "pool" else None)
    expected = r"tls_versions TLSv1, TLSv1.1 holds none of the versions .* \(TLSv1.2, TLSv1.3\)"
    with pytest.raises(RenderError, match=expected):
        render(spec, EnginePaths.under(tmp_path))


def test_reencryption_verifies_members_against_the_ca_and_presents_the_client_certificate(check, pki, tmp_path):
    spec, li, p = tls_engine(
        pki,
        {},
        {
            "certificate": "crt-client",
            "ca": "ca-root",
            "crl": "crl-clients",
            "versions": ("TLSv1.2", "TLSv1.3"),
            "alpn_protocols": ("http/1.1",),
            "ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256",
        },
    )
    # (A CRL of another CA is fine for HAProxy's check; what matters here is the wording of the server line.)
    files = EnginePaths.under(tmp_path).extra_dir
    servers = [line for line in section(check(spec), f"backend {p}:{li}") if line.startswith("server")]
    assert servers
    for line in servers:
        assert "check-ssl inter" not in line and "check-ssl verify none" not in line
        assert (
            f"ssl verify required ca-file {files / 'ca-root'} crl-file {files / 'crl-clients'} "
            f"crt {files / 'crt-client'} sni ssl_fc_sni no-sslv3 no-tlsv10 no-tlsv11 "
            "ciphers ECDHE-ECDSA-AES128-GCM-SHA256 alpn http/1.1"
        ) in line


def test_a_tls_pool_without_a_ca_does_not_verify_members(check, pki):
    spec, li, p = tls_engine(pki, {}, {})
    servers = [line for line in section(check(spec), f"backend {p}:{li}") if line.startswith("server")]
    assert servers
    for line in servers:
        assert " check-ssl " in line and line.endswith("ssl verify none sni ssl_fc_sni no-sslv3 no-tlsv10 no-tlsv11")


def test_certificate_files_follow_the_spec(pki, tmp_path):
    paths = EnginePaths.under(tmp_path)
    first, _, _ = tls_engine(pki, {"sni_certificates": ("crt-api",)})
    second = first.model_copy(update={"certificates": tuple(c for c in first.certificates if c.id != "crt-client")})
    write_support_files(first, paths)
    assert (paths.extra_dir / "crt-client").exists()
    prune_support_files(second, paths)
    assert not (paths.extra_dir / "crt-client").exists()
    assert sorted(p.name for p in paths.extra_dir.iterdir()) == sorted(c.id for c in second.certificates)
