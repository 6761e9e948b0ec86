# Fixtures shared with the integration suites (the fake GitHub server, a PR with runs).
from tests.integration.test_github import fake, pr  # noqa: F401
from tests.integration.test_review import reviewed  # noqa: F401
