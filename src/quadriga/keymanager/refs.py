"""Secret and container refs: the URLs tenants hand to listeners and pools.

A ref names its target by the end of its path, `/v1/secrets/<uuid>` or `/v1/containers/<uuid>`; the host
part is not trusted for anything (a ref is looked up in the configured store, never fetched from where it
points)."""

from __future__ import annotations

import re
import uuid
from typing import Literal
from urllib.parse import urlsplit

from quadriga.keymanager import SecretNotFound

Kind = Literal["secrets", "containers"]

_PATH = re.compile(r"/v1/(secrets|containers)/([0-9a-fA-F-]{32,36})/?$")


def parse_ref(ref: str) -> tuple[Kind, str]:
    """("secrets"|"containers", id) of a ref; SecretNotFound when it is not a secret's or container's URL."""
    try:
        path = urlsplit(str(ref)).path
    except ValueError:
        path = ""
    match = _PATH.search(path)
    if match is None:
        raise SecretNotFound(f"{ref!r} is not a secret or container ref (…/v1/secrets/<id>, …/v1/containers/<id>)")
    try:
        ident = str(uuid.UUID(match.group(2)))
    except ValueError:
        raise SecretNotFound(f"{ref!r} does not end in a valid id") from None
    return match.group(1), ident  # type: ignore[return-value]
