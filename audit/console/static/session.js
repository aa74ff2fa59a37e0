// Signing in to the audit service, and every request made with the credential.
//
// The credential (an API token, a patient token, or an OpenID Connect access token) lives in
// sessionStorage only: it goes with this tab and is never written anywhere else. Every API call
// sends it as `Authorization: Bearer …`; a 401 signs the tab out.
//
// OpenID Connect: authorization code + PKCE (RFC 7636). The browser goes to the provider and
// comes back with a code; the audit service redeems it (POST /auth/token) so this page connects
// to nothing but its own origin (CSP connect-src 'self').

const CREDENTIAL = "dul.audit.credential";
const WHO = "dul.audit.who";
const PKCE = "dul.audit.pkce";

export class Problem extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.code) || `http_${status}`;
  }
}

export function who() {
  try {
    return JSON.parse(sessionStorage.getItem(WHO) || "null");
  } catch {
    return null;
  }
}

export function signedIn() {
  return Boolean(sessionStorage.getItem(CREDENTIAL)) && who() !== null;
}

export function signOut(reason) {
  sessionStorage.removeItem(CREDENTIAL);
  sessionStorage.removeItem(WHO);
  window.dispatchEvent(new CustomEvent("dul:signed-out", { detail: reason || "" }));
}

async function request(path, credential, init = {}) {
  const headers = { Accept: "application/json", ...(init.headers || {}) };
  if (credential) headers.Authorization = `Bearer ${credential}`;
  try {
    return await fetch(path, { ...init, headers });
  } catch (error) {
    throw new Problem(0, { code: "unreachable", detail: `the audit service cannot be reached (${error.message})` });
  }
}

async function failed(response) {
  const body = await response.json().catch(() => null);
  return new Problem(response.status, body);
}

/** GET an API path with the credential; the parsed JSON, or a Problem. */
export async function api(path) {
  const response = await request(path, sessionStorage.getItem(CREDENTIAL));
  if (response.status === 401) {
    const problem = await failed(response);
    signOut(`Signed out: ${problem.message} [${problem.code}]`);
    throw problem;
  }
  if (!response.ok) throw await failed(response);
  return response.json().catch(() => null);
}

/** Fetches an API path with the credential and saves the answer as a file. */
export async function download(path, filename) {
  const response = await request(path, sessionStorage.getItem(CREDENTIAL));
  if (!response.ok) {
    const problem = await failed(response);
    if (response.status === 401) signOut(`Signed out: ${problem.message} [${problem.code}]`);
    throw problem;
  }
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** Checks `credential` with the service (GET /auth/me) and keeps it for this tab. */
export async function signIn(credential) {
  const token = credential.trim();
  if (!token) throw new Problem(400, { code: "credential_missing", detail: "paste a token first" });
  const response = await request("/auth/me", token);
  if (!response.ok) throw await failed(response);
  const me = await response.json();
  sessionStorage.setItem(CREDENTIAL, token);
  sessionStorage.setItem(WHO, JSON.stringify(me));
  return me;
}

export async function authConfig() {
  const response = await request("/auth/config", null);
  if (!response.ok) return { oidc: null };
  return response.json();
}

function base64url(bytes) {
  let text = "";
  for (const byte of new Uint8Array(bytes)) text += String.fromCharCode(byte);
  return btoa(text).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

function redirectUri() {
  return `${location.origin}/`;
}

/** Sends the browser to the identity provider (authorization code + PKCE S256). */
export async function startOidc(oidc, returnTo) {
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  const state = base64url(crypto.getRandomValues(new Uint8Array(16)));
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  sessionStorage.setItem(PKCE, JSON.stringify({ verifier, state, returnTo }));
  const query = new URLSearchParams({
    response_type: "code", client_id: oidc.client_id, redirect_uri: redirectUri(), scope: oidc.scope,
    state, code_challenge: challenge, code_challenge_method: "S256",
  });
  const separator = oidc.authorization_endpoint.includes("?") ? "&" : "?";
  location.assign(`${oidc.authorization_endpoint}${separator}${query}`);
}

/** Back from the provider (`?code=…&state=…`): redeems the code; the hash to go on to, or null
 * when this page was not such a return. Throws a Problem when the sign-in failed. */
export async function finishOidc() {
  const params = new URLSearchParams(location.search);
  if (!params.has("code") && !params.has("error")) return null;
  const pending = JSON.parse(sessionStorage.getItem(PKCE) || "null");
  sessionStorage.removeItem(PKCE);
  history.replaceState(null, "", `${location.pathname}${location.hash}`);
  if (params.has("error")) {
    throw new Problem(401, { code: "oidc_error", detail: `the identity provider: ${params.get("error_description") || params.get("error")}` });
  }
  if (!pending || pending.state !== params.get("state")) {
    throw new Problem(401, { code: "oidc_state_mismatch", detail: "this sign-in was not started here (state mismatch); start again" });
  }
  const response = await request("/auth/token", null, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code: params.get("code"), code_verifier: pending.verifier, redirect_uri: redirectUri() }),
  });
  if (!response.ok) throw await failed(response);
  const answer = await response.json();
  sessionStorage.setItem(CREDENTIAL, answer.access_token);
  sessionStorage.setItem(WHO, JSON.stringify(answer.me));
  return pending.returnTo || "#/";
}
