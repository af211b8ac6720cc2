// k6 spike test: 10 virtual users jump to 200 within 10 seconds, hold, and drop back, to
// see how the system absorbs a burst and recovers.
//
// Run: k6 run loadtest/k6/spike.js (BASE_URL defaults to http://127.0.0.1:8080;
// SUMMARY_PATH defaults to summary-spike.json in the working directory).

import {
  buildThresholds,
  runOrderFlow,
  setupRun,
  SUMMARY_TREND_STATS,
  summaryOutputs,
} from './common.js';
import { STAGES } from './shapes.js';

export const options = {
  stages: STAGES.spike,
  // Looser than basic.js because the burst is meant to overload the system for a while.
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
  return summaryOutputs(data, 'spike');
}
