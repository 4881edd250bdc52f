"""Role mapping, as Avi Vantage does it: an ordered list of {Keystone role -> quadriga role}, first match
wins, `*` matches any role, an optional default role, and a caller nothing maps is refused.

Each of the caller's Keystone roles takes the quadriga role of the first entry matching it; the caller
holds the union of those (Octavia's policy is additive: load-balancer_global_observer together with
load-balancer_member reads everything and writes its own project, and the default mapping must give the
same). A caller none of whose roles matches gets `default_role`, or no role at all: refused.
What each quadriga role may do is quadriga.api.policy's business; this module only names them.

Set in the config file (`[auth] role_mapping`, `default_role`); `from_config` checks it and says on
which line of the file a bad entry sits."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

ADMIN = "admin"  # everything, every project
GLOBAL_OBSERVER = "global_observer"  # reads every project (quotas too)
QUOTA_ADMIN = "quota_admin"  # reads and sets every project's quotas
MEMBER = "member"  # reads and writes its own project
OBSERVER = "observer"  # reads its own project
ROLES = (ADMIN, GLOBAL_OBSERVER, QUOTA_ADMIN, MEMBER, OBSERVER)
ANY = "*"


class RoleMappingError(ValueError):
    """A role mapping that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class RoleMapping:
    entries: tuple[tuple[str, str], ...]  # (Keystone role in lower case, or "*"; quadriga role), in order
    default_role: str | None = None

    def resolve(self, keystone_roles: Iterable[str]) -> frozenset[str]:
        """The quadriga roles of a caller holding `keystone_roles` (empty: refused)."""
        granted = set()
        for role in keystone_roles:
            name = role.lower()
            match = next((q for k, q in self.entries if k in (ANY, name)), None)
            if match is not None:
                granted.add(match)
        if not granted and self.default_role:
            granted.add(self.default_role)
        return frozenset(granted)

    def describe(self) -> str:
        """One line for the log: the entries in order, then the default."""
        pairs = ", ".join(f"{k}->{q}" for k, q in self.entries)
        return f"[{pairs}] default={self.default_role or 'none (refused)'}"


# Octavia's default policy (octavia/policies/keystone_default_roles.py with the deprecated rules of
# advanced_rbac.py, which oslo.policy still honours): admin everywhere; reader and member of the owning
# project; the deprecated load-balancer_* roles. Nothing else is let in.
DEFAULT = RoleMapping(
    entries=(
        ("admin", ADMIN),
        ("load-balancer_admin", ADMIN),
        ("load-balancer_global_observer", GLOBAL_OBSERVER),
        ("load-balancer_quota_admin", QUOTA_ADMIN),
        ("member", MEMBER),
        ("load-balancer_member", MEMBER),
        ("reader", OBSERVER),
        ("load-balancer_observer", OBSERVER),
    )
)


def from_config(mapping: Any, default_role: Any, text: str) -> RoleMapping:
    """The mapping from a config file's `[auth]` values (None: not set), checked. `text` is the file, for
    the line number of a bad entry."""
    if default_role is not None and default_role not in ROLES:
        raise RoleMappingError(f"line {_key_line(text, 'default_role')}: [auth] default_role: {_unknown(default_role)}")
    if mapping is None:
        return RoleMapping(DEFAULT.entries, default_role)
    if not isinstance(mapping, list):
        raise RoleMappingError(
            f"line {_key_line(text, 'role_mapping')}: [auth] role_mapping must be a list of "
            '{keystone = "...", quadriga = "..."} entries'
        )
    if not mapping and default_role is None:
        raise RoleMappingError(
            f"line {_key_line(text, 'role_mapping')}: [auth] role_mapping is empty and there is no "
            "default_role: every caller would be refused"
        )
    return RoleMapping(tuple(_entry(entry, i, text) for i, entry in enumerate(mapping)), default_role)


def _entry(entry: Any, index: int, text: str) -> tuple[str, str]:
    def bad(why: str) -> RoleMappingError:
        return RoleMappingError(f"line {_entry_line(text, index)}: [auth] role_mapping entry {index + 1}: {why}")

    if not isinstance(entry, dict) or set(entry) != {"keystone", "quadriga"}:
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise bad(f'expected {{keystone = "<Keystone role or *>", quadriga = "<role>"}}, got {got}')
    keystone, quadriga = entry["keystone"], entry["quadriga"]
    if not isinstance(keystone, str) or not keystone.strip() or keystone != keystone.strip():
        raise bad(f"keystone must be a role name or {ANY!r}, not {keystone!r}")
    if quadriga not in ROLES:
        raise bad(_unknown(quadriga))
    return keystone.lower(), quadriga


def _unknown(role: Any) -> str:
    return f"unknown quadriga role {role!r} (known: {', '.join(ROLES)})"


# --- where in the file ------------------------------------------------------------------------------------

# TOML strings and comments, blanked before looking for keys and braces (a "{" in a role name is not an entry)
_NOISE = re.compile(r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:\\.|[^"\\\n])*"|\'[^\'\n]*\'|#[^\n]*')


def _masked(text: str) -> str:
    return _NOISE.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text)


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _key_line(text: str, key: str) -> int | str:
    found = re.search(rf"^[ \t]*(?:auth[ \t]*\.[ \t]*)?{key}[ \t]*=", _masked(text), re.M)
    return _line(text, found.start()) if found else "?"


def _entry_line(text: str, index: int) -> int | str:
    """The line of entry `index`: its `[[auth.role_mapping]]` header, or the index-th `{` after the key."""
    masked = _masked(text)
    headers = list(re.finditer(r"^[ \t]*\[\[[ \t]*auth[ \t]*\.[ \t]*role_mapping[ \t]*\]\]", masked, re.M))
    if headers:
        return _line(text, headers[index].start()) if index < len(headers) else "?"
    key = re.search(r"^[ \t]*(?:auth[ \t]*\.[ \t]*)?role_mapping[ \t]*=", masked, re.M)
    if key is None:
        return "?"
    braces = [key.end() + m.start() for m in re.finditer(r"\{", masked[key.end() :])]
    if index < len(braces):
        return _line(text, braces[index])
    return _line(text, key.start())
