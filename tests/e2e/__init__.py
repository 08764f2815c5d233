"""End-to-end tests: real processes (twistd, twist, HAProxy, systemd,
network namespaces, packaging, the documented commands; docs/testing.md)."""
