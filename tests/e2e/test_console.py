"""The regulator console in a real headless chromium, against the real audit service over a
store indexed from the session's chain: search by id (the kind guessed or chosen) reaches the
datasets, a node selected from the keyboard shows its chain reference, a denied access and a
suspended agreement are marked by more than colour, the agreement page shows signatures,
lifecycle and compliance report, PROV-JSON and FHIR exports download and parse, and the live
verify status names the checked block — and turns to a failure, with the edited row's node
flagged, when the store is edited.

Screenshots of the main views (1280x800 and 400 wide) are kept in test-artifacts/console/.
Artifact search (the artifact registry) is not tested here: released results are the only
artifacts until that registry exists.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fhir.resources.R4B.bundle import Bundle
from playwright.sync_api import Browser, Page, ViewportSize, expect
from prov.model import ProvDocument

from audit.auth import AuditRole
from audit.console.testing import Screens, serve_audit, sign_in
from audit.events import DecodedEvent
from audit.indexer import Indexer
from audit.migrations import migrate
from audit.settings import AuditSettings
from audit.store import AuditStore, create_store_engine
from audit.testing import (
    TestIdentityProvider,
    audit_token,
    bearer,
    index_into,
    private_world,
    record_story,
    with_token_file,
)
from dul.chain.rpc import RpcClient
from dul.chain.testing import ChainHandle
from dul.contracts.world import World

pytestmark = pytest.mark.integration

WIDE: ViewportSize = {"width": 1280, "height": 800}
NARROW: ViewportSize = {"width": 400, "height": 800}


def hexed(value: bytes) -> str:
    return "0x" + value.hex()


@dataclass
class Stack:
    url: str
    store: Path
    settings: AuditSettings
    ids: dict[str, str]
    checkpoint: int
    token: str
    """A regulator's API token."""


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console-deployment") / "deployment.json"


@pytest.fixture(scope="module")
def world(world: World, chain: ChainHandle, manifest: Path) -> World:
    """A deployment of this module's own: verify, the lists and the graphs answer about this
    module's story only, whatever other tests left on the session's chain. (Built after the
    session's world, whose members, the same keys, the permissioned endpoint admits.)"""
    return private_world(chain.rpc_url, manifest)


@pytest.fixture(scope="module")
def stack(
    world: World,
    chain: ChainHandle,
    manifest: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The audit story (a granted query, a granted export with its released extract, a denial
    for tier) under an agreement that was suspended and resumed, and a second agreement a
    regulator suspended; indexed into SQLite and served."""
    agreement, granted, exported, denied, result = record_story(world)
    registry = "AgreementRegistry"
    world.ledger.transact(world.steward, registry, "suspend", agreement, b"audit".ljust(32, b"\0"))
    world.ledger.transact(world.steward, registry, "resume", agreement)
    suspended = world.activate(world.research_terms(quota=5))
    world.ledger.transact(world.regulator, registry, "suspend", suspended, bytes(32))
    store = tmp_path_factory.mktemp("console") / "audit.db"
    engine = index_into(world.ledger.deployment, chain.rpc_url, f"sqlite:///{store}")
    with engine.connect() as conn:
        checkpoint = int(conn.execute(sa.text("SELECT block_number FROM checkpoint")).scalar_one())
    engine.dispose()
    settings = with_token_file(AuditSettings(
        database_url=f"sqlite:///{store}", rpc_url=chain.rpc_url, deployment_path=manifest,
        index_behind_blocks=10_000_000, index_behind_s=31_536_000,  # a static store
    ))  # fmt: skip
    token = audit_token(settings)
    ids = {
        "agreement": hexed(agreement),
        "granted": hexed(granted.request.request_id),
        "exported": hexed(exported.request.request_id),
        "denied": hexed(denied.request.request_id),
        "result": hexed(result),
        "suspended": hexed(suspended),
        "dataset": hexed(world.dataset),
        "steward": world.steward.address.lower(),
        "partner": world.partner_steward.address.lower(),
    }
    with serve_audit(settings) as url:
        yield Stack(url, store, settings, ids, checkpoint, token)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=WIDE, accept_downloads=True)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, f"the console threw: {errors}"


def search(page: Page, value: str, kind: str = "auto", direction: str = "both") -> None:
    page.select_option("#search-kind", kind)
    page.select_option("#search-direction", direction)
    page.fill("#search-id", value)
    page.press("#search-id", "Enter")


def node(page: Page, node_id: str) -> Any:
    return page.locator(f'#node-list button[data-node="{node_id}"]')


def wait_drawn(page: Page) -> None:
    """The graph is drawn: cytoscape holds every node the list shows. (An `expect`, not
    `wait_for_function`, whose string predicates the console's CSP refuses to evaluate.)"""
    listed = page.locator("#node-list button")
    expect(listed.first).to_be_visible()
    expect(page.locator("#graph")).to_have_attribute("data-drawn", str(listed.count()))


def test_search_reaches_the_datasets(page: Page, stack: Stack, screens: Screens) -> None:
    ids = stack.ids
    sign_in(page, stack.url, stack.token)
    expect(page.locator("#home")).to_be_visible()

    # An agreement id with the kind left to guess; Enter searches.
    search(page, ids["agreement"])
    expect(page).to_have_url(
        f"{stack.url}/#/provenance/agreement/{ids['agreement']}?direction=both"
    )
    expect(node(page, f"dataset:{ids['dataset']}")).to_contain_text("hospital-a/omop-cdm")
    for kind in ("organization", "account", "signature", "access", "artifact"):
        expect(page.locator(f'#node-list button[data-type="{kind}"]').first).to_be_visible()
    wait_drawn(page)
    page.screenshot(path=screens.path("provenance-agreement-1280x800"))

    # Keyboard: Tab order reaches the list; arrows move; Enter selects and shows the chain
    # reference of the node, the same as the API's.
    graph = httpx.get(f"{stack.url}/v1/provenance/agreement/{ids['agreement']}",
                      headers=bearer(stack.token)).json()  # fmt: skip
    dataset = next(n for n in graph["nodes"] if n["type"] == "dataset")
    first = page.locator("#node-list button").first
    first.focus()
    for _ in range(20):
        if page.evaluate("document.activeElement.dataset.type") == "dataset":
            break
        page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    details = page.locator("#details")
    expect(details.locator("h3")).to_have_text("dataset: hospital-a/omop-cdm")
    expect(details).to_contain_text(dataset["chain"]["tx_hash"])
    expect(details.locator("dd").first).to_have_text(str(dataset["chain"]["block"]))
    expect(node(page, dataset["id"])).to_have_attribute("aria-current", "true")

    # A click on a node in the graph selects it too.
    denied = f"access:{ids['denied']}@{ids['agreement']}"
    box = page.locator("#graph").bounding_box()
    assert box is not None
    # (panned into view first, as a user would drag it: the view frames the selection)
    where = page.evaluate(
        "id => { const cy = document.querySelector('#graph').cy;"
        " cy.center(cy.getElementById(id)); return cy.getElementById(id).renderedPosition(); }",
        denied,
    )
    page.mouse.click(box["x"] + where["x"], box["y"] + where["y"])
    expect(details.locator("h3")).to_have_text("access: access denied (TIER_ABOVE_CEILING)")
    expect(node(page, denied)).to_have_attribute("aria-current", "true")

    # A dataset by its slug (guessed: dataset), then an access by its id with the kind chosen.
    search(page, "hospital-a/omop-cdm")
    expect(page.locator("#provenance-title")).to_have_text(
        "Provenance of dataset hospital-a/omop-cdm"
    )
    expect(node(page, f"dataset:{ids['dataset']}")).to_contain_text("◎")  # the searched node
    expect(node(page, f"agreement:{ids['agreement']}")).to_be_visible()
    search(page, ids["granted"], kind="access", direction="up")
    expect(page.locator("#provenance-title")).to_have_text(f"Provenance of access {ids['granted']}")
    expect(node(page, f"access:{ids['granted']}@{ids['agreement']}")).to_contain_text("◎")
    expect(node(page, f"dataset:{ids['dataset']}")).to_be_visible()
    expect(node(page, f"agreement:{ids['agreement']}")).to_be_visible()
    expect(page.locator("#node-list")).to_contain_text("Hospital A")

    # An id the store does not hold: the API's problem, said plainly.
    search(page, "0x" + "ab" * 32)
    expect(page.locator("#message")).to_contain_text("nothing in the audit store has id")


def test_denied_and_flagged_are_marked_beyond_colour(
    page: Page, stack: Stack, screens: Screens
) -> None:
    ids = stack.ids
    sign_in(
        page, stack.url, stack.token, f"#/provenance/agreement/{ids['agreement']}?direction=both"
    )
    denied = node(page, f"access:{ids['denied']}@{ids['agreement']}")
    expect(denied).to_have_attribute("data-denied", "true")
    expect(denied).to_contain_text("✕ DENIED")
    expect(denied).to_have_css("border-top-style", "double")
    granted = node(page, f"access:{ids['granted']}@{ids['agreement']}")
    expect(granted).not_to_have_attribute("data-denied", "true")
    denied.click()
    expect(page.locator("#details")).to_contain_text("TIER_ABOVE_CEILING")
    expect(page.locator("#details .badge-denied")).to_have_text("✕ DENIED")
    wait_drawn(page)
    page.screenshot(path=screens.path("denied-access-1280x800"))

    # The same denial searched directly by its id.
    search(page, ids["denied"])
    expect(page.locator("#provenance-title")).to_have_text(f"Provenance of access {ids['denied']}")
    expect(node(page, f"access:{ids['denied']}@{ids['agreement']}")).to_contain_text("◎")
    expect(node(page, f"access:{ids['denied']}@{ids['agreement']}")).to_contain_text("DENIED")

    # An agreement a regulator suspended is flagged: dashed border and a label.
    search(page, ids["suspended"], kind="agreement")
    flagged = node(page, f"agreement:{ids['suspended']}")
    expect(flagged).to_have_attribute("data-flagged", "true")
    expect(flagged).to_contain_text("⚑ status SUSPENDED")
    expect(flagged).to_have_css("border-top-style", "dashed")


def test_agreement_page(page: Page, stack: Stack, screens: Screens) -> None:
    ids = stack.ids
    sign_in(page, stack.url, stack.token, f"#/provenance/agreement/{ids['agreement']}")
    page.click("#open-agreement")
    expect(page).to_have_url(f"{stack.url}/#/agreement/{ids['agreement']}")
    body = page.locator("#agreement-body")
    signatures = body.locator("section:has(#signatures-title) tbody tr")
    expect(signatures).to_have_count(2)
    expect(signatures.nth(0)).to_contain_text("holder")
    expect(signatures.nth(0)).to_contain_text(ids["steward"])
    expect(signatures.nth(1)).to_contain_text("requester")
    expect(signatures.nth(1)).to_contain_text(ids["partner"])
    lifecycle = body.locator(".lifecycle li strong")
    expect(lifecycle).to_have_text(["PROPOSED", "ACTIVE", "SUSPENDED", "ACTIVE"])
    compliance = body.locator("section:has(#compliance-title)")
    expect(compliance).to_contain_text("3 (2 granted, 1 denied)")
    expect(compliance).to_contain_text("2 / 50 (4.00 %)")
    expect(compliance).to_contain_text("TIER_ABOVE_CEILING")
    expect(compliance).to_contain_text("DEIDENTIFIED_EXTRACT")
    expect(compliance).to_contain_text("no findings for this agreement")
    expect(body).to_contain_text("RESEARCH")
    page.screenshot(path=screens.path("agreement-page-1280x800"))
    page.set_viewport_size(NARROW)
    expect(signatures).to_have_count(2)
    page.screenshot(path=screens.path("agreement-page-400-full"), full_page=True)


def test_exports_download_prov_json_and_fhir(page: Page, stack: Stack, tmp_path: Path) -> None:
    ids = stack.ids
    sign_in(
        page, stack.url, stack.token, f"#/provenance/agreement/{ids['agreement']}?direction=both"
    )
    expect(node(page, f"access:{ids['denied']}@{ids['agreement']}")).to_be_visible()
    with page.expect_download() as prov_download:
        page.click("#export-prov")
    saved = tmp_path / prov_download.value.suggested_filename
    prov_download.value.save_as(saved)
    assert saved.name.endswith(".prov.json")
    text = saved.read_text()
    body = json.loads(text)
    assert {"entity", "activity", "agent"} <= set(body)
    assert f"dul:access-{ids['denied']}-{ids['agreement']}" in body["activity"]
    assert len(list(ProvDocument.deserialize(content=text, format="json").get_records())) > 5

    with page.expect_download() as fhir_download:
        page.click("#export-fhir")
    fhir = tmp_path / fhir_download.value.suggested_filename
    fhir_download.value.save_as(fhir)
    bundle = Bundle.model_validate_json(fhir.read_text())
    assert bundle.type == "collection"
    assert len(bundle.entry or []) >= 3


def test_the_transparency_report_shows_each_code_s_kind_and_uses(
    page: Page, stack: Stack, screens: Screens
) -> None:
    """A subject's codes as the report gives them: a single-use code (once, used by one
    access) and a multi-use one (until it expires, used by three, the last one linked)."""
    subject = "0x" + "5e" * 32
    last = "0x" + "a3" * 32
    agreement = "0x" + "a9" * 32
    chain = {"block": 7, "tx_index": 0, "log_index": 1, "tx_hash": "0x" + "07" * 32}

    def code(n: int, multi_use: bool, uses: int, access: str | None) -> dict[str, Any]:
        return {
            "code_hash": "0x" + f"{n:02x}" * 32, "holder_org": "0x" + "e5" * 32,
            "grantee_org": "0x" + "1a" * 32, "grantee_name": "Insurer",
            "dataset_id": stack.ids["dataset"], "scenario": "INSURANCE_CLAIM",
            "tier": "PSEUDONYMIZED", "expires_at": 1_900_000_000,
            "status": "ISSUED" if multi_use else "REDEEMED",
            "issued_by": "patient", "issued": chain, "issued_time": None,
            "redeemed": chain if access else None, "redeemed_by_access": access,
            "redeemed_by_agreement": agreement if access else None,
            "multi_use": multi_use, "uses": uses,
        }  # fmt: skip

    def with_codes(route: Any) -> None:
        report = route.fetch().json()
        report["authorizations"] = [code(0xC0, False, 1, "0x" + "a1" * 32),
                                    code(0xC1, True, 3, last)]  # fmt: skip
        route.fulfill(json=report)

    page.route("**/v1/subjects/**", with_codes)
    sign_in(page, stack.url, stack.token, f"#/subject/{subject}")
    rows = page.locator("#subject-codes tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator('td[data-label="use"]')).to_have_text("once")
    expect(rows.nth(0).locator('td[data-label="uses"]')).to_have_text("1")
    expect(rows.nth(1).locator('td[data-label="use"]')).to_have_text("until expiry")
    expect(rows.nth(1).locator('td[data-label="uses"]')).to_have_text("3")
    redeemed = rows.nth(1).locator('td[data-label="redeemed"]')
    expect(redeemed).to_contain_text("last by access")
    expect(redeemed.locator(f'[title="{last}"]')).to_be_visible()
    # a request id names one access per agreement: the link names the access by both
    link = f"#/provenance/access/{last}@{agreement}?direction=up"
    expect(redeemed.locator(f'[title="{last}"]')).to_have_attribute("href", link)
    page.screenshot(path=screens.path("subject-codes-once-and-multi-use-1280x800"))


def test_front_door_as_a_regulator(page: Page, stack: Stack, screens: Screens) -> None:
    """The landing page lists organizations, agreements (status, quota use), recent accesses
    and the open findings; each row opens its view."""
    sign_in(page, stack.url, stack.token, "#/")
    agreements = page.locator("#front-agreements-table")
    suspended = page.locator(f'a[href="#/agreement/{stack.ids["suspended"]}"]')
    expect(agreements.locator(suspended)).to_be_visible()
    row = agreements.locator("tr", has=suspended)
    expect(row).to_contain_text("⚑ SUSPENDED")
    expect(row).to_contain_text("0 / 5")
    main = agreements.locator(
        "tr", has=page.locator(f'a[href="#/agreement/{stack.ids["agreement"]}"]')
    )
    expect(main).to_contain_text("ACTIVE")
    expect(main).to_contain_text("2 / 50")  # the granted query and export
    accesses = page.locator("#front-accesses-table")
    denied = accesses.locator("tr", has=page.locator(f'a[title="{stack.ids["denied"]}"]'))
    expect(denied).to_contain_text("✕ DENIED")
    expect(denied).to_contain_text("TIER_ABOVE_CEILING")
    granted = accesses.locator("tr", has=page.locator(f'a[title="{stack.ids["granted"]}"]'))
    expect(granted).to_contain_text("GRANTED")
    organizations = page.locator("#front-organizations-table")
    expect(organizations).to_contain_text("Hospital A")
    expect(page.locator("#front-findings")).to_contain_text(
        f"none: the store matches the chain up to block {stack.checkpoint}"
    )
    # The status filter asks the API again.
    page.select_option("#front-status", "SUSPENDED")
    expect(agreements.locator("tbody tr")).to_have_count(1)
    expect(agreements).to_contain_text("SUSPENDED")
    page.select_option("#front-status", "")
    expect(main).to_be_visible()
    page.screenshot(path=screens.path("front-door-1280x800"))

    # Every list links into the views.
    main.locator("a").first.click()
    expect(page.locator("#agreement-title")).to_have_text(f"Agreement {stack.ids['agreement']}")
    page.go_back()
    denied.locator(f'a[title="{stack.ids["denied"]}"]').click()
    # an access is opened by its request id at its agreement (an id names one per agreement)
    expect(page.locator("#provenance-title")).to_have_text(
        f"Provenance of access {stack.ids['denied']}@{stack.ids['agreement']}"
    )
    wait_drawn(page)
    page.go_back()
    organizations.get_by_role("link", name="Hospital A").click()
    expect(page.locator("#provenance-title")).to_have_text("Provenance of organization hospital-a")


def test_front_door_as_an_organization(browser: Browser, stack: Stack) -> None:
    """Hospital A's token: itself only, its agreements and their accesses, the verify verdict
    without the findings; a party it is not (another hospital's agreement) is not listed."""
    token = audit_token(stack.settings, AuditRole.ORGANIZATION, "hospital-a")
    other = audit_token(stack.settings, AuditRole.ORGANIZATION, "nobody-here")
    context = browser.new_context(viewport=WIDE)
    page = context.new_page()
    sign_in(page, stack.url, token, "#/")
    rows = page.locator("#front-organizations-table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("Hospital A")
    agreements = page.locator("#front-agreements-table tbody tr")
    expect(agreements.first).to_be_visible()
    for index in range(agreements.count()):
        expect(agreements.nth(index)).to_contain_text("Hospital A")
    expect(page.locator(f'#front-accesses-table a[title="{stack.ids["denied"]}"]')).to_be_visible()
    context.close()
    # An organization the store does not know is shown nothing.
    context = browser.new_context(viewport=WIDE)
    page = context.new_page()
    sign_in(page, stack.url, other, "#/")
    expect(page.locator("#front-organizations-table")).to_contain_text("Organizations (0): none")
    expect(page.locator("#front-agreements-table")).to_contain_text("Agreements (0): none")
    expect(page.locator("#front-accesses-table")).to_contain_text("none")
    context.close()


def test_verify_status_and_narrow_layout(page: Page, stack: Stack, screens: Screens) -> None:
    page.set_viewport_size(NARROW)
    sign_in(page, stack.url, stack.token,
            f"#/provenance/agreement/{stack.ids['agreement']}?direction=both")  # fmt: skip
    status = page.locator("#verify")
    expect(status).to_have_attribute("data-state", "ok")
    expect(status).to_contain_text(f"store matches the chain up to block {stack.checkpoint}")
    indexer = page.locator("#indexer")
    expect(indexer).to_have_attribute("data-state", "ok")
    expect(indexer).to_contain_text(f"Indexer following: block {stack.checkpoint}")
    expect(node(page, f"access:{stack.ids['denied']}@{stack.ids['agreement']}")).to_be_visible()
    wait_drawn(page)
    # Nothing wider than the viewport: the layout reflows instead of scrolling sideways.
    assert page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
    page.screenshot(path=screens.path("provenance-agreement-400x800"))
    page.screenshot(path=screens.path("provenance-agreement-400-full"), full_page=True)


def test_verify_findings_flag_the_edited_row(
    browser: Browser, stack: Stack, screens: Screens, tmp_path: Path
) -> None:
    """A copy of the store with one access row edited, served on its own: the status turns to
    a failure naming the check, and the access whose row differs is flagged."""
    edited = tmp_path / "edited.db"
    shutil.copy(stack.store, edited)
    engine = sa.create_engine(f"sqlite:///{edited}")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE access_event SET cohort_size = 7 WHERE access_id = :k"),
                     {"k": stack.ids["granted"]})  # fmt: skip
    engine.dispose()
    settings = stack.settings.model_copy(update={"database_url": f"sqlite:///{edited}"})
    with serve_audit(settings) as url:
        context = browser.new_context(viewport=WIDE)
        page = context.new_page()
        sign_in(
            page, url, stack.token, f"#/provenance/access/{stack.ids['granted']}?direction=both"
        )
        status = page.locator("#verify")
        expect(status).to_have_attribute("data-state", "findings")
        expect(status).to_contain_text("Verify FAILED")
        expect(status).to_contain_text("row_differs")
        edited_node = node(page, f"access:{stack.ids['granted']}@{stack.ids['agreement']}")
        expect(edited_node).to_have_attribute("data-flagged", "true")
        expect(edited_node).to_contain_text("verify: row_differs")
        expect(page.locator("#details .badge-flagged")).to_have_text("⚑ verify: row_differs")
        wait_drawn(page)
        page.screenshot(path=screens.path("verify-findings-1280x800"))
        context.close()


def test_verify_that_skipped_checks_is_not_shown_as_verified(
    browser: Browser, stack: Stack, tmp_path: Path
) -> None:
    """An empty store (nothing indexed yet) verifies without findings but compares nothing with
    the chain: the header says "OK as far as checked" and names the skipped check, never
    "Verified"."""
    empty = tmp_path / "empty.db"
    migrate(f"sqlite:///{empty}")
    settings = stack.settings.model_copy(update={"database_url": f"sqlite:///{empty}"})
    with serve_audit(settings) as url:
        context = browser.new_context(viewport=WIDE)
        page = context.new_page()
        sign_in(page, url, stack.token, "#/")
        status = page.locator("#verify")
        expect(status).to_have_attribute("data-state", "partial")
        expect(status).to_contain_text("OK as far as checked")
        expect(status).to_contain_text("the store is empty")
        expect(status).not_to_contain_text("Verified")
        context.close()


def test_a_quarantined_event_turns_the_header_red_and_indexing_goes_on(
    browser: Browser,
    world: World,
    chain: ChainHandle,
    manifest: Path,
    screens: Screens,
    tmp_path: Path,
) -> None:
    """A real indexer follows the chain and refuses one access (its `apply_check` seam): the
    event is quarantined, the next one is indexed, `/readyz` is 503, verify is not OK, and the
    console's header shows the indexer red, naming the quarantined event."""
    agreement = world.activate(world.research_terms(quota=10))
    refused = world.access_record(agreement)
    refused_id = hexed(refused.request.request_id)
    url = f"sqlite:///{tmp_path / 'following.db'}"
    engine = create_store_engine(url)
    migrate(engine)
    deployment = world.ledger.deployment
    indexer = Indexer(
        AuditStore(engine), RpcClient(chain.rpc_url), chain_id=deployment.chain_id,
        contracts=deployment.addresses, start_block=int(deployment.raw["block"]),
        poll_interval=0.1,
    )  # fmt: skip

    def apply_check(event: DecodedEvent) -> None:
        if event.name == "AccessRecorded" and event.args["accessId"] == refused_id:
            raise ValueError("refused on purpose by the test")

    indexer.apply_check = apply_check
    stop = threading.Event()
    follower = threading.Thread(target=lambda: indexer.run(follow=True, stop=stop), daemon=True)
    follower.start()
    try:
        world.ledger.transact(world.gateway, "AccessLog", "recordAccesses", [refused.as_abi()])
        later = world.access_record(agreement)
        world.ledger.transact(world.gateway, "AccessLog", "recordAccesses", [later.as_abi()])
        deadline = time.monotonic() + 60
        while True:  # indexing goes on past the quarantined event
            with engine.connect() as conn:
                found = conn.execute(sa.text("SELECT 1 FROM access_event WHERE access_id = :a"),
                                     {"a": hexed(later.request.request_id)}).first()  # fmt: skip
            if found is not None:
                break
            assert time.monotonic() < deadline, "the indexer did not go on past the event"
            time.sleep(0.2)
        with engine.connect() as conn:
            quarantined = conn.execute(
                sa.text("SELECT block_number, tx_index, log_index FROM quarantined_event")
            ).all()
            stored = conn.execute(sa.text("SELECT 1 FROM access_event WHERE access_id = :a"),
                                  {"a": refused_id}).first()  # fmt: skip
        assert len(quarantined) == 1
        assert stored is None
        position = "/".join(str(v) for v in quarantined[0])

        settings = with_token_file(AuditSettings(
            database_url=url, rpc_url=chain.rpc_url, deployment_path=manifest
        ))  # the default lag thresholds: this index follows the chain  # fmt: skip
        token = audit_token(settings)
        with serve_audit(settings) as api:
            ready = httpx.get(f"{api}/readyz", timeout=30)
            assert ready.status_code == 503
            assert ready.json()["status"] == "failing"
            report = httpx.get(f"{api}/v1/verify", timeout=300, headers=bearer(token)).json()
            assert report["ok"] is False
            assert report["findings_by_check"]["event_quarantined"] == 1
            assert "index_behind" not in report["findings_by_check"]
            assert any(f["check"] == "event_quarantined" and f["position"] == position
                       for f in report["findings"])  # fmt: skip

            context = browser.new_context(viewport=WIDE)
            page = context.new_page()
            sign_in(page, api, token, "?health-every=1")
            header = page.locator("#indexer")
            expect(header).to_have_attribute("data-state", "failing")
            expect(header).to_contain_text("Indexer FAILING")
            expect(header).to_contain_text("1 event(s) quarantined")
            expect(header).to_have_css("border-top-color", "rgb(164, 0, 28)")  # --bad
            status = page.locator("#verify")
            expect(status).to_have_attribute("data-state", "findings", timeout=120_000)
            expect(status).to_contain_text("event_quarantined")
            page.screenshot(path=screens.path("indexer-failing-1280x800"))
            context.close()
    finally:
        stop.set()
        follower.join(timeout=30)
        indexer.close()


def test_console_is_served_beside_the_api(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The console's files, its same-origin policy and the vendored graph library; the API's
    own answers (unknown `/v1/...` paths included) are unchanged."""
    # 30 s, not httpx's 5: the first /openapi.json builds the schema, seconds on a busy machine
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        index = client.get("/")
        assert index.status_code == 200
        assert index.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in index.headers["content-security-policy"]
        assert client.head("/").status_code == 200
        for path in ("/console/console.js", "/console/graph.js", "/console/console.css",
                     "/console/session.js"):  # fmt: skip
            assert client.get(path).status_code == 200, path
        vendor = client.get("/console/vendor/cytoscape.esm.min.mjs")
        assert vendor.status_code == 200
        assert vendor.headers["content-type"].startswith("text/javascript")
        for path in ("/v1/nope", "/v1/provenance", "/console/nope.js", "/console/__init__.py"):
            missing = client.get(path)
            assert missing.status_code == 404, path
            assert missing.headers["content-type"] == "application/problem+json"
            assert missing.json()["code"] == "not_found"
        for path in ("/docs", "/healthz", "/metrics", "/openapi.json"):
            assert client.get(path).status_code == 200, path
        assert "/" not in client.get("/openapi.json").json()["paths"]

        monkeypatch.setenv("DUL_CONSOLE_CYTOSCAPE", str(stack.store.parent / "absent.mjs"))
        absent = client.get("/console/vendor/cytoscape.esm.min.mjs")
        assert absent.status_code == 404
        assert absent.json()["code"] == "console_asset_missing"
        assert "scripts/bootstrap" in absent.json()["detail"]


def test_without_the_graph_library_the_list_still_shows_the_graph(page: Page, stack: Stack) -> None:
    page.route("**/console/vendor/**", lambda route: route.abort())
    sign_in(page, stack.url, stack.token, "#/provenance/dataset/hospital-a/omop-cdm")
    expect(page.locator("#graph")).to_contain_text("The graph library could not be loaded")
    expect(node(page, f"agreement:{stack.ids['agreement']}")).to_be_visible()
    node(page, f"agreement:{stack.ids['agreement']}").press("Enter")
    expect(page.locator("#details h3")).to_have_text("agreement: agreement v1 (RESEARCH)")


def test_sign_in_with_a_token_or_the_identity_provider(
    browser: Browser, stack: Stack, screens: Screens
) -> None:
    """Nothing shows before signing in; a refused token says why; the credential lives in
    the tab's sessionStorage only and signing out forgets it. With an OpenID Connect provider
    configured, its button runs the authorization code + PKCE flow through the provider and
    back (the page itself still connects to its own origin only)."""
    context = browser.new_context(viewport=WIDE)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"{stack.url}/#/agreement/{stack.ids['agreement']}")
        expect(page.locator("#signin")).to_be_visible()
        expect(page.locator("#search")).to_be_hidden()
        expect(page.locator("#signin-oidc")).to_be_hidden()
        page.screenshot(path=screens.path("sign-in-1280x800"))
        page.fill("#signin-token", "dulau_not-a-token")
        page.press("#signin-token", "Enter")
        expect(page.locator("#signin-error")).to_contain_text("credential_invalid")
        page.fill("#signin-token", stack.token)
        page.press("#signin-token", "Enter")
        # back where the visit began, signed in
        expect(page.locator("#agreement-title")).to_have_text(f"Agreement {stack.ids['agreement']}")
        expect(page.locator("#session")).to_contain_text("Signed in as regulator")
        assert page.evaluate("sessionStorage.getItem('dul.audit.credential')") == stack.token
        assert page.evaluate("localStorage.length") == 0
        assert context.cookies() == []
        page.click("#sign-out")
        expect(page.locator("#signin")).to_be_visible()
        assert page.evaluate("sessionStorage.length") == 0
        page.goto(f"{stack.url}/#/agreement/{stack.ids['agreement']}")
        expect(page.locator("#signin")).to_be_visible()
    finally:
        context.close()

    provider = TestIdentityProvider("dul-audit")
    provider.next_claims = {"roles": ["organization"], "org": "hospital-a", "sub": "dr-ward"}
    try:
        with serve_audit(provider.settings(stack.settings)) as url:
            context = browser.new_context(viewport=WIDE)
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{url}/#/provenance/agreement/{stack.ids['agreement']}?direction=both")
            expect(page.locator("#signin-oidc")).to_be_visible()
            page.click("#signin-oidc")
            expect(page.locator("#session")).to_contain_text(
                "Signed in as organization hospital-a (identity provider: dr-ward)"
            )
            expect(
                node(page, f"access:{stack.ids['denied']}@{stack.ids['agreement']}")
            ).to_be_visible()
            assert "code=" not in page.url  # the code is gone from the address
            assert provider.codes == {}  # redeemed, once
            context.close()
    finally:
        provider.close()
    assert not errors, f"the console threw: {errors}"
