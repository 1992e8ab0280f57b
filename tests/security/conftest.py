"""The security tests' fixtures: the real services (``tests/integration/conftest.py``) and the
gateway run in process or with real uvicorn (``tests/integration/gateway/conftest.py``), shared
rather than copied."""

from tests.integration.conftest import *  # noqa: F403
from tests.integration.gateway.conftest import *  # noqa: F403
