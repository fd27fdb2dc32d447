// The engine's public HTTP API, as the platform calls it: same origin, the account's own token as a bearer token.

const ACCOUNT_KEY = "qbo-sync.account";
const TOKEN_KEY = "qbo-sync.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function session() {
  const account = sessionStorage.getItem(ACCOUNT_KEY);
  const token = sessionStorage.getItem(TOKEN_KEY);
  return account && token ? { account, token } : null;
}

export function signIn(account, token) {
  sessionStorage.setItem(ACCOUNT_KEY, account);
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function signOut() {
  sessionStorage.removeItem(ACCOUNT_KEY);
  sessionStorage.removeItem(TOKEN_KEY);
}

async function call(method, path, body) {
  const current = session();
  if (!current) throw new ApiError(401, "unauthorized", "Sign in first.");
  const options = { method, headers: { Authorization: `Bearer ${current.token}` }, cache: "no-store" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`/v1/accounts/${encodeURIComponent(current.account)}${path}`, options);
  } catch {
    throw new ApiError(0, "network", "The engine did not answer; check that it is running.");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : { code: "http_" + response.status, message: response.statusText };
    throw new ApiError(response.status, error.code, error.message);
  }
  return data;
}

const enc = encodeURIComponent;

export const api = {
  account: () => call("GET", ""),
  connection: () => call("GET", "/quickbooks/connection"),
  connect: () => call("POST", "/quickbooks/connect"),
  disconnect: (mode) => call("POST", "/quickbooks/disconnect", { mode }),
  invoices: (status) => call("GET", "/invoices?limit=200" + (status ? "&status=" + enc(status) : "")),
  invoice: (id) => call("GET", `/invoices/${enc(id)}`),
  timeline: (id) => call("GET", `/invoices/${enc(id)}/timeline`),
  send: (id, body) => call("POST", `/invoices/${enc(id)}/send`, body),
  retry: (id) => call("POST", `/invoices/${enc(id)}/quickbooks/retry`),
  void: (id) => call("POST", `/invoices/${enc(id)}/void`),
  notifications: () => call("GET", "/notifications"),
};
