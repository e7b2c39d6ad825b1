"""fe-runtime kernel: actors, supervision, the actor context, drivers, ports, errors."""
