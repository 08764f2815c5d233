"""Integration tests: one process with the real reactor (pytest-twisted),
real loopback TCP and TLS, real thread and process pools (docs/testing.md)."""
