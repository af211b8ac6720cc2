// k6 stress test: steps of 50, 100, 200, 300 and 400 virtual users over 10 minutes, to
// find where latency and errors climb.
//
// Run: k6 run loadtest/k6/stress.js (BASE_URL defaults to http://127.0.0.1:8080;
// SUMMARY_PATH defaults to summary-stress.json in the working directory).

import {
  buildThresholds,
  runOrderFlow,
  setupRun,
  SUMMARY_TREND_STATS,
  summaryOutputs,
} from './common.js';
import { STAGES } from './shapes.js';

export const options = {
  stages: STAGES.stress,
  // Looser than basic.js because the top steps are meant to overload the system.
  thresholds: buildThresholds({
    p95Ms: 2000,
    p99Ms: 5000,
    maxFailedRate: 0.05,
    minChecksRate: 0.95,
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
  return summaryOutputs(data, 'stress');
}
