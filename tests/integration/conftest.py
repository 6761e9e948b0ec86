# The fake GitHub server and a PR with runs, shared by the integration suites.
from tests.integration.test_github import fake, pr  # noqa: F401
