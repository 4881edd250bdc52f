"""Network drivers: how an engine's VIPs become reachable (see `base.NetworkDriver`)."""
