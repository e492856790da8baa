"""Fixtures shared by the whole suite. Real servers come from the modules of `tests.services`."""

pytest_plugins = [
    "tests.services.postgres",
    "tests.services.redis",
    "tests.services.seaweedfs",
    "tests.services.kafka",
    "tests.services.clamd",
    "tests.services.chdb",
    "tests.services.pushgateway",
]
