// linebus wire protocol version 1 (docs/PROTOCOL.md): building and reading messages, no sockets.
//
// Command channel: a message is a header frame (a msgpack array [version, kind, ...], §5) and
// zero or more bulk frames (§4). Arguments, results and progress data travel as a msgpack `bin`
// inside the header (the payload); byte strings of 64 KiB and more are lifted into bulk frames
// and referenced from the payload by an ext-1 value. Event channel: one frame,
// topic NUL msgpack([1, 9, src, epoch, seq, ts, data]) (§9).
"use strict";

const crypto = require("crypto");
const { Ext, Malformed, pack, unpack, unpackHeader } = require("./msgpack");
const { BadRequest, UnsupportedVersion } = require("./errors");

const VERSION = 1;
const SUPPORTED_VERSIONS = Object.freeze([1]);
/** Message kinds (§5); the number is what travels. */
const Kind = Object.freeze({
  REQUEST: 1,
  PROGRESS: 2,
  REPLY: 3,
  ERROR: 4,
  CANCEL: 5,
  READY: 6,
  HEARTBEAT: 7,
  DISCONNECT: 8,
  EVENT: 9,
  HELLO: 10,
});
const KIND_NAMES = Object.freeze(Object.fromEntries(Object.entries(Kind).map(([k, v]) => [v, k.toLowerCase()])));
/** Elements in each kind's header layout (§5); fewer is bad_request, more are ignored (§12). */
const ARITY = Object.freeze({ 1: 7, 2: 4, 3: 4, 4: 6, 5: 3, 6: 4, 7: 2, 8: 3, 10: 4 });
/** The kinds bulk frames may follow (§3); after any other they are bad_request. */
const BULK_KINDS = new Set([Kind.REQUEST, Kind.PROGRESS, Kind.REPLY]);

/** msgpack ext type of a bulk-frame reference; its data is the 1-based frame index, uint32 BE. */
const BULK_EXT = 1;
/** Byte strings at least this long travel as bulk frames instead of inline bin (§4). */
const BULK_THRESHOLD = 64 * 1024;
/** Containers deep into a payload that byte strings are still lifted from (§4). */
const BULK_DEPTH = 4;
/** A header frame larger than this is refused (§11). */
const MAX_HEADER_BYTES = 1024 * 1024;

const DEFAULT_COMMAND_ENDPOINT = "tcp://127.0.0.1:7750";
const DEFAULT_SUBSCRIBE_ENDPOINT = "tcp://127.0.0.1:7752";
const SERVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

function bad(reason) {
  return new BadRequest(`malformed message: ${reason}`, { reason });
}

// --- payloads and bulk frames (§4) ----------------------------------------------------------

function isBytes(value) {
  return value instanceof Uint8Array;
}

function lift(value, frames, depth) {
  if (isBytes(value)) {
    if (value.byteLength < BULK_THRESHOLD) return value;
    frames.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
    const index = Buffer.alloc(4);
    index.writeUInt32BE(frames.length, 0);
    return new Ext(BULK_EXT, index);
  }
  if (depth <= 0 || value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map((item) => lift(item, frames, depth - 1));
  if (value instanceof Map) return new Map([...value].map(([k, v]) => [k, lift(v, frames, depth - 1)]));
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return value; // the encoder names what it cannot encode
  const out = {};
  for (const key of Object.keys(value)) {
    Object.defineProperty(out, key, { value: lift(value[key], frames, depth - 1), enumerable: true });
  }
  return out;
}

/**
 * Encode a payload value, lifting byte strings of BULK_THRESHOLD bytes or more that are the value
 * itself or lie within BULK_DEPTH levels of arrays/maps into bulk frames, numbered in order.
 * @param {unknown} value
 * @returns {{payload: Buffer, frames: Buffer[]}}
 */
function packValue(value) {
  const frames = [];
  const payload = pack(lift(value, frames, BULK_DEPTH));
  return { payload, frames };
}

/**
 * Decode a payload, resolving bulk references against `frames` (the frames after the header).
 * A zero-length payload is nil (§4).
 * @param {Uint8Array} payload
 * @param {Uint8Array[]} [frames]
 * @throws {BadRequest} not exactly one msgpack value, or a bad reference
 */
function unpackValue(payload, frames = []) {
  if (payload.byteLength === 0) return null;
  const extHook = (type, data) => {
    if (type !== BULK_EXT) throw new Malformed("ext_type", `ext type ${type} is not a bulk reference`);
    if (data.length !== 4) {
      throw new Malformed("bulk_reference", `a bulk reference holds 4 bytes, this one ${data.length}`);
    }
    const index = data.readUInt32BE(0);
    if (index < 1 || index > frames.length) {
      throw new Malformed("bulk_reference", `bulk reference ${index} but the message has ${frames.length} bulk frames`);
    }
    const frame = frames[index - 1];
    return Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
  };
  return unpack(payload, { extHook, what: "payload" });
}

// --- command channel: building --------------------------------------------------------------

function message(header, frames = []) {
  return [pack(header), ...frames];
}

/**
 * REQUEST `[1, 1, msgId, service, command, ttlS, args]` and its bulk frames.
 * @param {string} msgId @param {string} service @param {string} command
 * @param {number | null} ttlS seconds remaining (relative), or null for the broker's default
 * @param {Record<string, unknown> | null} [args]
 */
function encodeRequest(msgId, service, command, ttlS, args) {
  const { payload, frames } = packValue(args ?? {});
  return message([VERSION, Kind.REQUEST, msgId, service, command, ttlS, payload], frames);
}

/** PROGRESS `[1, 2, msgId, data]` and its bulk frames. */
function encodeProgress(msgId, data) {
  const { payload, frames } = packValue(data);
  return message([VERSION, Kind.PROGRESS, msgId, payload], frames);
}

/** REPLY `[1, 3, msgId, result]` and its bulk frames. */
function encodeReply(msgId, result) {
  const { payload, frames } = packValue(result);
  return message([VERSION, Kind.REPLY, msgId, payload], frames);
}

/** ERROR `[1, 4, msgId, code, message, details]`. */
function encodeError(msgId, code, text, details = {}) {
  return message([VERSION, Kind.ERROR, msgId, code, text, details ?? {}]);
}

/** CANCEL `[1, 5, msgId]`. */
function encodeCancel(msgId) {
  return message([VERSION, Kind.CANCEL, msgId]);
}

/** READY `[1, 6, service, info]` (actors only). */
function encodeReady(service, info) {
  return message([VERSION, Kind.READY, service, info]);
}

/** HEARTBEAT `[1, 7]` (actors only: a client MUST NOT send it, §8). */
function encodeHeartbeat() {
  return message([VERSION, Kind.HEARTBEAT]);
}

/** DISCONNECT `[1, 8, reason]`. */
function encodeDisconnect(reason) {
  return message([VERSION, Kind.DISCONNECT, reason]);
}

/** HELLO `[1, 10, versions, info]` (§12). */
function encodeHello(versions, info) {
  return message([VERSION, Kind.HELLO, versions, info]);
}

// --- command channel: reading ---------------------------------------------------------------

function typeName(value) {
  if (value === null) return "nil";
  if (Buffer.isBuffer(value)) return "bin";
  if (Array.isArray(value)) return "array";
  if (typeof value === "object") return "map";
  if (typeof value === "number") return Number.isInteger(value) ? "int" : "float";
  return typeof value === "bigint" ? "int" : typeof value;
}

function isMap(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value) && !Buffer.isBuffer(value);
}

function isInt(value, floats, index) {
  return (Number.isInteger(value) || typeof value === "bigint") && !floats.has(index);
}

function expect(header, index, name, ok, expected) {
  if (!ok(header[index])) throw bad(`${name} ${expected}, got ${typeName(header[index])}`);
  return header[index];
}

const str = (v) => typeof v === "string";
const bin = (v) => Buffer.isBuffer(v);

/**
 * Decode a command-channel message (header frame and bulk frames, no routing frames) into
 * `{kind, header, ...fields}` with the fields of its kind (§5) named in camelCase; payloads stay
 * encoded (`payload`) with `frames` kept for `unpackValue`. The checks and their order are §5's.
 *
 * @param {Uint8Array[]} frames
 * @throws {BadRequest | UnsupportedVersion}
 */
function decode(frames) {
  if (!frames || frames.length === 0) throw bad("empty message");
  const frame = frames[0];
  if (frame.byteLength > MAX_HEADER_BYTES) {
    throw new BadRequest(
      `header frame of ${frame.byteLength} bytes exceeds ${MAX_HEADER_BYTES}; send large data as bulk frames`,
      { reason: "header_too_large", size: frame.byteLength },
    );
  }
  let parsed;
  try {
    parsed = unpackHeader(frame);
  } catch (err) {
    if (err instanceof BadRequest) throw bad(err.details.reason);
    throw err;
  }
  const { value: header, floats } = parsed;
  // §5's order of checks: an array with an element; the version an integer, then 1 (so [2] is
  // unsupported_version: the version comes before the length); a command-channel kind; the
  // kind's layout; then the bulk-frame rule of §3.
  if (!Array.isArray(header) || header.length === 0) throw bad("header must be a msgpack array [version, kind, ...]");
  const version = header[0];
  if (!isInt(version, floats, 0)) throw bad(`header[0] must be the protocol version (an integer), got ${typeName(version)}`);
  if (version !== VERSION) {
    throw new UnsupportedVersion(`protocol version ${version} is not supported (supported: [1])`, {
      supported: [...SUPPORTED_VERSIONS],
    });
  }
  if (header.length < 2) throw bad("header must be a msgpack array [version, kind, ...]");
  const kind = header[1];
  if (!isInt(kind, floats, 1) || !(kind in ARITY)) {
    throw bad(kind === Kind.EVENT ? "events go to the publish endpoint, not the command endpoint" : `unknown message kind ${String(kind)}`);
  }
  const name = KIND_NAMES[kind];
  if (header.length < ARITY[kind]) {
    throw bad(`${name.toUpperCase()} header needs ${ARITY[kind]} elements, got ${header.length}`);
  }
  const out = { kind: name, header };
  const bulk = frames.slice(1);
  switch (kind) {
    case Kind.REQUEST:
      expect(header, 5, "ttl_s", (v) => v === null || (typeof v === "number" && Number.isFinite(v)), "must be a finite number or nil");
      out.msgId = expect(header, 2, "msg_id", str, "must be a string");
      out.service = expect(header, 3, "service", str, "must be a string");
      out.command = expect(header, 4, "command", str, "must be a string");
      out.ttlS = header[5];
      out.payload = expect(header, 6, "args", bin, "must be msgpack bin");
      out.frames = bulk;
      break;
    case Kind.PROGRESS:
    case Kind.REPLY:
      out.msgId = expect(header, 2, "msg_id", str, "must be a string");
      out.payload = expect(header, 3, "data", bin, "must be msgpack bin");
      out.frames = bulk;
      break;
    case Kind.ERROR:
      out.msgId = expect(header, 2, "msg_id", str, "must be a string");
      out.code = expect(header, 3, "code", str, "must be a string");
      out.message = expect(header, 4, "message", str, "must be a string");
      out.details = expect(header, 5, "details", isMap, "must be a map");
      break;
    case Kind.CANCEL:
      out.msgId = expect(header, 2, "msg_id", str, "must be a string");
      break;
    case Kind.READY:
      out.service = expect(header, 2, "service", str, "must be a string");
      out.info = expect(header, 3, "info", isMap, "must be a map");
      break;
    case Kind.DISCONNECT:
      out.reason = expect(header, 2, "reason", str, "must be a string");
      break;
    case Kind.HELLO:
      out.versions = expect(header, 2, "HELLO versions", (v) => Array.isArray(v) && v.every(Number.isInteger), "must be an array of integers");
      out.info = expect(header, 3, "info", isMap, "must be a map");
      break;
    default: // HEARTBEAT: nothing after the kind
      break;
  }
  if (bulk.length && !BULK_KINDS.has(kind)) {
    throw bad(`${name.toUpperCase()} carries no bulk frames, got ${bulk.length}`);
  }
  return out;
}

/**
 * The msg_id of a header an answer is routed by: element 2 when it is a string, else null.
 * For a message `decode` refused, to tell whose request the bad answer was.
 * @param {Uint8Array} frame
 */
function peekMsgId(frame) {
  try {
    const header = unpackHeader(frame).value;
    return Array.isArray(header) && typeof header[2] === "string" ? header[2] : null;
  } catch {
    return null;
  }
}

// --- event channel (§9) ---------------------------------------------------------------------

/**
 * Build an event frame `topic NUL msgpack([1, 9, src, epoch, seq, ts, data])`.
 * @param {string} topic @param {string} src @param {number} epoch @param {number} seq
 * @param {number} ts Unix seconds @param {unknown} data
 */
function encodeEvent(topic, src, epoch, seq, ts, data) {
  if (topic.includes("\0")) throw new TypeError("an event topic cannot contain NUL");
  return Buffer.concat([Buffer.from(`${topic}\0`, "utf8"), pack([VERSION, Kind.EVENT, src, epoch, seq, ts, data])]);
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Decode an event frame into `{topic, src, epoch, seq, ts, data, body}`, with §9's checks in
 * order: a NUL; the topic valid UTF-8; the rest one msgpack value under §4's rules; an array of
 * at least 7 elements, version 1, kind 9; src a str, epoch and seq unsigned integers, ts a number.
 * @param {Uint8Array} frame
 * @throws {BadRequest} not a well-formed version-1 event
 */
function decodeEvent(frame) {
  const buf = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
  const sep = buf.indexOf(0);
  if (sep < 0) throw bad("event frame has no NUL after the topic");
  let topic;
  try {
    topic = utf8.decode(buf.subarray(0, sep));
  } catch {
    throw bad("event topic is not valid UTF-8");
  }
  let parsed;
  try {
    parsed = unpackHeader(buf.subarray(sep + 1), "event body");
  } catch (err) {
    if (err instanceof BadRequest) throw bad(err.details.reason);
    throw err;
  }
  const { value: body, floats } = parsed;
  if (!Array.isArray(body) || body.length < 7 || !isInt(body[0], floats, 0) || body[0] !== VERSION || !isInt(body[1], floats, 1) || body[1] !== Kind.EVENT) {
    throw bad("event body must be [1, 9, src, epoch, seq, ts, data]");
  }
  const [, , src, epoch, seq, ts, data] = body;
  const uint = (v, index) => isInt(v, floats, index) && v >= 0;
  if (typeof src !== "string" || !uint(epoch, 3) || !uint(seq, 4) || typeof ts !== "number") {
    throw bad(
      `event src must be a str, epoch and seq unsigned integers, ts a number; got ${[src, epoch, seq, ts].map(typeName).join(", ")}`,
    );
  }
  return { topic, src, epoch, seq, ts, data, body };
}

// --- names and ids --------------------------------------------------------------------------

/** Whether `name` is a valid service name (§5). */
function isServiceName(name) {
  return typeof name === "string" && SERVICE_NAME.test(name);
}

/** A random 48-bit hex prefix for a client's msg_ids (§6). */
function newIdPrefix() {
  return crypto.randomBytes(6).toString("hex");
}

module.exports = {
  VERSION,
  SUPPORTED_VERSIONS,
  Kind,
  BULK_EXT,
  BULK_THRESHOLD,
  BULK_DEPTH,
  MAX_HEADER_BYTES,
  BULK_KINDS,
  DEFAULT_COMMAND_ENDPOINT,
  DEFAULT_SUBSCRIBE_ENDPOINT,
  packValue,
  unpackValue,
  encodeRequest,
  encodeProgress,
  encodeReply,
  encodeError,
  encodeCancel,
  encodeReady,
  encodeHeartbeat,
  encodeDisconnect,
  encodeHello,
  decode,
  peekMsgId,
  encodeEvent,
  decodeEvent,
  isServiceName,
  newIdPrefix,
};
