"""Neutron's list rules for the shared list engine (`quadriga.api.listing`): its dialect (unknown filters
ignored, `sort_key`/`sort_dir` pairs, optional `limit`, Neutron's wording) and the filters that are no
column: attributes every object shows with one constant value, and a port's `fixed_ips`. The stand-ins,
which are no table, filter their dicts here too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, exists, false, true

from quadriga.api.listing import OCTAVIA_WORDING, PAGING_PARAMS, TAG_PARAMS, Dialect
from quadriga.db import models as m
from quadriga.network.api.errors import bad_request

NEUTRON = Dialect(
    lenient=True,
    sort_pairs=True,
    limit_optional=True,
    link_params=(),
    next_link_first=True,
    wording={
        **OCTAVIA_WORDING,
        "boolean": "Invalid input for operation: '{raw}' cannot be converted to boolean for {name}.",
        "integer": "Invalid input for operation: '{raw}' is not an integer for {name}.",
        "limit": "Limit must be an integer 0 or greater and not '{raw}'",
        "sort_key": "{key} is an invalid attribute for sort_key",
        "sort_dir": "{direction} is an invalid value for sort_dir, valid values are: asc, desc",
        "marker": "Marker {marker} could not be found.",
    },
)

Filter = Callable[[list[str]], Any]


def matches_constant(value: Any, raws: list[str]) -> bool:
    """Whether a filter's values name `value` (case-insensitively; `none`/`null` name None)."""
    text = "" if value is None else str(value).lower()
    return any(r.lower() == text or (value is None and r.lower() in ("none", "null")) for r in raws)


def constant_filters(constants: dict[str, Any]) -> dict[str, Filter]:
    """Filters on attributes every object shows with the same value: all objects or none match."""

    def one(value: Any) -> Filter:
        return lambda raws: true() if matches_constant(value, raws) else false()

    return {name: one(value) for name, value in constants.items()}


def _fixed_ip(raw: str) -> Any:
    key, _, value = raw.partition("=")
    clauses = [m.PortIP.port_id == m.Port.id]
    if key == "ip_address":
        clauses.append(m.PortIP.ip_address == value)
    elif key == "subnet_id":
        clauses.append(m.PortIP.subnet_id == value)
    elif key == "ip_address_substr":
        clauses.append(m.PortIP.ip_address.contains(value))
    else:
        raise bad_request(f"Invalid input for operation: '{raw}' is not a valid fixed_ips filter.")
    return exists().where(*clauses)


def fixed_ips(raws: list[str]) -> Any:
    """Ports with an address matching every `fixed_ips=ip_address=...|subnet_id=...|ip_address_substr=...`."""
    return and_(*(_fixed_ip(r) for r in raws))


def filter_dicts(items: list[dict[str, Any]], params: Any) -> list[dict[str, Any]]:
    """Filter rendered objects by their scalar attributes; other parameters are ignored."""
    for name in params:
        if name in PAGING_PARAMS or name in TAG_PARAMS or not items or name not in items[0]:
            continue
        raws = params.getlist(name)
        items = [i for i in items if not isinstance(i[name], list | dict) and matches_constant(i[name], raws)]
    return items
