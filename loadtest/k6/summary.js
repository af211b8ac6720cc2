// End-of-test report of the k6 scripts.
//
// k6 passes handleSummary() an object whose `metrics` maps each metric name to
// { type, contains, values, thresholds }, where `thresholds` maps each expression to
// { ok }. This module turns that object into a short text report and imports nothing
// from k6, so check.mjs can test it under node.

const LATENCY_STATS = ['avg', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'];

/** Returns where the JSON summary goes: SUMMARY_PATH, else summary-<script>.json. */
export function summaryFilePath(env, scriptName) {
  const configured = env.SUMMARY_PATH;
  if (configured !== undefined && configured !== '') {
    return configured;
  }
  return `summary-${scriptName}.json`;
}

function formatNumber(value, digits) {
  return Number.isFinite(value) ? value.toFixed(digits) : 'n/a';
}

function formatPercent(rate) {
  return typeof rate === 'number' ? `${(rate * 100).toFixed(2)} %` : 'n/a';
}

function metricValues(data, name) {
  const metric = data.metrics[name];
  return metric === undefined ? {} : metric.values;
}

function thresholdResults(data) {
  const results = [];
  for (const [name, metric] of Object.entries(data.metrics)) {
    for (const [expression, result] of Object.entries(metric.thresholds || {})) {
      results.push({ name, expression, ok: result.ok });
    }
  }
  return results;
}

function latencyLine(label, values) {
  const stats = LATENCY_STATS.map((stat) => `${stat} ${formatNumber(values[stat], 1)}`);
  return `${label.padEnd(44)} ${stats.join('  ')}`;
}

function endpointLatencyLines(data) {
  const prefix = 'http_req_duration{name:';
  return Object.keys(data.metrics)
    .filter((name) => name.startsWith(prefix))
    .sort()
    .map((name) => {
      const requestName = name.slice(prefix.length, -1);
      return latencyLine(`  ${requestName}`, metricValues(data, name));
    });
}

/** Renders the text report that handleSummary() prints on stdout. */
export function renderTextSummary(data, scriptName) {
  const durationSeconds = (data.state?.testRunDurationMs ?? 0) / 1000;
  const requests = metricValues(data, 'http_reqs');
  const failed = metricValues(data, 'http_req_failed');
  const checks = metricValues(data, 'checks');
  const shed = metricValues(data, 'shed');
  const iterations = metricValues(data, 'iterations');
  const thresholds = thresholdResults(data);
  const failedThresholds = thresholds.filter((result) => !result.ok).length;

  const lines = [
    `orderflow k6 ${scriptName}: ran ${formatNumber(durationSeconds, 1)} s`,
    `requests    ${requests.count ?? 0} (${formatNumber(requests.rate, 1)}/s), ` +
      `failed ${formatPercent(failed.rate)}`,
    `checks      ${formatPercent(checks.rate)} passed ` +
      `(${checks.passes ?? 0} of ${(checks.passes ?? 0) + (checks.fails ?? 0)})`,
    `shed        ${shed.passes ?? 0} responses with 429 or 503 ` +
      `(${formatPercent(shed.rate)} of requests, not counted as failed)`,
    `iterations  ${iterations.count ?? 0}`,
    'latency ms',
    latencyLine('  all requests', metricValues(data, 'http_req_duration')),
    ...endpointLatencyLines(data),
    failedThresholds === 0
      ? `thresholds  all ${thresholds.length} passed`
      : `thresholds  ${failedThresholds} of ${thresholds.length} failed`,
    ...thresholds.map(
      (result) => `  ${result.ok ? 'ok  ' : 'FAIL'} ${result.name} ${result.expression}`,
    ),
  ];
  return `${lines.join('\n')}\n`;
}
