// @ts-check
/**
 * @file The clock media is stamped with: microseconds since the Unix epoch from
 * `performance.timeOrigin + performance.now()`, the same in the page, its worker and every
 * page on one machine (so tests can compare a sender's stamp with a receiver's clock).
 */

/** @returns {bigint} microseconds since the Unix epoch */
export function nowUs() {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));
}

/** @returns {number} milliseconds since the Unix epoch */
export function epochMs() {
  return performance.timeOrigin + performance.now();
}
