// The monitor page: polls the gateway's admin API and renders what it returns.
//
// Every value from the server reaches the page as a text node or an attribute set with
// setAttribute, never as HTML, so an order id or an error message cannot inject markup.
"use strict";

const REFRESH_INTERVAL_MS = 2000;
const REQUEST_TIMEOUT_MS = 5000;
// Refreshes between two checks of whether the server has an admin token configured.
const ACCESS_CHECK_EVERY_REFRESHES = 15;
const TOKEN_STORAGE_KEY = "orderflow.adminToken";
const DEAD_LETTER_LIMIT = 100;
const RECENT_ORDER_LIMIT = 10;
const STEPS = ["payment", "inventory", "email", "invoice", "analytics", "warehouse"];
const SERIES_COLORS = 6;
// Pending entries older than the default reclaim idle time (30 s) are highlighted.
const OLD_PENDING_MS = 30000;
const CHART = { width: 720, height: 200, left: 56, right: 12, top: 12, bottom: 26 };
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  token: readStoredToken(),
  // "unknown" until checked, then "none" (the server has no admin token and only reads)
  // or "required".
  serverToken: "unknown",
  unreachable: "",
  tokenRejected: false,
  inFlight: new Set(),
  refreshCount: 0,
  refreshing: false,
  refreshAgain: false,
  timer: null,
  // null until the server returned the list, so "No dead letters." is never a guess.
  deadLetters: null,
  renderedKeys: {},
};

// -- storage and requests ----------------------------------------------------------------

function readStoredToken() {
  try {
    return sessionStorage.getItem(TOKEN_STORAGE_KEY) || "";
  } catch {
    return "";
  }
}

function storeToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_STORAGE_KEY, token);
    else sessionStorage.removeItem(TOKEN_STORAGE_KEY);
  } catch {
    // Storage can be disabled, and then the token lasts until the page is reloaded.
  }
}

async function api(path, { method = "GET", body, auth = true } = {}) {
  const headers = { Accept: "application/json" };
  if (auth && state.token) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
  try {
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "same-origin",
      signal: controller.signal,
    });
    const data = await response.json().catch(() => null);
    return { status: response.status, ok: response.ok, data, error: "" };
  } catch (error) {
    const message = error.name === "AbortError" ? "timed out" : String(error.message || error);
    return { status: 0, ok: false, data: null, error: message };
  } finally {
    clearTimeout(timer);
  }
}

function describeFailure(result) {
  if (result.status === 0) return `request failed: ${result.error}`;
  const detail = result.data && typeof result.data.detail === "string" ? result.data.detail : "";
  return detail ? `HTTP ${result.status}: ${detail}` : `HTTP ${result.status}`;
}

// -- DOM helpers --------------------------------------------------------------------------

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  setAttributes(node, attributes);
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function svg(tag, attributes, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttributes(node, attributes);
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function setAttributes(node, attributes) {
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
}

function showError(id, message) {
  const node = document.getElementById(id);
  node.textContent = message;
  node.hidden = !message;
}

// Re-render a section only when its data changed, so buttons and focus survive a refresh.
function renderIfChanged(section, data, render) {
  const key = JSON.stringify(data);
  if (state.renderedKeys[section] === key) return;
  state.renderedKeys[section] = key;
  render();
}

function setNotice(message, kind = "info") {
  const node = document.getElementById("notice");
  node.textContent = message;
  node.dataset.kind = kind;
  node.hidden = !message;
}

// -- formatting ---------------------------------------------------------------------------

const numberFormat = new Intl.NumberFormat("en-US");

function formatCount(value) {
  return typeof value === "number" ? numberFormat.format(value) : "unknown";
}

function formatDuration(ms) {
  if (typeof ms !== "number") return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.floor(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function formatRate(value) {
  if (typeof value !== "number") return "–";
  return value < 10 ? value.toFixed(2) : value.toFixed(1);
}

function formatAxisRate(value) {
  return Number.isInteger(value) ? String(value) : String(Number(value.toFixed(2)));
}

function formatWindow(seconds) {
  return seconds < 120 ? `${Math.round(seconds)} s` : `${Math.round(seconds / 60)} min`;
}

function formatTime(value) {
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value ?? "") : date.toLocaleTimeString();
}

function formatMoney(value) {
  const amount = Number(value);
  return Number.isFinite(amount) ? amount.toFixed(2) : String(value ?? "");
}

// -- access -------------------------------------------------------------------------------

function writable() {
  return (
    state.serverToken === "required" &&
    Boolean(state.token) &&
    !state.tokenRejected
  );
}

// A read without a token succeeds only when the server has no admin token configured.
async function checkAccess() {
  const probe = await api("/api/v1/admin/throughput", { auth: false });
  if (probe.ok) {
    state.serverToken = "none";
    state.unreachable = "";
  } else if (probe.status === 401) {
    state.serverToken = "required";
    state.unreachable = "";
  } else {
    state.unreachable = describeFailure(probe);
  }
}

function accessMessage() {
  if (state.unreachable) return `Read-only: the access check failed (${state.unreachable}).`;
  if (state.serverToken === "unknown") return "Checking access…";
  if (state.serverToken === "none") {
    return (
      "Read-only: the server has no ORDERFLOW_ADMIN_TOKEN set, " +
      "so Replay and Delete are disabled."
    );
  }
  if (!state.token) {
    return "Read-only: enter the admin token to see streams and dead letters and to act on them.";
  }
  if (state.tokenRejected) return "Read-only: the server rejected this admin token (401).";
  return "Admin token accepted: Replay and Delete are enabled.";
}

function renderAccess() {
  const node = document.getElementById("access");
  node.textContent = accessMessage();
  node.dataset.writable = String(writable());
  renderDeadLetters();
}

// -- tiers --------------------------------------------------------------------------------

function renderTiers(streams) {
  const container = document.getElementById("tiers");
  container.replaceChildren(...streams.map(renderTier));
}

function renderTier(tier) {
  const figures = el(
    "dl",
    { class: "figures" },
    figure("Length", "length", formatCount(tier.length)),
    figure("Dead letters", "dead_letters", formatCount(tier.dead_letters), tier.dead_letters > 0),
  );
  const body = tier.groups.length
    ? renderGroups(tier.groups)
    : el("p", { class: "empty" }, "No consumer groups yet.");
  return el(
    "article",
    { class: "tier", "data-tier": tier.tier },
    el("h3", {}, tier.tier, " ", el("span", { class: "stream" }, tier.stream)),
    figures,
    body,
  );
}

function figure(label, field, value, alert = false) {
  return el(
    "div",
    { class: alert ? "alert" : null },
    el("dt", {}, label),
    el("dd", { "data-field": field }, value),
  );
}

function renderGroups(groups) {
  const head = el(
    "tr",
    {},
    ...["Group", "Lag", "Pending", "Oldest pending", "Consumers"].map((name) =>
      el("th", { scope: "col" }, name),
    ),
  );
  const rows = groups.map((group) => {
    const old = typeof group.oldest_pending_age_ms === "number" &&
      group.oldest_pending_age_ms > OLD_PENDING_MS;
    return el(
      "tr",
      { "data-group": group.name },
      el("th", { scope: "row" }, group.name),
      el("td", { "data-field": "lag", class: group.lag ? "busy" : null }, formatCount(group.lag)),
      el(
        "td",
        { "data-field": "pending", class: group.pending ? "busy" : null },
        formatCount(group.pending),
      ),
      el(
        "td",
        { "data-field": "oldest_pending", class: old ? "alert" : null },
        formatDuration(group.oldest_pending_age_ms),
      ),
      el("td", { "data-field": "consumers" }, renderConsumers(group.consumers)),
    );
  });
  return el("table", { class: "groups" }, el("thead", {}, head), el("tbody", {}, ...rows));
}

function renderConsumers(consumers) {
  if (!consumers.length) return el("span", { class: "empty" }, "none");
  const items = consumers.map((consumer) =>
    el(
      "li",
      { "data-consumer": consumer.name },
      el("span", { class: "consumer-name" }, consumer.name),
      el(
        "span",
        { class: "consumer-detail" },
        "idle ",
        el("span", { "data-field": "idle" }, formatDuration(consumer.idle_ms)),
        " · ",
        el("span", { "data-field": "consumer_pending" }, formatCount(consumer.pending)),
        " pending",
      ),
    ),
  );
  return el("ul", { class: "consumers" }, ...items);
}

// -- throughput chart ---------------------------------------------------------------------

function niceCeiling(value) {
  if (value <= 1) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * magnitude) return step * magnitude;
  }
  return 10 * magnitude;
}

function renderThroughput(data) {
  const container = document.getElementById("throughput");
  const withPoints = data.groups.filter((group) => group.points.length);
  if (!withPoints.length) {
    const first = `${formatAxisRate(data.interval_seconds)} s`;
    container.replaceChildren(
      el(
        "p",
        { class: "empty" },
        `Collecting samples: the first rates appear one sampling interval (${first}) after ` +
          "the gateway starts, once a tier stream has a consumer group.",
      ),
    );
    return;
  }
  container.replaceChildren(drawChart(data, withPoints), renderLegend(data.groups));
}

function drawChart(data, groups) {
  const { width, height, left, right, top, bottom } = CHART;
  const windowSeconds = data.window_seconds;
  const windowMs = windowSeconds * 1000;
  const start = data.now_ms - windowMs;
  const peak = Math.max(...groups.flatMap((group) => group.points.map((p) => p.per_second)));
  const ceiling = niceCeiling(peak);
  const x = (at) => left + ((at - start) / windowMs) * (width - left - right);
  const y = (rate) => top + (1 - rate / ceiling) * (height - top - bottom);

  const chart = svg("svg", {
    class: "chart",
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-labelledby": "throughput-chart-title",
  });
  chart.append(svg("title", { id: "throughput-chart-title" }, "Entries finished per second"));
  for (const fraction of [0, 0.5, 1]) {
    const rate = ceiling * fraction;
    chart.append(
      svg("line", { class: "grid", x1: left, x2: width - right, y1: y(rate), y2: y(rate) }),
      svg("text", { class: "axis", x: left - 6, y: y(rate) + 4, "text-anchor": "end" },
        `${formatAxisRate(rate)}/s`),
    );
  }
  chart.append(
    svg("text", { class: "axis", x: left, y: height - 6 }, `${formatWindow(windowSeconds)} ago`),
    svg("text", { class: "axis", x: width - right, y: height - 6, "text-anchor": "end" }, "now"),
  );
  data.groups.forEach((group, index) => {
    if (!group.points.length) return;
    const color = `series-${index % SERIES_COLORS}`;
    const coordinates = group.points.map(
      (point) => `${x(point.at_ms).toFixed(1)},${y(point.per_second).toFixed(1)}`,
    );
    const label = `${group.group} (${group.tier})`;
    if (coordinates.length === 1) {
      const [cx, cy] = coordinates[0].split(",");
      chart.append(svg("circle", { class: `dot ${color}`, cx, cy, r: 3 }, svg("title", {}, label)));
    } else {
      chart.append(
        svg("polyline", { class: `line ${color}`, points: coordinates.join(" ") },
          svg("title", {}, label)),
      );
    }
  });
  return chart;
}

function renderLegend(groups) {
  const items = groups.map((group, index) =>
    el(
      "li",
      { "data-group": group.group, "data-tier": group.tier },
      el("span", { class: `swatch series-${index % SERIES_COLORS}`, "aria-hidden": "true" }),
      el("span", {}, `${group.group} (${group.tier})`),
      el(
        "span",
        { class: "rate", "data-field": "per_second" },
        `${formatRate(group.per_second)}/s`,
      ),
    ),
  );
  return el("ul", { class: "legend" }, ...items);
}

// -- dead letters -------------------------------------------------------------------------

function renderDeadLetters() {
  const letters = state.deadLetters;
  const canWrite = writable();
  renderIfChanged("deadLetters", [letters, canWrite, [...state.inFlight]], () =>
    drawDeadLetters(letters, canWrite),
  );
}

function drawDeadLetters(letters, canWrite) {
  const container = document.getElementById("dead-letters");
  if (letters === null) {
    container.replaceChildren();
    return;
  }
  if (!letters.length) {
    container.replaceChildren(el("p", { class: "empty" }, "No dead letters."));
    return;
  }
  const head = el(
    "tr",
    {},
    ...["Reference", "Group", "Event", "Order", "Attempts", "Failed at", "Error", "Actions"].map(
      (name) => el("th", { scope: "col" }, name),
    ),
  );
  const rows = letters.map((letter) => {
    const disabled = !canWrite || state.inFlight.has(letter.reference);
    return el(
      "tr",
      { "data-reference": letter.reference },
      el("td", { class: "mono" }, letter.reference),
      el("td", {}, letter.group),
      el("td", {}, letter.event_type),
      el("td", { class: "mono" }, letter.order_id),
      el("td", { class: "number" }, formatCount(letter.attempts)),
      el("td", { title: letter.failed_at }, formatTime(letter.failed_at)),
      el("td", { class: "error-text", title: letter.error }, letter.error),
      el(
        "td",
        { class: "actions" },
        el("button", { type: "button", "data-action": "replay", disabled }, "Replay"),
        el(
          "button",
          { type: "button", "data-action": "purge", class: "danger", disabled },
          "Delete",
        ),
      ),
    );
  });
  container.replaceChildren(
    el("table", { class: "dead-letters" }, el("thead", {}, head), el("tbody", {}, ...rows)),
  );
}

async function actOnDeadLetter(action, reference) {
  if (!writable() || state.inFlight.has(reference)) return;
  if (action === "purge" && !window.confirm(`Delete dead letter ${reference} for good?`)) return;

  state.inFlight.add(reference);
  renderDeadLetters();
  const result = await api(`/api/v1/admin/dead-letters/${action}`, {
    method: "POST",
    body: { references: [reference] },
  });
  state.inFlight.delete(reference);

  const [done, name] = action === "replay" ? ["Replayed", "Replay"] : ["Deleted", "Delete"];
  if (result.ok) {
    setNotice(`${done} ${reference}.`);
  } else {
    // The admin API returns 401 for a wrong token and 403 when the server has no token.
    if (result.status === 401) state.tokenRejected = true;
    if (result.status === 403) state.serverToken = "none";
    setNotice(`${name} of ${reference} failed: ${describeFailure(result)}`, "error");
  }
  renderAccess();
  refreshNow();
}

// -- orders -------------------------------------------------------------------------------

function renderOrders(orders) {
  const container = document.getElementById("orders");
  if (!orders.length) {
    container.replaceChildren(el("p", { class: "empty" }, "No orders yet."));
    return;
  }
  const head = el(
    "tr",
    {},
    ...["Order", "Customer", "Status", "Total", "Created", ...STEPS].map((name) =>
      el("th", { scope: "col" }, name),
    ),
  );
  const rows = orders.map((order) =>
    el(
      "tr",
      { "data-order": order.id },
      el("td", { class: "mono" }, order.id),
      el("td", {}, order.customer_id),
      el("td", { "data-field": "status" }, order.status),
      el("td", { class: "number" }, formatMoney(order.total_amount)),
      el("td", { title: order.created_at }, formatTime(order.created_at)),
      ...STEPS.map((name) => renderStep(name, order.steps ? order.steps[name] : null)),
    ),
  );
  container.replaceChildren(
    el("table", { class: "orders" }, el("thead", {}, head), el("tbody", {}, ...rows)),
  );
}

function renderStep(name, step) {
  const stepState = step && typeof step.state === "string" ? step.state : "unknown";
  const title = [stepState, step && step.detail, step && formatTime(step.updated_at)]
    .filter(Boolean)
    .join(" · ");
  return el(
    "td",
    { class: "step", "data-step": name, "data-state": stepState, title },
    stepState,
  );
}

// -- refresh loop -------------------------------------------------------------------------

function applyAdminResult(result, errorId, onData) {
  if (result.status === 401) {
    const message = state.token
      ? "The admin token was rejected (401)."
      : "Needs the admin token.";
    showError(errorId, message);
    return;
  }
  if (!result.ok || result.data === null) {
    showError(errorId, `Not updated: ${describeFailure(result)}`);
    return;
  }
  showError(errorId, "");
  onData(result.data);
}

function clearAdminSections() {
  for (const id of ["tiers", "throughput"]) document.getElementById(id).replaceChildren();
  delete state.renderedKeys.tiers;
  delete state.renderedKeys.throughput;
  state.deadLetters = null;
}

async function refresh() {
  if (state.refreshCount % ACCESS_CHECK_EVERY_REFRESHES === 0) await checkAccess();
  state.refreshCount += 1;

  const [streams, letters, throughput, orders] = await Promise.all([
    api("/api/v1/admin/streams"),
    api(`/api/v1/admin/dead-letters?limit=${DEAD_LETTER_LIMIT}`),
    api("/api/v1/admin/throughput"),
    api(`/api/v1/orders?limit=${RECENT_ORDER_LIMIT}`, { auth: false }),
  ]);

  const adminResults = [streams, letters, throughput];
  const unauthorized = adminResults.some((r) => r.status === 401);
  if (unauthorized) state.serverToken = "required";
  state.tokenRejected = Boolean(state.token) && unauthorized;
  if (unauthorized) clearAdminSections();

  applyAdminResult(streams, "tiers-error", (data) =>
    renderIfChanged("tiers", data.streams, () => renderTiers(data.streams)),
  );
  applyAdminResult(throughput, "throughput-error", (data) =>
    renderIfChanged("throughput", data, () => renderThroughput(data)),
  );
  applyAdminResult(letters, "dead-letters-error", (data) => {
    state.deadLetters = data.dead_letters;
  });
  if (orders.ok && orders.data) {
    showError("orders-error", "");
    renderIfChanged("orders", orders.data.orders, () => renderOrders(orders.data.orders));
  } else {
    showError("orders-error", `Not updated: ${describeFailure(orders)}`);
  }
  renderAccess();

  const reached = [...adminResults, orders].some((r) => r.status !== 0);
  document.getElementById("updated").textContent = reached
    ? `Updated ${new Date().toLocaleTimeString()}`
    : `Gateway unreachable at ${new Date().toLocaleTimeString()}, retrying`;
}

// Refresh now, or right after the refresh in flight, then again every REFRESH_INTERVAL_MS.
async function refreshNow() {
  clearTimeout(state.timer);
  if (state.refreshing) {
    state.refreshAgain = true;
    return;
  }
  state.refreshing = true;
  try {
    if (!document.hidden) await refresh();
  } finally {
    state.refreshing = false;
    const delay = state.refreshAgain ? 0 : REFRESH_INTERVAL_MS;
    state.refreshAgain = false;
    state.timer = setTimeout(refreshNow, delay);
  }
}

// -- wiring -------------------------------------------------------------------------------

function useToken(token) {
  state.token = token;
  storeToken(token);
  state.tokenRejected = false;
  state.refreshCount = 0;
  setNotice(token ? "Token saved for this browser tab." : "Token forgotten.");
  refreshNow();
}

document.addEventListener("DOMContentLoaded", () => {
  const input = document.getElementById("token");
  input.value = state.token;
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    useToken(input.value.trim());
  });
  document.getElementById("token-forget").addEventListener("click", () => {
    input.value = "";
    useToken("");
  });
  document.getElementById("dead-letters").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    const row = button && button.closest("tr[data-reference]");
    if (row) actOnDeadLetter(button.dataset.action, row.dataset.reference);
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshNow();
  });
  renderAccess();
  refreshNow();
});
