// The codec against every golden vector in tests/vectors/ (docs/PROTOCOL.md §15), read afresh
// on each run so new vectors are picked up without touching this file. LINEBUS_VECTORS names
// another directory.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const protocol = require("../lib/protocol");
const { LinebusError } = require("../lib/errors");

const DIR = process.env.LINEBUS_VECTORS || path.join(__dirname, "..", "..", "..", "tests", "vectors");
const VECTORS = fs
  .readdirSync(DIR)
  .filter((name) => name.endsWith(".json"))
  .sort()
  .map((name) => JSON.parse(fs.readFileSync(path.join(DIR, name), "utf8")));

// The vectors' JSON form: bytes as {"hex"}, ext values as {"ext", "hex"}.
function jsonable(value) {
  if (Buffer.isBuffer(value)) return { hex: value.toString("hex") };
  if (typeof value === "bigint") return Number(value);
  if (Array.isArray(value)) return value.map(jsonable);
  if (value !== null && typeof value === "object") {
    if (value.constructor?.name === "Ext") return { ext: value.type, hex: value.data.toString("hex") };
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, jsonable(v)]));
  }
  return value;
}

function fromJson(value) {
  if (Array.isArray(value)) return value.map(fromJson);
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "hex") return Buffer.from(value.hex, "hex");
    return Object.fromEntries(keys.map((k) => [k, fromJson(value[k])]));
  }
  return value;
}

function framesOf(vector) {
  return vector.frames_hex.map((hex) => Buffer.from(hex, "hex"));
}

// Decode a vector's frames into the vectors' `decoded` form.
function decodeVector(vector) {
  const frames = framesOf(vector);
  if (vector.channel === "event") {
    const e = protocol.decodeEvent(frames[0]);
    return jsonable({ kind: "event", body: e.body, topic: e.topic, src: e.src, epoch: e.epoch, seq: e.seq, ts: e.ts, data: e.data });
  }
  const m = protocol.decode(frames);
  const value = () => protocol.unpackValue(m.payload, m.frames);
  const out = { kind: m.kind, header: m.header };
  switch (m.kind) {
    case "request":
      Object.assign(out, { msg_id: m.msgId, service: m.service, command: m.command, ttl_s: m.ttlS, args: value() });
      break;
    case "progress":
      Object.assign(out, { msg_id: m.msgId, data: value() });
      break;
    case "reply":
      Object.assign(out, { msg_id: m.msgId, result: value() });
      break;
    case "error":
      Object.assign(out, { msg_id: m.msgId, code: m.code, message: m.message, details: m.details });
      break;
    case "cancel":
      out.msg_id = m.msgId;
      break;
    case "ready":
      Object.assign(out, { service: m.service, info: m.info });
      break;
    case "disconnect":
      out.reason = m.reason;
      break;
    case "hello":
      Object.assign(out, { versions: m.versions, info: m.info });
      break;
    default:
      break;
  }
  return jsonable(out);
}

// Encode a vector's `decoded` with the package's encoders.
function encodeVector(d) {
  const v = (key) => fromJson(d[key]);
  switch (d.kind) {
    case "request":
      return protocol.encodeRequest(d.msg_id, d.service, d.command, d.ttl_s, v("args"));
    case "progress":
      return protocol.encodeProgress(d.msg_id, v("data"));
    case "reply":
      return protocol.encodeReply(d.msg_id, v("result"));
    case "error":
      return protocol.encodeError(d.msg_id, d.code, d.message, v("details"));
    case "cancel":
      return protocol.encodeCancel(d.msg_id);
    case "ready":
      return protocol.encodeReady(d.service, v("info"));
    case "heartbeat":
      return protocol.encodeHeartbeat();
    case "disconnect":
      return protocol.encodeDisconnect(d.reason);
    case "hello":
      return protocol.encodeHello(d.versions, v("info"));
    case "event":
      return [protocol.encodeEvent(d.topic, d.src, d.epoch, d.seq, d.ts, v("data"))];
    default:
      throw new Error(`unknown kind ${d.kind} in a vector`);
  }
}

test("the vectors directory holds valid and invalid cases of every kind", () => {
  const kinds = new Set(VECTORS.filter((v) => v.error === null).map((v) => v.decoded.kind));
  assert.deepEqual([...kinds].sort(), ["cancel", "disconnect", "error", "event", "heartbeat", "hello", "progress", "ready", "reply", "request"]);
  assert.ok(VECTORS.some((v) => v.error !== null));
});

for (const vector of VECTORS) {
  if (vector.error === null) {
    test(`decodes ${vector.name}`, () => {
      assert.deepEqual(decodeVector(vector), vector.decoded);
    });
    if (!vector.decode_only) {
      test(`encodes ${vector.name}`, () => {
        const frames = encodeVector(vector.decoded).map((f) => Buffer.from(f).toString("hex"));
        assert.deepEqual(frames, vector.frames_hex);
      });
    }
  } else {
    test(`rejects ${vector.name} with ${vector.error.code} at ${vector.error.stage}`, () => {
      let stage = "decode";
      const error = (() => {
        try {
          stage = "decode";
          if (vector.channel === "event") {
            protocol.decodeEvent(framesOf(vector)[0]);
            return null;
          }
          const m = protocol.decode(framesOf(vector));
          stage = "value";
          if ("payload" in m) protocol.unpackValue(m.payload, m.frames);
          return null;
        } catch (err) {
          return err;
        }
      })();
      assert.ok(error instanceof LinebusError, `accepted, or failed with ${error}`);
      assert.equal(error.code, vector.error.code, error.message);
      assert.equal(stage, vector.error.stage, error.message);
    });
  }
}
