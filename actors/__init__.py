"""The Flexible Engine domain as actors: topology, tenants, compute, recovery."""
