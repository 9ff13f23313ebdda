#!/usr/bin/env node
// node examples/call.js ENDPOINT SERVICE COMMAND [JSON-ARGS] [TIMEOUT-S]
// Prints {"result": ...} as JSON and exits 0, or {"error": {"code", "message", "details"}} and
// exits 1. Progress updates go to stderr. Keys for a secured line come from the environment.
"use strict";

const { call } = require("..");

const [endpoint, service, command, argsJson, timeout] = process.argv.slice(2);
// JSON of a value with bytes as {"hex"} (a replacer sees Buffers after their toJSON: use the holder).
function bytes(key, value) {
  const raw = this[key];
  return Buffer.isBuffer(raw) ? { hex: raw.toString("hex") } : value;
}

(async () => {
  try {
    const result = await call(service, command, argsJson ? JSON.parse(argsJson) : {}, {
      endpoint,
      timeout: timeout ? Number(timeout) : 10,
      onProgress: (update) => console.error("progress", JSON.stringify(update, bytes)),
    });
    console.log(JSON.stringify({ result }, bytes));
  } catch (err) {
    console.log(JSON.stringify({ error: { code: err.code, message: err.message, details: err.details } }));
    process.exitCode = 1;
  }
})();
