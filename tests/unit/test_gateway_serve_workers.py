"""`dul gateway serve --workers N` brings a new outbox to the newest revision before it starts
any worker: workers migrating one new SQLite database at once failed (the second's upgrade from
read to write lock is refused at once), and uvicorn then stopped every worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from dul.cli.main import app
from ledger_gateway.migrations import VERSION_TABLE


def _revision(url: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(VERSION_TABLE):
                return None
            return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()  # noqa: S608 - constant
    finally:
        engine.dispose()


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_with_workers_migrates_once_before_any_worker_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    seen: dict[str, Any] = {}

    def run(target: Any, **options: Any) -> None:  # stands in for uvicorn's server loop
        seen["revision"] = _revision(url)
        seen["workers"] = options.get("workers", 1)

    monkeypatch.setattr("uvicorn.run", run)
    monkeypatch.setenv("DUL_HOME", str(tmp_path / "home"))
    args = ["gateway", "serve", "--org", "hospital-a", "--key", "k", "--port", "8799",
            "--database-url", url, "--workers", str(workers)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    if workers == 1:  # one process migrates in its own start-up, as before
        assert seen == {"revision": None, "workers": 1}
    else:
        assert seen["workers"] == workers
        assert seen["revision"] is not None  # the workers find the store migrated
