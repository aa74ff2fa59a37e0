"""Fixtures of the end-to-end console tests: Debian's chromium driven by Playwright (its own
browser download cannot work here), and the directory the screenshots are kept in.

`scripts/bootstrap` installs chromium with apt when it is missing; where that was impossible
the tests fail saying so — they never skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from audit.console.testing import ARTIFACTS, CHROMIUM_ENV, Screens, find_chromium

ROOT = Path(__file__).resolve().parents[2]

# Assertions wait for the page; CI shares 2 cores with the chain and the services.
expect.set_options(timeout=15_000)


@pytest.fixture(scope="session")
def screens() -> Screens:
    return Screens(ROOT / ARTIFACTS)


# Per module, not per session: Playwright's sync API keeps an event loop running in the main
# thread while it lives, and every later test that calls asyncio.run() would fail.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = find_chromium()
    if chromium is None:
        pytest.fail(
            "chromium is not installed, so the console cannot be tested: run `apt-get install -y "
            f"chromium` (scripts/bootstrap does it where apt is available) or set {CHROMIUM_ENV}",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium)
        try:
            yield launched
        finally:
            launched.close()
