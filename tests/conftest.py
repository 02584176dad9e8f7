"""Settings every test folder shares."""

from hypothesis import settings

# Hypothesis' per-example deadline is a wall-clock assertion: on a busy 2-core machine it fails tests
# whose logic is fine. Examples stay bounded by max_examples; time is measured by `make bench`.
settings.register_profile("project", deadline=None)
settings.load_profile("project")
