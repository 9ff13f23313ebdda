#!/usr/bin/env node
// node examples/subscribe.js ENDPOINT COUNT PREFIX...
// Prints COUNT events (all of them if COUNT is 0) as JSON lines; a gap in a topic's sequence
// shows as "missed" > 0. ENDPOINT is the broker's subscribe endpoint (port 7752 by default).
"use strict";

const { subscribe } = require("..");

const [endpoint, count, ...prefixes] = process.argv.slice(2);
// JSON of an event: bytes as {"hex"}, 64-bit integers beyond 2^53 (BigInt) as strings.
function json(key, value) {
  const raw = this[key];
  if (Buffer.isBuffer(raw)) return { hex: raw.toString("hex") };
  return typeof value === "bigint" ? value.toString() : value;
}

(async () => {
  let seen = 0;
  for await (const event of subscribe(endpoint, prefixes.length ? prefixes : [""])) {
    console.log(JSON.stringify(event, json));
    if (++seen === Number(count)) break; // leaving the loop closes the subscription
  }
})().catch((err) => {
  console.error(`${err.name} [${err.code}]: ${err.message}`);
  process.exitCode = 1;
});
