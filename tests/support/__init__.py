"""What the tests of every tier share: fakes, helpers, processes, certificates."""
