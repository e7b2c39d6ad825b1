"""Simulation: the virtual-time driver, SimPy models of the ports, failures, scenarios."""
