// The reference app's screens (the help page's): Dashboard, Settings → Invoices with the QuickBooks card and the
// Disconnect dialog, the invoice list and an invoice's detail. Every string from the server is put in the page as
// text (textContent, text nodes), never as HTML: client names and QuickBooks' words are not ours.

import { api, ApiError, session, signIn, signOut } from "./api.js";

// The words before each company-check finding, by its severity (models/domain.py CheckSeverity).
const SEVERITY_WORDS = { blocking: "Blocking: ", warning: "Warning: ", info: "Note: " };

const POLL_MS = 2000;
const FLOW_KEY = "qbo-sync.flow";

// --- Words -----------------------------------------------------------------------------------------------------

const INVOICE_STATES = {
  not_synced: ["Not synced", "grey"],
  pending: ["Waiting to sync", "blue"],
  syncing: ["Syncing", "blue"],
  synced: ["Synced", "green"],
  partially_paid: ["Partially paid", "amber"],
  paid: ["Paid", "green"],
  failed: ["Sync failed", "red"],
  paused: ["Paused", "amber"],
  voided: ["Voided", "grey"],
  deleted_in_quickbooks: ["Deleted in QuickBooks", "grey"],
  disconnected: ["No longer synced", "grey"],
};

// Our own words for how connecting ended: the return link's `message` is not shown (anyone can write a link).
const CONNECT_ERRORS = {
  access_denied: "QuickBooks was not connected: access was denied on Intuit's page.",
  start_link_used: "That QuickBooks sign-in link was already used. Connect again.",
  start_link_expired: "That QuickBooks sign-in link expired. Connect again.",
  state_expired: "The QuickBooks sign-in took too long. Connect again.",
  state_used: "That QuickBooks sign-in was already used. Connect again.",
  browser_mismatch: "That QuickBooks sign-in was started in another browser, so nothing was connected.",
  plan_required: "Your plan does not include QuickBooks.",
  different_company:
    "A different QuickBooks company was chosen. Reconnect to the same company, or disconnect first to switch.",
  company_not_verified: "QuickBooks could not confirm the company, so nothing was connected. Connect again.",
  unavailable: "QuickBooks could not be connected right now. Try again in a minute.",
};

// --- DOM helpers -----------------------------------------------------------------------------------------------

function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") element.className = value;
    else if (key === "text") element.textContent = value;
    else if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

const $ = (id) => document.getElementById(id);

function money(cents, currency) {
  if (cents === null || cents === undefined) return "—";
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(cents / 100);
  } catch {
    return `${(cents / 100).toFixed(2)} ${currency}`;
  }
}

function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return h("time", { datetime: iso, text: date.toLocaleString() });
}

function day(iso) {
  return iso ? h("time", { datetime: iso, text: new Date(iso).toLocaleDateString() }) : "—";
}

function badge(status) {
  const [words, colour] = INVOICE_STATES[status] || [status, "grey"];
  return h("span", { class: `badge ${colour}`, "data-status": status, text: words });
}

function qboBadge() {
  return h("span", { class: "badge qbo", title: "In QuickBooks Online", "aria-label": "In QuickBooks", text: "QB" });
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).flatMap(([term, value]) => [h("dt", { text: term }), h("dd", {}, value)]));
}

let flashedAt = 0;

function flash(message, { warn = false } = {}) {
  flashedAt = Date.now();
  const region = $("flash");
  region.className = warn ? "flash warn" : "flash";
  region.textContent = message;
}

function problem(error) {
  return error instanceof ApiError ? error.message : "Something went wrong.";
}

// --- Routing and polling ---------------------------------------------------------------------------------------

let refreshTimer = null;
let currentRefresh = null;
let lastRendered = "";

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  if (path === "/settings/invoices") return { name: "settings", view: settingsView, params };
  if (path === "/invoices") return { name: "invoices", view: invoicesView, params };
  const detail = path.match(/^\/invoices\/([A-Za-z0-9_.:-]{1,64})$/);
  if (detail) return { name: "invoices", view: () => invoiceView(detail[1]), params };
  return { name: "dashboard", view: dashboardView, params };
}

async function show() {
  const current = route();
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.route === current.name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  clearInterval(refreshTimer);
  lastRendered = "";
  // A message outlives the navigation it caused (sent, then the invoice opens), not the next one.
  if (Date.now() - flashedAt > 3000) $("flash").textContent = "";
  const view = $("view");
  view.replaceChildren(h("p", { text: "Loading…" }));
  currentRefresh = await current.view(current.params);
  await refresh();
  $("main").focus({ preventScroll: true });
  refreshTimer = setInterval(() => {
    if (!document.hidden) refresh();
  }, POLL_MS);
}

// Re-renders only when what the API says changed, and keeps the focus on the control that had it.
async function refresh() {
  if (!currentRefresh) return;
  let content;
  try {
    content = await currentRefresh();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      signOut();
      start();
      return;
    }
    content = { key: "error:" + problem(error), node: h("p", { class: "error", role: "alert", text: problem(error) }) };
  }
  if (content.key === lastRendered) return;
  lastRendered = content.key;
  const focused = document.activeElement && document.activeElement.id;
  // A view may hold a part of its own that polling leaves alone (#live is the part that follows the API).
  const target = $("live") || $("view");
  target.replaceChildren(content.node);
  if (focused && $(focused) && target.contains($(focused))) $(focused).focus();
}

function rendered(node, ...data) {
  return { key: JSON.stringify(data), node };
}

// --- Dashboard -------------------------------------------------------------------------------------------------

function dashboardView() {
  return async () => {
    const [connection, notifications] = await Promise.all([api.connection(), api.notifications()]);
    const list = notifications.notifications;
    return rendered(
      h("div", {},
        h("h1", { text: "Dashboard" }),
        h("section", { class: "card", "aria-labelledby": "dash-qbo" },
          h("h2", { id: "dash-qbo", text: "QuickBooks" }),
          h("p", {}, connectionBadge(connection), " ", connection.company_name || ""),
          h("p", {}, h("a", { href: "#/settings/invoices", text: "Settings → Invoices" }), " holds the QuickBooks Online Integration card.")),
        h("section", { class: "card", "aria-labelledby": "dash-notes" },
          h("h2", { id: "dash-notes", text: "Needs your attention" }),
          list.length === 0
            ? h("p", { text: "Nothing needs your attention." })
            : h("ul", {}, list.map((note) => h("li", {},
                note.message, " ",
                note.invoice_id ? h("a", { href: `#/invoices/${note.invoice_id}`, text: "Open the invoice" }) : null))))),
      connection, list);
  };
}

function connectionBadge(connection) {
  const words = {
    not_connected: ["Not connected", "grey"],
    connecting: ["Connecting…", "blue"],
    connected: ["Connected", "green"],
    expiring: ["Connection expires soon", "amber"],
    expired: ["Connection expired", "red"],
    disconnecting: ["Disconnecting…", "amber"],
    disconnected: ["Not connected", "grey"],
  }[connection.status] || [connection.status, "grey"];
  return h("span", { class: `badge ${words[1]}`, id: "connection-badge", text: words[0] });
}

// --- Settings → Invoices: the QuickBooks Online Integration card ----------------------------------------------

function settingsView() {
  return async () => {
    const [account, connection] = await Promise.all([api.account(), api.connection()]);
    return rendered(
      h("div", {},
        h("h1", { text: "Settings → Invoices" }),
        integrationCard(account, connection),
        h("section", { class: "card", "aria-labelledby": "invoice-settings" },
          h("h2", { id: "invoice-settings", text: "Invoice settings" }),
          h("p", { text: "Numbering, payment terms and reminders live here on the platform; this reference app shows only the QuickBooks part." }))),
      account, connection);
  };
}

function integrationCard(account, connection) {
  const status = connection.status;
  const body = [];
  const actions = [];
  body.push(h("p", {}, connectionBadge(connection)));

  if (!account.quickbooks_available && !["connected", "expiring", "disconnecting"].includes(status)) {
    const offer = account.plan === "pro"
      ? "Add the QuickBooks add-on ($10/month) to your Pro plan, then connect."
      : "Upgrade to Premium (QuickBooks included), or to Pro with the QuickBooks add-on ($10/month), then connect.";
    body.push(h("div", { class: "notice amber", id: "plan-notice" },
      h("p", { text: `Not available on your plan (${account.plan}${account.quickbooks_addon ? " with the add-on" : ""}).` }),
      h("p", { text: account.quickbooks_unavailable_reason || "" }),
      h("p", {}, h("strong", { text: offer })),
      h("p", { class: "muted", text: "Plans are changed in the platform's billing, not from this card." })));
    return card(body, actions);
  }

  if (["connected", "expiring", "connecting", "expired", "disconnecting"].includes(status) && connection.realm_id) {
    body.push(facts([
      ["Company", connection.company_name || "—"],
      ["Realm ID", connection.realm_id],
      ["Connected", day(connection.connected_at)],
      connection.expires_at ? ["Authorization ends", day(connection.expires_at)] : null,
    ]));
  }
  if (status === "expiring") {
    body.push(h("div", { class: "notice amber", id: "expiring-notice" },
      h("p", {}, h("strong", { text: "Connection expires soon." }), " ", connection.reason || ""),
      h("p", { text: "Reconnect to keep syncing without interruption." })));
  }
  if (status === "expired") {
    body.push(h("div", { class: "notice red", id: "expired-notice" },
      h("p", {}, h("strong", { text: "Syncing is paused." }), " ", connection.reason || "The QuickBooks authorization ended."),
      h("p", { text: "Invoices already in QuickBooks stay there. Reconnect to the same company and everything paused syncs." })));
  }
  if (connection.sync_paused_reason) {
    body.push(h("div", { class: "notice red", id: "paused-notice" },
      h("p", {}, h("strong", { text: "Syncing is paused. " }), connection.sync_paused_reason)));
  }
  const checks = (connection.company && connection.company.checks) || [];
  if (checks.length) {
    // Blocking: red; a warning: amber; only how syncing adapts (info): blue.
    const tone = checks.some((c) => c.severity === "blocking") ? "red"
      : checks.some((c) => c.severity === "warning") ? "amber" : "info";
    body.push(h("div", { class: "notice " + tone, id: "company-checks" },
      h("p", {}, h("strong", { text: "Your QuickBooks company's settings:" })),
      h("ul", { class: "checks" }, checks.map((check) => h("li", { "data-code": check.code },
        h("strong", { text: SEVERITY_WORDS[check.severity] || "Note: " }), check.message)))));
  }
  if (status === "disconnecting" && connection.disconnect) {
    body.push(h("p", { text: progressWords(connection.disconnect) }));
  }
  if (status === "disconnected" && connection.disconnect && connection.disconnect.mode === "disconnect_and_void") {
    body.push(h("p", { class: "muted", text: "Last disconnect: " + progressWords(connection.disconnect) }));
  }

  if (["not_connected", "disconnected"].includes(status)) {
    body.push(h("p", { text: "Connect your QuickBooks Online company: invoices you send from then on are created in QuickBooks, and payments recorded there mark them paid here." }));
    actions.push(h("button", { type: "button", class: "primary", id: "connect", onclick: connect, text: "Connect QuickBooks" }));
  }
  if (["expiring", "expired"].includes(status)) {
    actions.push(h("button", { type: "button", class: "primary", id: "reconnect", onclick: connect, text: "Reconnect" }));
  }
  if (["connected", "expiring", "expired"].includes(status)) {
    actions.push(h("button", { type: "button", id: "disconnect", onclick: openDisconnect, text: "Disconnect" }));
  }
  return card(body, actions);
}

function card(body, actions) {
  return h("section", { class: "card", id: "qbo-card", "aria-labelledby": "qbo-card-title" },
    h("h2", { id: "qbo-card-title", text: "QuickBooks Online Integration" }),
    body,
    h("p", { id: "connect-error", class: "error", role: "alert" }),
    actions.length ? h("div", { class: "actions" }, actions) : null);
}

async function connect(event) {
  const button = event.currentTarget;
  button.disabled = true;
  try {
    const started = await api.connect();
    // Only this tab's own sign-in gets the confirmation when it comes back (see takeReturn).
    sessionStorage.setItem(FLOW_KEY, started.flow_id);
    // The start link is followed at once and never shown or kept: it opens once, in this browser.
    location.assign(started.authorization_url);
  } catch (error) {
    button.disabled = false;
    $("connect-error").textContent = problem(error);
  }
}

function progressWords(progress) {
  const done = progress.voided + progress.failed;
  const parts = [`${progress.voided} of ${progress.total} invoices voided in QuickBooks`];
  if (progress.failed) parts.push(`${progress.failed} refused`);
  if (!progress.finished_at) parts.push(`${progress.left} left`);
  return parts.join(", ") + (progress.finished_at ? ". Done." : ` (${done}/${progress.total}).`);
}

// --- The Disconnect dialog -------------------------------------------------------------------------------------

let disconnectPoll = null;
let voidImpossible = false;

function openDisconnect() {
  const dialog = $("disconnect-dialog");
  $("disconnect-choices").hidden = false;
  $("disconnect-progress").hidden = true;
  $("disconnect-error").textContent = "";
  $("disconnect-close").textContent = "Cancel";
  $("disconnect-void").disabled = true;
  $("disconnect-only").disabled = false;
  $("disconnect-count").textContent = "Counting the invoices…";
  dialog.showModal();
  $("disconnect-only").focus();
  // Counted now, not from the card's last poll: an invoice may have synced since.
  api.connection().then((connection) => {
    const count = connection.invoices_to_void;
    voidImpossible = connection.status === "expired";
    $("disconnect-void").disabled = voidImpossible;
    $("disconnect-count").textContent = voidImpossible
      ? "Not possible while the connection is expired: reconnect first."
      : count === 1 ? "1 invoice would be voided." : `${count ?? 0} invoices would be voided.`;
  }, (error) => {
    $("disconnect-error").textContent = problem(error);
  });
}

async function chooseDisconnect(mode) {
  $("disconnect-error").textContent = "";
  for (const id of ["disconnect-only", "disconnect-void"]) $(id).disabled = true;
  try {
    const answer = await api.disconnect(mode);
    $("disconnect-choices").hidden = true;
    $("disconnect-progress").hidden = false;
    $("disconnect-close").textContent = "Close";
    showDisconnectProgress(answer);
    disconnectPoll = setInterval(async () => {
      try {
        showDisconnectProgress(await api.connection());
      } catch (error) {
        $("disconnect-error").textContent = problem(error);
      }
    }, 1000);
  } catch (error) {
    $("disconnect-error").textContent = problem(error);
    $("disconnect-only").disabled = false;
    $("disconnect-void").disabled = voidImpossible;
  }
  $("disconnect-close").focus();
}

function showDisconnectProgress(connection) {
  const progress = connection.disconnect;
  const bar = $("disconnect-progress-bar");
  let words;
  if (connection.status === "disconnected") {
    words = "Disconnected from QuickBooks." + (progress && progress.mode === "disconnect_and_void" ? " " + progressWords(progress) : "");
    clearInterval(disconnectPoll);
    bar.max = 1;
    bar.value = 1;
  } else if (progress && progress.mode === "disconnect_and_void") {
    words = "Voiding invoices in QuickBooks: " + progressWords(progress);
    bar.max = Math.max(progress.total, 1);
    bar.value = progress.voided + progress.failed;
  } else {
    words = "Disconnecting…";
  }
  $("disconnect-progress-text").textContent = words;
  const failures = progress ? progress.failures : [];
  $("disconnect-failures").replaceChildren(...failures.map((failure) => h("li", {},
    h("a", { href: `#/invoices/${failure.invoice_id}`, text: failure.number }), ": ", failure.reason || "QuickBooks refused to void it.")));
}

function closeDisconnect() {
  clearInterval(disconnectPoll);
  $("disconnect-dialog").close();
}

// --- Invoices --------------------------------------------------------------------------------------------------

function invoicesView(params) {
  const filter = params.get("status") || "";
  let shell = null;
  return async () => {
    const [list, connection] = await Promise.all([api.invoices(filter), api.connection()]);
    if (!shell) {
      // Built once, outside what polling re-renders: the send form keeps what the user typed.
      const select = h("select", { id: "status-filter", onchange: (event) => {
        location.hash = event.target.value ? `#/invoices?status=${event.target.value}` : "#/invoices";
      } },
      h("option", { value: "", text: "All invoices" }),
      Object.entries(INVOICE_STATES).map(([value, [words]]) => h("option", { value, selected: value === filter, text: words })));
      shell = h("div", {},
        h("h1", { text: "Invoices" }),
        sendForm(connection),
        h("div", { class: "toolbar" }, h("label", { for: "status-filter" }, "Show", select)),
        h("div", { id: "live" }));
      $("view").replaceChildren(shell);
    }
    const connected = ["connected", "expiring"].includes(connection.status);
    const rows = list.invoices.map((invoice) => h("tr", { "data-invoice": invoice.invoice_id },
      h("td", {}, h("a", { href: `#/invoices/${invoice.invoice_id}`, text: invoice.number })),
      h("td", {}, badge(invoice.status)),
      h("td", {}, connected && invoice.quickbooks.synced ? qboBadge() : ""),
      h("td", { class: "amount", text: money(invoice.total_cents, invoice.currency) }),
      h("td", {}, day(invoice.sent_at))));
    return rendered(
      h("div", {},
        rows.length
          ? h("table", {},
            h("caption", { class: "skip", text: "Invoices, newest first" }),
            h("thead", {}, h("tr", {}, ["Number", "Status", "QuickBooks", "Total", "Sent"].map((words, i) =>
              h("th", { scope: "col", class: i === 3 ? "amount" : null, text: words })))),
            h("tbody", {}, rows))
          : h("p", { id: "no-invoices", text: filter ? "No invoices in this state." : "No invoices sent yet." }),
        list.next_offset !== null ? h("p", { class: "muted", text: "Showing the newest 200." }) : null),
      list, connected, filter);
  };
}

// The platform's "send": a demo invoice with a fresh id and number, so the whole story can be tried here.
function sendForm(connection) {
  const currency = (connection.company && connection.company.home_currency) || "USD";
  const field = (id, label, value, extra = {}) => [h("label", { for: id, text: label }), h("input", { id, name: id, value, required: true, ...extra })];
  return h("details", { class: "card", id: "send-demo" },
    h("summary", { text: "Send a demo invoice" }),
    h("form", { class: "stack", id: "send-form", onsubmit: sendDemo },
      field("client-name", "Client name", "Ada Lovelace", { maxlength: 100 }),
      field("client-email", "Client email", "ada@example.com", { type: "email", maxlength: 100 }),
      field("line-description", "What for", "Architecture review", { maxlength: 200 }),
      field("amount", `Amount (${currency})`, "180.00", { inputmode: "decimal", pattern: "\\d{1,10}(\\.\\d{1,2})?" }),
      h("input", { type: "hidden", id: "currency", value: currency }),
      h("p", { id: "send-error", class: "error", role: "alert" }),
      h("button", { type: "submit", class: "primary", id: "send-invoice", text: "Send invoice" })));
}

async function sendDemo(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const [whole, fraction = ""] = $("amount").value.trim().split(".");
  const cents = Number(whole) * 100 + Number((fraction + "00").slice(0, 2));
  const id = "demo-" + crypto.randomUUID().slice(0, 8);
  const today = new Date();
  const due = new Date(today.getTime() + 30 * 86400000);
  const iso = (date) => date.toISOString().slice(0, 10);
  const body = {
    number: "DEMO-" + id.slice(5).toUpperCase(),
    client: { name: $("client-name").value, email: $("client-email").value },
    currency: $("currency").value,
    issue_date: iso(today),
    due_date: iso(due),
    lines: [{ description: $("line-description").value, quantity: "1", unit_price_cents: cents }],
  };
  form.querySelector("button").disabled = true;
  try {
    await api.send(id, body);
    flash(`Invoice ${body.number} sent.`);
    location.hash = `#/invoices/${id}`;
  } catch (error) {
    $("send-error").textContent = problem(error);
    form.querySelector("button").disabled = false;
  }
}

function invoiceView(invoiceId) {
  return async () => {
    const [invoice, timeline, connection] = await Promise.all([api.invoice(invoiceId), api.timeline(invoiceId), api.connection()]);
    const connected = ["connected", "expiring"].includes(connection.status);
    const note = invoice.notification;
    const finished = ["voided", "deleted_in_quickbooks"].includes(invoice.status);
    const retryable = invoice.status === "failed" || (note && note.action === "retry");
    return rendered(
      h("div", {},
        h("p", {}, h("a", { href: "#/invoices", text: "← Invoices" })),
        h("h1", {}, `Invoice ${invoice.number} `, badge(invoice.status), " ", connected && invoice.quickbooks.synced ? qboBadge() : ""),
        note ? h("div", { class: "notice red", role: "alert", id: "invoice-notification" },
          h("p", { text: note.message }),
          retryable ? h("p", {}, h("button", { type: "button", class: "primary", id: "retry", onclick: (e) => act(e, () => api.retry(invoiceId), "Retry requested: the sync runs again.") }, "Retry")) : null) : null,
        invoice.reason && !note ? h("p", { class: "muted", id: "invoice-reason", text: invoice.reason }) : null,
        h("div", { class: "grid2" },
          h("section", { class: "card", "aria-labelledby": "amounts" },
            h("h2", { id: "amounts", text: "Amounts" }),
            facts([
              ["Total", money(invoice.total_cents, invoice.currency)],
              ["Balance", money(invoice.balance_cents, invoice.currency)],
              ["Sent", when(invoice.sent_at)],
              invoice.paid_at ? ["Paid", when(invoice.paid_at)] : null,
              invoice.voided_at ? ["Voided", when(invoice.voided_at)] : null,
            ])),
          h("section", { class: "card", "aria-labelledby": "in-qbo" },
            h("h2", { id: "in-qbo", text: "In QuickBooks" }),
            facts([
              ["QuickBooks invoice", invoice.quickbooks.invoice_id || "—"],
              ["QuickBooks customer", invoice.quickbooks.customer_id || "—"],
              ["Company (realm)", invoice.quickbooks.realm_id || "—"],
              ["Synced", when(invoice.synced_at)],
            ]),
            invoice.last_error ? h("p", { class: "error", id: "last-error", text: invoice.last_error }) : null)),
        h("section", { class: "card", "aria-labelledby": "timeline-title" },
          h("h2", { id: "timeline-title", text: "Timeline" }),
          h("ol", { class: "timeline", id: "timeline" }, timeline.entries.map((entry) =>
            h("li", { "data-kind": entry.kind }, when(entry.at), entry.message)))),
        h("p", { id: "action-error", class: "error", role: "alert" }),
        finished ? null : h("div", { class: "actions" },
          h("button", { type: "button", class: "danger", id: "void", onclick: (e) => {
            if (confirm(`Void invoice ${invoice.number}? It is voided in QuickBooks too.`)) act(e, () => api.void(invoiceId), "Void requested.");
          } }, "Void"))),
      invoice, timeline, connected);
  };
}

async function act(event, request, words) {
  const button = event.currentTarget;
  button.disabled = true;
  try {
    await request();
    flash(words);
  } catch (error) {
    $("action-error").textContent = problem(error);
    button.disabled = false;
  }
  lastRendered = "";
  await refresh();
}

// --- Signing in and the OAuth return ---------------------------------------------------------------------------

// `make run` opens /app/#account=...&token=...: a fragment never reaches a server. Moved to this tab's storage and
// wiped from the address bar (and history) at once.
function takeFragmentSignIn() {
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
  const account = fragment.get("account");
  const token = fragment.get("token");
  if (account && token) {
    signIn(account, token);
    history.replaceState(null, "", location.pathname + "#/settings/invoices");
    return true;
  }
  return false;
}

// The return from connecting lands on /app/?quickbooks=...: its words are not trusted (anyone can type such a link,
// and this app has no backend to check its signature). It only says whether to look; the confirmation is shown
// from the connection status the API reports, and only for the sign-in this tab started. Taken off the address
// bar at once (the signature is of no use to anyone else).
function takeReturn() {
  const query = new URLSearchParams(location.search);
  if (!query.has("quickbooks")) return null;
  const flow = query.get("flow");
  const outcome = { connected: query.get("quickbooks") !== "error", reason: query.get("reason") || "" };
  outcome.ours = Boolean(flow) && flow === sessionStorage.getItem(FLOW_KEY);
  sessionStorage.removeItem(FLOW_KEY);
  history.replaceState(null, "", location.pathname + "#/settings/invoices");
  return outcome;
}

async function confirmReturn(outcome) {
  if (!outcome.ours) {
    flash("A QuickBooks sign-in that this tab did not start came back here; nothing was changed. The card shows the connection as the engine reports it.", { warn: true });
    return;
  }
  if (!outcome.connected) {
    flash(CONNECT_ERRORS[outcome.reason] || "QuickBooks was not connected. Connect again.", { warn: true });
    return;
  }
  for (let attempt = 0; attempt < 30; attempt++) {
    const connection = await api.connection();
    if (["connected", "expiring"].includes(connection.status)) {
      flash(`QuickBooks is connected to ${connection.company_name || "your company"} (realm ID ${connection.realm_id}).`);
      return;
    }
    if (connection.status !== "connecting") break;
    flash("QuickBooks is finishing connecting…");
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  flash("QuickBooks did not finish connecting; the card shows where it stands.", { warn: true });
}

async function submitSignIn(event) {
  event.preventDefault();
  const account = $("sign-in-account").value.trim();
  const token = $("sign-in-token").value;
  signIn(account, token);
  try {
    await api.account();
  } catch (error) {
    signOut();
    $("sign-in-error").textContent = error instanceof ApiError && [401, 403].includes(error.status)
      ? "That account id and token do not go together." : problem(error);
    return;
  }
  $("sign-in-token").value = "";
  if (!location.hash || location.hash === "#/") location.hash = "#/settings/invoices";
  start();
}

function start() {
  const current = session();
  $("sign-in").hidden = Boolean(current);
  $("nav").hidden = !current;
  $("account-line").hidden = !current;
  if (!current) {
    clearInterval(refreshTimer);
    currentRefresh = null;
    $("view").replaceChildren();
    $("sign-in-account").focus();
    return;
  }
  $("account-name").textContent = current.account;
  show();
}

function wire() {
  $("sign-in-form").addEventListener("submit", submitSignIn);
  $("sign-out").addEventListener("click", () => {
    signOut();
    history.replaceState(null, "", location.pathname);
    start();
  });
  $("disconnect-only").addEventListener("click", () => chooseDisconnect("disconnect_only"));
  $("disconnect-void").addEventListener("click", () => chooseDisconnect("disconnect_and_void"));
  $("disconnect-close").addEventListener("click", closeDisconnect);
  $("disconnect-dialog").addEventListener("close", () => {
    clearInterval(disconnectPoll);
    lastRendered = "";
    refresh().then(() => {
      const back = $("disconnect") || $("connect") || $("main");
      back.focus();
    });
  });
  window.addEventListener("hashchange", () => {
    if (takeFragmentSignIn()) start();
    else if (session()) show();
  });
}

async function main() {
  wire();
  takeFragmentSignIn();
  const returned = takeReturn();
  if (!session() && location.search) history.replaceState(null, "", location.pathname);
  start();
  if (returned && session()) {
    try {
      await confirmReturn(returned);
    } catch (error) {
      flash(problem(error), { warn: true });
    }
  }
}

main();
