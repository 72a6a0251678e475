"""What the tests share: real processes and servers to start (``procs``), a redis-server on a
free port (``redis_server``), a master and its protocol client (``master``), a data server and
archives (``dataserver``), node processes (``nodes``), deterministic clusters (``replay``) and
the simulated robust-aggregation runs (``robust_sim``). Still shared between test modules
directly, to move here next: test_browser_client (the page), test_protocol (strategies),
test_dataserver_store, test_limits_connections, test_tls, test_hostile_master, test_node_worker,
test_auth_browser."""
