// MessagePack as linebus uses it (docs/PROTOCOL.md §4), encoder and strict decoder.
//
// Why not a general msgpack library: §4 asks for things they do not give together. Strings
// must be valid UTF-8 (libraries replace bad bytes with U+FFFD instead of refusing them), map
// keys must be strings, ext types other than the bulk reference are errors, a payload must be
// exactly one value (trailing bytes refused), and encoders use the smallest representation so
// the golden vectors come out byte for byte. This file does exactly that and nothing else.
"use strict";

const { BadRequest } = require("./errors");

/** An ext value (type and raw data) as it stands in a value, e.g. a bulk-frame reference. */
class Ext {
  /**
   * @param {number} type ext type code (-128..127)
   * @param {Uint8Array} data the ext's raw bytes
   */
  constructor(type, data) {
    this.type = type;
    this.data = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  }
}

// --- encoding -------------------------------------------------------------------------------

class Writer {
  constructor() {
    this.chunks = [];
  }
  bytes(...values) {
    this.chunks.push(Buffer.from(values));
  }
  buffer(buf) {
    this.chunks.push(buf);
  }
  head(byte, size, length) {
    const buf = Buffer.alloc(1 + size);
    buf[0] = byte;
    if (size === 1) buf.writeUInt8(length, 1);
    else if (size === 2) buf.writeUInt16BE(length, 1);
    else buf.writeUInt32BE(length, 1);
    this.chunks.push(buf);
  }
  result() {
    return Buffer.concat(this.chunks);
  }
}

function writeInt(w, value) {
  if (value >= 0) {
    if (value < 0x80) return w.bytes(value);
    if (value < 0x100) return w.bytes(0xcc, value);
    if (value < 0x10000) return w.head(0xcd, 2, value);
    if (value < 0x100000000) return w.head(0xce, 4, value);
    const buf = Buffer.alloc(9);
    buf[0] = 0xcf;
    buf.writeBigUInt64BE(BigInt(value), 1);
    return w.buffer(buf);
  }
  if (value >= -32) return w.bytes(value & 0xff);
  if (value >= -0x80) return w.bytes(0xd0, value & 0xff);
  if (value >= -0x8000) {
    const buf = Buffer.alloc(3);
    buf[0] = 0xd1;
    buf.writeInt16BE(value, 1);
    return w.buffer(buf);
  }
  if (value >= -0x80000000) {
    const buf = Buffer.alloc(5);
    buf[0] = 0xd2;
    buf.writeInt32BE(value, 1);
    return w.buffer(buf);
  }
  const buf = Buffer.alloc(9);
  buf[0] = 0xd3;
  buf.writeBigInt64BE(BigInt(value), 1);
  return w.buffer(buf);
}

function writeBigInt(w, value) {
  if (value >= -(2n ** 63n) && value < 2n ** 64n) {
    if (value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER)) {
      return writeInt(w, Number(value));
    }
    const buf = Buffer.alloc(9);
    if (value >= 0n) {
      buf[0] = 0xcf;
      buf.writeBigUInt64BE(value, 1);
    } else {
      buf[0] = 0xd3;
      buf.writeBigInt64BE(value, 1);
    }
    return w.buffer(buf);
  }
  throw new TypeError(`cannot encode the integer ${value} on the bus: msgpack integers are 64-bit`);
}

function writeString(w, text) {
  const data = Buffer.from(text, "utf8");
  const n = data.length;
  if (n < 32) w.bytes(0xa0 | n);
  else if (n < 0x100) w.head(0xd9, 1, n);
  else if (n < 0x10000) w.head(0xda, 2, n);
  else w.head(0xdb, 4, n);
  w.buffer(data);
}

function writeBin(w, data) {
  const n = data.byteLength;
  if (n < 0x100) w.head(0xc4, 1, n);
  else if (n < 0x10000) w.head(0xc5, 2, n);
  else w.head(0xc6, 4, n);
  w.buffer(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
}

function writeExt(w, ext) {
  const n = ext.data.length;
  const fixed = { 1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8 }[n];
  if (fixed) w.bytes(fixed, ext.type & 0xff);
  else if (n < 0x100) w.bytes(0xc7, n, ext.type & 0xff);
  else if (n < 0x10000) {
    w.head(0xc8, 2, n);
    w.bytes(ext.type & 0xff);
  } else {
    w.head(0xc9, 4, n);
    w.bytes(ext.type & 0xff);
  }
  w.buffer(ext.data);
}

function writeLength(w, fix, fixLimit, byte16, byte32, n) {
  if (n < fixLimit) w.bytes(fix | n);
  else if (n < 0x10000) w.head(byte16, 2, n);
  else w.head(byte32, 4, n);
}

function writeValue(w, value, depth) {
  if (depth > MAX_DEPTH) throw new TypeError(`cannot encode a value nested over ${MAX_DEPTH} levels`);
  if (value === null || value === undefined) return w.bytes(0xc0);
  switch (typeof value) {
    case "boolean":
      return w.bytes(value ? 0xc3 : 0xc2);
    case "number":
      if (Number.isSafeInteger(value)) return writeInt(w, value);
      {
        // Floats are float64 (§4); so are integers beyond 2^53, which a number cannot hold exactly.
        const buf = Buffer.alloc(9);
        buf[0] = 0xcb;
        buf.writeDoubleBE(value, 1);
        return w.buffer(buf);
      }
    case "bigint":
      return writeBigInt(w, value);
    case "string":
      return writeString(w, value);
    default:
      break;
  }
  if (value instanceof Uint8Array) return writeBin(w, value);
  if (value instanceof Ext) return writeExt(w, value);
  if (Array.isArray(value)) {
    writeLength(w, 0x90, 16, 0xdc, 0xdd, value.length);
    for (const item of value) writeValue(w, item, depth + 1);
    return undefined;
  }
  if (value instanceof Map) {
    writeLength(w, 0x80, 16, 0xde, 0xdf, value.size);
    for (const [key, item] of value) {
      if (typeof key !== "string") {
        throw new TypeError(`cannot encode a map key of type ${typeof key}: map keys are strings (§4)`);
      }
      writeString(w, key);
      writeValue(w, item, depth + 1);
    }
    return undefined;
  }
  const proto = Object.getPrototypeOf(value);
  if (typeof value === "object" && (proto === Object.prototype || proto === null)) {
    const keys = Object.keys(value);
    writeLength(w, 0x80, 16, 0xde, 0xdf, keys.length);
    for (const key of keys) {
      writeString(w, key);
      writeValue(w, value[key], depth + 1);
    }
    return undefined;
  }
  const what = value?.constructor?.name ?? typeof value;
  throw new TypeError(
    `cannot encode ${what} on the bus (use null, boolean, number, bigint, string, Uint8Array, array, plain object)`,
  );
}

/**
 * Encode one value as msgpack in linebus's canonical form (smallest integers, float64, str/bin).
 * @param {unknown} value
 * @returns {Buffer}
 */
function pack(value) {
  const w = new Writer();
  writeValue(w, value, 0);
  return w.result();
}

// --- decoding -------------------------------------------------------------------------------

/** Nesting the decoder accepts (msgpack-python's limit too). */
const MAX_DEPTH = 1024;
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** A breach of §4's msgpack rules; `problem` is the §4 payload problem code. */
class Malformed extends Error {
  /** @param {string} problem @param {string} message */
  constructor(problem, message) {
    super(message);
    this.problem = problem;
  }
}

class Reader {
  constructor(buf, extHook) {
    this.buf = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
    this.pos = 0;
    this.extHook = extHook;
  }
  take(n) {
    if (this.pos + n > this.buf.length) throw new Malformed("truncated", "ends in the middle of a value");
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  u8() {
    return this.take(1)[0];
  }
  u16() {
    return this.take(2).readUInt16BE(0);
  }
  u32() {
    return this.take(4).readUInt32BE(0);
  }
  str(n) {
    try {
      return utf8.decode(this.take(n));
    } catch (err) {
      if (err instanceof Malformed) throw err;
      throw new Malformed("invalid_utf8", "a string is not valid UTF-8");
    }
  }
  array(n, depth) {
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.value(depth + 1);
    return out;
  }
  map(n, depth) {
    const out = {};
    for (let i = 0; i < n; i++) {
      const start = this.buf[this.pos];
      const isStr = (start >= 0xa0 && start <= 0xbf) || (start >= 0xd9 && start <= 0xdb);
      const key = this.value(depth + 1);
      if (!isStr) throw new Malformed("map_key_not_str", `a map key is ${describe(key)}, not a string`);
      const item = this.value(depth + 1);
      // "__proto__" is an ordinary key on the wire: define it, do not let it set the prototype.
      Object.defineProperty(out, key, { value: item, enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
  ext(n) {
    const type = this.take(1).readInt8(0);
    return this.extHook(type, this.take(n));
  }
  value(depth) {
    if (depth > MAX_DEPTH) throw new Malformed("too_deep", `nested over ${MAX_DEPTH} levels`);
    const b = this.u8();
    if (b < 0x80) return b;
    if (b < 0x90) return this.map(b & 0x0f, depth);
    if (b < 0xa0) return this.array(b & 0x0f, depth);
    if (b < 0xc0) return this.str(b & 0x1f);
    if (b >= 0xe0) return b - 0x100;
    switch (b) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xc4:
        return Buffer.from(this.take(this.u8()));
      case 0xc5:
        return Buffer.from(this.take(this.u16()));
      case 0xc6:
        return Buffer.from(this.take(this.u32()));
      case 0xc7:
        return this.ext(this.u8());
      case 0xc8:
        return this.ext(this.u16());
      case 0xc9:
        return this.ext(this.u32());
      case 0xca:
        return this.take(4).readFloatBE(0);
      case 0xcb:
        return this.take(8).readDoubleBE(0);
      case 0xcc:
        return this.u8();
      case 0xcd:
        return this.u16();
      case 0xce:
        return this.u32();
      case 0xcf:
        return safe(this.take(8).readBigUInt64BE(0));
      case 0xd0:
        return this.take(1).readInt8(0);
      case 0xd1:
        return this.take(2).readInt16BE(0);
      case 0xd2:
        return this.take(4).readInt32BE(0);
      case 0xd3:
        return safe(this.take(8).readBigInt64BE(0));
      case 0xd4:
        return this.ext(1);
      case 0xd5:
        return this.ext(2);
      case 0xd6:
        return this.ext(4);
      case 0xd7:
        return this.ext(8);
      case 0xd8:
        return this.ext(16);
      case 0xd9:
        return this.str(this.u8());
      case 0xda:
        return this.str(this.u16());
      case 0xdb:
        return this.str(this.u32());
      case 0xdc:
        return this.array(this.u16(), depth);
      case 0xdd:
        return this.array(this.u32(), depth);
      case 0xde:
        return this.map(this.u16(), depth);
      case 0xdf:
        return this.map(this.u32(), depth);
      default:
        throw new Malformed("invalid_byte", `byte 0x${b.toString(16)} begins no msgpack value`);
    }
  }
}

// 64-bit integers: a number when exact, else a BigInt (never a silently rounded number).
function safe(big) {
  return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
}

function describe(value) {
  if (value === null) return "nil";
  if (Buffer.isBuffer(value)) return "bin";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "a map" : `a ${typeof value}`;
}

function refuseExt(type) {
  throw new Malformed("ext_type", `an ext value (type ${type}) is not allowed here`);
}

/**
 * Decode exactly one msgpack value from `buf` (trailing bytes, truncation, invalid UTF-8,
 * non-string map keys and ext types `extHook` refuses are errors).
 *
 * Returns the value, and with `floats: true` also the indexes of the top-level array's elements
 * that were encoded as floats (a header's version 1.0 is not version 1; §5 tells them apart).
 *
 * @param {Uint8Array} buf
 * @param {{extHook?: (type: number, data: Buffer) => unknown, what?: string}} [options]
 * @returns {unknown}
 * @throws {BadRequest} naming the problem (details `{reason}`)
 */
function unpack(buf, { extHook = refuseExt, what = "value" } = {}) {
  return unpackWith(buf, extHook, what).value;
}

/**
 * As `unpack`, for a header or an event body (no ext value allowed): also says which
 * top-level array elements were floats.
 * @param {Uint8Array} buf @param {string} [what] "header" or "event body", for messages
 * @returns {{value: unknown, floats: Set<number>}}
 */
function unpackHeader(buf, what = "header") {
  return unpackWith(buf, refuseExt, what, true);
}

function unpackWith(buf, extHook, what, headerFloats = false) {
  const reader = new Reader(buf, extHook);
  const floats = new Set();
  let value;
  try {
    const first = reader.buf[0];
    const n = first >= 0x90 && first <= 0x9f ? first & 0x0f : first === 0xdc ? -2 : first === 0xdd ? -4 : -1;
    if (headerFloats && n !== -1) {
      reader.pos = 1;
      const count = n >= 0 ? n : n === -2 ? reader.u16() : reader.u32();
      value = new Array(count);
      for (let i = 0; i < count; i++) {
        const b = reader.buf[reader.pos];
        if (b === 0xca || b === 0xcb) floats.add(i);
        value[i] = reader.value(1);
      }
    } else {
      value = reader.value(0);
    }
    if (reader.pos !== reader.buf.length) {
      throw new Malformed("trailing_bytes", `${reader.buf.length - reader.pos} bytes left over after the value`);
    }
  } catch (err) {
    if (err instanceof Malformed) {
      const message = `${what} is not valid msgpack: ${err.message}`;
      // Payloads: the details of §4 ({reason: "invalid_payload", problem}); elsewhere the
      // codec's {reason: text} (§10).
      const details = what === "payload" ? { reason: "invalid_payload", problem: err.problem } : { reason: message };
      throw new BadRequest(message, details);
    }
    throw err;
  }
  return { value, floats };
}

module.exports = { Ext, pack, unpack, unpackHeader, Malformed };
