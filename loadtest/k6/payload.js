// Order bodies the load clients send to POST /api/v1/orders.
//
// This module imports nothing from k6, so node can load it (check.mjs does) and
// the k6 scripts can share it. The random functions take `rng`, a function returning
// a float in [0, 1) like Math.random, so a caller can pass a seeded generator.

export const PRODUCT_COUNT = 100;
export const MIN_QUANTITY = 1;
export const MAX_QUANTITY = 5;
export const MIN_UNIT_PRICE_DOLLARS = 10;
export const MAX_UNIT_PRICE_DOLLARS = 1009;
export const PAYMENT_METHODS = ['credit_card', 'debit_card', 'bank_transfer'];
export const CUSTOMER_EMAIL_DOMAIN = 'loadtest.example.com';

const SHIPPING_ADDRESSES = [
  { street: '123 Main St', city: 'San Francisco', state: 'CA', postal_code: '94102' },
  { street: '77 Harbor Rd', city: 'Seattle', state: 'WA', postal_code: '98101' },
  { street: '9 Elm Ave', city: 'Austin', state: 'TX', postal_code: '73301' },
];

const DELIVERY_NOTES = 'Leave the parcel at the front desk';

/** Returns an integer in [min, max], both ends included. */
export function randomInt(rng, min, max) {
  const value = min + Math.floor(rng() * (max - min + 1));

  // A generator that returns exactly 1.0 would otherwise overshoot by one.
  return Math.min(value, max);
}

/** Returns one element of `values`, chosen uniformly. */
export function pickOne(rng, values) {
  return values[randomInt(rng, 0, values.length - 1)];
}

/**
 * Returns the customer id and email of one virtual user.
 *
 * `runId` separates runs and `userNumber` separates the users of one run, so no two
 * virtual users share a customer.
 */
export function customerFor(runId, userNumber) {
  const id = `cust-lt-${runId}-${userNumber}`;
  return { id, email: `${id}@${CUSTOMER_EMAIL_DOMAIN}` };
}

/** Builds an order body with one item line of random product, quantity and price. */
export function buildOrder(rng, customer) {
  const productNumber = randomInt(rng, 0, PRODUCT_COUNT - 1);
  const order = {
    customer_id: customer.id,
    customer_email: customer.email,
    items: [
      {
        product_id: `prod-${productNumber}`,
        product_name: `Load test product ${productNumber}`,
        quantity: randomInt(rng, MIN_QUANTITY, MAX_QUANTITY),
        unit_price: randomInt(rng, MIN_UNIT_PRICE_DOLLARS, MAX_UNIT_PRICE_DOLLARS),
      },
    ],
    shipping_address: { ...pickOne(rng, SHIPPING_ADDRESSES), country: 'USA' },
    payment_method: pickOne(rng, PAYMENT_METHODS),
  };

  // About half of the orders carry the optional field, so both forms get exercised.
  if (rng() < 0.5) {
    order.notes = DELIVERY_NOTES;
  }
  return order;
}
