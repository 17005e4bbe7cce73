"""Root fixtures. Real services (redis-server, SeaweedFS, PostgreSQL, uvicorn, nginx) are
started by the fixture plugins below; nothing is mocked."""

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.database",
    "tests.fixtures.app",
    "tests.fixtures.workers",
    "tests.fixtures.nginx",
    "tests.fixtures.audit",
    "tests.fixtures.browser",
]
