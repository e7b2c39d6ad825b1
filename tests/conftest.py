"""Hypothesis profiles for the whole suite; pick one with HYPOTHESIS_PROFILE (default "dev").

- dev: quick local runs (the property suite in about a minute), random exploration,
  failures saved in the local example database and replayed first next time.
- ci: at least 200 examples of every test that does not set its own count, the
  same examples on every run (derandomized: a red CI is reproducible, never flaky),
  and a reproduction blob printed with every failure.

A test's own `@settings(...)` still wins for the settings it names.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
