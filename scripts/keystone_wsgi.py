"""Keystone's WSGI application for gunicorn (`gunicorn keystone_wsgi:application`).

Keystone reads its config directory from $OS_KEYSTONE_CONFIG_DIR, but oslo.config also parses sys.argv,
which under gunicorn holds gunicorn's own flags: Keystone would refuse them. So argv is cleared before the
application is built."""

import sys

sys.argv = sys.argv[:1]

from keystone.server import wsgi  # noqa: E402  (after the argv reset, on purpose)

application = wsgi.initialize_public_application()
