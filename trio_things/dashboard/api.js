// The HTTP side: fetches with the token, problem details, the caller's role.
//
// The token is kept in sessionStorage only: it lives as long as the tab, is never
// written to disk by the page, and is sent as `Authorization: Bearer` (fetches) or as
// `?access_token=` (the WebSocket handshake, which can carry no header).

const TOKEN_KEY = "trio-things.token";

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null; // storage disabled: the page works without a token
  }
}

export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage disabled: nothing to keep
  }
}

/** The server answered 401: a token is needed, or the one given was refused. */
export class Unauthorized extends Error {
  constructor(detail) {
    super(detail || "This server requires an access token.");
    this.name = "Unauthorized";
  }
}

/** Any other refusal, with the problem details' `detail` as its message. */
export class ProblemError extends Error {
  constructor(status, title, detail) {
    super(detail || title || `HTTP ${status}`);
    this.name = "ProblemError";
    this.status = status;
    this.title = title;
  }
}

/** A resource of this server, as JSON. Throws Unauthorized on 401, ProblemError otherwise. */
export async function getJSON(path) {
  const response = await request(path, {headers: {Accept: "application/json"}});
  return response.json();
}

/** A fetch of this server's `path` with the token; the Response when it is ok. */
export async function request(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const token = getToken();
  if (token) headers.set("Authorization", `Bearer ${token}`);
  const response = await fetch(new URL(path, location.origin), {
    ...options, headers, cache: "no-store", credentials: "omit",
  });
  if (response.ok) return response;
  const problem = await problemOf(response);
  if (response.status === 401) throw new Unauthorized(problem.detail);
  throw new ProblemError(response.status, problem.title, problem.detail);
}

async function problemOf(response) {
  try {
    const body = await response.json();
    if (body && typeof body === "object") return body;
  } catch {
    // not JSON: fall back to the status line
  }
  return {title: response.statusText, detail: `HTTP ${response.status} ${response.statusText}`};
}

/** What the caller's token may do: "full" or "readonly". */
export async function role() {
  const answer = await getJSON("/dashboard/access");
  return answer.role === "readonly" ? "readonly" : "full";
}

/** The WebSocket URL of this server's `/ws`, with the token if there is one. */
export function socketURL() {
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const token = getToken();
  if (token) url.searchParams.set("access_token", token);
  return url.href;
}
