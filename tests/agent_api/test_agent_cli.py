"""`quadriga pki issue-agent` and the argument checks of `quadriga agent` (running an agent needs the real
`Agent`, which its own suite covers)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from quadriga import cli
from quadriga.certs import pki


def test_cli_issues_an_agent_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bundle"
    argv = ["pki", "issue-agent", "--state-dir", str(tmp_path / "state"), "--name", "edge-2"]
    assert cli.main([*argv, "--address", "198.51.100.2", "--out", str(out)]) == 0
    bundle = pki.Bundle.in_directory(out, "agent")
    assert bundle.exists() and stat.S_IMODE(bundle.key.stat().st_mode) == 0o600
    ca = pki.CertificateAuthority.load_or_create(tmp_path / "state" / "pki")
    assert ca.signed(bundle.cert.read_bytes()) and bundle.ca.read_bytes() == ca.cert_pem
    assert "valid until" in capsys.readouterr().out
    assert cli.main([*argv, "--address", "bad address", "--out", str(out)]) == 2


def test_agent_refuses_an_incomplete_bundle_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["agent", "--state-dir", str(tmp_path), "--name", "edge-2", "--pki-dir", str(tmp_path / "empty")]
    assert cli.main(argv) == 2
    assert "quadriga pki issue-agent" in capsys.readouterr().err


def test_agent_refuses_a_bad_name(tmp_path: Path) -> None:
    assert cli.main(["agent", "--state-dir", str(tmp_path), "--name", "../x"]) == 2


@pytest.mark.parametrize("listen", ["9443", "host:", ":9443", "host:99999", "[::1]"])
def test_agent_refuses_a_bad_listen_address(listen: str) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["agent", "--listen", listen])
    assert exited.value.code == 2


@pytest.mark.parametrize(("listen", "parsed"), [("0.0.0.0:1", ("0.0.0.0", 1)), ("[::1]:9443", ("::1", 9443))])
def test_listen_addresses(listen: str, parsed: tuple[str, int]) -> None:
    assert cli._host_port(listen) == parsed
