"""`python -m audit.migrations [postgresql+psycopg://…]`: rewrites the schema snapshots from the
revisions (SQLite always; PostgreSQL given a role that may create databases)."""

from __future__ import annotations

import sys

from audit.migrations import SNAPSHOTS, VERSION_TABLE, replay
from dul.schema_snapshot import rewrite_main

if __name__ == "__main__":
    rewrite_main(sys.argv, SNAPSHOTS, VERSION_TABLE, replay)
