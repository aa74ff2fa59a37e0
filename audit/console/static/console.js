// The regulator console: hash routes over the audit REST API, nothing else.
//   #/provenance/{kind}/{id}?direction=up|down|both   GET /v1/provenance/{kind}/{id}
//   #/agreement/{id}                                   GET /v1/reports/agreements/{id}
//   #/subject/{ref}                                    GET /v1/subjects/{ref}/accesses
//   #/                                                 the front door: GET /v1/organizations,
//                                                      /v1/agreements, /v1/accesses
// and GET /v1/verify, polled, for the status in the header, beside the indexer's health and lag
// (GET /readyz, polled; red when behind or failing). Signed in (`session.js`), each view shows
// what the role may see: a regulator everything, an organization its part of each graph (the cut
// marked ✂), a patient their own report only.
//   #/sign-in                                          the sign-in page

import { drawGraph, kindOf } from "./graph.js";
import { canVerify, ProofError, verifyInclusion } from "./proof.js";
import { api, authConfig, download, finishOidc, Problem, signIn, signOut, signedIn, startOidc, who } from "./session.js";

const SEARCH_KINDS = ["agreement", "dataset", "access", "artifact", "organization", "subject"];
const GUESS_HEX = ["agreement", "access", "artifact", "dataset", "organization", "subject"];
const GUESS_SLUG = ["dataset", "organization"];
const HEX32 = /^0x[0-9a-fA-F]{64}$/;
const SLUG = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,31}$/;
const TYPE_ORDER = ["organization", "account", "subject", "agreement", "signature", "dataset",
  "consent", "authorization", "access", "cohort", "artifact", "model"];
// Statuses a regulator must notice: a suspended, revoked or expired agreement, organization or
// authorization code, a withdrawn consent, a cohort whose members do not give its root.
const FLAG_STATUSES = new Set(["SUSPENDED", "REVOKED", "EXPIRED", "WITHDRAWN", "ROOT_MISMATCH"]);
const flaggedStatus = (status) => typeof status === "string" && FLAG_STATUSES.has(status.toUpperCase());
const TIMES = new Set(["valid_from", "valid_until", "expires_at"]);
const params = new URLSearchParams(location.search);
const VERIFY_EVERY_S = Math.max(5, Number(params.get("verify-every")) || 30);
const HEALTH_EVERY_S = Math.max(1, Number(params.get("health-every")) || 5);

const $ = (id) => document.getElementById(id);

// --- small DOM helpers (text only: nothing from the API is parsed as HTML) -----------------

function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") element.className = value;
    else if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

function definitions(pairs) {
  return h("dl", { class: "pairs" }, pairs.filter(Boolean).flatMap(([term, value]) =>
    [h("dt", {}, term), h("dd", {}, value)]));
}

function code(text) {
  return h("code", { class: "id" }, text);
}

function chainRef(chain) {
  if (!chain) return h("span", { class: "muted" }, "not on chain");
  return h("span", { class: "chainref" },
    `block ${chain.block} · tx index ${chain.tx_index} · log ${chain.log_index} · tx `, code(chain.tx_hash));
}

function when(seconds) {
  const date = new Date(Number(seconds) * 1000);
  return Number.isFinite(date.getTime()) ? `${date.toISOString().slice(0, 16).replace("T", " ")} UTC` : String(seconds);
}

function badge(text, kind) {
  return h("span", { class: `badge badge-${kind}` }, text);
}

// --- the API --------------------------------------------------------------------------------

function idPath(id) {
  return id.split("/").map(encodeURIComponent).join("/");
}

function provenancePath(kind, id, direction, format) {
  const query = new URLSearchParams({ direction });
  if (format) query.set("format", format);
  return `/v1/provenance/${kind}/${idPath(id)}?${query}`;
}

// --- messages -------------------------------------------------------------------------------

function say(text) {
  const message = $("message");
  message.textContent = text;
  message.hidden = !text;
}

// --- verify status --------------------------------------------------------------------------

let lastVerify = null;
let verifyTimer = null;
let verifying = false;

function findingsFor(node) {
  if (!lastVerify || !lastVerify.findings) return [];
  const chain = node.chain;
  const position = chain ? `${chain.block}/${chain.tx_index}/${chain.log_index}` : null;
  const key = node.id.slice(node.id.indexOf(":") + 1).toLowerCase();
  return lastVerify.findings.filter((f) =>
    (position && f.position === position) || (f.key && String(f.key).toLowerCase() === key));
}

async function verifyNow() {
  if (verifying || !signedIn() || isPatient()) return;
  verifying = true;
  clearTimeout(verifyTimer);
  const box = $("verify");
  box.dataset.state = "checking";
  box.querySelector(".verify-mark").textContent = "…";
  try {
    const report = await api("/v1/verify");
    lastVerify = report;
    const at = new Date().toLocaleTimeString();
    const block = report.checkpoint_block ?? "–";
    const skipped = report.skipped || [];
    if (report.ok && skipped.length) {
      // Not a verdict on what verify did not check: say which checks it skipped.
      box.dataset.state = "partial";
      box.querySelector(".verify-mark").textContent = "◐";
      box.querySelector(".verify-text").textContent =
        `OK as far as checked up to block ${block}: ${skipped.length} check(s) skipped ` +
        `(${skipped.join("; ")}) (checked ${at})`;
    } else if (report.ok) {
      box.dataset.state = "ok";
      box.querySelector(".verify-mark").textContent = "✓";
      box.querySelector(".verify-text").textContent =
        `Verified: store matches the chain up to block ${block} (checked ${at})`;
    } else {
      box.dataset.state = "findings";
      box.querySelector(".verify-mark").textContent = "⚠";
      const checks = Object.entries(report.findings_by_check || {}).map(([c, n]) => `${c}: ${n}`).join(", ");
      box.querySelector(".verify-text").textContent =
        `Verify FAILED: ${report.findings_total} finding(s) (${checks}) up to block ${block} (checked ${at})`;
    }
    box.dataset.block = String(block);
  } catch (error) {
    box.dataset.state = "unavailable";
    box.querySelector(".verify-mark").textContent = "✕";
    box.querySelector(".verify-text").textContent = `Verify unavailable: ${error.message}`;
  } finally {
    verifying = false;
    remark();
    verifyTimer = setTimeout(verifyNow, VERIFY_EVERY_S * 1000);
  }
}

// --- indexer health -------------------------------------------------------------------------

let healthTimer = null;

/** GET /readyz: 200 when the indexer keeps up, 503 naming why (behind, quarantined events). */
async function healthNow() {
  clearTimeout(healthTimer);
  const box = $("indexer");
  try {
    const response = await fetch("/readyz", { headers: { Accept: "application/json" } });
    const health = await response.json();
    if (!health || typeof health.status !== "string") throw new Error(`HTTP ${response.status}`);
    box.dataset.state = health.status;
    const lag = health.lag_blocks == null ? "lag unknown"
      : `${health.lag_blocks} block(s)${health.lag_seconds == null ? "" : ` / ${health.lag_seconds} s`} behind the head`;
    const at = `block ${health.checkpoint_block ?? "–"}`;
    let text;
    if (health.status === "ok") {
      text = `Indexer following: ${at}, ${lag}`;
    } else {
      text = `Indexer ${health.status.toUpperCase()}: ${at}, ${lag} — ${(health.reasons || []).join("; ")}`;
    }
    if (health.incidents_unacknowledged) {
      text += ` · ${health.incidents_unacknowledged} unacknowledged history rewrite(s)`;
    }
    box.querySelector(".indexer-mark").textContent = health.status === "ok" ? "✓" : "✕";
    box.querySelector(".indexer-text").textContent = text;
    box.dataset.quarantined = String(health.quarantined ?? 0);
  } catch (error) {
    box.dataset.state = "unavailable";
    box.querySelector(".indexer-mark").textContent = "?";
    box.querySelector(".indexer-text").textContent = `Indexer health unavailable: ${error.message}`;
  } finally {
    healthTimer = setTimeout(healthNow, HEALTH_EVERY_S * 1000);
  }
}

// --- provenance view ------------------------------------------------------------------------

let current = null; // {kind, id, direction, graph, view, selected}

function marksOf(node) {
  const attributes = node.attributes || {};
  const flagged = [];
  if (flaggedStatus(attributes.status)) flagged.push(`status ${attributes.status}`);
  for (const finding of findingsFor(node)) flagged.push(`verify: ${finding.check}`);
  const cut = Boolean(current && current.graph.cut && current.graph.cut.includes(node.id));
  return { denied: attributes.decision === "DENIED", flagged, cut };
}

function remark() {
  renderAgreement();
  renderFindings();
  if (!current) return;
  if (current.view) current.view.remark(marksOf);
  renderList();
  if (current.selected) renderDetails(current.selected);
}

async function findKind(id, direction) {
  const candidates = HEX32.test(id) ? GUESS_HEX : SLUG.test(id) ? GUESS_SLUG : [];
  if (!candidates.length) {
    throw new Problem(422, { code: "malformed_id", detail: `${id.slice(0, 80)} is not an id: 0x and 64 hex digits, or a slug such as hospital-a` });
  }
  // One kind after the other, in the order ids are most often searched: the first that the
  // store holds wins; a store or node outage stops the search with its own problem.
  for (const kind of candidates) {
    try {
      return { kind, graph: await api(provenancePath(kind, id, direction)) };
    } catch (error) {
      if (error.status !== 404 && error.status !== 422) throw error;
    }
  }
  throw new Problem(404, { code: "not_found", detail: `nothing in the audit store has id ${id} (tried ${candidates.join(", ")})` });
}

const prefetched = new Map();
// A later search or route supersedes an earlier one still waiting for its answer.
let searchSeq = 0;
let routeSeq = 0;

async function search(event) {
  event.preventDefault();
  const form = event.target;
  const id = form.id.value.trim();
  const direction = form.direction.value;
  let kind = form.kind.value;
  if (!id) return;
  say("");
  const mine = ++searchSeq;
  if (kind === "auto") {
    try {
      const found = await findKind(id, direction);
      if (mine !== searchSeq) return;
      kind = found.kind;
      prefetched.set(provenancePath(kind, id, direction), found.graph);
    } catch (error) {
      if (mine === searchSeq) say(`${error.message} [${error.code}]`);
      return;
    }
  }
  navigate(`#/provenance/${kind}/${idPath(id)}?direction=${direction}`);
}

function navigate(hash) {
  focusView = true;
  if (location.hash === hash) route();
  else location.hash = hash;
}

async function showProvenance(kind, id, direction) {
  const mine = routeSeq;
  const path = provenancePath(kind, id, direction);
  let graph = prefetched.get(path);
  prefetched.delete(path);
  show("provenance");
  $("provenance-title").textContent = `Provenance of ${kind} ${id}`;
  const subjectLink = $("open-subject");
  subjectLink.hidden = kind !== "subject";
  if (kind === "subject") subjectLink.href = `#/subject/${idPath(id)}`;
  $("graph-summary").textContent = "Loading…";
  if (!graph) {
    try {
      graph = await api(path);
    } catch (error) {
      if (mine !== routeSeq) return;
      $("graph-summary").textContent = "";
      clearGraph();
      say(`${error.message} [${error.code}]`);
      return;
    }
  }
  if (mine !== routeSeq) return;
  if (current && current.view) current.view.destroy();
  const rootNode = graph.nodes.find((n) => n.id === graph.root);
  current = { kind, id, direction, graph, view: null, selected: rootNode ? rootNode.id : null };
  const denied = graph.nodes.filter((n) => marksOf(n).denied).length;
  $("graph-summary").textContent = `${graph.nodes.length} nodes, ${graph.edges.length} edges, ` +
    `direction ${graph.direction}` + (denied ? `, ${denied} denied access(es)` : "") +
    (graph.truncated.length ? `; ${graph.truncated.length} node(s) have more than ${graph.limit} neighbours (not all shown)` : "") +
    (graph.cut && graph.cut.length ? `; ✂ ${graph.cut.length} node(s) lead to more that your role may not see (not shown)` : "") + ".";
  const agreementLink = $("open-agreement");
  agreementLink.hidden = kind !== "agreement";
  if (kind === "agreement") agreementLink.href = `#/agreement/${idPath(id)}`;
  setExport($("export-prov"), kind, id, direction, "prov-json");
  setExport($("export-fhir"), kind, id, direction, "fhir");
  renderList();
  renderDetails(current.selected);
  const container = $("graph");
  container.replaceChildren(h("p", { class: "hint" }, "Drawing…"));
  try {
    const view = await drawGraph(container, graph, marksOf, (nodeId) => select(nodeId, false));
    if (!current || current.graph !== graph) { view.destroy(); return; }
    current.view = view;
    if (current.selected) view.select(current.selected);
  } catch (error) {
    container.replaceChildren(h("p", { class: "warning" },
      `The graph library could not be loaded (${error.message}); the node list beside it shows the same graph. ` +
      "Run scripts/bootstrap (npm ci) where the service runs."));
  }
}

function clearGraph() {
  if (current && current.view) current.view.destroy();
  current = null;
  $("graph").replaceChildren();
  $("node-list").replaceChildren();
  $("details").replaceChildren(h("h3", { id: "details-title" }, "Details"));
}

function setExport(link, kind, id, direction, format) {
  const stem = `provenance-${kind}-${id.replace(/[^A-Za-z0-9.-]+/g, "_").slice(0, 24)}`;
  fetchedLink(link, provenancePath(kind, id, direction, format), `${stem}.${format === "fhir" ? "fhir" : "prov"}.json`);
}

/** A link to an API path: fetched with the credential (a plain link would go without it) and
 * saved as `filename`. */
function fetchedLink(link, path, filename) {
  link.href = path;
  link.setAttribute("download", filename);
  link.onclick = (event) => {
    event.preventDefault();
    download(path, filename).catch((error) => say(`${error.message} [${error.code}]`));
  };
}

function byType(graph) {
  const groups = new Map();
  for (const node of graph.nodes) {
    if (!groups.has(node.type)) groups.set(node.type, []);
    groups.get(node.type).push(node);
  }
  const rank = (type) => { const i = TYPE_ORDER.indexOf(type); return i < 0 ? TYPE_ORDER.length : i; };
  return [...groups.entries()].sort((a, b) => rank(a[0]) - rank(b[0]) || a[0].localeCompare(b[0]));
}

function renderList() {
  if (!current) return;
  const list = $("node-list");
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.node : null;
  const items = [];
  for (const [type, nodes] of byType(current.graph)) {
    items.push(h("li", { class: "group", role: "presentation" }, `${kindOf(type)[2]} (${nodes.length})`));
    for (const node of nodes) {
      const marks = marksOf(node);
      items.push(h("li", {},
        h("button", {
          type: "button", class: `node-item kind-${kindOf(type)[2]}`, "data-node": node.id,
          "data-type": node.type, "data-denied": marks.denied ? "true" : null,
          "data-flagged": marks.flagged.length ? "true" : null,
          "data-cut": marks.cut ? "true" : null,
          "aria-current": current.selected === node.id ? "true" : null,
          onclick: () => select(node.id, true),
        },
        h("span", { class: `swatch shape-${KINDS_CSS(node.type)}`, "aria-hidden": "true" }),
        h("span", { class: "node-text" }, node.id === current.graph.root ? "◎ " : "", node.label),
        marks.denied ? badge("✕ DENIED", "denied") : null,
        marks.flagged.length ? badge(`⚑ ${marks.flagged.join(", ")}`, "flagged") : null,
        marks.cut ? badge("✂ more not shown", "cut") : null)));
    }
  }
  list.replaceChildren(...items);
  if (focused) {
    const again = list.querySelector(`[data-node="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
}

function KINDS_CSS(type) {
  const name = kindOf(type)[2];
  return name === "item" ? "unknown" : name;
}

function listKeys(event) {
  const buttons = [...$("node-list").querySelectorAll("button.node-item")];
  const index = buttons.indexOf(document.activeElement);
  if (index < 0) return;
  const moves = { ArrowDown: index + 1, ArrowUp: index - 1, Home: 0, End: buttons.length - 1 };
  if (!(event.key in moves)) return;
  event.preventDefault();
  const next = buttons[Math.max(0, Math.min(buttons.length - 1, moves[event.key]))];
  next.focus();
}

function select(nodeId, fromList) {
  if (!current) return;
  current.selected = nodeId;
  for (const button of $("node-list").querySelectorAll("button.node-item")) {
    if (button.dataset.node === nodeId) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
  if (current.view) current.view.select(nodeId);
  renderDetails(nodeId);
  if (!fromList) {
    const button = $("node-list").querySelector(`[data-node="${CSS.escape(nodeId)}"]`);
    if (button) button.scrollIntoView({ block: "nearest" });
  }
}

function attributeValue(key, value) {
  if (value === null || value === undefined || value === "") return h("span", { class: "muted" }, "—");
  if (TIMES.has(key)) return `${when(value)} (${value})`;
  if (Array.isArray(value) && value.some((entry) => entry && typeof entry === "object")) {
    // A history: each entry's fields, then where the chain states it.
    return h("ol", { class: "history" }, value.map((entry) => h("li", {},
      Object.entries(entry).filter(([k, v]) => k !== "chain" && v !== null && v !== undefined)
        .map(([k, v], i) => [i ? " · " : "", k === "event" ? h("strong", {}, String(v)) : [`${k} `, typeof v === "string" && v.startsWith("0x") ? code(v) : String(v)]]),
      entry.chain ? [h("br"), chainRef(entry.chain)] : "")));
  }
  if (Array.isArray(value)) return value.length ? value.join(", ") : h("span", { class: "muted" }, "none");
  if (typeof value === "object") return code(JSON.stringify(value));
  if (typeof value === "string" && /^0x[0-9a-fA-F]+$/.test(value)) return code(value);
  return String(value);
}

function renderDetails(nodeId) {
  const box = $("details");
  const node = current && current.graph.nodes.find((n) => n.id === nodeId);
  if (!node) {
    box.replaceChildren(h("h3", { id: "details-title" }, "Details"), h("p", { class: "hint" }, "Select a node in the graph or the list."));
    return;
  }
  const marks = marksOf(node);
  const labels = new Map(current.graph.nodes.map((n) => [n.id, `${kindOf(n.type)[2]} ${n.label}`]));
  const edges = current.graph.edges.filter((e) => e.source === nodeId || e.target === nodeId);
  const [type, key] = [node.type, node.id.slice(node.id.indexOf(":") + 1)];
  const searchKind = type === "model" ? "artifact" : type; // a model is an artifact of kind MODEL
  const actions = [];
  if (SEARCH_KINDS.includes(searchKind) && node.id !== current.graph.root) {
    actions.push(h("a", { class: "button", href: `#/provenance/${searchKind}/${idPath(key)}?direction=${current.direction}` }, "Explore from this node"));
  }
  if (type === "agreement") actions.push(h("a", { class: "button", href: `#/agreement/${idPath(key)}` }, "Agreement page"));
  if (type === "subject") actions.push(h("a", { class: "button", href: `#/subject/${idPath(key)}` }, "Transparency report"));
  box.replaceChildren(
    h("h3", { id: "details-title" }, `${kindOf(type)[2]}: ${node.label}`),
    h("p", { class: "states" },
      node.id === current.graph.root ? badge("◎ searched", "root") : null,
      marks.denied ? badge("✕ DENIED", "denied") : null,
      marks.flagged.map((f) => badge(`⚑ ${f}`, "flagged")),
      current.graph.truncated.includes(node.id) ? badge(`more than ${current.graph.limit} neighbours: not all shown`, "note") : null,
      marks.cut ? badge("✂ linked to more that your role may not see (not shown)", "cut") : null,
      h("span", { class: "muted" }, ` PROV ${node.prov}`)),
    h("p", { class: "actions", hidden: !actions.length }, actions),
    h("h4", {}, "Chain reference"),
    node.chain ? definitions([
      ["block", String(node.chain.block)],
      ["tx hash", code(node.chain.tx_hash)],
      ["tx index", String(node.chain.tx_index)],
      ["log index", String(node.chain.log_index)],
    ]) : h("p", { class: "muted" }, "not on chain"),
    h("h4", {}, "Attributes"),
    definitions([["id", code(node.id)], ...Object.entries(node.attributes || {}).map(([k, v]) => [k, attributeValue(k, v)])]),
    h("h4", {}, `Relations (${edges.length})`),
    h("ul", { class: "edges" }, edges.map((edge) => {
      const outgoing = edge.source === nodeId;
      const other = outgoing ? edge.target : edge.source;
      const role = edge.attributes && edge.attributes.role ? ` (${edge.attributes.role})` : "";
      return h("li", {},
        outgoing ? `${edge.relation}${role} → ` : `← ${edge.relation}${role} of `,
        h("button", { type: "button", class: "link", onclick: () => select(other, false) }, labels.get(other) || other),
        h("br"), chainRef(edge.chain));
    })),
  );
}

// --- agreement view -------------------------------------------------------------------------

let agreementReport = null;

async function showAgreement(id) {
  const mine = routeSeq;
  show("agreement");
  $("agreement-title").textContent = `Agreement ${id}`;
  const body = $("agreement-body");
  body.replaceChildren(h("p", { class: "hint" }, "Loading…"));
  $("agreement-graph").href = `#/provenance/agreement/${idPath(id)}?direction=both`;
  setExport($("agreement-export-prov"), "agreement", id, "both", "prov-json");
  setExport($("agreement-export-fhir"), "agreement", id, "both", "fhir");
  fetchedLink($("agreement-report-json"), `/v1/reports/agreements/${idPath(id)}`, `agreement-report-${id.slice(0, 18)}.json`);
  agreementReport = null;
  try {
    const report = await api(`/v1/reports/agreements/${idPath(id)}`);
    if (mine !== routeSeq) return;
    agreementReport = report;
  } catch (error) {
    if (mine !== routeSeq) return;
    body.replaceChildren();
    say(`${error.message} [${error.code}]`);
    return;
  }
  renderAgreement();
}

/** The agreement page from the last report (drawn again when a verify answer arrives). */
function renderAgreement() {
  const report = agreementReport;
  if (!report || $("agreement").hidden) return;
  const body = $("agreement-body");
  const parties = ["holder", "requester"];
  const partyOrg = [report.holder, report.requester];
  const percent = (100 * report.quota_used).toFixed(2);
  const flagged = flaggedStatus(report.status);
  const findings = (lastVerify && lastVerify.findings || []).filter((f) =>
    f.key && f.key.toLowerCase() === report.agreement_id.toLowerCase());
  const table = (caption, head, rows, empty) => rows.length
    ? h("table", {}, h("caption", {}, caption), h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))))
    : h("p", { class: "muted" }, `${caption}: ${empty}`);
  body.replaceChildren(
    h("section", { "aria-labelledby": "summary-title", class: "card" },
      h("h3", { id: "summary-title" }, "Terms"),
      definitions([
        ["agreement id", code(report.agreement_id)],
        ["version", String(report.version)],
        report.previous_id ? ["amends", h("a", { href: `#/agreement/${report.previous_id}` }, code(report.previous_id))] : null,
        report.amended_by.length ? ["amended by", report.amended_by.map((a) => h("a", { href: `#/agreement/${a}` }, code(a)))] : null,
        ["status", [h("span", { class: "status", "data-status": report.status }, report.status),
          flagged ? badge(`⚑ ${report.status}`, "flagged") : null]],
        ["scenario", report.scenario],
        ["max tier", report.max_tier],
        ["holder", report.holder],
        ["requester", report.requester],
        ["window", `${when(report.valid_from)} → ${when(report.valid_until)}`],
        ["quota", String(report.quota)],
      ])),
    h("section", { "aria-labelledby": "signatures-title", class: "card" },
      h("h3", { id: "signatures-title" }, `Signatures (${report.signatures.length})`),
      table("EIP-712 signatures recorded on chain", ["party", "signer", "chain reference"],
        report.signatures.map((s) => [`${parties[s.party] || s.party} — ${partyOrg[s.party] || ""}`, code(s.signer), chainRef(s.chain)]),
        "none yet")),
    h("section", { "aria-labelledby": "lifecycle-title", class: "card" },
      h("h3", { id: "lifecycle-title" }, "Lifecycle"),
      h("ol", { class: "lifecycle" },
        h("li", {}, h("strong", {}, "PROPOSED"), " (AgreementProposed)", h("br"), chainRef(report.proposed)),
        report.status_history.map((s) => h("li", { "data-status": s.status },
          h("strong", {}, s.status), ` (${s.event})`, s.by ? [" by ", code(s.by)] : "",
          s.reason ? [" reason ", code(s.reason)] : "", h("br"), chainRef(s.chain))))),
    h("section", { "aria-labelledby": "compliance-title", class: "card" },
      h("h3", { id: "compliance-title" }, "Compliance report"),
      definitions([
        ["accesses", `${report.accesses} (${report.granted} granted, ${report.denied} denied)`],
        ["quota used", [h("meter", { min: 0, max: 1, value: Math.min(1, report.quota_used), "aria-label": "quota used" }),
          ` ${report.granted} / ${report.quota} (${percent} %)`]],
        ["results released", `${report.releases} (${report.released_bytes} bytes)`],
        ["verify", lastVerify ? (findings.length ? badge(`⚑ ${findings.length} finding(s): ${findings.map((f) => f.check).join(", ")}`, "flagged")
          : `no findings for this agreement (store verified up to block ${lastVerify.checkpoint_block ?? "–"})`) : "not checked yet"],
      ]),
      table("Denials by reason", ["reason", "count"], Object.entries(report.denials_by_reason).map(([r, n]) => [[badge("✕", "denied"), ` ${r}`], String(n)]), "no denials"),
      table("Granted by tier", ["tier", "count"], Object.entries(report.granted_by_tier).map(([t, n]) => [t, String(n)]), "no grants"),
      table("Results released by kind", ["kind", "count"], Object.entries(report.releases_by_kind).map(([k, n]) => [k, String(n)]), "no results released"),
      report.break_glass_review_hours || report.break_glass.length
        ? table(`Break-glass accesses (no patient code; the holder reviews each within ${report.break_glass_review_hours} h)`,
          ["access", "reason", "review"], glassRows(report.break_glass), "none")
        : null),
  );
}

// --- subject transparency view --------------------------------------------------------------

function shortHex(hex) {
  return typeof hex === "string" && /^0x[0-9a-fA-F]{20,}$/.test(hex) ? `${hex.slice(0, 10)}…${hex.slice(-4)}` : String(hex ?? "");
}

/** A long id shortened for a table cell; the whole id stays in its title (and in Report JSON). */
function shortId(hex, href) {
  const text = shortHex(hex);
  // A patient's token opens nothing but their report: no links onward.
  return href && !isPatient() ? h("a", { href, title: hex, class: "id" }, text) : h("code", { class: "id", title: hex }, text);
}

/** An access's provenance link: its request id at its agreement (an id names one access per agreement). */
function accessHref(id, agreement) {
  return `#/provenance/access/${agreement ? `${id}@${agreement}` : id}?direction=up`;
}

function shortChain(chain) {
  if (!chain) return h("span", { class: "muted" }, "not on chain");
  return h("span", { class: "chainref" }, `block ${chain.block} · log ${chain.log_index} · tx `, shortId(chain.tx_hash));
}

function moment(seconds) {
  return Number(seconds) > 2 ** 40 ? "no end" : when(seconds);
}

/** A table whose cells carry their column's name (shown beside each value when narrow). */
function dataTable(id, caption, head, rows, empty) {
  if (!rows.length) return h("p", { id, class: "muted" }, `${caption}: ${empty}`);
  return h("table", { id, class: "stack" },
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c, i) => h("td", { "data-label": head[i] }, h("div", {}, c)))))));
}

/** A status; a withdrawn, revoked or expired one as a flagged badge (a dashed border too). */
function statusOf(status) {
  return flaggedStatus(status) ? badge(`⚑ ${status}`, "flagged") : h("span", { class: "status", "data-status": status }, status || "—");
}

async function showSubject(ref) {
  const mine = routeSeq;
  show("subject");
  $("subject-title").textContent = `Transparency report of subject ${ref}`;
  $("subject-graph").href = `#/provenance/subject/${idPath(ref)}?direction=both`;
  fetchedLink($("subject-report-json"), `/v1/subjects/${encodeURIComponent(ref)}/accesses`, `transparency-report-${ref.slice(0, 18)}.json`);
  $("subject-graph").hidden = isPatient();
  const body = $("subject-body");
  body.replaceChildren(h("p", { class: "hint" }, "Loading…"));
  let report;
  try {
    report = await api(`/v1/subjects/${encodeURIComponent(ref)}/accesses`);
  } catch (error) {
    if (mine !== routeSeq) return;
    body.replaceChildren();
    say(`${error.message} [${error.code}]`);
    return;
  }
  if (mine !== routeSeq) return;
  renderSubject(ref, report);
}

async function checkProof(ref, access, result) {
  const { root, size, index, proof } = access.inclusion;
  result.dataset.state = "checking";
  result.textContent = "Checking…";
  if (!canVerify()) {
    result.dataset.state = "unavailable";
    result.textContent = "Cannot check here: the browser hashes only on https or localhost pages.";
    return;
  }
  try {
    const ok = await verifyInclusion(root, size, index, ref, proof);
    result.dataset.state = ok ? "ok" : "bad";
    result.textContent = ok
      ? `✓ verified: leaf ${index} of ${size} hashes up to root ${shortHex(root)}`
      : `✕ invalid: the proof does not lead from this subject to root ${shortHex(root)}`;
  } catch (error) {
    result.dataset.state = "bad";
    result.textContent = error instanceof ProofError ? `✕ invalid: ${error.message}` : `✕ could not check: ${error.message}`;
  }
}

function renderSubject(ref, report) {
  // The proof is checked against the reference in the address, the patient's own, not the
  // report's echo of it.
  const subject = ref.toLowerCase();
  const accessRows = report.accesses.map((a) => {
    const result = h("span", { class: "proof-result", role: "status", "aria-live": "polite" });
    const button = h("button", {
      type: "button", class: "small check-proof",
      "aria-label": `Check proof of access ${a.access_id}`,
      onclick: () => checkProof(subject, a, result),
    }, "Check proof");
    return [
      a.time ? `${a.time.slice(0, 16).replace("T", " ")} UTC` : h("span", { class: "muted" }, "—"),
      [a.requester_org_name || shortHex(a.requester_org) || "?", h("br"), h("span", { class: "muted" }, "account "), shortId(a.requester)],
      shortId(a.agreement_id, `#/agreement/${a.agreement_id}`),
      isPatient() ? a.dataset : h("a", { href: `#/provenance/dataset/${idPath(a.dataset)}?direction=both` }, a.dataset),
      a.scenario || "—",
      a.tier || "—",
      a.operation || "—",
      [a.decision === "DENIED" ? badge("✕ DENIED", "denied") : h("span", { class: "status", "data-status": a.decision }, a.decision || "—"),
        a.reason && a.reason !== "NONE" ? [" ", code(a.reason)] : null,
        h("br"), h("span", { class: "muted" }, a.admitted_by === "authorization" ? "via the patient's code" : "in the cohort")],
      [shortId(a.access_id, accessHref(a.access_id, a.agreement_id)), h("br"), shortChain(a.chain)],
      [h("span", { class: "muted" }, `leaf ${a.inclusion.index} of ${a.inclusion.size}, root `), shortId(a.inclusion.root),
        h("br"), button, " ", result],
    ];
  });
  const consentRows = report.consents.map((c) => [
    shortId(c.consent_id, `#/provenance/consent/${c.consent_id}?direction=both`),
    shortId(c.holder_org, `#/provenance/organization/${c.holder_org}?direction=both`),
    c.scenarios.length ? c.scenarios.join(", ") : h("span", { class: "muted" }, "none"),
    c.duo_codes.length ? c.duo_codes.join(" ") : h("span", { class: "muted" }, "none"),
    `${moment(c.valid_from)} → ${moment(c.valid_until)}`,
    statusOf(c.status),
    h("ol", { class: "history" }, c.history.map((e) => h("li", { "data-event": e.event },
      h("strong", {}, e.event), " by ", e.by_subject ? "the patient" : shortId(e.by),
      e.time ? ` at ${e.time.slice(0, 16).replace("T", " ")} UTC` : "", h("br"), shortChain(e.chain)))),
  ]);
  const codeRows = report.authorizations.map((c) => [
    shortId(c.code_hash),
    c.grantee_name || shortId(c.grantee_org),
    [shortId(c.dataset_id, `#/provenance/dataset/${c.dataset_id}?direction=both`),
      ` ${c.scenario || "?"} up to ${c.tier || "?"}`],
    moment(c.expires_at),
    // once, or every fitting access until it expires; and how many accesses used it
    h("span", { "data-use": c.multi_use ? "multi" : "once" }, c.multi_use ? "until expiry" : "once"),
    h("span", { "data-uses": String(c.uses || 0) }, String(c.uses || 0)),
    statusOf(c.status),
    [c.issued_time ? `${c.issued_time.slice(0, 16).replace("T", " ")} UTC` : "", h("br"), shortChain(c.issued)],
    c.redeemed_by_access
      ? [c.multi_use ? "last by access " : "by access ", shortId(c.redeemed_by_access, accessHref(c.redeemed_by_access, c.redeemed_by_agreement)), h("br"), shortChain(c.redeemed)]
      : c.revoked ? ["revoked", h("br"), shortChain(c.revoked)] : h("span", { class: "muted" }, "not redeemed"),
  ]);
  $("subject-body").replaceChildren(
    h("section", { class: "card", "aria-labelledby": "subject-summary-title" },
      h("h3", { id: "subject-summary-title" }, "Summary"),
      definitions([
        ["subject reference", code(report.subject)],
        ["indexed to block", String(report.checkpoint_block ?? "–")],
        ["uses of the data", `${report.accesses.length} access(es)${report.truncated ? ", more not shown" : ""}`],
        ["consents", String(report.consents.length)],
        ["authorization codes", String(report.authorizations.length)],
      ]),
      h("p", { class: "hint" }, "“Check proof” recomputes the RFC 9162 inclusion proof in this browser, from this ",
        "subject reference up to the cohort root that the access’s AccessRecorded event holds on chain ",
        "(at the chain reference shown), so the result does not rest on this service’s word. ", report.how_to_verify)),
    h("section", { class: "card", "aria-labelledby": "subject-accesses-title" },
      h("h3", { id: "subject-accesses-title" }, "Accesses that included this subject"),
      dataTable("subject-accesses", `Every access whose cohort held this subject (${report.accesses.length})`,
        ["time", "requester", "agreement", "dataset", "scenario", "tier", "operation", "decision", "access · chain reference", "inclusion proof"],
        accessRows, "none recorded")),
    h("section", { class: "card", "aria-labelledby": "subject-consents-title" },
      h("h3", { id: "subject-consents-title" }, "Consents"),
      dataTable("subject-consents", `Consents recorded for this subject (${report.consents.length})`,
        ["consent", "holder", "scenarios", "DUO codes", "window", "status", "history"], consentRows, "none recorded")),
    h("section", { class: "card", "aria-labelledby": "subject-codes-title" },
      h("h3", { id: "subject-codes-title" }, "Authorization codes"),
      dataTable("subject-codes", `Authorization codes issued for this subject (${report.authorizations.length})`,
        ["code hash", "grantee", "scope", "expires", "use", "uses", "status", "issued", "redeemed"], codeRows, "none issued")),
  );
}


// --- the front door -------------------------------------------------------------------------
// GET /v1/organizations, /v1/agreements?status=, /v1/accesses (newest first, keyset pages) and
// the last verify's findings; every row links into the views above.

const FRONT_PAGE = 12;
const FINDING_KINDS = { agreement: "agreement", access_event: "access", dataset: "dataset",
  artifact: "artifact", result_release: "artifact", organization: "organization",
  break_glass_access: "access" };

/** A break-glass access's review state: overdue ones flagged. */
function glassState(c) {
  if (c.state === "overdue") return badge(`⚑ OVERDUE since ${when(c.review_due)}`, "flagged");
  if (c.state === "unreviewed") return `awaiting review by ${when(c.review_due)}`;
  return `${c.state.toUpperCase()} by ${c.reviewer || "?"}${c.late ? " (late)" : ""}`;
}

/** Break-glass accesses (no patient code) as rows: access, reason, review. */
function glassRows(cases) {
  return cases.map((c) => [
    h("a", { href: accessHref(c.access_id, c.agreement_id), title: c.access_id, class: "id" }, shortHex(c.access_id)),
    c.reason, glassState(c)]);
}

function frontRows(list, tableId, caption, head, rows, more) {
  const table = dataTable(tableId, caption, head, rows, "none");
  const next = more ? h("button", { type: "button", class: "small more", onclick: more }, "More") : null;
  list.replaceChildren(table, next || "");
}

/** Loads one front list: the first page, or the next after `cursor` appended to `shown`. */
async function frontList(name, path, render, shown = [], cursor = null) {
  const box = $(`front-${name}`);
  const mine = routeSeq;
  const query = new URLSearchParams({ limit: String(FRONT_PAGE) });
  if (cursor) query.set("cursor", cursor);
  const sep = path.includes("?") ? "&" : "?";
  try {
    const page = await api(`${path}${sep}${query}`);
    if (mine !== routeSeq) return;
    const items = [...shown, ...page.items];
    render(box, items, page.next_cursor ? () => frontList(name, path, render, items, page.next_cursor) : null);
  } catch (error) {
    if (mine !== routeSeq) return;
    box.replaceChildren(h("p", { class: "message" }, `${error.message} [${error.code}]`));
  }
}

function renderOrganizations(box, items, more) {
  frontRows(box, "front-organizations-table", `Organizations (${items.length}${more ? "+" : ""})`,
    ["organization", "kind", "status", "joined"],
    items.map((o) => [
      h("a", { href: `#/provenance/organization/${idPath(o.slug)}?direction=both` }, o.name || o.slug),
      o.kind, statusOf(o.status), `block ${o.chain.block}`,
    ]), more);
}

function quotaCell(a) {
  const used = a.quota > 0 ? Math.min(1, a.granted / a.quota) : 0;
  return [h("meter", { min: "0", max: "1", value: String(used), "aria-label": "quota used" }),
    ` ${a.granted} / ${a.quota}`];
}

function renderAgreements(box, items, more) {
  frontRows(box, "front-agreements-table", `Agreements (${items.length}${more ? "+" : ""})`,
    ["agreement", "parties", "scenario", "status", "quota used", "window ends"],
    items.map((a) => [
      [h("a", { href: `#/agreement/${a.agreement_id}`, title: a.agreement_id, class: "id" }, shortHex(a.agreement_id)),
        a.version > 1 ? h("span", { class: "muted" }, ` v${a.version}`) : ""],
      `${a.holder_name || a.holder} ↔ ${a.requester_name || a.requester}`,
      a.scenario, statusOf(a.status), quotaCell(a),
      a.expired_at ? `${a.expired_at.slice(0, 16).replace("T", " ")} UTC` : a.valid_until.slice(0, 10),
    ]), more);
}

function renderAccesses(box, items, more) {
  frontRows(box, "front-accesses-table", `Recent accesses (${items.length}${more ? "+" : ""})`,
    ["time", "decision", "requester", "dataset", "tier · operation", "access"],
    items.map((a) => [
      a.time ? `${a.time.slice(0, 16).replace("T", " ")} UTC` : `block ${a.chain.block}`,
      a.decision === "DENIED" ? [badge("✕ DENIED", "denied"), " ", code(a.reason)]
        : h("span", { class: "status", "data-status": a.decision }, a.decision),
      a.requester_org || shortHex(a.requester),
      h("a", { href: `#/provenance/dataset/${idPath(a.dataset)}?direction=both` }, a.dataset.length > 40 ? shortHex(a.dataset) : a.dataset),
      `${a.tier} · ${a.operation}`,
      h("a", { href: accessHref(a.access_id, a.agreement_id), title: a.access_id, class: "id" }, shortHex(a.access_id)),
    ]), more);
}

/** The open findings of the last verify (listed to regulators; others get the verdict). */
function renderFindings() {
  const box = $("front-findings");
  if (!box || $("home").hidden) return;
  if (!lastVerify) {
    box.replaceChildren(h("p", { class: "hint" }, "Waiting for verify…"));
    return;
  }
  const findings = lastVerify.findings || [];
  if (!findings.length) {
    box.replaceChildren(h("p", { class: lastVerify.ok ? "ok-line" : "hint" }, lastVerify.ok
      ? `✓ none: the store matches the chain up to block ${lastVerify.checkpoint_block ?? "–"}`
      : `⚑ ${lastVerify.findings_total} finding(s) over the whole ledger: listed to regulators only`),
    glassAwaiting());
    return;
  }
  const rows = findings.slice(0, 50).map((f) => {
    const kind = FINDING_KINDS[f.table];
    const key = typeof f.key === "string" && HEX32.test(f.key) ? f.key : null;
    const where = kind && key
      ? h("a", { href: kind === "agreement" ? `#/agreement/${key}` : `#/provenance/${kind}/${key}?direction=both`, title: key, class: "id" },
        `${kind} ${shortHex(key)}`)
      : h("span", {}, [f.table || f.contract || "—", f.position ? ` at ${f.position}` : ""].join(""));
    return [badge(`⚑ ${f.check}`, "flagged"), where, f.message];
  });
  box.replaceChildren(dataTable("front-findings-table",
    `Open findings (${lastVerify.findings_total}${findings.length > 50 ? ", first 50 shown" : ""})`,
    ["check", "where", "what"], rows, "none"), glassAwaiting());
}

/** Break-glass accesses no steward of the holder has reviewed yet (from the last verify). */
function glassAwaiting() {
  const cases = (lastVerify && lastVerify.break_glass_unreviewed) || [];
  if (!cases.length) return "";
  return dataTable("front-break-glass-table", `Break-glass accesses awaiting review (${cases.length})`,
    ["access", "reason", "review"], glassRows(cases), "none");
}

function showHome() {
  show("home");
  renderFindings();
  frontList("organizations", "/v1/organizations", renderOrganizations);
  const status = $("front-status").value;
  frontList("agreements", `/v1/agreements${status ? `?status=${status}` : ""}`, renderAgreements);
  frontList("accesses", "/v1/accesses", renderAccesses);
}

// --- routing --------------------------------------------------------------------------------

let focusView = false;

function show(name) {
  for (const view of ["signin", "home", "provenance", "agreement", "subject"]) $(view).hidden = view !== name;
  if (focusView) {
    focusView = false;
    const heading = $(name).querySelector("h2");
    heading.setAttribute("tabindex", "-1");
    heading.focus();
  }
}

function route() {
  routeSeq += 1;
  const hash = location.hash.slice(1);
  const [path, query = ""] = hash.split("?");
  const parts = path.split("/").filter(Boolean);
  const direction = new URLSearchParams(query).get("direction") || "both";
  if (!signedIn()) {
    showSignIn(parts[0] === "sign-in" ? "" : hash);
    return;
  }
  say("");
  const me = who();
  if (me.role === "patient") {
    // A patient token opens its own report and nothing else.
    const own = `#/subject/${me.subject}`;
    if (`#${hash}` !== own) { location.replace(own); return; }
    showSubject(me.subject);
    return;
  }
  if (parts[0] === "sign-in") {
    location.replace("#/");
    return;
  }
  if (parts[0] === "provenance" && parts.length >= 3) {
    const kind = parts[1];
    const id = parts.slice(2).map(decodeURIComponent).join("/");
    fillForm(kind, id, direction);
    showProvenance(kind, id, direction);
  } else if (parts[0] === "agreement" && parts.length >= 2) {
    const id = parts.slice(1).map(decodeURIComponent).join("/");
    fillForm("agreement", id, "both");
    showAgreement(id);
  } else if (parts[0] === "subject" && parts.length === 2) {
    const ref = decodeURIComponent(parts[1]);
    fillForm("subject", ref, "both");
    showSubject(ref);
  } else {
    showHome();
  }
}

function fillForm(kind, id, direction) {
  const form = $("search");
  if (SEARCH_KINDS.includes(kind)) form.kind.value = kind;
  form.id.value = id;
  form.direction.value = ["up", "down", "both"].includes(direction) ? direction : "both";
}

// --- signing in -----------------------------------------------------------------------------

let returnTo = "";
let oidcConfig = null;

function isPatient() {
  const me = who();
  return Boolean(me && me.role === "patient");
}

function showSignIn(wanted) {
  if (wanted) returnTo = `#${wanted}`;
  clearTimeout(verifyTimer);
  applyRole();
  show("signin");
  $("signin-token").focus();
}

async function submitSignIn(event) {
  event.preventDefault();
  const field = $("signin-token");
  $("signin-error").hidden = true;
  try {
    await signIn(field.value);
  } catch (error) {
    $("signin-error").textContent = `${error.message} [${error.code}]`;
    $("signin-error").hidden = false;
    return;
  }
  field.value = "";
  signedInNow();
}

function signedInNow() {
  applyRole();
  const target = returnTo || "#/";
  returnTo = "";
  if (location.hash === target) route();
  else location.hash = target;
  if (!isPatient()) verifyNow();
}

/** The header and the search follow the role: a patient has neither search nor verify. */
function applyRole() {
  const me = signedIn() ? who() : null;
  document.body.dataset.role = me ? me.role : "signed-out";
  const patient = Boolean(me && me.role === "patient");
  $("search").hidden = !me || patient;
  $("verify").hidden = !me || patient;
  $("session").hidden = !me;
  if (me) {
    const whom = me.role === "patient" ? `patient ${me.subject.slice(0, 10)}…`
      : me.role === "organization" ? `organization ${me.org_slug || me.org}` : "regulator";
    $("session-who").textContent = `Signed in as ${whom} (${me.via === "oidc" ? "identity provider" : me.via}: ${me.name})`;
  }
}

function signOutNow() {
  signOut("Signed out.");
}

window.addEventListener("dul:signed-out", (event) => {
  clearTimeout(verifyTimer);
  clearGraph();
  $("signin-error").textContent = event.detail;
  $("signin-error").hidden = !event.detail;
  showSignIn(location.hash.slice(1).startsWith("/sign-in") ? "" : location.hash.slice(1));
  if (location.hash !== "#/sign-in") history.replaceState(null, "", "#/sign-in");
});

async function boot() {
  $("search").addEventListener("submit", search);
  $("node-list").addEventListener("keydown", listKeys);
  $("verify-now").addEventListener("click", verifyNow);
  $("signin-form").addEventListener("submit", submitSignIn);
  $("sign-out").addEventListener("click", signOutNow);
  $("front-status").addEventListener("change", () => {
    const status = $("front-status").value;
    frontList("agreements", `/v1/agreements${status ? `?status=${status}` : ""}`, renderAgreements);
  });
  window.addEventListener("hashchange", route);
  try {
    const target = await finishOidc();
    if (target) returnTo = target;
  } catch (error) {
    $("signin-error").textContent = `${error.message} [${error.code}]`;
    $("signin-error").hidden = false;
  }
  authConfig().then((config) => {
    oidcConfig = config.oidc;
    const button = $("signin-oidc");
    button.hidden = !oidcConfig;
    if (oidcConfig) button.textContent = `Sign in with ${new URL(oidcConfig.issuer).host}`;
  }).catch(() => {});
  $("signin-oidc").addEventListener("click", () => {
    if (oidcConfig) startOidc(oidcConfig, returnTo || location.hash || "#/");
  });
  applyRole();
  healthNow(); // /readyz is open: the indexer's state names no ids
  if (signedIn()) {
    const hash = location.hash;
    if (returnTo && returnTo !== hash) {
      location.hash = returnTo;
      returnTo = "";
    } else {
      route();
    }
    if (!isPatient()) verifyNow();
  } else {
    route();
  }
}

boot();
