// Shed-response handling of the load clients.
//
// The gateway returns 429 or 503 with a Retry-After header when a tier's backlog is over
// its limit. The clients count such responses apart from errors and wait before their
// next iteration. This module imports nothing from k6, so check.mjs can test it under node.

export const SHED_STATUSES = [429, 503];

// Used when Retry-After is missing or unreadable.
export const DEFAULT_RETRY_DELAY_SECONDS = 1;

// Upper bound on one wait, so a wrong header cannot stall a virtual user for the whole run.
export const MAX_RETRY_DELAY_SECONDS = 10;

/** Tells whether an HTTP status means the gateway shed the request. */
export function isShed(status) {
  return SHED_STATUSES.includes(status);
}

/**
 * Returns how many seconds to wait after a shed response.
 *
 * Retry-After contains either a number of seconds or an HTTP date.
 * The result lies in [0, MAX_RETRY_DELAY_SECONDS].
 */
export function retryDelaySeconds(retryAfter, nowMs = Date.now()) {
  const text = String(retryAfter ?? '').trim();
  let seconds = DEFAULT_RETRY_DELAY_SECONDS;
  if (/^\d+$/.test(text)) {
    seconds = Number(text);
  } else if (!Number.isNaN(Date.parse(text))) {
    seconds = Math.max(0, (Date.parse(text) - nowMs) / 1000);
  }
  return Math.min(seconds, MAX_RETRY_DELAY_SECONDS);
}
