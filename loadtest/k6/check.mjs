// Checks the k6 scripts with node alone, because k6 itself is not installed everywhere.
//
// Run: node loadtest/k6/check.mjs
//
// It parses every script as an ES module and checks what each one imports and exports.
// It checks the load shapes. It also runs the modules that import nothing from k6: it
// compares generated orders with the HTTP contract written out below, and renders a
// report from a made-up k6 summary.
// It prints one line per check and then "N passed, M failed", and exits with status 1
// when any check failed.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const K6_DIR = dirname(fileURLToPath(import.meta.url));
const SCENARIOS = ['basic', 'stress', 'spike', 'soak'];
// Modules that node must be able to import, so they may import nothing from k6.
const PURE_MODULES = ['payload.js', 'shapes.js', 'shed.js', 'summary.js'];
const SCRIPTS = ['common.js', ...PURE_MODULES, ...SCENARIOS.map((name) => `${name}.js`)];
const K6_BUILTIN_MODULES = new Set(['k6', 'k6/http', 'k6/metrics', 'k6/execution']);
const GENERATED_ORDER_COUNT = 1000;
const SYNTAX_CHECK_TIMEOUT_MS = 30_000;

// The order body contract of POST /api/v1/orders as the load clients use it. It is
// written out here rather than imported from payload.js, so a wrong constant there fails.
const ORDER_FIELDS = [
  'customer_id',
  'customer_email',
  'items',
  'shipping_address',
  'payment_method',
  'notes',
];
const REQUIRED_ORDER_FIELDS = ORDER_FIELDS.filter((field) => field !== 'notes');
const ITEM_FIELDS = ['product_id', 'product_name', 'quantity', 'unit_price'];
const ADDRESS_FIELDS = ['street', 'city', 'state', 'postal_code', 'country'];
const PRODUCT_ID = /^prod-(0|[1-9][0-9]?)$/;
const PRODUCT_COUNT = 100;
const QUANTITY_RANGE = [1, 5];
const UNIT_PRICE_RANGE = [10, 1009];
const PAYMENT_METHODS = ['credit_card', 'debit_card', 'bank_transfer'];
const EMAIL = /^[^@\s]+@[^@\s]+\.[^@\s]+$/;

const results = { passed: 0, failed: 0 };

/** Returns a one-line reason for a failed check. */
function describeFailure(error) {
  const firstLine = String(error?.message ?? error).split('\n')[0];
  const compared = ['strictEqual', 'notStrictEqual'].includes(error?.operator);
  if (error instanceof assert.AssertionError && compared) {
    const actual = JSON.stringify(error.actual);
    return `${firstLine} (actual ${actual}, expected ${JSON.stringify(error.expected)})`;
  }
  return firstLine;
}

/** Runs one check, prints its outcome on one line, and counts it. */
async function runCheck(name, body) {
  try {
    await body();
    results.passed += 1;
    console.log(`ok   ${name}`);
  } catch (error) {
    results.failed += 1;
    console.log(`FAIL ${name}: ${describeFailure(error)}`);
  }
}

function readScript(fileName) {
  return readFileSync(join(K6_DIR, fileName), 'utf8');
}

/** Parses `source` as an ES module without running it; returns the syntax error or ''. */
function moduleSyntaxError(source) {
  // --input-type=module forces ES module parsing. A plain `node --check file.js` of node 20
  // can pass a file with a syntax error when no package.json declares the module type.
  const result = spawnSync(process.execPath, ['--input-type=module', '--check'], {
    input: source,
    encoding: 'utf8',
    timeout: SYNTAX_CHECK_TIMEOUT_MS,
  });
  if (result.error) {
    return `node --check did not run: ${result.error.message}`;
  }
  if (result.status === 0) {
    return '';
  }

  const lines = result.stderr.split('\n');
  const location = lines.find((line) => line.startsWith('[stdin]:')) ?? '';
  const message = lines.find((line) => /^\w*Error:/.test(line)) ?? result.stderr.trim();
  if (location === '') {
    return message;
  }
  return `${location.replace('[stdin]:', 'line ')}: ${message}`;
}

function importSpecifiers(source) {
  const fromClause = /^\s*import\s[^;]*?\sfrom\s+['"]([^'"]+)['"]/gm;
  const bareImport = /^\s*import\s+['"]([^'"]+)['"]/gm;
  return [...source.matchAll(fromClause), ...source.matchAll(bareImport)].map((m) => m[1]);
}

function checkImports(fileName) {
  const pure = PURE_MODULES.includes(fileName);
  for (const specifier of importSpecifiers(readScript(fileName))) {
    if (specifier.startsWith('./')) {
      assert.ok(existsSync(join(K6_DIR, specifier)), `${specifier} does not exist`);
    } else {
      assert.ok(!pure, `${specifier} imported, but node must be able to import this module`);
      assert.ok(
        K6_BUILTIN_MODULES.has(specifier),
        `${specifier} is not a k6 built-in module; remote modules need network access`,
      );
    }
  }
}

function checkScenarioExports(name) {
  const source = readScript(`${name}.js`);
  const expected = [
    ['options', /^export const options = \{/m],
    ['setup()', /^export function setup\(\)/m],
    ['the default function', /^export default function \(data\)/m],
    ['handleSummary()', /^export function handleSummary\(data\)/m],
    [`STAGES.${name}`, new RegExp(`stages: STAGES\\.${name},`)],
    [`summaryOutputs(data, '${name}')`, new RegExp(`summaryOutputs\\(data, '${name}'\\)`)],
  ];
  for (const [what, pattern] of expected) {
    assert.match(source, pattern, `${name}.js lacks ${what}`);
  }
}

/** Returns the stages as [start users, end users, seconds] ramps. */
function ramps(stages, durationSeconds) {
  let users = 0;
  return stages.map((stage) => {
    const ramp = [users, stage.target, durationSeconds(stage.duration)];
    users = stage.target;
    return ramp;
  });
}

function totalSeconds(stageRamps) {
  return stageRamps.reduce((sum, [, , seconds]) => sum + seconds, 0);
}

function peakUsers(stageRamps) {
  return Math.max(...stageRamps.map(([, end]) => end));
}

function holdSeconds(stageRamps, users) {
  return stageRamps
    .filter(([start, end]) => start === users && end === users)
    .reduce((sum, [, , seconds]) => sum + seconds, 0);
}

function checkCommonShape(stageRamps) {
  assert.ok(stageRamps.length > 0, 'no stages');
  assert.equal(stageRamps.at(-1)[1], 0, 'the last stage must ramp down to 0 users');
  for (const [, end, seconds] of stageRamps) {
    assert.ok(Number.isInteger(end), `target ${end} is not an integer`);
    assert.ok(end >= 0, `target ${end} is negative`);
    assert.ok(seconds > 0, 'a stage lasts 0 seconds');
  }
}

const SHAPE_CHECKS = {
  basic: (stageRamps) => {
    assert.equal(totalSeconds(stageRamps), 240, 'basic must last 4 minutes');
    assert.equal(peakUsers(stageRamps), 50, 'basic must peak at 50 users');
    assert.ok(holdSeconds(stageRamps, 20) > 0, 'basic must hold 20 users before 50');
  },
  stress: (stageRamps) => {
    assert.equal(totalSeconds(stageRamps), 600, 'stress must last 10 minutes');
    for (const users of [50, 100, 200, 300, 400]) {
      assert.ok(holdSeconds(stageRamps, users) > 0, `stress must hold ${users} users`);
    }
    assert.equal(peakUsers(stageRamps), 400, 'stress must peak at 400 users');
  },
  spike: (stageRamps) => {
    const jump = stageRamps.find(([start, end]) => start === 10 && end === 200);
    const drop = stageRamps.find(([start, end]) => start === 200 && end === 10);
    assert.ok(jump !== undefined, 'spike must go from 10 to 200 users in one stage');
    assert.equal(jump[2], 10, 'spike must go from 10 to 200 users in 10 s');
    assert.ok(drop !== undefined, 'spike must come back down from 200 to 10 users');
    assert.equal(peakUsers(stageRamps), 200, 'spike must peak at 200 users');
  },
  soak: (stageRamps) => {
    assert.equal(totalSeconds(stageRamps), 1800, 'soak must last 30 minutes');
    assert.equal(peakUsers(stageRamps), 50, 'soak must run 50 users');
    assert.ok(holdSeconds(stageRamps, 50) >= 25 * 60, 'soak must hold 50 users for 25+ min');
  },
};

/** Returns a seeded generator of floats in [0, 1), so each run checks the same orders. */
function seededRandom(seed) {
  let state = seed >>> 0;
  return () => {
    // mulberry32: a small, well-mixed 32-bit generator, plenty for test data.
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function isNonEmptyString(value) {
  return typeof value === 'string' && value.trim() !== '';
}

function isIntegerIn(value, [min, max]) {
  return Number.isInteger(value) && value >= min && value <= max;
}

function itemProblems(item) {
  const problems = [];
  for (const field of ITEM_FIELDS) {
    if (!(field in item)) problems.push(`items[0].${field} missing`);
  }
  if (!PRODUCT_ID.test(item.product_id)) {
    problems.push(`product_id ${item.product_id} not in prod-0..prod-99`);
  }
  if (!isNonEmptyString(item.product_name)) problems.push('product_name empty');
  if (!isIntegerIn(item.quantity, QUANTITY_RANGE)) {
    problems.push(`quantity ${item.quantity} not an integer in 1..5`);
  }
  if (!isIntegerIn(item.unit_price, UNIT_PRICE_RANGE)) {
    problems.push(`unit_price ${item.unit_price} not a whole dollar amount in 10..1009`);
  }
  return problems;
}

/** Returns what is wrong with `order` under the contract, or [] when it is valid. */
function orderProblems(order) {
  const problems = [];
  for (const field of REQUIRED_ORDER_FIELDS) {
    if (!(field in order)) problems.push(`${field} missing`);
  }
  for (const field of Object.keys(order)) {
    if (!ORDER_FIELDS.includes(field)) problems.push(`unknown field ${field}`);
  }
  if (!isNonEmptyString(order.customer_id)) problems.push('customer_id empty');
  if (!EMAIL.test(order.customer_email)) problems.push(`invalid email ${order.customer_email}`);
  if (!Array.isArray(order.items) || order.items.length !== 1) {
    problems.push('items must hold exactly one line');
  } else {
    problems.push(...itemProblems(order.items[0]));
  }
  for (const field of ADDRESS_FIELDS) {
    if (!isNonEmptyString(order.shipping_address?.[field])) {
      problems.push(`shipping_address.${field} empty`);
    }
  }
  if (!PAYMENT_METHODS.includes(order.payment_method)) {
    problems.push(`payment_method ${order.payment_method} not allowed`);
  }
  if ('notes' in order && typeof order.notes !== 'string') problems.push('notes not a string');
  return problems;
}

function assertOrdersValid(orders) {
  orders.forEach((order, index) => {
    const problems = orderProblems(order);
    assert.deepEqual(problems, [], `order ${index}: ${problems.join('; ')}`);
    assert.deepEqual(JSON.parse(JSON.stringify(order)), order, `order ${index} changes in JSON`);
  });
}

function generateOrders(buildOrder, rng, count) {
  const customer = { id: 'cust-lt-check-1', email: 'cust-lt-check-1@loadtest.example.com' };
  return Array.from({ length: count }, () => buildOrder(rng, customer));
}

function madeUpSummary() {
  const latency = { avg: 12.5, med: 10, 'p(90)': 20, 'p(95)': 31.25, 'p(99)': 80.5, max: 120 };
  return {
    state: { testRunDurationMs: 240_000 },
    metrics: {
      http_reqs: { type: 'counter', values: { count: 4000, rate: 16.7 } },
      http_req_failed: {
        type: 'rate',
        values: { rate: 0.001, passes: 4, fails: 3996 },
        thresholds: { 'rate<0.01': { ok: true } },
      },
      http_req_duration: {
        type: 'trend',
        values: latency,
        thresholds: { 'p(95)<500': { ok: true }, 'p(99)<20': { ok: false } },
      },
      'http_req_duration{name:POST /api/v1/orders}': { type: 'trend', values: latency },
      checks: { type: 'rate', values: { rate: 0.999, passes: 3996, fails: 4 } },
      shed: { type: 'rate', values: { rate: 0.003, passes: 12, fails: 3988 } },
      iterations: { type: 'counter', values: { count: 1000, rate: 4.2 } },
    },
  };
}

async function importPure(fileName) {
  return import(new URL(fileName, import.meta.url).href);
}

await runCheck('syntax check rejects a module with a syntax error', () => {
  assert.notEqual(moduleSyntaxError('export default function () { call("x" }'), '');
});

for (const fileName of SCRIPTS) {
  await runCheck(`${fileName} parses as an ES module`, () => {
    const error = moduleSyntaxError(readScript(fileName));
    assert.ok(error === '', error);
  });
  await runCheck(`${fileName} imports only k6 built-ins and local files`, () => {
    checkImports(fileName);
  });
}

for (const name of SCENARIOS) {
  await runCheck(`${name}.js exports options, setup, default and handleSummary`, () => {
    checkScenarioExports(name);
  });
}

const modules = {};
for (const fileName of PURE_MODULES) {
  await runCheck(`${fileName} imports under node`, async () => {
    modules[fileName] = await importPure(fileName);
  });
}
const payload = modules['payload.js'] ?? {};
const shapes = modules['shapes.js'] ?? {};
const shed = modules['shed.js'] ?? {};
const summary = modules['summary.js'] ?? {};

await runCheck('durationSeconds reads k6 durations and rejects other text', () => {
  assert.equal(shapes.durationSeconds('1m30s'), 90);
  assert.equal(shapes.durationSeconds('26m'), 1560);
  assert.equal(shapes.durationSeconds('1h'), 3600);
  assert.equal(shapes.durationSeconds('500ms'), 0.5);
  for (const invalid of ['', '90', '1x', '1m 30s', 'm']) {
    assert.throws(() => shapes.durationSeconds(invalid), /invalid k6 duration/, invalid);
  }
});

for (const name of SCENARIOS) {
  await runCheck(`shape ${name} matches its description`, () => {
    const stageRamps = ramps(shapes.STAGES[name], shapes.durationSeconds);
    checkCommonShape(stageRamps);
    SHAPE_CHECKS[name](stageRamps);
  });
}

await runCheck(`${GENERATED_ORDER_COUNT} seeded orders match the order contract`, () => {
  const rng = seededRandom(20240611);
  assertOrdersValid(generateOrders(payload.buildOrder, rng, GENERATED_ORDER_COUNT));
});

await runCheck(`${GENERATED_ORDER_COUNT} Math.random orders match the order contract`, () => {
  assertOrdersValid(generateOrders(payload.buildOrder, Math.random, GENERATED_ORDER_COUNT));
});

await runCheck('seeded orders cover every product, quantity and payment method', () => {
  const orders = generateOrders(payload.buildOrder, seededRandom(7), GENERATED_ORDER_COUNT);
  const products = new Set(orders.map((order) => order.items[0].product_id));
  const quantities = new Set(orders.map((order) => order.items[0].quantity));
  const methods = new Set(orders.map((order) => order.payment_method));
  assert.equal(products.size, PRODUCT_COUNT, 'distinct product ids');
  assert.equal(quantities.size, QUANTITY_RANGE[1] - QUANTITY_RANGE[0] + 1, 'distinct quantities');
  assert.equal(methods.size, PAYMENT_METHODS.length, 'distinct payment methods');
  assert.ok(orders.some((order) => 'notes' in order), 'no order has notes');
  assert.ok(orders.some((order) => !('notes' in order)), 'every order has notes');
});

await runCheck('lowest random value gives prod-0, quantity 1 and price 10', () => {
  const [order] = generateOrders(payload.buildOrder, () => 0, 1);
  assert.deepEqual(orderProblems(order), []);
  assert.equal(order.items[0].product_id, 'prod-0');
  assert.equal(order.items[0].quantity, QUANTITY_RANGE[0]);
  assert.equal(order.items[0].unit_price, UNIT_PRICE_RANGE[0]);
});

await runCheck('highest random values give prod-99, quantity 5 and price 1009', () => {
  for (const highest of [1 - Number.EPSILON, 1]) {
    const [order] = generateOrders(payload.buildOrder, () => highest, 1);
    assert.deepEqual(orderProblems(order), [], `rng() = ${highest}`);
    assert.equal(order.items[0].product_id, `prod-${PRODUCT_COUNT - 1}`);
    assert.equal(order.items[0].quantity, QUANTITY_RANGE[1]);
    assert.equal(order.items[0].unit_price, UNIT_PRICE_RANGE[1]);
  }
});

await runCheck('customerFor gives each virtual user of each run its own customer', () => {
  const customers = [
    payload.customerFor('run1', 1),
    payload.customerFor('run1', 2),
    payload.customerFor('run2', 1),
  ];
  assert.equal(new Set(customers.map((customer) => customer.id)).size, 3, 'ids repeat');
  assert.equal(new Set(customers.map((customer) => customer.email)).size, 3, 'emails repeat');
  for (const customer of customers) {
    assert.match(customer.email, EMAIL);
  }
});

await runCheck('isShed accepts 429 and 503 only', () => {
  assert.equal(shed.isShed(503), true);
  assert.equal(shed.isShed(429), true);
  for (const status of [0, 200, 201, 404, 500, 502]) {
    assert.equal(shed.isShed(status), false, String(status));
  }
});

await runCheck('retryDelaySeconds reads seconds and HTTP dates within bounds', () => {
  const now = Date.parse('Tue, 11 Jun 2024 10:00:00 GMT');
  const cases = [
    [undefined, shed.DEFAULT_RETRY_DELAY_SECONDS],
    ['', shed.DEFAULT_RETRY_DELAY_SECONDS],
    ['soon', shed.DEFAULT_RETRY_DELAY_SECONDS],
    ['0', 0],
    ['3', 3],
    ['3600', shed.MAX_RETRY_DELAY_SECONDS],
    ['Tue, 11 Jun 2024 10:00:04 GMT', 4],
    ['Tue, 11 Jun 2024 09:59:00 GMT', 0],
  ];
  for (const [header, expected] of cases) {
    assert.equal(shed.retryDelaySeconds(header, now), expected, `Retry-After: ${header}`);
  }
});

await runCheck('summaryFilePath uses SUMMARY_PATH, else summary-<script>.json', () => {
  assert.equal(summary.summaryFilePath({}, 'basic'), 'summary-basic.json');
  assert.equal(summary.summaryFilePath({ SUMMARY_PATH: '' }, 'soak'), 'summary-soak.json');
  assert.equal(summary.summaryFilePath({ SUMMARY_PATH: '/tmp/s.json' }, 'soak'), '/tmp/s.json');
});

await runCheck('renderTextSummary reports latency, shed, checks and thresholds', () => {
  const text = summary.renderTextSummary(madeUpSummary(), 'basic');
  const expectedLines = [
    /^orderflow k6 basic: ran 240\.0 s$/m,
    /^requests +4000 \(16\.7\/s\), failed 0\.10 %$/m,
    /^checks +99\.90 % passed \(3996 of 4000\)$/m,
    /^shed +12 responses .*0\.30 % of requests/m,
    /^ +all requests .*p\(95\) 31\.3 +p\(99\) 80\.5/m,
    /^ +POST \/api\/v1\/orders +avg 12\.5/m,
    /^thresholds +1 of 3 failed$/m,
    /^ +FAIL http_req_duration p\(99\)<20$/m,
    /^ +ok +http_req_failed rate<0\.01$/m,
  ];
  for (const pattern of expectedLines) {
    assert.match(text, pattern);
  }
});

await runCheck('renderTextSummary copes with metrics that never got a value', () => {
  const text = summary.renderTextSummary({ metrics: {} }, 'spike');
  assert.match(text, /^requests +0 \(n\/a\/s\), failed n\/a$/m);
  assert.match(text, /^thresholds +all 0 passed$/m);
});

console.log(`${results.passed} passed, ${results.failed} failed`);
process.exitCode = results.failed === 0 ? 0 : 1;
