"""Settings and session fixtures every test folder shares."""

from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.components import ComponentArtifacts
from tests.log_capture import EveryLogLine

# Hypothesis' per-example deadline is a wall-clock assertion: on a busy 2-core machine it fails tests
# whose logic is fine. Examples stay bounded by max_examples; time is measured by `make bench`.
settings.register_profile("project", deadline=None)
settings.load_profile("project")


@pytest.fixture(scope="session")
def component_artifacts(tmp_path_factory: pytest.TempPathFactory) -> ComponentArtifacts:
    """Real components, built and compiled once per session (per xdist worker: use the group "components")."""
    return ComponentArtifacts(tmp_path_factory.mktemp("components"))


@pytest.fixture
def every_log_line(caplog: pytest.LogCaptureFixture) -> Iterator[EveryLogLine]:
    """Every log line of the test, at DEBUG (:class:`tests.log_capture.EveryLogLine`)."""
    capture = EveryLogLine(caplog)
    try:
        yield capture
    finally:
        capture.close()
