"""Contract suites: one set of tests per port, run on every implementation of it."""
