"""The query API fixtures (tokens, a migrated database, row insertion as the sink writes rows)."""

from tests.query_api.conftest import api_settings, insert  # noqa: F401 - fixtures
