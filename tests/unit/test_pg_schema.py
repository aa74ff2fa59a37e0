from __future__ import annotations

from sqlalchemy.engine import make_url

from dul.pg_schema import schema_url


def test_schema_url_sets_search_path_and_keeps_the_password() -> None:
    url = make_url(schema_url("postgresql+psycopg://dul:secret@127.0.0.1:5432/db", "s1"))
    assert url.password == "secret"
    assert url.database == "db"
    assert url.query["options"] == "-csearch_path=s1"


def test_schema_url_adds_to_the_urls_own_options() -> None:
    base = "postgresql+psycopg://dul@h/db?options=-cstatement_timeout%3D5000"
    url = make_url(schema_url(base, "s2"))
    assert url.query["options"] == "-cstatement_timeout=5000 -csearch_path=s2"
