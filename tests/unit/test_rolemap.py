"""The role mapping: resolution (first match wins, `*`, the default role, refusal), the default mapping
against Octavia's default policy, and the config file's mapping with its errors and their lines."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from quadriga import config
from quadriga.api import policy, rolemap
from quadriga.api.rolemap import RoleMapping

# Octavia's default policy (keystone_default_roles.py + the deprecated rules of advanced_rbac.py): which
# quadriga roles a caller holding these Keystone roles has; written out, not computed.
OCTAVIA_DEFAULT_ROLES = [
    ({"admin"}, {"admin"}),
    ({"load-balancer_admin"}, {"admin"}),
    ({"load-balancer_global_observer"}, {"global_observer"}),
    ({"load-balancer_quota_admin"}, {"quota_admin"}),
    ({"member"}, {"member"}),
    ({"load-balancer_member"}, {"member"}),
    ({"reader"}, {"observer"}),
    ({"load-balancer_observer"}, {"observer"}),
    ({"member", "reader"}, {"member", "observer"}),  # Keystone's implied roles come along in tokens
    ({"admin", "member", "reader"}, {"admin", "member", "observer"}),
    ({"load-balancer_global_observer", "load-balancer_member"}, {"global_observer", "member"}),
    ({"Load-Balancer_Quota_Admin", "READER"}, {"quota_admin", "observer"}),
    ({"service"}, set()),  # Octavia's `service` rule guards no API endpoint
    ({"foo", "_member_"}, set()),
    (set(), set()),
]


@pytest.mark.parametrize(("keystone", "quadriga"), OCTAVIA_DEFAULT_ROLES, ids=lambda v: ",".join(sorted(v)) or "-")
def test_default_mapping_is_octavias_default_policy(keystone, quadriga):
    assert rolemap.DEFAULT.resolve(keystone) == quadriga


def test_every_quadriga_role_has_grants():
    assert set(policy.GRANTS) == set(rolemap.ROLES)


OPERATOR = RoleMapping((("lb-operator", "member"), ("*", "observer")))


def test_first_match_wins_and_star_matches_any_role():
    assert OPERATOR.resolve({"lb-operator"}) == {"member"}
    assert OPERATOR.resolve({"LB-Operator"}) == {"member"}
    assert OPERATOR.resolve({"auditor"}) == {"observer"}
    assert OPERATOR.resolve({"admin"}) == {"observer"}  # a custom mapping replaces the default one
    assert OPERATOR.resolve({"lb-operator", "auditor"}) == {"member", "observer"}
    star_first = RoleMapping((("*", "observer"), ("lb-operator", "member")))
    assert star_first.resolve({"lb-operator"}) == {"observer"}  # order matters: `*` came first


def test_no_match_gives_the_default_role_or_nothing():
    assert OPERATOR.resolve(set()) == set()  # `*` matches a role, and there is none: refused
    strict = RoleMapping((("lb-operator", "member"),))
    assert strict.resolve({"auditor"}) == set()
    lenient = RoleMapping((("lb-operator", "member"),), default_role="observer")
    assert lenient.resolve({"auditor"}) == {"observer"}
    assert lenient.resolve(set()) == {"observer"}
    assert lenient.resolve({"lb-operator", "auditor"}) == {"member"}  # the default only when nothing matched


# --- the config file ------------------------------------------------------------------------------------


def load(tmp_path, text: str) -> config.Settings:
    path = tmp_path / "q.toml"
    path.write_text(text)
    return config.load(path, {"state_dir": tmp_path})


def test_no_auth_section_is_the_default_mapping(tmp_path):
    assert load(tmp_path, '[api]\nauth_strategy = "header"\n').role_mapping == rolemap.DEFAULT


def test_mapping_from_the_file(tmp_path):
    settings = load(
        tmp_path,
        """[api]
auth_strategy = "header"

[auth]
role_mapping = [
    {keystone = "LB-Operator", quadriga = "member"},  # a comment {with braces}
    {keystone = "*", quadriga = "observer"},
]
""",
    )
    assert settings.role_mapping == RoleMapping((("lb-operator", "member"), ("*", "observer")))
    assert settings.auth_strategy == "header"


def test_default_role_alone_keeps_the_default_entries(tmp_path):
    settings = load(tmp_path, '[auth]\ndefault_role = "observer"\n')
    assert settings.role_mapping == RoleMapping(rolemap.DEFAULT.entries, "observer")


def test_array_of_tables_form(tmp_path):
    text = '[[auth.role_mapping]]\nkeystone = "ops"\nquadriga = "admin"\n'
    assert load(tmp_path, text).role_mapping == RoleMapping((("ops", "admin"),))


MAPPING_HEAD = '[api]\nport = 9876\n\n[auth]\nrole_mapping = [\n  {keystone = "member", quadriga = "member"},\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            MAPPING_HEAD + '  {keystone = "ops", quadriga = "superuser"},\n]\n',
            "line 7: [auth] role_mapping entry 2: unknown quadriga role 'superuser' "
            "(known: admin, global_observer, quota_admin, member, observer)",
        ),
        (
            MAPPING_HEAD + '  {keystone = "a{b", quadriga = "member"}, {keystone = "ops", quadriga = "Admin"},\n]\n',
            "line 7: [auth] role_mapping entry 3: unknown quadriga role 'Admin'",
        ),
        (MAPPING_HEAD + '  {keystone = "ops"},\n]\n', "line 7: [auth] role_mapping entry 2: expected {keystone"),
        (
            MAPPING_HEAD + '  {keystone = "ops", quadriga = "member", extra = 1},\n]\n',
            "line 7: [auth] role_mapping entry 2: expected",
        ),
        (
            MAPPING_HEAD + '  {keystone = "", quadriga = "member"},\n]\n',
            "line 7: [auth] role_mapping entry 2: keystone",
        ),
        (MAPPING_HEAD + '  {keystone = 3, quadriga = "member"},\n]\n', "entry 2: keystone must be a role name"),
        ('[auth]\ndefault_role = "nobody"\n', "line 2: [auth] default_role: unknown quadriga role 'nobody'"),
        ('\n[auth]\nrole_mapping = {keystone = "a", quadriga = "member"}\n', "line 3: [auth] role_mapping must be"),
        ("[auth]\nrole_mapping = []\n", "line 2: [auth] role_mapping is empty and there is no default_role"),
        ('[auth]\nrole_map = [{keystone = "a", quadriga = "member"}]\n', "unknown setting [auth] role_map"),
        (
            '[[auth.role_mapping]]\nkeystone = "a"\nquadriga = "member"\n\n[[auth.role_mapping]]\n'
            'keystone = "b"\nquadriga = "boss"\n',
            "line 5: [auth] role_mapping entry 2: unknown quadriga role 'boss'",
        ),
        (MAPPING_HEAD + '  {keystone = "ops" quadriga = "member"},\n]\n', "(at line 7, column"),
        ("[auth]\nrole_mapping = [\n", "(at end of document, line 3)"),
    ],
)
def test_bad_mapping_is_refused_with_its_line(tmp_path, text, message):
    with pytest.raises(config.ConfigError, match=re.escape(message)) as err:
        load(tmp_path, text)
    assert str(tmp_path / "q.toml") in str(err.value)


def test_serve_refuses_an_unknown_quadriga_role_and_says_where(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text(
        '[api]\nauth_strategy = "header"\n\n[auth]\nrole_mapping = [\n  {keystone = "*", quadriga = "root"},\n]\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "quadriga", "serve", "--config", str(path), "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"{path}, line 6: [auth] role_mapping entry 1: unknown quadriga role 'root'" in proc.stderr
    assert not (tmp_path / "state").exists()  # refused before anything was started or written
