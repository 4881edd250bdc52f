"""Authorization: Octavia's API access rules (octavia/policies/base.py) over quadriga roles.

The caller's Keystone roles become quadriga roles through the role mapping (quadriga.api.rolemap, applied
by common.context); the default mapping gives exactly Octavia's default policy. Endpoints ask for one of
the rules read, read-global, write, read-quota, read-quota-global, write-quota, admin. A caller the
mapping gives no role is refused, saying so; noauth callers are admin whatever the mapping says."""

from __future__ import annotations

from quadriga.api import rolemap
from quadriga.api.auth import RequestContext
from quadriga.api.errors import Forbidden, PolicyForbidden

READ = "read"
READ_GLOBAL = "read-global"
WRITE = "write"
READ_QUOTA = "read-quota"
READ_QUOTA_GLOBAL = "read-quota-global"
WRITE_QUOTA = "write-quota"
ADMIN = "admin"
RULES = (READ, READ_GLOBAL, WRITE, READ_QUOTA, READ_QUOTA_GLOBAL, WRITE_QUOTA, ADMIN)

# quadriga role -> (rules it passes for any project, rules it passes for its own project only). From
# base.py: read = observer_and_owner | global_observer | member_and_owner | admin; read-global =
# global_observer | admin; write = member_and_owner | admin; read-quota = read's | quota-admin;
# read-quota-global = global_observer | quota-admin | admin; write-quota = quota-admin | admin.
GRANTS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    rolemap.ADMIN: (frozenset(RULES), frozenset()),
    rolemap.GLOBAL_OBSERVER: (frozenset({READ, READ_GLOBAL, READ_QUOTA, READ_QUOTA_GLOBAL}), frozenset()),
    rolemap.QUOTA_ADMIN: (frozenset({READ_QUOTA, READ_QUOTA_GLOBAL, WRITE_QUOTA}), frozenset()),
    rolemap.MEMBER: (frozenset(), frozenset({READ, WRITE, READ_QUOTA})),
    rolemap.OBSERVER: (frozenset(), frozenset({READ, READ_QUOTA})),
}


class RoleRefused(Forbidden):
    """A caller none of whose Keystone roles the role mapping maps, with no default role."""

    def __init__(self, ctx: RequestContext) -> None:
        held = ", ".join(sorted(ctx.roles)) or "none"
        super().__init__(
            f"Policy does not allow this request to be performed: no quadriga role for the caller's "
            f"roles ({held}) in the role mapping, and no default role."
        )


def allowed(ctx: RequestContext, rule: str, project_id: str | None = None) -> bool:
    """Whether `ctx` passes `rule` for an object owned by `project_id`."""
    if ctx.is_admin:
        return True
    owner = ctx.project_id is not None and ctx.project_id == project_id
    for role in ctx.quadriga_roles:
        anywhere, own = GRANTS[role]
        if rule in anywhere or (owner and rule in own):
            return True
    return False


def enforce(ctx: RequestContext, rule: str, project_id: str | None = None) -> None:
    if allowed(ctx, rule, project_id):
        return
    if not ctx.quadriga_roles:
        raise RoleRefused(ctx)
    raise PolicyForbidden()
