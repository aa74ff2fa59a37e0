"""`python -m ledger_gateway.migrations [postgresql+psycopg://…]`: rewrites the schema snapshots
from the revisions (SQLite always; PostgreSQL given a role that may create databases)."""

from __future__ import annotations

import sys

from dul.schema_snapshot import rewrite
from ledger_gateway.migrations import SNAPSHOTS, VERSION_TABLE, replay

if __name__ == "__main__":
    postgres = sys.argv[1] if len(sys.argv) > 1 else None
    for path in rewrite(SNAPSHOTS, VERSION_TABLE, replay, postgres):
        sys.stdout.write(f"{path}\n")
