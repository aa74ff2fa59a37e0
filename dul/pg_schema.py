"""A URL to one schema of a PostgreSQL database: the stores and tests that need a database of
their own but may not create one (no CREATEDB) take a schema instead."""

from __future__ import annotations


def schema_url(postgres_url: str, schema: str) -> str:
    """`postgres_url` with `schema` as its search_path. The URL's own server options (a
    statement timeout, say) are kept: the search_path is added to them, not put in their place."""
    from sqlalchemy.engine import make_url  # the callers import sqlalchemy anyway; dul does not

    url = make_url(postgres_url)
    options = url.query.get("options")
    prefix = f"{options} " if isinstance(options, str) and options else ""
    url = url.update_query_dict({"options": f"{prefix}-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)
