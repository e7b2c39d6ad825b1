"""Production adapters of the ports in `runtime.ports`.

Each adapter wraps one vendor library, imported only here, and maps its errors to
`runtime.errors` (the vendor exception chained as `__cause__`). Every adapter passes
the same contract suite as its SimPy model (`tests/contract/`).

- `runtime.backends.libvirt`: `LibvirtHypervisor` and `LibvirtPower` (libvirt-python).
"""
