"""`dul demo` from nothing, then its story checked from the audit service and the chain itself —
never from the demo's own account of it (its output only supplies the ids to look up).

One run of the demo (about two minutes on two shared cores) serves every test here, including
the console's artifact search and the scan of the whole chain for patients' identities.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from playwright.sync_api import Browser, Route, expect

from audit.console.testing import Screens, sign_in
from dul.chain.rpc_auth import bearer_headers, rpc_token
from dul.chain.testing import (
    NODES,
    chain_haystack,
    start_chain,
    throwaway_chain_settings,
)
from dul.demo import (
    DIABETES_T2,
    DISEASE_SPECIFIC,
    EMERGENCY_PATIENT,
    PATIENTS,
    STUDY_SPECIFIC,
    WITHDRAWING,
)
from dul.domain import slug_id
from dul.home import Home
from dul.keys import KeyStore
from dul.subjects import load_subject_key, normalize_code, subject_ref

DUL = Path(sys.executable).parent / "dul"


def _low_ports() -> range:
    """The ports below Linux's ephemeral range (32768-60999) this test process draws from:
    20000-32000, split evenly among pytest-xdist's workers, so two workers' demos never draw
    the same port."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    share = 12_000 // workers
    return range(20_000 + worker * share, 20_000 + (worker + 1) * share)


def _free_run(count: int, avoid: tuple[int, ...] = ()) -> int:
    """A port p with p … p+count-1 all free and none of `avoid` (the demo's gateways take
    consecutive ports). Drawn from `_low_ports()`, where no outbound connection's source port
    and no other test's `free_port()` can take one of them between this check and the
    services' bind."""
    ports = _low_ports()
    for _ in range(200):
        base = random.randrange(ports.start, ports.stop - count)
        if any(base <= port < base + count for port in avoid):
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no run of free ports")


@dataclass(frozen=True)
class Demo:
    home: Path
    facts: dict[str, Any]
    audit: str
    rpc: str
    env: dict[str, str]

    @property
    def token(self) -> str:
        """The sample regulator's audit token, which the demo printed."""
        return str(self.facts["regulator_token"])

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.audit}{path}", params=params, timeout=60,
                             headers={"Authorization": f"Bearer {self.token}"})  # fmt: skip
        assert response.status_code == 200, response.text
        return response.json()

    def access(self, step: str) -> dict[str, Any]:
        return next(a for a in self.facts["accesses"] if a["step"] == step)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The story's checks marked `every_node` run on a demo told on each of NODES (the node
    named in the test id); the others on the embedded anvil's demo only."""
    if "demo" in metafunc.fixturenames:
        every = metafunc.definition.get_closest_marker("every_node") is not None
        kinds = NODES if every else NODES[:1]
        metafunc.parametrize("demo", kinds, indirect=True, scope="module")


@contextlib.contextmanager
def node_beside(kind: str, home: Path, passphrase: str) -> Iterator[str]:
    """A chain of `kind` (node + permissioned proxy) run outside the demo's data directory, as
    an organization's own node would be: it admits the demo's operator (whose key is made here
    first) and, once deployed, the members of the demo's deployment manifest. Its RPC URL."""
    operator = KeyStore(Home(home), passphrase=passphrase, scrypt_n=1024).new("operator")
    chain_home = Home(home.parent / f"{home.name}-{kind}-node").ensure()
    chain_home.deployment.symlink_to(Home(home).deployment)  # written by the demo's deploy
    settings = throwaway_chain_settings(operator=operator, block_time=0.2, start_timeout=120.0)
    node = start_chain(kind, chain_home, settings)
    try:
        url = node.status().rpc_url
        assert url is not None
        yield url
    finally:
        node.stop()


@pytest.fixture(scope="module")
def demo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Demo]:
    kind: str = getattr(request, "param", NODES[0])
    home = tmp_path_factory.mktemp(f"demo-home-{kind}")
    # All below the ephemeral range: a node started beside the demo takes its ports with
    # free_port(), which must not hand it one of these before the demo's services bind them.
    chain = _free_run(7)
    node, audit, ports = chain + 1, chain + 2, chain + 3  # 3 gateways, then the patient page
    env = {
        **os.environ,
        "DUL_HOME": str(home),
        "DUL_KEY_PASSPHRASE": "demo test passphrase",
        "DUL_KEY_SCRYPT_N": "1024",
        "DUL_CHAIN_PORT": str(chain),
        "DUL_CHAIN_NODE_PORT": str(node),
        "DUL_CHAIN_BLOCK_TIME": "0.2",
        "DUL_GATEWAY_PORT": str(ports),
        "DUL_AUDIT_PORT": str(audit),
        "DUL_PATIENT_PORT": str(ports + 3),
    }
    for name in ("DUL_GATEWAY_DATABASE_URL", "DUL_AUDIT_DATABASE_URL", "DUL_RPC_URL"):
        env.pop(name, None)
    with contextlib.ExitStack() as beside:
        if kind != "anvil":  # `dul up` uses the node at DUL_RPC_URL instead of its own chain
            env["DUL_RPC_URL"] = beside.enter_context(
                node_beside(kind, home, env["DUL_KEY_PASSPHRASE"])
            )
        yield from _told(home, env)


def _told(home: Path, env: dict[str, str]) -> Iterator[Demo]:
    try:
        run = subprocess.run(
            [str(DUL), "demo", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert run.returncode == 0, f"dul demo failed:\n{run.stderr[-4000:]}"
        facts = json.loads(run.stdout)
        yield Demo(home, facts, facts["urls"]["audit_url"], facts["urls"]["rpc_url"], env)
    finally:
        subprocess.run([str(DUL), "down"], env=env, capture_output=True, timeout=120, check=False)


@pytest.mark.every_node
def test_the_model_traces_back_to_every_hospital_dataset_agreement_and_signature(
    demo: Demo,
) -> None:
    v1, v2 = demo.facts["models"]
    graph = demo.get(f"/v1/provenance/artifact/{v2}", direction="up", limit=500)
    nodes = {node["id"]: node for node in graph["nodes"]}
    types = [node["type"] for node in graph["nodes"]]
    assert any(v1 in node_id for node_id in nodes), "model v2 does not derive from model v1"
    organizations = {n["label"] for n in graph["nodes"] if n["type"] == "organization"}
    assert {"Hospital A", "Hospital B", "Hospital C", "AI Lab"} <= organizations
    datasets = {n["label"] for n in graph["nodes"] if n["type"] == "dataset"}
    assert datasets == {f"{h}/omop-cdm" for h in ("hospital-a", "hospital-b", "hospital-c")}
    trainings = {
        demo.facts["agreements"][f"training-{h}"]
        for h in ("hospital-a", "hospital-b", "hospital-c")
    }
    assert {f"agreement:{a}" for a in trainings} <= set(nodes)
    assert types.count("signature") >= 6, "each training agreement has two signatures"
    granted_training = [n for n in graph["nodes"] if n["type"] == "access"]
    assert len(granted_training) == 6, "two rounds at three hospitals"
    assert all(n["attributes"].get("decision") == "GRANTED" for n in granted_training)
    assert all(node["chain"] is not None for node in graph["nodes"] if node["type"] != "subject")
    assert all(edge["chain"]["tx_hash"].startswith("0x") for edge in graph["edges"])


@pytest.mark.every_node
def test_decisions_on_chain_are_the_story_s(demo: Demo) -> None:
    expected = {
        "research query 1": ("GRANTED", []),
        "research query 2 (after the withdrawal)": ("GRANTED", []),
        "research query out of scope (drug exposure)": ("DENIED", ["FIELDS_NOT_IN_SCOPE"]),
        "research query over tier (IDENTIFIED)": ("DENIED", ["TIER_ABOVE_CEILING"]),
        "research query 3": ("GRANTED", []),
        "research query over quota (4th of 3)": ("DENIED", ["QUOTA_EXHAUSTED"]),
        "short agreement query (inside its window)": ("GRANTED", []),
        "short agreement query (after its window)": ("DENIED", ["OUTSIDE_WINDOW"]),
        "insurer claim with the patient's code": ("GRANTED", []),
        "insurer reuses the same code": ("DENIED", ["AUTHORIZATION_INVALID"]),
        "hospital-b opens the moved patient's records with the code": ("GRANTED", []),
        "hospital-b reuses the transfer code": ("DENIED", ["AUTHORIZATION_INVALID"]),
        "hospital A's emergency department without the patient's code": (
            "DENIED", ["AUTHORIZATION_INVALID"],
        ),
        "break-glass: the patient is unconscious": ("GRANTED", []),
    }  # fmt: skip
    for step, (decision, reasons) in expected.items():
        access_id = demo.access(step)["access_id"]
        graph = demo.get(f"/v1/provenance/access/{access_id}", direction="up")
        [access] = [n for n in graph["nodes"] if n["id"] == graph["root"]]
        assert graph["root"].startswith(f"access:{access_id}@"), step
        attributes = access["attributes"]
        assert attributes["decision"] == decision, step
        if reasons:
            assert attributes.get("reason") in reasons, (step, attributes)
    report = demo.get(f"/v1/reports/agreements/{demo.facts['agreements']['research']}")
    text = json.dumps(report)
    for reason in ("FIELDS_NOT_IN_SCOPE", "TIER_ABOVE_CEILING", "QUOTA_EXHAUSTED"):
        assert reason in text


@pytest.mark.every_node
def test_the_withdrawn_patient_is_in_the_first_query_only(demo: Demo) -> None:
    subject = demo.facts["withdrawal"]["subject"]
    report = demo.get(f"/v1/subjects/{subject}/accesses")
    seen = {a["access_id"] for a in report["accesses"]}
    assert demo.access("research query 1")["access_id"] in seen
    assert demo.access("research query 2 (after the withdrawal)")["access_id"] not in seen
    assert demo.access("research query 3")["access_id"] not in seen
    assert any(c.get("status") == "WITHDRAWN" for c in report["consents"]), report["consents"]


@pytest.mark.every_node
def test_the_insurer_s_code_opened_one_access_once(demo: Demo) -> None:
    authorization = demo.facts["authorization"]
    report = demo.get(f"/v1/subjects/{authorization['subject']}/accesses")
    text = json.dumps(report)
    assert authorization["code_hash"] in text
    assert authorization["redeemed_by"] in text
    claim = next(a for a in report["accesses"] if a["access_id"] == authorization["redeemed_by"])
    assert claim["decision"] == "GRANTED"


def test_the_moved_patient_s_own_code_opened_their_records_at_b_once(demo: Demo) -> None:
    """The code the patient gave hospital B on hospital A's patient page: signed with the
    patient's key (the chain says so), redeemed by exactly one clinical-care access of B that
    included that patient alone, and refused the second time."""
    transfer = demo.facts["transfer"]
    report = demo.get(f"/v1/subjects/{transfer['subject']}/accesses")
    [code] = report["authorizations"]
    assert (code["code_hash"], code["issued_by"]) == (transfer["code_hash"], "patient")
    assert (code["grantee_org"], code["scenario"], code["tier"]) == (
        f"0x{slug_id('hospital-b').hex()}", "CLINICAL_CARE", "IDENTIFIED",
    )  # fmt: skip
    assert code["redeemed_by_access"] == transfer["redeemed_by"]
    [access] = report["accesses"]  # the patient never consented to anything else
    assert access["access_id"] == transfer["redeemed_by"]
    assert (access["admitted_by"], access["scenario"]) == ("authorization", "CLINICAL_CARE")
    assert access["inclusion"]["size"] == 1
    assert [k["key"].lower() for k in report["keys"]] == [transfer["patient_key"].lower()]
    assert transfer["reuse_fault"] == "REDEEMED"


@pytest.mark.every_node
def test_the_break_glass_access_is_flagged_reviewed_and_coded_emergency_treatment(
    demo: Demo,
) -> None:
    glass = demo.facts["break_glass"]
    assert (glass["reason"], glass["outcome"]) == ("PATIENT_INCAPACITATED", "UPHELD")
    report = demo.get(f"/v1/reports/agreements/{glass['agreement']}")
    assert report["break_glass_review_hours"] == 24
    assert report["break_glass_by_state"] == {"upheld": 1}
    [case] = report["break_glass"]
    assert (case["access_id"], case["state"], case["late"]) == (glass["access_id"], "upheld", False)
    fhir = demo.get(f"/v1/provenance/access/{glass['access_id']}", direction="up", format="fhir")
    [event] = [e["resource"] for e in fhir["entry"]
               if e["resource"]["resourceType"] == "AuditEvent"]  # fmt: skip
    codes = {c["code"] for p in event["purposeOfEvent"] for c in p["coding"]}
    assert {"ETREAT", "BTG"} <= codes


@pytest.mark.every_node
def test_verify_is_clean(demo: Demo) -> None:
    verify = demo.get("/v1/verify")
    assert verify["ok"], verify["findings"]
    assert verify["checked"].get("accesses") == len(demo.facts["accesses"])


def test_the_indexer_keeps_up_in_readyz_dul_up_and_chain_status(demo: Demo) -> None:
    """The stack's own indexer follows the chain: `/readyz` is 200 and `ok`, and `dul up`
    (idempotent on the running stack) and `dul chain status` report its health and lag."""
    ready = httpx.get(f"{demo.audit}/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ok"
    assert ready.json()["quarantined"] == 0
    up = subprocess.run([str(DUL), "up", "--detach", "--json"], env=demo.env,
                        capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert up.returncode == 0, up.stderr[-2000:]
    indexer = json.loads(up.stdout)["audit_indexer"]
    assert indexer["status"] == "ok", indexer
    assert indexer["lag_blocks"] <= indexer["max_lag_blocks"]
    status = subprocess.run([str(DUL), "chain", "status"], env=demo.env, capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert status.returncode == 0, status.stderr[-2000:]
    assert re.search(r"indexer\s+ok: checkpoint block \d+, \d+ block\(s\)", status.stdout)


@pytest.mark.timeout(600)  # one request per block of a chain minutes old: minutes when busy
def test_no_identity_ever_reaches_the_chain(demo: Demo) -> None:
    """Every transaction input and every event of the whole story — specific consents (a study,
    a requester, a disease term) included — searched for the raw pseudonyms, the hospitals'
    subject keys and the patients' codes, in every plain encoding."""
    subject_key = load_subject_key(demo.home / "keys" / "hospital-a.subject-key")
    emergency_key = load_subject_key(demo.home / "keys" / "hospital-c.subject-key")
    codes = [demo.facts["authorization"]["code"], demo.facts["transfer"]["code"]]
    secrets_ = [p.encode() for p in (*PATIENTS, EMERGENCY_PATIENT)] + [subject_key, emergency_key]
    # the emergency patient's reference: only its leaf hash (the cohort root) may be on chain
    secrets_.append(subject_ref(emergency_key, EMERGENCY_PATIENT))
    secrets_ += [c.encode() for c in codes] + [normalize_code(c).encode() for c in codes]
    needles = secrets_ + [s.hex().encode() for s in secrets_]

    with httpx.Client(timeout=60, headers=bearer_headers(rpc_token())) as client:

        def request(method: str, params: list[Any]) -> Any:
            body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            return client.post(demo.rpc, json=body).json()

        blob, transactions, logs = chain_haystack(request)
    assert transactions > 60
    assert logs > 80
    # the scan covered the specific consents: their disease term and study are on chain
    assert DIABETES_T2.encode() in blob
    assert bytes.fromhex(demo.facts["agreements"]["research"][2:]) in blob
    lowered = blob.lower()
    for needle in needles:
        assert needle not in blob, f"{needle!r} is on chain"
        assert needle.lower() not in lowered, f"{needle!r} is on chain"
    assert WITHDRAWING.encode() not in blob


def test_dul_up_gave_each_service_its_own_rpc_token(demo: Demo) -> None:
    """The demo's RPC wants a token; `dul up` made one per service, private, the indexer's and
    the audit service's for reads only."""
    directory = demo.home / "run" / "rpc-tokens"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    tokens = {path.stem: path for path in directory.glob("*.jwt")}
    assert {"audit", "audit-indexer", "gateway"} <= set(tokens)

    def call(method: str, token: str | None, *params: Any) -> httpx.Response:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        return httpx.post(demo.rpc, json=body, headers=bearer_headers(token), timeout=30)

    for name, path in tokens.items():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        token = path.read_text().strip()
        assert jwt.decode(token, options={"verify_signature": False})["sub"] == name
        assert "result" in call("eth_blockNumber", token).json()
    reader = tokens["audit-indexer"].read_text().strip()
    assert call("eth_sendRawTransaction", reader, "0x00").status_code == 403
    assert (
        call("eth_sendRawTransaction", tokens["gateway"].read_text().strip(), "0x00").json()[
            "error"
        ]["code"]
        == -32602
    )  # past the token check: the transaction itself is refused
    assert call("eth_blockNumber", None).status_code == 401


def test_every_file_under_dul_home_is_private_and_no_code_is_kept(demo: Demo) -> None:
    """After `dul demo` from nothing, nothing under DUL_HOME is readable by anyone but its
    owner (stores and their -wal/-shm, chain state, logs, pid files, manifests, tokens,
    demo.json), and the patient's one-time code is in no file at all."""
    codes = [demo.facts["authorization"]["code"], demo.facts["transfer"]["code"]]
    needles = {c.lower().encode() for c in codes} | {
        normalize_code(c).lower().encode() for c in codes
    }
    loose: list[str] = []
    holding: list[str] = []
    seen = 0
    for top, _, files in os.walk(demo.home):
        for path in (Path(top), *(Path(top) / name for name in files)):
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                continue
            seen += 1
            if info.st_mode & 0o077:
                loose.append(f"{path} {stat.S_IMODE(info.st_mode):o}")
            if stat.S_ISREG(info.st_mode):
                content = path.read_bytes().lower()
                if any(needle in content for needle in needles):
                    holding.append(str(path))
    assert seen > 20  # the chain's, the gateways', the audit service's and the demo's files
    assert (demo.home / "demo.json").exists()
    assert loose == [], f"readable by others: {loose}"
    assert holding == [], f"the authorization code is on disk in {holding}"


def test_console_search_of_the_model_reaches_the_datasets(
    demo: Demo, browser: Browser, screens: Screens
) -> None:
    model = demo.facts["models"][-1]
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        sign_in(page, demo.audit, demo.token)
        page.select_option("#search-kind", "artifact")
        page.select_option("#search-direction", "up")
        page.fill("#search-id", model)
        page.press("#search-id", "Enter")
        for hospital in ("hospital-a", "hospital-b", "hospital-c"):
            expect(page.locator("#node-list")).to_contain_text(f"{hospital}/omop-cdm")
        listed = page.locator("#node-list button")
        expect(page.locator("#graph")).to_have_attribute("data-drawn", str(listed.count()))
        assert listed.count() >= 30  # models, updates, accesses, agreements, datasets, ...
        # Readable as drawn: 12 px labels at a zoom of 0.85 or more, model v2 in full view.
        view = page.evaluate(
            "id => { const cy = document.querySelector('#graph').cy;"
            " const node = cy.getElementById(id); const box = node.renderedBoundingBox();"
            " return { zoom: cy.zoom(), box, width: cy.width(), height: cy.height(),"
            " font: parseFloat(node.style('font-size')), caption: node.data('caption') }; }",
            f"artifact:{model}",
        )
        assert view["zoom"] >= 0.85, view
        assert view["font"] * view["zoom"] >= 10, view
        assert view["caption"].startswith("model"), view
        box = view["box"]
        assert min(box["x1"], box["y1"]) >= 0, view
        assert box["x2"] <= view["width"], view
        assert box["y2"] <= view["height"], view
        page.screenshot(path=screens.path("provenance-model-v2-1280x800"))
        # The front door of the demo's data space.
        page.goto(f"{demo.audit}/#/")
        expect(page.locator("#front-agreements-table tbody tr").first).to_be_visible()
        expect(page.locator("#front-accesses-table")).to_contain_text("DENIED")
        expect(page.locator("#front-organizations-table")).to_contain_text("Hospital B")
        page.screenshot(path=screens.path("front-door-demo-1280x800"))
    finally:
        context.close()


def test_console_transparency_report_of_the_withdrawn_patient(
    demo: Demo, browser: Browser, screens: Screens
) -> None:
    """The patient's page, reached by searching the subject reference: the one access that
    included them, the consent they withdrew, and the inclusion proof checked by the browser
    itself (crypto.subtle) — a tampered proof from the service shows as invalid."""
    subject = demo.facts["withdrawal"]["subject"]
    first = demo.access("research query 1")["access_id"]
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        sign_in(page, demo.audit, demo.token)
        page.select_option("#search-kind", "subject")
        page.fill("#search-id", subject)
        page.press("#search-id", "Enter")
        page.click("#open-subject")
        expect(page).to_have_url(re.compile(rf"#/subject/{subject}$"))
        accesses = page.locator("#subject-accesses tbody tr")
        expect(accesses).to_have_count(1)
        expect(accesses.first.locator(f'a[title="{first}"]')).to_be_visible()
        expect(page.locator("#subject-consents")).to_contain_text("WITHDRAWN")
        accesses.first.get_by_role("button", name="Check proof").press("Enter")
        result = accesses.first.locator(".proof-result")
        expect(result).to_have_text(re.compile(r"^✓ verified: leaf \d+ of \d+"))
        page.screenshot(path=screens.path("transparency-report-1280x800"))

        page.set_viewport_size({"width": 400, "height": 800})
        expect(accesses).to_have_count(1)
        assert page.evaluate("document.documentElement.scrollWidth") <= 400
        page.screenshot(path=screens.path("transparency-report-400-full"), full_page=True)

        def tampered(route: Route) -> None:
            report = route.fetch().json()
            inclusion = report["accesses"][0]["inclusion"]
            inclusion["root"] = "0x" + "00" * 32
            route.fulfill(json=report)

        page.route("**/v1/subjects/**", tampered)
        page.reload()
        accesses.first.get_by_role("button", name="Check proof").click()
        expect(result).to_have_text(re.compile(r"^✕ invalid"))
    finally:
        context.close()
    assert not errors, f"the console threw: {errors}"


# --- who sees what, signed in ----------------------------------------------------------------


def _dul_json(demo: Demo, *args: str) -> Any:
    run = subprocess.run([str(DUL), *args, "--json"], env=demo.env, capture_output=True,
                         text=True, timeout=120, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_the_audit_api_asks_for_the_regulator_s_token(demo: Demo) -> None:
    model = demo.facts["models"][-1]
    bare = httpx.get(f"{demo.audit}/v1/provenance/artifact/{model}", timeout=60)
    assert bare.status_code == 401
    assert bare.json()["code"] == "credential_missing"
    assert demo.token.startswith("dulau_")


def test_console_each_role_sees_what_it_may(demo: Demo, browser: Browser, screens: Screens) -> None:
    """Model v2 signed in as the regulator (the whole graph), as hospital A (its part, the cut
    marked ✂), and as the withdrawn patient (their own report, nothing else)."""
    model = demo.facts["models"][-1]
    graph_route = f"#/provenance/artifact/{model}?direction=up"
    datasets = {h: f"dataset:0x{slug_id(f'{h}/omop-cdm').hex()}"
                for h in ("hospital-a", "hospital-b", "hospital-c")}  # fmt: skip
    ward = _dul_json(demo, "admin", "token", "create", f"ward-{os.getpid()}", "--service",
                     "audit", "--role", "organization", "--org", "hospital-a")  # fmt: skip
    subject = demo.facts["withdrawal"]["subject"]
    patient = _dul_json(demo, "steward", "patient-token", WITHDRAWING, "--holder", "hospital-a",
                        "--key", "hospital-a.steward")  # fmt: skip
    assert patient["subject"] == subject

    for role, token in (("regulator", demo.token), ("organization", ward["token"])):
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        try:
            sign_in(page, demo.audit, token, graph_route)
            expect(page.locator("#session")).to_contain_text(f"Signed in as {role}")
            listed = page.locator("#node-list")
            expect(listed.locator(f'button[data-node="{datasets["hospital-a"]}"]')).to_be_visible()
            model_node = listed.locator(f'button[data-node="artifact:{model}"]')
            expect(model_node).to_be_visible()
            others = [datasets["hospital-b"], datasets["hospital-c"]]
            if role == "regulator":
                for other in others:
                    expect(listed.locator(f'button[data-node="{other}"]')).to_be_visible()
                expect(page.locator("#node-list [data-cut]")).to_have_count(0)
                expect(page.locator("#graph-summary")).not_to_contain_text("✂")
            else:
                expect(model_node).to_have_attribute("data-cut", "true")
                expect(model_node).to_contain_text("✂")
                expect(page.locator("#graph-summary")).to_contain_text("✂")
                for other in others:
                    expect(listed.locator(f'button[data-node="{other}"]')).to_have_count(0)
                # another hospital's training agreement: refused, said plainly
                other_agreement = demo.facts["agreements"]["training-hospital-b"]
                page.goto(f"{demo.audit}/#/agreement/{other_agreement}")
                expect(page.locator("#message")).to_contain_text("out_of_scope")
            page.goto(f"{demo.audit}/{graph_route}")
            expect(listed.locator("button").first).to_be_visible()
            drawn = listed.locator("button")
            expect(page.locator("#graph")).to_have_attribute("data-drawn", str(drawn.count()))
            page.screenshot(path=screens.path(f"model-v2-as-{role}-1280x800"))
            # signing out forgets the credential
            page.click("#sign-out")
            expect(page.locator("#signin")).to_be_visible()
            assert page.evaluate("sessionStorage.length") == 0
            assert page.evaluate("localStorage.length") == 0
        finally:
            context.close()

    context = browser.new_context(viewport={"width": 400, "height": 800})
    page = context.new_page()
    try:
        sign_in(page, demo.audit, patient["token"])
        expect(page).to_have_url(re.compile(rf"#/subject/{subject}$"))
        expect(page.locator("#session")).to_contain_text("Signed in as patient")
        expect(page.locator("#subject-accesses tbody tr")).to_have_count(1)
        expect(page.locator("#subject-consents")).to_contain_text("WITHDRAWN")
        expect(page.locator("#search")).to_be_hidden()
        expect(page.locator("#verify")).to_be_hidden()
        expect(page.locator("#subject-graph")).to_be_hidden()
        expect(page.locator("#subject-body a")).to_have_count(0)  # no way onward
        # any other view leads back to the patient's own report
        page.goto(f"{demo.audit}/{graph_route}")
        expect(page).to_have_url(re.compile(rf"#/subject/{subject}$"))
        expect(page.locator("#provenance")).to_be_hidden()
        page.screenshot(path=screens.path("patient-own-report-400x800"), full_page=True)
    finally:
        context.close()


def test_the_withdrawn_patient_on_hospital_a_s_patient_page(
    demo: Demo, browser: Browser, screens: Screens
) -> None:
    """`dul up` runs hospital A's patient page beside its gateway: the withdrawn patient signs
    in with the token `dul steward patient-token` makes and sees the withdrawal, signed by
    them, and the one use of their data before it, its proof checked in the browser."""
    url = demo.facts["urls"]["patient_url"]
    token = _dul_json(demo, "steward", "patient-token", WITHDRAWING, "--key", "hospital-a.steward")
    bearer = {"Authorization": f"Bearer {token['token']}"}
    consents = httpx.get(f"{url}/api/consents", headers=bearer, timeout=60)
    assert consents.status_code == 200, consents.text
    assert [c["status"] for c in consents.json()["consents"]] == ["WITHDRAWN"]
    assert httpx.get(f"{url}/api/consents", timeout=60).status_code == 401
    context = browser.new_context(viewport={"width": 400, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(url)
        page.get_by_label("Patient token").fill(token["token"])
        page.get_by_role("button", name="Sign in").click()
        uses = page.locator("#use-list > li")
        expect(uses).to_have_count(1)
        uses.first.get_by_role("button", name=re.compile("Check the proof")).click()
        expect(uses.first.locator(".proof")).to_have_text(re.compile("^✓ Verified"))
        consent = page.locator("#consent-list > li")
        expect(consent).to_contain_text("Withdrawn")
        expect(consent).to_contain_text("by you (signed with your key)")
        shot = screens.directory.parent / "patient" / "demo-withdrawn-400-full.png"
        page.screenshot(path=str(shot), full_page=True)
    finally:
        context.close()
    assert not errors, f"the patient page threw: {errors}"


def test_specific_consents_read_plainly_on_the_patient_page(
    demo: Demo, browser: Browser, screens: Screens
) -> None:
    """A study-specific and a disease-specific consent say, on the patient's own page, what
    they are limited to: the study and the requesting organization, or the disease term."""
    url = demo.facts["urls"]["patient_url"]
    research = demo.facts["agreements"]["research"]
    expected = {
        STUDY_SPECIFIC: ["Only for the studies", f"{research[:10]}…{research[-4:]}",
                         "Only for requests from", "institute"],
        DISEASE_SPECIFIC: ["Only research on", DIABETES_T2],
    }  # fmt: skip
    context = browser.new_context(viewport={"width": 400, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        for patient, texts in expected.items():
            token = _dul_json(demo, "steward", "patient-token", patient,
                              "--key", "hospital-a.steward")["token"]  # fmt: skip
            page.goto(url)
            page.evaluate("sessionStorage.clear()")
            page.reload()
            page.get_by_label("Patient token").fill(token)
            page.get_by_role("button", name="Sign in").click()
            consent = page.locator("#consent-list > li")
            expect(consent).to_have_count(1)
            for text in texts:
                expect(consent).to_contain_text(text)
            consent.scroll_into_view_if_needed()
            shot = screens.directory.parent / "patient" / f"demo-{patient.lower()}-consent-400.png"
            page.screenshot(path=str(shot))
    finally:
        context.close()
    assert not errors, f"the patient page threw: {errors}"
