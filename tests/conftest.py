"""Hypothesis profiles for the whole suite; pick one with HYPOTHESIS_PROFILE (default "dev").

- dev: local runs; random exploration, failures saved in the local example database
  (.hypothesis/) and replayed first next time. The property suite passes in ~20 s.
- ci: 600 examples of every test that does not set its own count (at least 200 are
  required of the cloud state machine; 600 pass in about a minute), the same examples
  on every run (derandomized: a red CI is reproducible, never flaky), and a
  reproduction blob printed with every failure.

Both lift the per-example deadline: a state machine example runs a whole region.
A test's own `@settings(...)` still wins for the settings it names.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("ci", max_examples=600, deadline=None, derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
