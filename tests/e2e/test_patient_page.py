"""The patient page in a real headless chromium, against the real gateway, the real audit
service (indexed from the session's chain, cohorts read from the gateway's store) and the real
chain: a patient signs in with a token their hospital's steward signed, reads who used their
data and checks a proof in the browser, withdraws a consent with their own key (the gateway's
next decision leaves them out), gives an insurer a one-time code, shown once with its QR
code, which the insurer redeems once (a second use is refused with REDEEMED), and gives a
consent again, signed in the browser (the gateway's next decision admits them).

Screenshots (1280x800 and 400 wide) are kept in test-artifacts/patient/.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from eth_hash.auto import keccak
from playwright.sync_api import Browser, Page, ViewportSize, expect

from audit.console import STATIC as CONSOLE_STATIC
from audit.console.testing import Screens
from audit.indexer import Indexer
from audit.testing import index_with_cohorts
from dul.chain.testing import ChainHandle, chain_haystack
from dul.contracts.typed_data import (
    AccessRequest,
    AgreementTerms,
    ConsentWithdrawal,
    agreement_domain,
    consent_domain,
)
from dul.contracts.world import OMOP_FIELDS, World, derived_signer
from dul.domain import (
    BreakGlassReason,
    ConsentPolicy,
    Operation,
    OrgKind,
    OrgStatus,
    Role,
    Scenario,
    Tier,
    break_glass_ref,
    operations_mask,
    slug_id,
)
from dul.signing import LocalSigner, Signer
from dul.subjects import code_hash
from ledger_gateway.client import sign_redemption, sign_request
from ledger_gateway.patient_page.settings import PatientPageSettings
from ledger_gateway.patient_page.testing import (
    patient_token,
    serve_audit_and_page,
    serve_patient_page,
)
from ledger_gateway.testing import GatewayHandle

pytestmark = pytest.mark.integration

WIDE: ViewportSize = {"width": 1280, "height": 800}
NARROW: ViewportSize = {"width": 400, "height": 800}
INSURER = slug_id("insurer")
CLAIM_FIELDS = 0b1111
CODE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{5}(-[0-9A-HJKMNP-TV-Z]{5}){3}$")


def hexed(value: bytes) -> str:
    return "0x" + value.hex()


@dataclass
class Hospital:
    url: str
    token: str
    subject: bytes
    key: LocalSigner
    secret: bytes
    others: list[bytes]
    cohort_agreement: bytes
    claims: bytes
    insurer: Signer
    indexer: Indexer
    engine: sa.Engine
    codes: list[str] = field(default_factory=list)
    """The codes the page showed, in order."""
    settings: PatientPageSettings | None = None


def _activate(world: World, terms: AgreementTerms, requester: Signer) -> bytes:
    world.ledger.transact(world.steward, "AgreementRegistry", "propose", terms.as_abi())
    domain = agreement_domain(
        world.ledger.chain_id, world.ledger.deployment.address("AgreementRegistry")
    )
    digest = terms.digest(domain)
    for signer in (world.steward, requester):
        world.ledger.transact(signer, "AgreementRegistry", "sign", terms.agreement_id,
                              signer.address, signer.sign_digest(digest))  # fmt: skip
    return terms.agreement_id


def _claims_agreement(world: World) -> tuple[bytes, Signer]:
    """An INSURANCE_CLAIM agreement with an insurer, opened only by the patient's codes."""
    insurer = derived_signer("insurer requester")
    if world.ledger.call("Membership", "organization", INSURER)[1] == OrgStatus.NONE:
        tx = world.ledger.transact
        tx(world.operator, "Membership", "registerOrganization", INSURER, OrgKind.INSURER, "Ins")
        tx(world.operator, "Membership", "grantMemberRole", INSURER, insurer.address,
           Role.REQUESTER)  # fmt: skip
    now = int(time.time())
    terms = AgreementTerms(
        holder=world.hospital, requester=INSURER, datasets=(world.dataset,),
        field_masks=(CLAIM_FIELDS,), scenario=Scenario.INSURANCE_CLAIM,
        max_tier=Tier.PSEUDONYMIZED, operations=operations_mask(Operation.QUERY),
        valid_from=now - 60, valid_until=now + 86_400, quota=100,
        consent_policy=ConsentPolicy.PATIENT_AUTHORIZATION, terms_hash=keccak(b"claims"),
        nonce=time.time_ns(), deadline=now + 3_600,
    )  # fmt: skip
    return _activate(world, terms, insurer), insurer


def research_query(
    world: World, gateway: GatewayHandle, agreement: bytes, cohort: list[bytes]
) -> Any:
    request = AccessRequest(
        request_id=os.urandom(32), agreement_id=agreement, dataset_id=world.dataset,
        field_mask=0b0110, tier=Tier.PSEUDONYMIZED, operation=Operation.QUERY,
        request_hash=keccak(os.urandom(8)), deadline=int(time.time()) + 600,
    )  # fmt: skip
    answer = gateway.client.request_access(sign_request(world.requester, request, gateway.domain,
                                                         cohort=cohort))  # fmt: skip
    assert answer.decision == "GRANTED", answer
    assert gateway.client.get_access(answer.access_id, wait=True).status == "confirmed"
    return answer


def catch_up(hospital: Hospital) -> None:
    hospital.indexer.run(to_block=int(hospital.indexer.rpc.request("eth_blockNumber"), 16))


@pytest.fixture(scope="module")
def hospital(
    world: World, chain: ChainHandle, gateway: GatewayHandle,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Hospital]:  # fmt: skip
    """A patient with a research consent recorded with their own key, one research query that
    included them, an insurer's claims agreement offered on the page; the audit service and the
    patient page served."""
    subject, secret = os.urandom(32), os.urandom(32)
    key = LocalSigner(secret)
    others = [os.urandom(32) for _ in range(4)]
    world.record_consents([subject], [Scenario.RESEARCH], subject_key=key.address)
    world.record_consents(others, [Scenario.RESEARCH])
    cohort_agreement = world.activate(world.cohort_terms())
    research_query(world, gateway, cohort_agreement, [subject, *others])
    claims, insurer = _claims_agreement(world)

    root = tmp_path_factory.mktemp("patient-page")
    store = f"sqlite:///{root / 'audit.db'}"
    engine, indexer = index_with_cohorts(world.ledger.deployment, chain.rpc_url, store,
                                         [gateway.settings.effective_database_url])  # fmt: skip
    agreements = [claims, bytes(32)]
    with serve_audit_and_page(world, chain, gateway, store, subject, agreements) as served:
        yield Hospital(served.url, served.token, subject, key, secret, others, cohort_agreement,
                       claims, insurer, indexer, engine, settings=served.settings)  # fmt: skip
    indexer.close()
    engine.dispose()


@pytest.fixture(scope="module")
def screens() -> Screens:
    return Screens(Path(__file__).resolve().parents[2] / "test-artifacts" / "patient")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=WIDE)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, f"the page threw: {errors}"


def sign_in(page: Page, hospital: Hospital) -> None:
    page.goto(hospital.url)
    page.get_by_label("Patient token").fill(hospital.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#home")).to_be_visible()
    expect(page.locator("#signin")).to_be_hidden()
    expect(page.locator("#title")).to_have_text("Your health data at hospital-a")


def use_key(page: Page, secret: bytes) -> None:
    page.get_by_label("Your private key").fill(secret.hex())
    page.get_by_role("button", name="Use this key").click()


# --- the browser ---------------------------------------------------------------------------------


def test_sign_in_see_who_used_the_data_and_check_a_proof(
    page: Page, hospital: Hospital, screens: Screens
) -> None:
    page.goto(hospital.url)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.screenshot(path=screens.path("signin-1280x800"))
    sign_in(page, hospital)
    uses = page.locator("#use-list > li")
    expect(uses).to_have_count(1)
    expect(uses.first).to_contain_text("medical research")
    expect(uses.first).to_contain_text("Allowed")
    expect(uses.first).to_contain_text("as one of a group of patients")
    uses.first.get_by_role("button", name=re.compile("Check the proof")).click()
    expect(uses.first.locator(".proof")).to_have_text(
        re.compile(r"^✓ Verified: you are one of the 5 ")
    )
    consents = page.locator("#consent-list > li")
    expect(consents).to_have_count(1)
    expect(consents.first).to_contain_text("Active")
    expect(page.locator("#code-offer option")).to_have_count(1)  # the zero id is not offered
    expect(page.locator("#code-offer")).to_contain_text("insurer — for an insurance claim")
    page.screenshot(path=screens.path("report-1280x800"), full_page=True)
    page.set_viewport_size(NARROW)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"the page scrolls sideways at 400 px ({width} px wide)"
    page.screenshot(path=screens.path("report-400-full"), full_page=True)


def test_focus_order_and_labels(page: Page, hospital: Hospital) -> None:
    page.goto(hospital.url)
    page.keyboard.press("Tab")
    expect(page.locator(".skip")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_label("Patient token")).to_be_focused()
    page.keyboard.type(hospital.token)
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Sign in")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#home")).to_be_visible()
    for control in ("#key", "#code-offer", "#code-days", "#code-uses", "#grant-years"):
        label = page.locator(f"label[for='{control[1:]}']")
        expect(label).to_have_count(1)
        assert label.inner_text().strip()


def test_a_token_from_no_steward_is_refused(page: Page, hospital: Hospital, world: World) -> None:
    forged = patient_token(world.requester, hospital.subject, world.hospital,
                           world.ledger.chain_id,
                           world.ledger.deployment.address("Membership"))  # fmt: skip
    page.goto(hospital.url)
    page.get_by_label("Patient token").fill(forged)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#message")).to_contain_text("not signed by an active steward")
    expect(page.locator("#home")).to_be_hidden()


def test_withdrawing_a_consent_is_honoured_by_the_next_decision(
    page: Page, hospital: Hospital, world: World, gateway: GatewayHandle, screens: Screens
) -> None:
    sign_in(page, hospital)
    consent = page.locator("#consent-list > li").first
    consent.get_by_role("button", name=re.compile("Withdraw consent")).click()
    expect(page.locator("#message")).to_contain_text("paste your private key")
    expect(page.get_by_label("Your private key")).to_be_focused()
    use_key(page, os.urandom(32))  # not the registered one: not kept
    expect(page.locator("#key-status")).to_contain_text("not the key hospital-a registered")
    use_key(page, hospital.secret)
    expect(page.locator("#key-status")).to_contain_text("Key ready")
    consent.get_by_role("button", name=re.compile("Withdraw consent")).click()
    expect(consent.get_by_role("button", name="Yes, withdraw")).to_be_focused()
    page.screenshot(path=screens.path("withdraw-confirm-1280x800"))
    consent.get_by_role("button", name="Yes, withdraw").click()
    expect(page.locator("#message")).to_contain_text("Your consent is withdrawn")
    expect(page.locator("#consent-list > li").first).to_contain_text("Withdrawn")
    expect(page.locator("#consent-list button")).to_have_count(0)
    page.screenshot(path=screens.path("withdrawn-1280x800"), full_page=True)

    answer = research_query(world, gateway, hospital.cohort_agreement,
                            [hospital.subject, *hospital.others])  # fmt: skip
    assert answer.cohort is not None
    assert hexed(hospital.subject) not in answer.cohort.admitted
    assert sorted(answer.cohort.admitted) == sorted(hexed(s) for s in hospital.others)


def test_a_consent_no_key_of_the_patient_can_withdraw_is_explained_not_offered(
    page: Page, hospital: Hospital, world: World, screens: Screens
) -> None:
    """The hospital removed the patient's lost key: the chain would refuse any patient signature,
    so the page offers no withdrawal and says who can withdraw instead."""
    subject, lost = os.urandom(32), LocalSigner(os.urandom(32))
    world.record_consents([subject], [Scenario.TEACHING], subject_key=lost.address)
    world.ledger.transact(world.steward, "ConsentRegistry", "registerSubjectKey",
                          world.hospital, subject, "0x" + "00" * 20)  # fmt: skip
    token = patient_token(world.steward, subject, world.hospital, world.ledger.chain_id,
                          world.ledger.deployment.address("Membership"))  # fmt: skip
    page.set_viewport_size(NARROW)
    sign_in(page, replace(hospital, token=token))
    consent = page.locator("#consent-list > li")
    expect(consent).to_have_count(1)
    expect(consent).to_contain_text("Active")
    expect(consent.locator(".hint")).to_have_text(
        "No key of yours can withdraw this consent: ask hospital-a to withdraw it."
    )
    expect(consent.get_by_role("button")).to_have_count(0)
    page.screenshot(path=screens.path("no-key-can-withdraw-400"), full_page=True)


def test_a_code_shown_once_opens_the_records_once_for_the_insurer(
    browser: Browser, hospital: Hospital, world: World, gateway: GatewayHandle, screens: Screens
) -> None:
    codes: list[str] = []
    for viewport, name in ((WIDE, "1280x800"), (NARROW, "400-full")):
        context = browser.new_context(viewport=viewport)
        page = context.new_page()
        try:
            sign_in(page, hospital)
            use_key(page, hospital.secret)
            page.get_by_label("How long may it be used?").select_option("1")
            page.get_by_role("button", name="Create the code").click()
            shown = page.locator("#the-code")
            expect(shown).to_have_text(CODE)
            expect(page.locator("#code-once")).to_be_focused()
            qr = page.locator("#code-qr")
            expect(qr).to_be_visible()
            assert page.evaluate("document.getElementById('code-qr').naturalWidth") > 100
            page.screenshot(path=screens.path(f"code-shown-{name}"), full_page=name != "1280x800")
            codes.append(shown.inner_text())
            page.get_by_role("button", name=re.compile("hide the code")).click()
            expect(page.locator("#the-code")).to_have_count(0)
        finally:
            context.close()
    assert codes[0] != codes[1]
    hospital.codes.extend(codes)

    first = redeem(world, gateway, hospital, codes[0])
    assert (first.decision, first.authorization_fault) == ("GRANTED", None)
    assert first.cohort is not None
    assert first.cohort.admitted == [hexed(hospital.subject)]
    second = redeem(world, gateway, hospital, codes[0])
    assert (second.decision, second.authorization_fault) == ("DENIED", "REDEEMED")
    assert gateway.client.get_access(second.access_id, wait=True).status == "confirmed"


def redeem(world: World, gateway: GatewayHandle, hospital: Hospital, code: str) -> Any:
    """The insurer's signed claim request redeeming `code` at the hospital's gateway."""
    request = AccessRequest(
        request_id=os.urandom(32), agreement_id=hospital.claims, dataset_id=world.dataset,
        field_mask=0b0110, tier=Tier.PSEUDONYMIZED, operation=Operation.QUERY,
        request_hash=keccak(b"claim 2026-7"), deadline=int(time.time()) + 600,
        authorization_ref=code_hash(code),
    )  # fmt: skip
    return gateway.client.redeem(sign_redemption(hospital.insurer, request, gateway.domain, code))


def test_the_report_shows_the_withdrawal_and_the_used_code(
    page: Page, hospital: Hospital, screens: Screens
) -> None:
    catch_up(hospital)
    sign_in(page, hospital)
    uses = page.locator("#use-list > li")
    expect(uses).to_have_count(2)  # the research query before the withdrawal, the claim
    expect(uses.first).to_contain_text("Ins looked up")  # the organization's registered name
    expect(uses.first).to_contain_text("with a one-time code you gave")
    uses.first.get_by_role("button", name=re.compile("Check the proof")).click()
    expect(uses.first.locator(".proof")).to_have_text(
        re.compile(r"^✓ Verified: the ledger's record of this use names you alone")
    )
    history = page.locator("#consent-list .history li")
    expect(history).to_have_count(2)
    expect(history.nth(1)).to_contain_text("by you (signed with your key)")
    codes = page.locator("#code-list > li")
    expect(codes).to_have_count(2)
    expect(page.locator("#code-list")).to_contain_text("Used")
    expect(page.locator("#code-list")).to_contain_text("Not used yet")
    page.screenshot(path=screens.path("report-after-1280x800"), full_page=True)
    page.set_viewport_size(NARROW)
    page.screenshot(path=screens.path("report-after-400-full"), full_page=True)


def test_cancelling_the_unused_code_refuses_it_afterwards(
    page: Page, hospital: Hospital, world: World, gateway: GatewayHandle, screens: Screens
) -> None:
    sign_in(page, hospital)
    use_key(page, hospital.secret)
    unused = page.locator("#code-list > li", has_text="Not used yet")
    expect(unused).to_have_count(1)
    expect(page.locator("#code-list .cancel-code")).to_have_count(1)  # a used code has none
    unused.get_by_role("button", name=re.compile("Cancel the code")).click()
    unused.get_by_role("button", name="Yes, cancel it").click()
    expect(page.locator("#message")).to_contain_text("The code is cancelled")
    expect(page.locator("#code-list")).not_to_contain_text("Not used yet")
    page.screenshot(path=screens.path("code-cancelled-1280x800"))
    refused = redeem(world, gateway, hospital, hospital.codes[1])
    assert (refused.decision, refused.authorization_fault) == ("DENIED", "REVOKED")


def test_giving_a_consent_is_honoured_by_the_next_decision(
    page: Page, hospital: Hospital, world: World, gateway: GatewayHandle, screens: Screens
) -> None:
    start = world.ledger.w3.eth.block_number
    sign_in(page, hospital)
    form = page.locator("#grant-form")
    for name in ("Medical research", "Training an AI model", "Teaching"):
        expect(form.get_by_label(name)).not_to_be_checked()
    page.get_by_role("button", name="Give this consent").click()
    expect(page.locator("#message")).to_contain_text("Choose at least one use")
    expect(form.get_by_label("Medical research")).to_be_focused()
    form.get_by_label("Medical research").check()
    page.get_by_role("button", name="Give this consent").click()
    expect(page.locator("#message")).to_contain_text("paste your private key")
    use_key(page, hospital.secret)
    page.get_by_label("For how long?").select_option("1")
    page.set_viewport_size(NARROW)
    form.scroll_into_view_if_needed()
    page.screenshot(path=screens.path("consent-give-400"))
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"the page scrolls sideways at 400 px ({width} px wide)"
    page.get_by_role("button", name="Give this consent").click()
    expect(page.locator("#message")).to_contain_text("Your consent is given")
    expect(page.locator("#message")).to_contain_text("medical research")
    given = page.locator("#consent-list > li").last
    expect(given).to_contain_text("Active")
    expect(given).to_contain_text("you (signed with your key)")
    expect(form.get_by_label("Medical research")).not_to_be_checked()
    page.screenshot(path=screens.path("consent-given-400-full"), full_page=True)

    # on chain: recorded as the patient's, with their key; the next decision admits them
    logs = (
        world.ledger.contract("ConsentRegistry")
        .events.ConsentRecorded()
        .get_logs(from_block=start, argument_filters={"subject": hospital.subject})
    )
    [event] = logs
    assert (event["args"]["recorder"], event["args"]["bySubject"]) == (hospital.key.address, True)
    answer = research_query(world, gateway, hospital.cohort_agreement,
                            [hospital.subject, *hospital.others])  # fmt: skip
    assert answer.cohort is not None
    assert hexed(hospital.subject) in answer.cohort.admitted

    # the report's history says the patient gave it; nothing identifying reached the chain
    catch_up(hospital)
    page.reload()
    expect(page.locator("#consent-list > li").last.locator(".history li")).to_have_text(
        [re.compile(r"^Given .* by you \(signed with your key\)$")]
    )
    haystack, transactions, _ = chain_haystack(world.ledger.w3.provider.make_request, start)
    assert transactions >= 2  # the grant and the research access
    for needle in (hospital.token.encode(), hospital.secret, hospital.secret.hex().encode()):
        assert needle.lower() not in haystack.lower()


def test_a_code_usable_until_it_expires_opens_every_claim_until_cancelled(
    page: Page, hospital: Hospital, world: World, gateway: GatewayHandle, screens: Screens
) -> None:
    sign_in(page, hospital)
    use_key(page, hospital.secret)
    page.get_by_label("How many times may it be used?").select_option("multi")
    page.get_by_role("button", name="Create the code").click()
    shown = page.locator("#the-code")
    expect(shown).to_have_text(CODE)
    expect(page.locator("#code-once")).to_contain_text("each time they ask")
    code = shown.inner_text()
    page.get_by_role("button", name=re.compile("hide the code")).click()

    uses = [redeem(world, gateway, hospital, code) for _ in range(2)]
    assert [(u.decision, u.authorization_fault) for u in uses] == [("GRANTED", None)] * 2
    for use in uses:
        assert gateway.client.get_access(use.access_id, wait=True).status == "confirmed"
    catch_up(hospital)
    page.reload()
    entry = page.locator(f"#code-list > li[data-code='{hexed(code_hash(code))}']")
    expect(entry).to_contain_text("Used 2 times, still open")
    expect(entry).to_contain_text("as often as needed until then")
    page.set_viewport_size(NARROW)
    entry.scroll_into_view_if_needed()
    page.screenshot(path=screens.path("code-multi-use-400"))
    use_key(page, hospital.secret)
    entry.get_by_role("button", name=re.compile("Cancel the code")).click()
    entry.get_by_role("button", name="Yes, cancel it").click()
    expect(page.locator("#message")).to_contain_text("The code is cancelled")
    refused = redeem(world, gateway, hospital, code)
    assert (refused.decision, refused.authorization_fault) == ("DENIED", "REVOKED")


# --- the API: who may reach what ----------------------------------------------------------------


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert (body["status"], body["code"]) == (status, code), body
    assert body["detail"]


def test_the_api_answers_only_the_tokens_own_subject(hospital: Hospital, world: World) -> None:
    bearer = {"Authorization": f"Bearer {hospital.token}"}
    with httpx.Client(base_url=hospital.url, timeout=30) as client:
        assert client.get("/healthz").json() == {
            "status": "ok",
            "service": "patient-page",
            "instance": None,  # started here, not by `dul up`
            "org": "hospital-a",
        }
        for path in ("/api/session", "/api/report", "/api/consents"):
            assert_problem(client.get(path), 401, "credential_missing")
            assert_problem(client.get(path, headers={"Authorization": "Bearer dulpt_x"}),
                           401, "credential_invalid")  # fmt: skip
        session = client.get("/api/session", headers=bearer).json()
        assert session["subject"] == hexed(hospital.subject)
        assert session["subject_key"] == hospital.key.address.lower()
        assert [o["agreement_id"] for o in session["offers"]] == [hexed(hospital.claims)]
        assert client.get("/api/report", headers=bearer).json()["subject"] == hexed(
            hospital.subject
        )
        assert client.get("/api/consents", headers=bearer).json()["subject"] == hexed(
            hospital.subject
        )

        # another hospital's patient token (a steward of the institute signed it)
        institute = patient_token(world.partner_steward, hospital.subject, world.institute,
                                  world.ledger.chain_id,
                                  world.ledger.deployment.address("Membership"))  # fmt: skip
        assert_problem(client.get("/api/session", headers={"Authorization": f"Bearer {institute}"}),
                       401, "wrong_hospital")  # fmt: skip

        # another subject's consent cannot be withdrawn through this token, whatever is signed
        other = world.record_consents([os.urandom(32)], [Scenario.RESEARCH],
                                      subject_key=hospital.key.address)[0]  # fmt: skip
        refused = client.post(f"/api/consents/{hexed(other)}/withdraw", headers=bearer,
                              json={"deadline": int(time.time()) + 600,
                                    "signature": "0x" + "11" * 65})  # fmt: skip
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "wrong_transaction"
        assert_problem(client.post("/api/consents/0x12/withdraw", headers=bearer,
                                   json={"deadline": 1, "signature": "0x" + "11" * 65}),
                       422, "validation_error")  # fmt: skip
        code = {"agreement_id": hexed(hospital.cohort_agreement),
                "dataset_id": hexed(world.dataset),
                "code_hash": hexed(os.urandom(32)), "expires_at": int(time.time()) + 600,
                "signature": "0x" + "11" * 65}  # fmt: skip
        assert_problem(client.post("/api/codes", headers=bearer, json=code), 422, "not_offered")
        late = {**code, "agreement_id": hexed(hospital.claims), "expires_at": 2**40}
        assert_problem(client.post("/api/codes", headers=bearer, json=late),
                       422, "expiry_out_of_range")  # fmt: skip
        forged = client.post(
            "/api/codes", headers=bearer, json={**late, "expires_at": int(time.time()) + 600}
        )
        assert forged.status_code == 422, forged.text  # the chain's verdict on a forged signature
        assert forged.json()["code"] != "validation_error"
        revocation = {"deadline": int(time.time()) + 600, "signature": "0x" + "11" * 65}
        assert_problem(client.post(f"/api/codes/{hexed(os.urandom(32))}/revoke", headers=bearer,
                                   json=revocation), 404, "unknown_code")  # fmt: skip
        assert_problem(client.post("/api/codes/0x1/revoke", headers=bearer, json=revocation),
                       422, "validation_error")  # fmt: skip
        not_a_code = {"code": "not-a-code-at-all-here"}
        assert_problem(client.post("/api/qr", headers=bearer, json=not_a_code),
                       422, "validation_error")  # fmt: skip
        svg = client.post("/api/qr", headers=bearer, json={"code": "7K3QF-ZC0XH-M4N2P-9TRVW"})
        assert svg.headers["content-type"] == "image/svg+xml"
        assert svg.text.lstrip().startswith("<svg")
        assert_problem(client.post("/api/qr", json={"code": "7K3QF-ZC0XH-M4N2P-9TRVW"}),
                       401, "credential_missing")  # fmt: skip
        assert_problem(client.post("/api/codes", headers=bearer, content=b" " * 2**17),
                       413, "body_too_large")  # fmt: skip

        # giving a consent: only the page's purposes and lengths, the chain's verdict on the rest
        typed = client.post("/api/consents/typed-data", headers=bearer,
                            json={"scenarios": ["TEACHING"], "years": 2})  # fmt: skip
        assert typed.status_code == 200, typed.text
        grant = typed.json()
        assert (grant["primaryType"], grant["domain"]["name"]) == (
            "ConsentGrant", "DataUseLedger.ConsentRegistry"
        )  # fmt: skip
        assert "EIP712Domain" in grant["types"]  # as eth_signTypedData_v4 takes it
        message = grant["message"]
        assert (message["holder"], message["subject"]) == (
            "0x" + world.hospital.hex(), hexed(hospital.subject)
        )  # fmt: skip
        assert message["subjectKey"] == hospital.key.address
        assert message["consentId"] == hexed(world.ledger.call(
            "ConsentRegistry", "nextConsentId", world.hospital, hospital.subject))  # fmt: skip
        for choice in ({"scenarios": ["CLINICAL_CARE"], "years": 1}, {"scenarios": [], "years": 1},
                       {"scenarios": ["RESEARCH"], "years": 0},
                       {"scenarios": ["RESEARCH"], "years": 11}):  # fmt: skip
            assert_problem(client.post("/api/consents/typed-data", headers=bearer, json=choice),
                           422, "validation_error")  # fmt: skip
        assert_problem(client.post("/api/consents/typed-data", json={"scenarios": ["RESEARCH"],
                                                                      "years": 1}),
                       401, "credential_missing")  # fmt: skip
        granted = {"consent_id": message["consentId"], "scenarios": ["TEACHING"],
                   "valid_until": int(message["validUntil"]), "subject_key": message["subjectKey"],
                   "deadline": int(message["deadline"]), "signature": "0x" + "11" * 65}  # fmt: skip
        assert_problem(client.post("/api/consents", headers=bearer,
                                   json={**granted, "valid_until": 2**40}),
                       422, "validity_out_of_range")  # fmt: skip
        forged_grant = client.post("/api/consents", headers=bearer, json=granted)
        assert forged_grant.status_code == 422, forged_grant.text
        assert forged_grant.json()["code"] == "ConsentRegistryInvalidSubjectSignature"


def test_after_a_key_rotation_the_page_offers_the_withdrawal_to_the_new_key(
    hospital: Hospital, world: World
) -> None:
    """The page names the key the chain checks (`withdraw_key`): a consent's own key while the
    hospital never registered one (two consents with two keys: each its own), none once the
    hospital removed the key, the newly registered key after a rotation, which withdraws it."""
    subject = os.urandom(32)
    lost, renewed = LocalSigner(os.urandom(32)), LocalSigner(os.urandom(32))
    first = world.record_consents([subject], [Scenario.RESEARCH], subject_key=lost.address)[0]
    second = world.record_consents([subject], [Scenario.TEACHING], subject_key=renewed.address)[0]
    registry = world.ledger.deployment.address("ConsentRegistry")
    token = patient_token(world.steward, subject, world.hospital, world.ledger.chain_id,
                          world.ledger.deployment.address("Membership"))  # fmt: skip
    bearer = {"Authorization": f"Bearer {token}"}

    def register(key: str) -> None:
        world.ledger.transact(world.steward, "ConsentRegistry", "registerSubjectKey",
                              world.hospital, subject, key)  # fmt: skip

    with httpx.Client(base_url=hospital.url, timeout=30) as client:

        def offered() -> dict[str, Any]:
            answer = client.get("/api/consents", headers=bearer)
            assert answer.status_code == 200, answer.text
            return {c["consent_id"]: c["withdraw_key"] for c in answer.json()["consents"]}

        assert offered() == {hexed(first): lost.address.lower(),
                             hexed(second): renewed.address.lower()}  # fmt: skip
        register("0x" + "00" * 20)  # the patient lost their key: the hospital removes it
        assert offered() == {hexed(first): None, hexed(second): None}
        register(renewed.address)  # and registers the new one
        assert offered() == {hexed(first): renewed.address.lower(),
                             hexed(second): renewed.address.lower()}  # fmt: skip

        deadline = int(time.time()) + 600
        domain = consent_domain(world.ledger.chain_id, registry)

        def signed(signer: LocalSigner) -> dict[str, Any]:
            digest = ConsentWithdrawal(first, deadline).digest(domain)
            return {"deadline": deadline, "signature": hexed(signer.sign_digest(digest))}

        path = f"/api/consents/{hexed(first)}/withdraw"
        refused = client.post(path, headers=bearer, json=signed(lost))
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "ConsentRegistryInvalidSubjectSignature"
        withdrawn = client.post(path, headers=bearer, json=signed(renewed))
        assert withdrawn.status_code == 200, withdrawn.text
    assert not world.ledger.call("ConsentRegistry", "hasConsent", world.hospital, subject,
                                 Scenario.RESEARCH)  # fmt: skip


def test_codes_are_rate_limited_per_patient_token(hospital: Hospital, world: World) -> None:
    assert hospital.settings is not None
    strict = hospital.settings.model_copy(update={"codes_per_token": 2, "codes_window_s": 600})
    bearer = {"Authorization": f"Bearer {hospital.token}"}

    def code() -> dict[str, Any]:
        return {"agreement_id": hexed(hospital.claims), "dataset_id": hexed(world.dataset),
                "code_hash": hexed(os.urandom(32)), "expires_at": int(time.time()) + 600,
                "signature": "0x" + "11" * 65}  # fmt: skip

    with serve_patient_page(strict) as url, httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(2):  # the chain refuses the forged signature; the ask still counts
            answer = client.post("/api/codes", headers=bearer, json=code())
            assert answer.status_code == 422, answer.text
        refused = client.post("/api/codes", headers=bearer, json=code())
        assert_problem(refused, 429, "rate_limited")
        assert "too many codes for you: at most 2 in 10 minutes" in refused.json()["detail"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 600
        # the patient can still read their report; another patient's token is not limited
        assert client.get("/api/session", headers=bearer).status_code == 200
        other = patient_token(world.steward, os.urandom(32), world.hospital,
                              world.ledger.chain_id,
                              world.ledger.deployment.address("Membership"))  # fmt: skip
        theirs = client.post("/api/codes", headers={"Authorization": f"Bearer {other}"},
                             json=code())  # fmt: skip
        assert theirs.status_code == 422, theirs.text


def test_signed_changes_are_rate_limited_per_patient_token(
    hospital: Hospital, world: World
) -> None:
    """Consents given or withdrawn and codes cancelled share one window per patient token:
    every ask counts (even one the chain refuses), past it 429 with Retry-After, and no consent
    is served to sign either."""
    assert hospital.settings is not None
    strict = hospital.settings.model_copy(update={"writes_per_token": 3, "writes_window_s": 600})
    bearer = {"Authorization": f"Bearer {hospital.token}"}
    forged = {"deadline": int(time.time()) + 600, "signature": "0x" + "11" * 65}
    consent = hexed(os.urandom(32))  # the chain's verdict does not matter: every ask counts
    with serve_patient_page(strict) as url, httpx.Client(base_url=url, timeout=30) as client:
        for path in (f"/api/consents/{consent}/withdraw",
                     f"/api/codes/{hexed(os.urandom(32))}/revoke"):  # fmt: skip
            assert client.post(path, headers=bearer, json=forged).status_code in (404, 422)
        typed = client.post("/api/consents/typed-data", headers=bearer,
                            json={"scenarios": ["TEACHING"], "years": 1})  # fmt: skip
        assert typed.status_code == 200, typed.text  # served, not counted
        message = typed.json()["message"]
        grant = {"consent_id": message["consentId"], "scenarios": ["TEACHING"],
                 "valid_until": int(message["validUntil"]), "subject_key": message["subjectKey"],
                 "deadline": int(message["deadline"]), **forged}  # fmt: skip
        assert client.post("/api/consents", headers=bearer, json=grant).status_code == 422
        for method, path, body in (
            ("POST", f"/api/consents/{consent}/withdraw", forged),
            ("POST", "/api/consents", grant),
            ("POST", f"/api/codes/{hexed(os.urandom(32))}/revoke", forged),
            ("POST", "/api/consents/typed-data", {"scenarios": ["TEACHING"], "years": 1}),
        ):
            refused = client.request(method, path, headers=bearer, json=body)
            assert_problem(refused, 429, "rate_limited")
            assert ("too many consents given or withdrawn and codes cancelled for you: "
                    "at most 3 in 10 minutes") in refused.json()["detail"]  # fmt: skip
            assert 1 <= int(refused.headers["Retry-After"]) <= 600
        # the patient still reads their consents; another patient's token is not limited
        assert client.get("/api/consents", headers=bearer).status_code == 200
        other = patient_token(world.steward, os.urandom(32), world.hospital,
                              world.ledger.chain_id,
                              world.ledger.deployment.address("Membership"))  # fmt: skip
        theirs = client.post(f"/api/consents/{consent}/withdraw",
                             headers={"Authorization": f"Bearer {other}"}, json=forged)  # fmt: skip
        assert theirs.status_code in (404, 422), theirs.text


def test_the_page_serves_its_own_files_and_the_consoles_proof_module(hospital: Hospital) -> None:
    with httpx.Client(base_url=hospital.url, timeout=30) as client:
        index = client.get("/")
        assert index.status_code == 200
        csp = index.headers["content-security-policy"]
        assert "connect-src 'self'" in csp
        assert "script-src 'self'" in csp
        assert client.get("/page/proof.js").content == (CONSOLE_STATIC / "proof.js").read_bytes()
        ethers = client.get("/page/vendor/ethers.min.js")
        assert ethers.status_code == 200
        assert b"6.15.0" in ethers.content[:400]
        assert client.get("/page/patient.js").status_code == 200
        assert_problem(client.get("/page/nothing.js"), 404, "not_found")


# --- an emergency access (break-glass) is shown plainly ------------------------------------------

EHR = slug_id("hospital-a/ehr-identified")


def test_an_emergency_access_is_shown_with_its_reason_and_review(
    page: Page, hospital: Hospital, world: World, gateway: GatewayHandle, screens: Screens
) -> None:
    """Identified clinical care by another organization, under an agreement that allows
    break-glass: the clinician opens the patient's records without a code; the patient's page
    names it an emergency access, why, and when the hospital must review it."""
    if world.ledger.call("DatasetRegistry", "dataset", EHR)[0] != world.hospital:
        world.ledger.transact(
            world.steward, "DatasetRegistry", "registerDataset", EHR, world.hospital,
            keccak(b"OMOP CDM 5.4"), list(OMOP_FIELDS), Tier.IDENTIFIED,
        )  # fmt: skip
    terms = replace(
        world.research_terms(quota=20), datasets=(EHR,), scenario=Scenario.CLINICAL_CARE,
        max_tier=Tier.IDENTIFIED, consent_policy=ConsentPolicy.PATIENT_AUTHORIZATION,
        duo_codes=(43,), break_glass_review_hours=48,
    )  # fmt: skip
    agreement = world.activate(terms)
    request = AccessRequest(
        request_id=os.urandom(32), agreement_id=agreement, dataset_id=EHR, field_mask=0b0110,
        tier=Tier.IDENTIFIED, operation=Operation.QUERY,
        request_hash=keccak(b"emergency department: allergies, medication"),
        deadline=int(time.time()) + 600,
        authorization_ref=break_glass_ref(BreakGlassReason.PATIENT_INCAPACITATED),
    )  # fmt: skip
    body = sign_request(world.requester, request, gateway.domain, cohort=[hospital.subject])
    answer = gateway.client.request_access(body, wait=True)
    assert (answer.decision, answer.status) == ("GRANTED", "confirmed"), answer
    catch_up(hospital)

    with httpx.Client(base_url=hospital.url, timeout=30) as client:
        report = client.get("/api/report", headers={"Authorization": f"Bearer {hospital.token}"})
    [emergency] = [a for a in report.json()["accesses"] if a["access_id"] == answer.access_id]
    assert emergency["admitted_by"] == "break-glass"
    assert emergency["authorization"] is None
    glass = emergency["break_glass"]
    assert (glass["reason"], glass["outcome"], glass["overdue"]) == (
        "PATIENT_INCAPACITATED", None, False,
    )  # fmt: skip
    assert glass["review_due"] > time.time() + 47 * 3600

    sign_in(page, hospital)
    shown = page.locator(f"#use-list > li[data-access='{answer.access_id}']")
    expect(shown).to_contain_text("Emergency access, without your code")
    expect(shown).to_contain_text("you could not be asked")
    expect(shown).to_contain_text("To be checked by the hospital by")
    expect(shown).to_contain_text("your care or treatment")
    shown.get_by_role("button", name=re.compile("Check the proof")).click()
    expect(shown.locator(".proof")).to_have_text(
        re.compile(r"^✓ Verified: the ledger's record of this use names you alone")
    )
    shown.scroll_into_view_if_needed()
    page.screenshot(path=screens.path("emergency-access-1280x800"))
