"""Unit tests: fake transports, task.Clock and MemoryReactor; no sockets,
no processes, no running reactor (docs/testing.md)."""
