"""The audit console shows break-glass accesses: an unreviewed one on its agreement's page (reason
and deadline) and, from the last verify, on the front page among those awaiting the holder's
review. Real chain, real audit service, Chromium."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eth_hash.auto import keccak
from playwright.sync_api import Browser, Page, expect

from audit.console.testing import Screens, serve_audit, sign_in
from audit.settings import AuditSettings
from audit.testing import (
    audit_token,
    index_into,
    private_world,
    record_break_glass,
    with_token_file,
)
from dul.chain.testing import ChainHandle
from dul.contracts.world import World

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(
    world: World, chain: ChainHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, str, str]]:
    """One unreviewed break-glass access on a deployment of this module's own, indexed and
    served: (console URL, regulator token, agreement id, access id)."""
    manifest = tmp_path_factory.mktemp("glass-console") / "deployment.json"
    own = private_world(chain.rpc_url, manifest)
    agreement, access = record_break_glass(own, keccak(b"console break-glass patient"))
    store = tmp_path_factory.mktemp("glass-console-store") / "audit.db"
    index_into(own.ledger.deployment, chain.rpc_url, f"sqlite:///{store}").dispose()
    settings = with_token_file(AuditSettings(
        database_url=f"sqlite:///{store}", rpc_url=chain.rpc_url, deployment_path=manifest,
        index_behind_blocks=10_000_000, index_behind_s=31_536_000,  # a static store
    ))  # fmt: skip
    with serve_audit(settings) as url:
        yield url, audit_token(settings), "0x" + agreement.hex(), "0x" + access.hex()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, f"the console threw: {errors}"


def test_the_console_lists_break_glass_awaiting_review(
    page: Page, served: tuple[str, str, str, str], screens: Screens
) -> None:
    url, token, agreement, access = served
    sign_in(page, url, token)
    awaiting = page.locator("#front-break-glass-table")
    expect(awaiting).to_contain_text("Break-glass accesses awaiting review (1)")
    expect(awaiting).to_contain_text("LIFE_THREATENING_EMERGENCY")
    expect(awaiting.locator(f'a[title="{access}"]')).to_be_visible()
    page.goto(f"{url}/#/agreement/{agreement}")
    compliance = page.locator("section.card:has(#compliance-title)")
    expect(compliance).to_contain_text("Break-glass accesses")
    expect(compliance).to_contain_text("the holder reviews each within 1 h")
    expect(compliance).to_contain_text("awaiting review by")
    page.screenshot(path=screens.path("console-break-glass"), full_page=True)
