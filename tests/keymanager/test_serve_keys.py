"""`quadriga serve` refuses a key file it cannot use with a message naming the file, not a traceback."""

from __future__ import annotations

import pytest

from tests.support.server import QuadrigaServer, ServerStartupError


def test_serve_names_an_unusable_key_file_and_exits(tmp_path):
    bad = tmp_path / "operator.key"
    bad.write_text("not a fernet key\n")
    cfg = tmp_path / "quadriga.toml"
    cfg.write_text(f'[keymanager]\nkey_files = ["{bad}"]\n')
    server = QuadrigaServer(provider="noop", network_driver="loopback", extra_args=["--config", str(cfg)])
    with pytest.raises(ServerStartupError) as failure:
        server.start()
    server.stop()
    assert f"secret store key file {bad} does not hold a Fernet key" in str(failure.value)
    assert "Traceback" not in str(failure.value)
