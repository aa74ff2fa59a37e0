// The patient page: sign in with the hospital's patient token, see who used your data (and
// check each proof here), give or withdraw a consent and give a one-time code, all signed in
// this browser with your own key.
//
// A consent to give is served by the page's server as standard EIP-712 JSON (what any wallet
// signs with eth_signTypedData_v4); this page checks it is what the patient chose, drops the
// EIP712Domain entry (ethers v6 derives the domain type itself) and signs it.
//
// Where things live: the patient token in sessionStorage (this tab only, like the audit
// console's credential); the patient's private key in this module's memory only — never
// stored, never sent, gone on reload. Only signatures and a code's hash leave the page (the
// code itself goes once to this page's own server to be drawn as a QR code, and is kept
// nowhere). The page talks to its own origin only (CSP connect-src 'self').

import { Wallet, keccak256, toUtf8Bytes } from "/page/vendor/ethers.min.js";
import { ProofError, canVerify, verifyInclusion } from "/page/proof.js";

const TOKEN = "dul.patient.token";
const CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"; // Crockford base32, as dul.subjects
const DOMAIN_NAME = "DataUseLedger.ConsentRegistry";
const WITHDRAWAL_TYPES = { ConsentWithdrawal: [{ name: "consentId", type: "bytes32" }, { name: "deadline", type: "uint64" }] };
const REVOCATION_TYPES = { AuthorizationRevocation: [{ name: "codeHash", type: "bytes32" }, { name: "deadline", type: "uint64" }] };
const AUTHORIZATION_TYPES = {
  Authorization: [
    { name: "codeHash", type: "bytes32" }, { name: "holder", type: "bytes32" },
    { name: "subject", type: "bytes32" }, { name: "grantee", type: "bytes32" },
    { name: "dataset", type: "bytes32" }, { name: "fieldMask", type: "uint256" },
    { name: "tier", type: "uint8" }, { name: "scenario", type: "uint8" },
    { name: "expiresAt", type: "uint64" }, { name: "multiUse", type: "bool" },
  ],
};

const CONSENT_GRANT = "ConsentGrant";
const SCENARIO_BITS = { CLINICAL_CARE: 0, RESEARCH: 1, AI_TRAINING: 2, TEACHING: 3, INSURANCE_CLAIM: 4 };

const PURPOSES = {
  CLINICAL_CARE: "your care or treatment", RESEARCH: "medical research", AI_TRAINING: "training an AI model",
  TEACHING: "teaching", INSURANCE_CLAIM: "an insurance claim",
};
const LEVELS = {
  AGGREGATE: "only totals, no one's records", MODEL_PARAMETERS: "only a trained model, no records",
  DEIDENTIFIED: "records with identity removed", PSEUDONYMIZED: "records under a code name",
  IDENTIFIED: "records with your identity",
};
const EMERGENCIES = {
  PATIENT_INCAPACITATED: "you could not be asked (for example, unconscious)",
  LIFE_THREATENING_EMERGENCY: "a life-threatening emergency",
  URGENT_CONTINUITY_OF_CARE: "urgent continuity of your care",
};
const ACTIONS = { QUERY: "looked up", TRAIN: "trained a model on", EXPORT_RESULT: "exported a result from" };

let session = null;
let wallet = null; // the patient's key: memory only
const cancelled = new Set(); // codes cancelled here that the report may not show yet

const $ = (id) => document.getElementById(id);

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

class Problem extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.code) || `http_${status}`;
  }
}

function say(text, kind = "error") {
  const box = $("message");
  box.hidden = !text;
  box.dataset.kind = kind;
  box.textContent = text || "";
}

async function api(path, init = {}) {
  const headers = { Accept: "application/json", ...(init.headers || {}) };
  const token = sessionStorage.getItem(TOKEN);
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, { ...init, headers });
  } catch (error) {
    throw new Problem(0, { code: "unreachable", detail: `the hospital's page cannot be reached (${error.message})` });
  }
  if (!response.ok) {
    const problem = new Problem(response.status, await response.json().catch(() => null));
    if (response.status === 401) signOut(`Signed out: ${problem.message}`);
    throw problem;
  }
  return response;
}

const getJson = async (path) => (await api(path)).json();
const postJson = async (path, body) => (await api(path, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
})).json();

function day(value) {
  if (value === null || value === undefined) return "—";
  const seconds = Number(value);
  if (Number.isFinite(seconds)) {
    if (seconds > 2 ** 40) return "no end date";
    return new Date(seconds * 1000).toLocaleDateString(undefined, { year: "numeric", month: "long", day: "numeric" });
  }
  return new Date(value).toLocaleString(undefined, { dateStyle: "long", timeStyle: "short" });
}

function short(hex) {
  return typeof hex === "string" && hex.length > 20 ? `${hex.slice(0, 10)}…${hex.slice(-4)}` : String(hex ?? "");
}

function humanize(key) {
  return key.replaceAll("_", " ").replace(/^./, (c) => c.toUpperCase());
}

function details(pairs) {
  return h("dl", {}, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

/** Fields a newer service may add (e.g. a consent's studies, a disease term, an emergency
 * access's justification), shown as they come rather than hidden. */
const EXTRA_LABELS = { studies: "Only for the studies", requesters: "Only for requests from", disease: "Only research on" };

function extras(record, known) {
  const out = [];
  for (const [key, value] of Object.entries(record)) {
    if (known.has(key) || value === null || value === undefined || value === false || value === "") continue;
    const label = EXTRA_LABELS[key] || humanize(key);
    if (Array.isArray(value)) {
      if (value.length && value.every((v) => typeof v !== "object")) out.push([label, value.map(short).join(", ")]);
    } else if (typeof value !== "object") {
      out.push([label, value === true ? "yes" : String(value)]);
    }
  }
  return out;
}

// --- sign-in ---------------------------------------------------------------------------------

function signOut(reason) {
  sessionStorage.removeItem(TOKEN);
  session = null;
  forgetKey();
  $("home").hidden = true;
  $("signin").hidden = false;
  $("sign-out").hidden = true;
  say(reason || "");
  $("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) {
    say("Paste the patient token first.");
    $("token").focus();
    return;
  }
  sessionStorage.setItem(TOKEN, token);
  $("signin-button").disabled = true;
  try {
    await start();
    $("token").value = "";
  } catch (error) {
    sessionStorage.removeItem(TOKEN);
    say(`Could not sign in: ${error.message}`);
  } finally {
    $("signin-button").disabled = false;
  }
}

async function start() {
  session = await getJson("/api/session");
  say("");
  $("signin").hidden = true;
  $("home").hidden = false;
  $("sign-out").hidden = false;
  $("title").textContent = `Your health data at ${session.holder}`;
  $("who").textContent = `Signed in as patient ${short(session.subject)} until ${day(session.expires_at)} `
    + `${new Date(session.expires_at * 1000).toLocaleTimeString()}.`;
  renderOffers();
  $("main").focus();
  await refresh();
}

async function refresh() {
  const [report, consents] = await Promise.allSettled([getJson("/api/report"), getJson("/api/consents")]);
  const history = report.status === "fulfilled" ? report.value : null;
  if (report.status === "fulfilled") {
    renderUses(history);
    renderCodes(history);
  } else {
    $("uses").replaceChildren(h("p", { class: "hint" }, `The record of uses cannot be read now: ${report.reason.message}`));
    $("codes").replaceChildren();
  }
  if (consents.status === "fulfilled") renderConsents(consents.value, history);
  else $("consents").replaceChildren(h("p", { class: "hint" }, `Your consents cannot be read now: ${consents.reason.message}`));
}

// --- the key ---------------------------------------------------------------------------------

function forgetKey() {
  wallet = null;
  $("key").value = "";
  $("key-forget").hidden = true;
  $("key-status").textContent = "";
}

function useKey(event) {
  event.preventDefault();
  const raw = $("key").value.trim();
  $("key").value = "";
  const hex = raw.startsWith("0x") ? raw : `0x${raw}`;
  if (!/^0x[0-9a-fA-F]{64}$/.test(hex)) {
    $("key-status").textContent = "That is not a private key: it has 64 hexadecimal characters.";
    $("key").focus();
    return;
  }
  const candidate = new Wallet(hex);
  const registered = session && session.subject_key;
  if (registered && candidate.address.toLowerCase() !== registered.toLowerCase()) {
    $("key-status").textContent = `This is not the key ${session.holder} registered for you (that one is ${short(registered)}). It was not kept.`;
    return;
  }
  wallet = candidate;
  $("key-forget").hidden = false;
  $("key-status").textContent = registered
    ? `Key ready: it is the one ${session.holder} registered for you (${short(wallet.address)}). Kept in memory only.`
    : `Key ready (${short(wallet.address)}), kept in memory only. ${session.holder} has no key on record for you yet, so codes will be refused until it registers one.`;
}

function needKey() {
  if (wallet) return true;
  say("First paste your private key under “My key”: changes are signed with it.");
  $("key").focus();
  return false;
}

function domain() {
  return { name: DOMAIN_NAME, version: "1", chainId: session.chain_id, verifyingContract: session.consent_registry };
}

// --- who used my data ------------------------------------------------------------------------

async function checkProof(access, result) {
  const { root, size, index, proof } = access.inclusion;
  result.dataset.state = "checking";
  result.textContent = "Checking…";
  if (!canVerify()) {
    result.dataset.state = "unavailable";
    result.textContent = "This browser can check proofs only on a secure (https) page.";
    return;
  }
  try {
    // against the signed-in patient's own reference, not the report's echo of it
    const ok = await verifyInclusion(root, size, index, session.subject.toLowerCase(), proof);
    result.dataset.state = ok ? "ok" : "bad";
    result.textContent = ok
      ? size === 1 ? "✓ Verified: the ledger's record of this use names you alone."
        : `✓ Verified: you are one of the ${size} people in the group the ledger recorded.`
      : "✕ The proof does not match the ledger's record. Tell your hospital.";
  } catch (error) {
    result.dataset.state = "bad";
    result.textContent = error instanceof ProofError ? `✕ Invalid proof: ${error.message}` : `✕ Could not check: ${error.message}`;
  }
}

const ACCESS_FIELDS = new Set(["access_id", "agreement_id", "dataset_id", "dataset", "holder_org", "requester",
  "requester_org", "requester_org_name", "scenario", "tier", "operation", "decision", "reason", "timestamp", "time",
  "admitted_by", "authorization", "chain", "inclusion"]);

function renderUses(report) {
  if (!report.accesses.length) {
    $("uses").replaceChildren(h("p", {}, "No one has used your data so far."));
    return;
  }
  const items = [...report.accesses].reverse().map((a) => {
    const result = h("span", { class: "proof", role: "status", "aria-live": "polite" });
    const who = a.requester_org_name || a.requester_org || "an organization";
    const allowed = a.decision === "GRANTED";
    const emergency = a.break_glass;
    return h("li", { class: "item access", "data-access": a.access_id },
      h("strong", {}, `${who} ${ACTIONS[a.operation] || "used"} ${a.dataset}`),
      emergency ? [" ", h("span", { class: "badge warn" }, "⚠ Emergency access, without your code")] : null,
      details([
        ["When", a.time ? day(a.time) : "—"],
        ["What for", PURPOSES[a.scenario] || a.scenario || "—"],
        ["What they saw", LEVELS[a.tier] || a.tier || "—"],
        ["Decision", allowed ? h("span", { class: "badge ok" }, "Allowed")
          : [h("span", { class: "badge bad" }, "Refused"), a.reason && a.reason !== "NONE" ? ` (${a.reason.toLowerCase().replaceAll("_", " ")})` : ""]],
        ["How you were included", emergency ? "in an emergency, without your code (“break-glass”)"
          : a.admitted_by === "authorization" ? "with a one-time code you gave" : "as one of a group of patients"],
        ...(emergency ? emergencyRows(emergency) : []),
        ...extras(a, ACCESS_FIELDS),
        ["Ledger record", h("code", { title: a.chain.tx_hash }, `block ${a.chain.block}, ${short(a.chain.tx_hash)}`)],
      ]),
      h("button", { type: "button", class: "secondary check-proof", "aria-label": `Check the proof for ${who} on ${a.time ? day(a.time) : "this use"}`,
        onclick: () => checkProof(a, result) }, "Check"), " ", result);
  });
  $("uses").replaceChildren(
    h("p", {}, `${report.accesses.length === 1 ? "1 use" : `${report.accesses.length} uses`} of your data${report.truncated ? " (the most recent not all shown)" : ""}.`),
    h("ul", { class: "items", id: "use-list" }, items));
}

/** Why the glass was broken, and whether the hospital has checked it was justified. */
function emergencyRows(glass) {
  let review;
  if (glass.outcome === "UPHELD") review = h("span", { class: "badge ok" }, "Checked by the hospital: justified");
  else if (glass.outcome === "REFERRED") review = h("span", { class: "badge bad" }, "Referred to the regulator");
  else if (glass.overdue) review = h("span", { class: "badge bad" }, `Not checked yet — overdue since ${day(glass.review_due)}`);
  else review = `To be checked by the hospital by ${day(glass.review_due)}`;
  return [["Why", EMERGENCIES[glass.reason] || glass.reason || "—"], ["Hospital's review", review]];
}

// --- consents --------------------------------------------------------------------------------

const CONSENT_FIELDS = new Set(["consent_id", "holder", "holder_org", "subject", "scenarios", "duo_codes", "status",
  "withdrawal_pending", "valid_from", "valid_until", "subject_key", "withdraw_key", "in_force", "history", "granted_by"]);

function renderConsents(answer, report) {
  const histories = new Map((report ? report.consents : []).map((c) => [c.consent_id.toLowerCase(), c.history]));
  if (!answer.consents.length) {
    $("consents").replaceChildren(h("p", {}, `You have no consent on record at ${session.holder}.`));
    return;
  }
  const items = answer.consents.map((c) => {
    const active = c.status === "GRANTED" && !c.withdrawal_pending;
    const history = histories.get(c.consent_id.toLowerCase()) || [];
    const actions = h("div", {});
    // offered only when the chain would take a signature: by the key the page's server names
    // (the one the hospital registered for you, else the consent's own)
    if (active && c.withdraw_key) {
      actions.append(h("button", { type: "button", class: "secondary withdraw", "aria-label": `Withdraw consent to ${c.scenarios.map((s) => PURPOSES[s] || s).join(", ")}`,
        onclick: () => confirmWithdrawal(c, actions) }, "Withdraw this consent"));
    } else if (active) {
      actions.append(h("p", { class: "hint" }, `No key of yours can withdraw this consent: ask ${session.holder} to withdraw it.`));
    }
    return h("li", { class: "item consent", "data-consent": c.consent_id },
      h("strong", {}, `Use of your records for ${c.scenarios.map((s) => PURPOSES[s] || s).join(", ") || "no purpose"}`),
      " ", active ? h("span", { class: "badge ok" }, "Active")
        : h("span", { class: "badge bad" }, c.withdrawal_pending ? "Withdrawn (being recorded)" : c.status === "WITHDRAWN" ? "Withdrawn" : "Not in force"),
      details([
        ["Given by", c.granted_by === "subject" ? "you (signed with your key)" : `${session.holder}, for you`],
        ["From", day(c.valid_from)],
        ["Until", day(c.valid_until)],
        ["Terms", c.duo_codes.length ? c.duo_codes.join(", ") : null],
        ...extras(c, CONSENT_FIELDS),
      ]),
      history.length ? [h("span", { class: "hint" }, "History"), h("ol", { class: "history" }, history.map((e) =>
        h("li", {}, `${e.event === "recorded" ? "Given" : humanize(e.event)} ${e.time ? `on ${day(e.time)}` : ""}`,
          e.by_subject ? " by you (signed with your key)" : " by the hospital")))] : null,
      actions);
  });
  $("consents").replaceChildren(h("ul", { class: "items", id: "consent-list" }, items));
}

function confirmWithdrawal(consent, actions) {
  if (!needKey()) return;
  const yes = h("button", { type: "button", class: "danger", onclick: () => withdraw(consent, actions) }, "Yes, withdraw");
  const no = h("button", { type: "button", class: "secondary", onclick: () => { actions.replaceChildren(); refresh(); } }, "Keep it");
  actions.replaceChildren(h("div", { class: "confirm", role: "group", "aria-label": "Confirm withdrawal" },
    h("p", {}, "Withdrawing stops every later use under this consent, at once. Uses already made stay recorded."), yes, no));
  yes.focus();
}

async function withdraw(consent, actions) {
  const key = consent.withdraw_key;
  if (!key || key.toLowerCase() !== wallet.address.toLowerCase()) {
    say(`Only the key ${short(key)} can withdraw this consent, not yours. Ask your hospital.`);
    return;
  }
  for (const button of actions.querySelectorAll("button")) button.disabled = true;
  try {
    const deadline = Math.floor(Date.now() / 1000) + 600;
    const signature = await wallet.signTypedData(domain(), WITHDRAWAL_TYPES, { consentId: consent.consent_id, deadline });
    const answer = await postJson(`/api/consents/${consent.consent_id}/withdraw`, { deadline, signature });
    if (answer.status === "failed") throw new Error(answer.error || "the ledger refused it");
    say("Your consent is withdrawn: no later use may rely on it.", "ok");
  } catch (error) {
    say(`The consent was not withdrawn: ${error.message}`);
  }
  await refresh();
  $("consents-title").scrollIntoView();
}

/** The served ConsentGrant must be exactly what the patient chose, for them, in the registry's
 * domain, with their key: otherwise nothing is signed. */
function checkGrant(typed, scenarios) {
  const m = typed.message || {};
  const d = typed.domain || {};
  const mask = scenarios.reduce((bits, s) => bits | (1 << SCENARIO_BITS[s]), 0);
  const same = (a, b) => String(a).toLowerCase() === String(b).toLowerCase();
  const ok = typed.primaryType === CONSENT_GRANT && d.name === DOMAIN_NAME && d.version === "1"
    && Number(d.chainId) === session.chain_id && same(d.verifyingContract, session.consent_registry)
    && same(m.holder, session.holder_id) && same(m.subject, session.subject) && Number(m.scenarios) === mask
    && same(m.subjectKey, wallet.address) && Number(m.validFrom) === 0
    && [m.duoCodes, m.studies, m.requesters].every((list) => Array.isArray(list) && !list.length)
    && /^0x0{64}$/.test(m.diseaseCode);
  if (!ok) throw new Error("the page was given something else to sign than what you chose, so nothing was signed");
}

async function grantConsent(event) {
  event.preventDefault();
  const boxes = [...document.querySelectorAll("#grant-form input[name=scenario]")];
  const scenarios = boxes.filter((box) => box.checked).map((box) => box.value);
  if (!scenarios.length) {
    say("Choose at least one use of your records first.");
    boxes[0].focus();
    return;
  }
  if (!needKey()) return;
  const button = $("grant-button");
  button.disabled = true;
  try {
    const typed = await postJson("/api/consents/typed-data", { scenarios, years: Number($("grant-years").value) });
    checkGrant(typed, scenarios);
    const types = { ...typed.types };
    delete types.EIP712Domain; // ethers v6 derives the domain type itself
    const signature = await wallet.signTypedData(typed.domain, types, typed.message);
    const m = typed.message;
    const answer = await postJson("/api/consents", {
      consent_id: m.consentId, scenarios, valid_until: Number(m.validUntil), subject_key: m.subjectKey,
      deadline: Number(m.deadline), signature,
    });
    if (answer.status === "failed") throw new Error(answer.error || "the ledger refused it");
    for (const box of boxes) box.checked = false;
    say(`Your consent is given: from now on your records may be used for ${scenarios.map((s) => PURPOSES[s] || s).join(", ")}, until ${day(Number(m.validUntil))}.`, "ok");
  } catch (error) {
    say(`The consent was not given: ${error.message}`);
  } finally {
    button.disabled = false;
  }
  await refresh();
  $("consents-title").scrollIntoView();
}

// --- one-time codes --------------------------------------------------------------------------

function renderOffers() {
  const select = $("code-offer");
  const offers = session.offers;
  select.replaceChildren(...offers.map((o, i) => h("option", { value: String(i) },
    `${o.grantee} — for ${PURPOSES[o.scenario] || o.scenario}`)));
  const none = !offers.length;
  select.disabled = none;
  $("code-button").disabled = none;
  describeOffer();
  if (none) $("code-offer-help").textContent = `${session.holder} offers no codes at the moment.`;
}

function describeOffer() {
  const offer = session && session.offers[Number($("code-offer").value)];
  if (!offer) return;
  $("code-offer-help").textContent = `They may see ${LEVELS[offer.tier] || offer.tier} from ${offer.dataset}`
    + (offer.fields.length ? `: ${offer.fields.join(", ")}.` : ".");
}

function newCode() {
  const bytes = crypto.getRandomValues(new Uint8Array(20));
  const raw = [...bytes].map((b) => CODE_ALPHABET[b & 31]).join(""); // 32 divides 256: uniform
  return raw.match(/.{5}/g).join("-");
}

async function issueCode(event) {
  event.preventDefault();
  if (!needKey()) return;
  const offer = session.offers[Number($("code-offer").value)];
  if (!offer) return;
  const button = $("code-button");
  button.disabled = true;
  $("code-out").replaceChildren(h("p", { class: "hint" }, "Signing and recording the code…"));
  try {
    const code = newCode();
    const codeHash = keccak256(toUtf8Bytes(code.replaceAll("-", "")));
    const expiresAt = Math.floor(Date.now() / 1000) + Number($("code-days").value) * 86_400;
    const multiUse = $("code-uses").value === "multi";
    const message = {
      codeHash, holder: session.holder_id, subject: session.subject, grantee: offer.grantee_id,
      dataset: offer.dataset_id, fieldMask: BigInt(offer.field_mask), tier: offer.tier_value,
      scenario: offer.scenario_value, expiresAt, multiUse,
    };
    const signature = await wallet.signTypedData(domain(), AUTHORIZATION_TYPES, message);
    const answer = await postJson("/api/codes", {
      agreement_id: offer.agreement_id, dataset_id: offer.dataset_id, code_hash: codeHash, expires_at: expiresAt,
      multi_use: multiUse, signature,
    });
    if (answer.status === "failed") throw new Error(answer.error || "the ledger refused it");
    const svg = await (await api("/api/qr", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ code }),
    })).blob();
    showCode(code, offer, expiresAt, multiUse, URL.createObjectURL(svg));
    say("");
  } catch (error) {
    $("code-out").replaceChildren();
    say(`No code was created: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

function showCode(code, offer, expiresAt, multiUse, qrUrl) {
  const done = h("button", { type: "button", class: "secondary", onclick: () => {
    URL.revokeObjectURL(qrUrl);
    $("code-out").replaceChildren(h("p", { class: "hint" }, "The code is hidden. It cannot be shown again; create a new one if you need it."));
    $("code-button").focus();
    refresh();
  } }, "I have it — hide the code");
  const box = h("div", { class: "code-once", id: "code-once", tabindex: "-1" },
    h("p", {}, h("strong", {}, `${multiUse ? "Code" : "One-time code"} for ${offer.grantee}`), ` (${PURPOSES[offer.scenario] || offer.scenario}), usable ${multiUse ? "as often as needed " : ""}until ${day(expiresAt)}:`),
    h("span", { class: "code", id: "the-code" }, code),
    h("img", { src: qrUrl, alt: `QR code of the one-time code ${code}`, id: "code-qr" }),
    h("p", {}, h("strong", {}, "Shown only this once."), " Give it to them or let them scan it. ",
      multiUse ? "It opens your records each time they ask, until it expires or you cancel it." : "It opens your records once."),
    done);
  $("code-out").replaceChildren(box);
  box.focus();
}

function renderCodes(report) {
  const codes = report.authorizations;
  if (!codes.length) {
    $("codes").replaceChildren(h("p", { class: "hint" }, "You have given no codes yet."));
    return;
  }
  const now = Date.now() / 1000;
  $("codes").replaceChildren(h("ul", { class: "items", id: "code-list" }, [...codes].reverse().map((c) => {
    const gone = c.revoked || cancelled.has(c.code_hash.toLowerCase());
    const used = !c.multi_use && Boolean(c.redeemed_by_access); // a reusable code stays open
    const open = !used && !gone && c.status === "ISSUED" && Number(c.expires_at) > now;
    const times = c.uses === 1 ? "once" : `${c.uses} times`;
    const state = used ? ["Used", "ok"] : gone ? ["Cancelled", "bad"]
      : open ? (c.uses ? [`Used ${times}, still open`, "warn"] : ["Not used yet", "warn"]) : ["Expired", "bad"];
    const actions = h("div", {});
    if (open && c.issued_by === "patient") {
      actions.append(h("button", { type: "button", class: "secondary cancel-code", "aria-label": `Cancel the code for ${c.grantee_name || c.grantee_org}`,
        onclick: () => confirmCancel(c, actions) }, "Cancel this code"));
    }
    return h("li", { class: "item code-entry", "data-code": c.code_hash },
      h("strong", {}, `For ${c.grantee_name || c.grantee_org}`), " ", h("span", { class: `badge ${state[1]}` }, state[0]),
      details([
        ["What for", PURPOSES[c.scenario] || c.scenario || "—"],
        ["What they may see", LEVELS[c.tier] || c.tier || "—"],
        ["Given", `${c.issued_time ? day(c.issued_time) : "—"} ${c.issued_by === "patient" ? "by you" : "by the hospital for you"}`],
        ["Usable until", day(c.expires_at)],
        ["How often", c.multi_use ? "as often as needed until then" : "once"],
        ["Used", c.multi_use ? (c.uses ? times : "not yet") : null],
      ]),
      actions);
  })));
}

function confirmCancel(code, actions) {
  if (!needKey()) return;
  const yes = h("button", { type: "button", class: "danger", onclick: () => cancelCode(code, actions) }, "Yes, cancel it");
  const no = h("button", { type: "button", class: "secondary", onclick: () => { refresh(); } }, "Keep it");
  actions.replaceChildren(h("div", { class: "confirm", role: "group", "aria-label": "Confirm cancelling the code" },
    h("p", {}, "Once cancelled, the code can never be used. Give a new one if they still need it."), yes, no));
  yes.focus();
}

async function cancelCode(code, actions) {
  for (const button of actions.querySelectorAll("button")) button.disabled = true;
  try {
    const deadline = Math.floor(Date.now() / 1000) + 600;
    const signature = await wallet.signTypedData(domain(), REVOCATION_TYPES, { codeHash: code.code_hash, deadline });
    const answer = await postJson(`/api/codes/${code.code_hash}/revoke`, { deadline, signature });
    if (answer.status === "failed") throw new Error(answer.error || "the ledger refused it");
    cancelled.add(code.code_hash.toLowerCase());
    say("The code is cancelled: it can no longer be used.", "ok");
  } catch (error) {
    say(`The code was not cancelled: ${error.message}`);
  }
  await refresh();
}

// --- start -----------------------------------------------------------------------------------

$("signin-form").addEventListener("submit", signIn);
$("key-form").addEventListener("submit", useKey);
$("key-forget").addEventListener("click", () => { forgetKey(); $("key-status").textContent = "The key is forgotten."; });
$("code-form").addEventListener("submit", issueCode);
$("grant-form").addEventListener("submit", grantConsent);
$("code-offer").addEventListener("change", describeOffer);
$("sign-out").addEventListener("click", () => signOut("You are signed out."));
if (sessionStorage.getItem(TOKEN)) start().catch((error) => signOut(`Please sign in again: ${error.message}`));
