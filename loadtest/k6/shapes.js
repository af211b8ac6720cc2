// Virtual-user stages of the four load shapes, in k6's `stages` format.
//
// k6 ramps the number of virtual users linearly from the previous stage's target
// (0 at the start) to each stage's target over that stage's duration.
// loadtest/locustfile.py runs the same shapes in seconds, and
// tests/unit/test_loadtest_scripts.py checks that the two agree.

export const STAGES = {
  // 4 minutes: 20 users, then 50, then down to 0.
  basic: [
    { duration: '30s', target: 20 },
    { duration: '1m', target: 20 },
    { duration: '30s', target: 50 },
    { duration: '1m30s', target: 50 },
    { duration: '30s', target: 0 },
  ],
  // 10 minutes: steps of 50, 100, 200, 300 and 400 users, held after each ramp.
  stress: [
    { duration: '30s', target: 50 },
    { duration: '1m', target: 50 },
    { duration: '30s', target: 100 },
    { duration: '1m', target: 100 },
    { duration: '30s', target: 200 },
    { duration: '1m', target: 200 },
    { duration: '30s', target: 300 },
    { duration: '1m', target: 300 },
    { duration: '30s', target: 400 },
    { duration: '2m', target: 400 },
    { duration: '1m30s', target: 0 },
  ],
  // 3 minutes 40 seconds: 10 users, a jump to 200 within 10 seconds, and back to 10.
  spike: [
    { duration: '10s', target: 10 },
    { duration: '1m', target: 10 },
    { duration: '10s', target: 200 },
    { duration: '1m', target: 200 },
    { duration: '10s', target: 10 },
    { duration: '1m', target: 10 },
    { duration: '10s', target: 0 },
  ],
  // 30 minutes: 50 users held for 26 minutes between 2-minute ramps.
  soak: [
    { duration: '2m', target: 50 },
    { duration: '26m', target: 50 },
    { duration: '2m', target: 0 },
  ],
};

const DURATION_PART = /(\d+(?:\.\d+)?)(ms|h|m|s)/g;
const SECONDS_PER_UNIT = { ms: 0.001, s: 1, m: 60, h: 3600 };

/** Converts a k6 duration such as '1m30s' to seconds; throws on any other text. */
export function durationSeconds(duration) {
  let seconds = 0;
  let matchedLength = 0;
  for (const [part, amount, unit] of duration.matchAll(DURATION_PART)) {
    seconds += Number(amount) * SECONDS_PER_UNIT[unit];
    matchedLength += part.length;
  }
  if (duration.length === 0 || matchedLength !== duration.length) {
    const expected = 'expected parts like 1h, 2m, 30s or 500ms';
    throw new Error(`invalid k6 duration '${duration}': ${expected}`);
  }
  return seconds;
}
