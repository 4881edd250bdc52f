"""The agent: one per host, owns that host's engines (HAProxy processes and their network plumbing).

Modules:
* `runtime`  - a client for HAProxy's runtime API (the stats socket): show stat/info/servers state, set server.
* `haproxy`  - one HAProxy master-worker process: check a config, start, reload seamlessly, stop, adopt after
               a crash (by its pid file).
* `engine`   - one engine: applies a whole `EngineSpec` (runtime API where it is enough, else render ->
               `haproxy -c` -> atomic swap -> reload) and reports HAProxy's view as an `EngineReport`.
* `agent`    - the host's set of engines and its network driver (`Agent`).
* `api`      - the agent's HTTPS API for the controller (mutual TLS); `client` is the controller's side.
"""
