"""The load probe: replays a workload against a running server and reports per tier."""
