// k6 basic test: ramps to 20 virtual users, then to 50, over 4 minutes.
//
// Run: k6 run loadtest/k6/basic.js (BASE_URL defaults to http://127.0.0.1:8080;
// SUMMARY_PATH defaults to summary-basic.json in the working directory).

import {
  buildThresholds,
  runOrderFlow,
  setupRun,
  SUMMARY_TREND_STATS,
  summaryOutputs,
} from './common.js';
import { STAGES } from './shapes.js';

export const options = {
  stages: STAGES.basic,
  // Targets for normal load, chosen as goals rather than measured on any machine.
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
  return summaryOutputs(data, 'basic');
}
