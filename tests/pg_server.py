"""The tests' PostgreSQL server is switch.devtools.postgresql's (the demo starts one
too); imported here so the tests keep naming it as they always have."""

from switch.devtools.postgresql import PostgresServer, ServerUnavailable, running_server

__all__ = ["PostgresServer", "ServerUnavailable", "running_server"]
