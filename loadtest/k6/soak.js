// k6 soak test: 50 virtual users for 30 minutes, to show leaks, growing backlogs and
// slow drift.
//
// Run: k6 run loadtest/k6/soak.js (BASE_URL defaults to http://127.0.0.1:8080;
// SUMMARY_PATH defaults to summary-soak.json in the working directory).

import {
  buildThresholds,
  runOrderFlow,
  setupRun,
  SUMMARY_TREND_STATS,
  summaryOutputs,
} from './common.js';
import { STAGES } from './shapes.js';

export const options = {
  stages: STAGES.soak,
  // The same targets as basic.js: a steady normal load should not degrade over time.
  thresholds: buildThresholds({
    p95Ms: 500,
    p99Ms: 1000,
    maxFailedRate: 0.01,
    minChecksRate: 0.99,
  }),
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export function setup() {
  return setupRun();
}

export default function (data) {
  runOrderFlow(data);
}

export function handleSummary(data) {
  return summaryOutputs(data, 'soak');
}
