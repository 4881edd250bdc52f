"""List endpoints: filtering, tag filters, sorting, marker pagination, `fields` and the `<plural>_links`.

The one list engine of both APIs quadriga serves. By default it follows Octavia's PaginationHelper:
default order `created_at, id` ascending; a `next` link whenever a page is full; a `previous` link on
pages fetched with a marker; 400 for an unknown filter, sort key, sort direction or marker. quadriga is
stricter than Octavia about `limit`: it must be an integer from 1 to 1000 (Octavia returns everything for
0 and caps larger values). A `Dialect` states where the embedded Neutron API's rules differ."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Boolean, DateTime, Float, Integer, Select, and_, exists, false, literal, or_, select
from sqlalchemy.orm import Session
from starlette.datastructures import QueryParams

from quadriga import constants as c
from quadriga.api.errors import BadRequest
from quadriga.api.views import TagMap, load_tags
from quadriga.db import models as m

PAGING_PARAMS = {"limit", "marker", "page_reverse", "sort", "sort_key", "sort_dir", "fields"}
TAG_PARAMS = {"tags", "tags-any", "not-tags", "not-tags-any"}

OCTAVIA_WORDING = {
    "filter": "One or more arguments are either duplicate or invalid",
    "boolean": "Invalid input for field/attribute {name}. Value: '{raw}'. Value should be boolean.",
    "integer": "Invalid input for field/attribute {name}. Value: '{raw}'. Value should be integer.",
    "float": "Invalid input for field/attribute {name}. Value: '{raw}'. Value should be float.",
    "datetime": "Invalid input for field/attribute {name}. Value: '{raw}'. Value should be a datetime.",
    "limit": "Supplied pagination limit '{raw}' is not valid. It must be an integer from 1 to {max}.",
    "sort_key": "Supplied sort key '{key}' is not valid.",
    "sort_dir": "Supplied sort direction '{direction}' is not valid.",
    "marker": "Supplied pagination marker '{marker}' is not valid.",
}


@dataclass(frozen=True)
class Dialect:
    """Where a list API's rules depart from Octavia's (the defaults)."""

    # a filter that is no column (nor in `ListSpec.filters`) and a blank marker are ignored, not 400s
    lenient: bool = False
    # order from repeated `sort_key`/`sort_dir` pairs, directions case-sensitive, rather than from
    # `sort=key:dir,...` or comma-separated `sort_key`/`sort_dir`
    sort_pairs: bool = False
    # no `limit` (or 0) lists everything and answers without `<plural>_links`; any limit >= 0 is valid
    limit_optional: bool = False
    # the query parameters the `previous`/`next` links repeat besides `limit`, and the links' order
    link_params: tuple[str, ...] = ("sort", "sort_key")
    next_link_first: bool = False
    # error messages: templates keyed as OCTAVIA_WORDING
    wording: Mapping[str, str] = field(default_factory=lambda: OCTAVIA_WORDING)


OCTAVIA = Dialect()


@dataclass
class ListSpec:
    """What a list endpoint needs to know about its resource."""

    model: Any
    plural: str
    render: Callable[[Any, TagMap], dict[str, Any]]
    # API attribute -> column; these are the allowed filters and sort keys
    columns: dict[str, Any]
    tagged: bool = True
    options: Sequence[Any] = field(default_factory=tuple)
    id_column: str = "id"
    # more filters: query parameter -> WHERE clause for its values
    filters: Mapping[str, Callable[[list[str]], Any]] = field(default_factory=dict)
    dialect: Dialect = OCTAVIA


def _error(dialect: Dialect, rule: str, **values: Any) -> BadRequest:
    return BadRequest(dialect.wording[rule].format(**values))


def _column(spec: ListSpec, key: str) -> Any:
    """The column of an API attribute, or of a model attribute that is no filter (the default order)."""
    return spec.columns[key] if key in spec.columns else getattr(spec.model, key)


def _columns_of(model: Any, *names: str, **renamed: str) -> dict[str, Any]:
    cols = {n: getattr(model, n) for n in names}
    cols.update({api: getattr(model, col) for api, col in renamed.items()})
    return cols


def common_columns(model: Any, *extra: str, **renamed: str) -> dict[str, Any]:
    base = ("id", "project_id", "provisioning_status", "operating_status", "admin_state_up", "created_at", "updated_at")
    return _columns_of(model, *base, *extra, tenant_id="project_id", **renamed)


def _coerce(column: Any, raw: str, name: str, dialect: Dialect = OCTAVIA) -> Any:
    ctype = column.type
    if isinstance(ctype, Boolean):
        low = raw.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise _error(dialect, "boolean", name=name, raw=raw)
    if isinstance(ctype, Integer):
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or not -(2**63) <= value < 2**63:  # beyond what a database integer can hold
            raise _error(dialect, "integer", name=name, raw=raw)
        return value
    # The database compares these columns only with values of their own type (PostgreSQL refuses text).
    if isinstance(ctype, Float):
        try:
            return float(raw)
        except ValueError:
            raise _error(dialect, "float", name=name, raw=raw) from None
    if isinstance(ctype, DateTime):
        try:
            when = dt.datetime.fromisoformat(raw.removesuffix("Z"))
        except ValueError:
            raise _error(dialect, "datetime", name=name, raw=raw) from None
        return when.astimezone(dt.UTC).replace(tzinfo=None) if when.tzinfo else when  # stored as naive UTC
    return raw


def parse_limit(params: QueryParams, dialect: Dialect = OCTAVIA) -> int | None:
    """The page size; None (everything) only where the dialect makes `limit` optional."""
    raw = params.get("limit")
    if dialect.limit_optional:
        if not raw:
            return None
        try:
            limit = int(raw)
        except ValueError:
            raise _error(dialect, "limit", raw=raw) from None
        if limit < 0:
            raise _error(dialect, "limit", raw=limit)
        return limit or None
    if raw is None:
        return c.PAGE_MAX_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = -1
    if not 1 <= limit <= c.PAGE_MAX_LIMIT:
        raise _error(dialect, "limit", raw=raw, max=c.PAGE_MAX_LIMIT)
    return limit


def parse_sort(params: QueryParams, columns: dict[str, Any], dialect: Dialect = OCTAVIA) -> list[tuple[str, str]]:
    keys: list[tuple[str, str]] = []
    if dialect.sort_pairs:
        dirs = params.getlist("sort_dir")
        keys = [(k, dirs[i] if i < len(dirs) else "asc") for i, k in enumerate(params.getlist("sort_key"))]
    elif params.get("sort"):
        for item in params["sort"].split(","):
            parts = item.split(":")
            if len(parts) > 2:
                raise _error(dialect, "sort_key", key=item)
            keys.append((parts[0], parts[1].lower() if len(parts) == 2 else "asc"))
    elif params.get("sort_key"):
        names = params["sort_key"].split(",")
        dirs = params.get("sort_dir", "").split(",") if params.get("sort_dir") else []
        dirs += ["asc"] * (len(names) - len(dirs))
        keys = [(k, d.lower()) for k, d in zip(names, dirs, strict=False)]
    for key, direction in keys:
        if key not in columns or columns[key] is None:
            raise _error(dialect, "sort_key", key=key)
        if direction not in ("asc", "desc"):
            raise _error(dialect, "sort_dir", direction=direction)
    return keys


def _tag_list(params: QueryParams, name: str) -> list[str]:
    tags: list[str] = []
    for raw in params.getlist(name):
        tags.extend(t for t in raw.split(",") if t)
    return tags


def _apply_tag_filters(stmt: Select, params: QueryParams, id_col: Any) -> Select:
    def has(tag: str) -> Any:
        return exists().where(m.Tag.resource_id == id_col, m.Tag.tag == tag)

    if tags := _tag_list(params, "tags"):
        stmt = stmt.where(and_(*(has(t) for t in tags)))
    if tags := _tag_list(params, "tags-any"):
        stmt = stmt.where(or_(*(has(t) for t in tags)))
    if tags := _tag_list(params, "not-tags"):
        stmt = stmt.where(~and_(*(has(t) for t in tags)))
    if tags := _tag_list(params, "not-tags-any"):
        stmt = stmt.where(~or_(*(has(t) for t in tags)))
    return stmt


def select_fields(item: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k in fields} if fields else item


def requested_fields(params: QueryParams) -> list[str]:
    out: list[str] = []
    for raw in params.getlist("fields"):
        out.extend(f for f in raw.split(",") if f)
    return out


def run(
    session: Session,
    spec: ListSpec,
    params: QueryParams,
    base_url: str,
    scope: Sequence[Any] = (),
) -> dict[str, Any]:
    """Answer a list request: `{plural: [...], plural_links: [...]}`. `scope` adds WHERE clauses the
    caller needs (the caller's project, the parent object)."""
    dialect = spec.dialect
    stmt = select(spec.model).where(*scope)
    for name in params:
        if name in PAGING_PARAMS or (spec.tagged and name in TAG_PARAMS):
            continue
        col = spec.columns.get(name)
        if col is not None:
            values = [_coerce(col, v, name, dialect) for v in params.getlist(name)]
            stmt = stmt.where(col.in_(values)) if len(values) > 1 else stmt.where(col == values[0])
        elif name in spec.filters:
            stmt = stmt.where(spec.filters[name](params.getlist(name)))
        elif not dialect.lenient:
            raise _error(dialect, "filter")
    id_col = spec.columns["id"] if "id" in spec.columns else getattr(spec.model, spec.id_column)
    if spec.tagged:
        stmt = _apply_tag_filters(stmt, params, id_col)

    sort_keys = parse_sort(params, spec.columns, dialect)
    if spec.id_column == "id":
        if not sort_keys:
            sort_keys = [("created_at", "asc")] if hasattr(spec.model, "created_at") else []
        if not any(k == "id" for k, _ in sort_keys):
            sort_keys.append(("id", sort_keys[0][1] if sort_keys else "asc"))
    elif not any(k == spec.id_column for k, _ in sort_keys):
        sort_keys.append((spec.id_column, "asc"))
    page_reverse = params.get("page_reverse", "false").lower() == "true"
    limit = parse_limit(params, dialect)

    marker_id = params.get("marker")
    if marker_id is not None and (marker_id or not dialect.lenient):
        marker = session.get(spec.model, marker_id)
        if marker is None:
            raise _error(dialect, "marker", marker=marker_id)
        stmt = stmt.where(_after(marker, sort_keys, spec, page_reverse))

    order = []
    for key, direction in sort_keys:
        col = _column(spec, key)
        ascending = (direction == "asc") != page_reverse
        order.append(col.asc().nulls_first() if ascending else col.desc().nulls_last())
    stmt = stmt.order_by(*order).options(*spec.options)
    if limit is not None:
        stmt = stmt.limit(limit)

    rows = list(session.scalars(stmt).unique())
    if page_reverse:
        rows.reverse()
    tags = load_tags(session, (getattr(r, spec.id_column) for r in rows)) if spec.tagged else {}
    fields = requested_fields(params)
    out: dict[str, Any] = {spec.plural: [select_fields(spec.render(r, tags), fields) for r in rows]}
    if limit is not None:
        out[f"{spec.plural}_links"] = _links(rows, limit, params, base_url, spec.id_column, dialect)
    return out


def _after(marker: Any, sort_keys: list[tuple[str, str]], spec: ListSpec, reverse: bool) -> Any:
    """Rows strictly after `marker` in the sort order (lexicographic over the sort keys)."""
    clauses = []
    for i, (key, direction) in enumerate(sort_keys):
        col = _column(spec, key)
        value = getattr(marker, col.key)
        equal_prefix = [_column(spec, k) == getattr(marker, _column(spec, k).key) for k, _ in sort_keys[:i]]
        forward = (direction == "asc") != reverse
        if value is None:
            # NULLs sort first ascending on SQLite and last on PostgreSQL; treat them as the lowest value.
            step = col.is_not(None) if forward else false()
        else:
            bound = literal(value, col.type)  # bound, as SQLAlchemy refuses `col > True` for boolean columns
            step = col > bound if forward else (col < bound) | col.is_(None)
        clauses.append(and_(*equal_prefix, step))
    return or_(*clauses)


def _links(
    rows: list[Any], limit: int, params: QueryParams, base_url: str, id_attr: str, dialect: Dialect = OCTAVIA
) -> list[dict]:
    if not rows:
        return []
    keep = [f"limit={limit}"]
    for name in dialect.link_params:
        if params.get(name):
            keep.append(f"{name}={params[name]}")
    links = []
    if params.get("marker"):
        prev = [*keep, f"marker={getattr(rows[0], id_attr)}", "page_reverse=True"]
        links.append({"rel": "previous", "href": f"{base_url}?{'&'.join(prev)}"})
    if len(rows) >= limit:
        nxt = [*keep, f"marker={getattr(rows[-1], id_attr)}"]
        links.append({"rel": "next", "href": f"{base_url}?{'&'.join(nxt)}"})
    if dialect.next_link_first:
        links.reverse()
    return links
