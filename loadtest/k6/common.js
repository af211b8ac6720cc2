// The request sequence every k6 script runs, plus the k6 wiring around it.
//
// The pure parts (order bodies, shed handling, text report) live in modules that
// import nothing from k6, so check.mjs can test them under node. This module needs
// the k6 runtime.

import { check, sleep } from 'k6';
import exec from 'k6/execution';
import http from 'k6/http';
import { Rate } from 'k6/metrics';

import { buildOrder, customerFor } from './payload.js';
import { isShed, retryDelaySeconds, SHED_STATUSES } from './shed.js';
import { renderTextSummary, summaryFilePath } from './summary.js';

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');

// Think time after each iteration, so one virtual user starts at most one iteration a second.
const THINK_TIME_SECONDS = 1;

const ORDER_ID_PREFIX = 'ORD-';

// Request names group the statistics: /api/v1/orders/{id} is one series, not one per id.
export const REQUEST_NAMES = {
  health: 'GET /health',
  createOrder: 'POST /api/v1/orders',
  getOrder: 'GET /api/v1/orders/{id}',
  listOrders: 'GET /api/v1/orders',
};

// Share of requests that the gateway shed with 429 or 503. Kept apart from
// http_req_failed because shedding under overload is the designed behaviour.
export const shedRate = new Rate('shed');

// Shed responses count as expected, so they stay out of http_req_failed.
const EXPECTED_STATUSES = http.expectedStatuses({ min: 200, max: 299 }, ...SHED_STATUSES);

// k6 leaves p(99) out of the summary unless it is listed here.
export const SUMMARY_TREND_STATS = ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'];

/**
 * Builds the thresholds that every script sets, with limits in milliseconds and rates
 * in [0, 1].
 *
 * The per-request p(95) entries also make k6 keep one latency series per request name
 * in the summary.
 */
export function buildThresholds({ p95Ms, p99Ms, maxFailedRate, minChecksRate }) {
  const thresholds = {
    http_req_duration: [`p(95)<${p95Ms}`, `p(99)<${p99Ms}`],
    http_req_failed: [`rate<${maxFailedRate}`],
    checks: [`rate>${minChecksRate}`],
  };
  for (const name of Object.values(REQUEST_NAMES)) {
    thresholds[`http_req_duration{name:${name}}`] = [`p(95)<${p95Ms}`];
  }
  return thresholds;
}

/**
 * Stops the test before any load when GET /health does not return 200.
 *
 * Returns the data every iteration receives: a run id that keeps customers of
 * different runs apart.
 */
export function setupRun() {
  const url = `${BASE_URL}/health`;
  const response = http.get(url, { tags: { name: REQUEST_NAMES.health } });
  if (response.status !== 200) {
    const reason = response.error ? ` (${response.error})` : '';
    exec.test.abort(
      `GET ${url} returned status ${response.status}${reason}, expected 200: ` +
        'start the gateway (orderflow up) or point BASE_URL at it',
    );
  }
  return { runId: Date.now().toString(36) };
}

function readJson(response) {
  try {
    return response.json();
  } catch {
    return undefined;
  }
}

/**
 * Sends one request and records in `shed` whether the gateway shed it.
 *
 * After a shed response the virtual user waits for the delay in its Retry-After header.
 */
function request(method, path, body, name) {
  const params = {
    headers: body === null ? {} : { 'Content-Type': 'application/json' },
    responseCallback: EXPECTED_STATUSES,
    tags: { name },
  };
  const response = http.request(method, `${BASE_URL}${path}`, body, params);

  const shed = isShed(response.status);
  shedRate.add(shed);
  if (shed) {
    sleep(retryDelaySeconds(response.headers['Retry-After']));
  }
  return response;
}

// The steps below skip their checks on a shed response, which `shed` counts instead.

function checkHealth() {
  const response = request('GET', '/health', null, REQUEST_NAMES.health);
  if (!isShed(response.status)) {
    check(response, { 'health: status is 200': (r) => r.status === 200 });
  }
  return response;
}

function createOrder(customer) {
  const body = JSON.stringify(buildOrder(Math.random, customer));
  const response = request('POST', '/api/v1/orders', body, REQUEST_NAMES.createOrder);
  if (!isShed(response.status)) {
    const order = readJson(response);
    check(response, {
      'create order: status is 201': (r) => r.status === 201,
      'create order: id starts with ORD-': () =>
        typeof order?.id === 'string' && order.id.startsWith(ORDER_ID_PREFIX),
    });
  }
  return response;
}

function getOrder(orderId) {
  const path = `/api/v1/orders/${encodeURIComponent(orderId)}`;
  const response = request('GET', path, null, REQUEST_NAMES.getOrder);
  if (!isShed(response.status)) {
    check(response, {
      'get order: status is 200': (r) => r.status === 200,
      'get order: same id': () => readJson(response)?.id === orderId,
    });
  }
  return response;
}

function listOrders() {
  const path = '/api/v1/orders?page=1&limit=10';
  const response = request('GET', path, null, REQUEST_NAMES.listOrders);
  if (!isShed(response.status)) {
    const page = readJson(response);
    check(response, {
      'list orders: status is 200': (r) => r.status === 200,
      'list orders: total > 0': () => typeof page?.total === 'number' && page.total > 0,
      'list orders: orders is an array': () => Array.isArray(page?.orders),
    });
  }
  return response;
}

function runSteps(customer) {
  if (isShed(checkHealth().status)) {
    return;
  }

  const created = createOrder(customer);
  if (isShed(created.status)) {
    return;
  }

  // A failed create leaves nothing to read back, but the list request still runs.
  const orderId = created.status === 201 ? readJson(created)?.id : undefined;
  if (typeof orderId === 'string' && isShed(getOrder(orderId).status)) {
    return;
  }
  listOrders();
}

/**
 * Runs one iteration: health, create an order, read it back, list the first page.
 *
 * A shed response ends the iteration after its Retry-After wait. Every iteration ends
 * with the think time, so even a Retry-After of 0 cannot make a virtual user spin.
 */
export function runOrderFlow(data) {
  runSteps(customerFor(data.runId, exec.vu.idInTest));
  sleep(THINK_TIME_SECONDS);
}

/** Returns handleSummary()'s outputs: the text report on stdout and the JSON file. */
export function summaryOutputs(data, scriptName) {
  return {
    stdout: renderTextSummary(data, scriptName),
    [summaryFilePath(__ENV, scriptName)]: JSON.stringify(data, null, 2),
  };
}
