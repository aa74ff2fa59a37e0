"""`python -m ledger_gateway.migrations [postgresql+psycopg://…]`: rewrites the schema snapshots
from the revisions (SQLite always; PostgreSQL given a role that may create databases)."""

from __future__ import annotations

import sys

from dul.schema_snapshot import rewrite_main
from ledger_gateway.migrations import SNAPSHOTS, VERSION_TABLE, replay

if __name__ == "__main__":
    rewrite_main(sys.argv, SNAPSHOTS, VERSION_TABLE, replay)
