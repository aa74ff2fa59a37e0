"""Helpers for the console's end-to-end tests (tests/e2e): the real audit app served over HTTP,
and where the system chromium and the screenshots are. In the package, like `audit.testing`,
so test modules import them with their types."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.app import create_app
from audit.settings import AuditSettings
from dul.serving import serve_asgi

CHROMIUM_ENV = "DUL_CHROMIUM"
ARTIFACTS = Path("test-artifacts") / "console"


def find_chromium() -> str | None:
    """Debian's chromium (`DUL_CHROMIUM` overrides): Playwright's own browser download cannot
    work on these machines; `scripts/bootstrap` installs the package where apt is available."""
    explicit = os.environ.get(CHROMIUM_ENV)
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return shutil.which("chromium")


@contextlib.contextmanager
def serve_audit(settings: AuditSettings, *, ready_timeout: float = 20.0) -> Iterator[str]:
    """The real audit app (API and console) on a free 127.0.0.1 port, uvicorn in a thread,
    until the block ends; yields its URL once it answers."""
    with serve_asgi(create_app(settings), "audit service", ready_timeout=ready_timeout) as url:
        yield url


def sign_in(page: Any, url: str, token: str, route: str = "") -> None:
    """Opens the console at `url` + `route` (e.g. `#/agreement/0x…`), signs in with `token` on
    its sign-in page as a person would, and waits until the route is shown."""
    from playwright.sync_api import expect

    page.goto(f"{url}/{route}")
    expect(page.locator("#signin")).to_be_visible()
    page.fill("#signin-token", token)
    page.press("#signin-token", "Enter")
    expect(page.locator("#session")).to_be_visible()
    expect(page.locator("#signin")).to_be_hidden()


@dataclass
class Screens:
    """Where screenshots go: kept as test artifacts (gitignored), one PNG per view."""

    directory: Path

    def path(self, name: str) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        return str(self.directory / f"{name}.png")
