"""Unit tests of the pure compute domain logic: flavors, server life cycle, scheduler."""
