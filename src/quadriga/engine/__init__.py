"""The data plane's engine config: the declarative spec the controller sends to an agent (`spec`), its
construction from the database (`build`), and its rendering into haproxy.cfg (`render`) and the UDP proxy's
config (`udp`). Nothing is imported here, so the UDP proxy process loads only what it uses."""
