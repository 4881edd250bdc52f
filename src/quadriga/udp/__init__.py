"""An engine's user-space UDP load balancer (see `quadriga.udp.proxy`)."""
