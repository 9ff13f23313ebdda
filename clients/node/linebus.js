// A minimal linebus client for Node.js, written from docs/PROTOCOL.md alone:
// call(endpoint, service, command, args, timeoutS) and subscribe(endpoint, prefixes).
// On a secured line (§18) it takes its keys from the environment as the Python client does.
"use strict";
const zmq = require("zeromq");
const { encode, decode } = require("@msgpack/msgpack");
const crypto = require("crypto");
const fs = require("fs");

const VERSION = 1;
const KIND = { REQUEST: 1, PROGRESS: 2, REPLY: 3, ERROR: 4, EVENT: 9 };
const prefix = crypto.randomBytes(6).toString("hex");
let counter = 0;

class LinebusError extends Error {
  constructor(code, message, details) {
    super(`[${code}] ${message}`);
    this.code = code;
    this.details = details;
  }
}

// --- CURVE (§18) ------------------------------------------------------------------------
// Our key: LINEBUS_KEY_FILE (a ZeroMQ secret certificate) or LINEBUS_KEY (Z85 secret). The
// broker's: LINEBUS_BROKER_KEY_FILE (its public certificate) or LINEBUS_BROKER_KEY (Z85). None
// set: plaintext. A key set but unusable, or one half without the other, is an error: never a
// fall-back to plaintext.

const Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

function z85Decode(text, source) {
  if (typeof text !== "string" || text.length !== 40) {
    throw new LinebusError("config_error", `${source}: not a 40-character Z85 key`, { source });
  }
  const out = Buffer.alloc(32);
  for (let i = 0; i < 8; i++) {
    let value = 0;
    for (const char of text.slice(i * 5, i * 5 + 5)) {
      const digit = Z85.indexOf(char);
      if (digit < 0) throw new LinebusError("config_error", `${source}: not a Z85 key`, { source });
      value = value * 85 + digit;
    }
    out.writeUInt32BE(value >>> 0, i * 4);
  }
  return out;
}

function z85Encode(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 4) {
    let value = bytes.readUInt32BE(i);
    let chunk = "";
    for (let j = 0; j < 5; j++, value = Math.floor(value / 85)) chunk = Z85[value % 85] + chunk;
    text += chunk;
  }
  return text;
}

const X25519_PKCS8 = Buffer.from("302e020100300506032b656e04220420", "hex"); // + the 32 raw bytes

// The public half of a Z85 secret (Curve25519, as zmq_curve_public does).
function publicOf(secretZ85, source) {
  const pkcs8 = Buffer.concat([X25519_PKCS8, z85Decode(secretZ85, source)]);
  const secret = crypto.createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" });
  return z85Encode(crypto.createPublicKey(secret).export({ format: "der", type: "spki" }).subarray(-32));
}

function certificateField(path, field) {
  let text;
  try {
    text = fs.readFileSync(path, "utf8");
  } catch (err) {
    throw new LinebusError("config_error", `${path}: cannot read the key file (${err.code})`, { source: path });
  }
  const match = text.match(new RegExp(`^\\s*${field}\\s*=\\s*"(.{40})"`, "m"));
  if (!match) throw new LinebusError("config_error", `${path}: no ${field} in this certificate`, { source: path });
  return match[1];
}

// {serverKey, publicKey, secretKey} (Z85) from the environment, or null for plaintext.
function curveKeys(env = process.env) {
  const own = env.LINEBUS_KEY_FILE || env.LINEBUS_KEY;
  const broker = env.LINEBUS_BROKER_KEY_FILE || env.LINEBUS_BROKER_KEY;
  if (!own && !broker) return null;
  if (!own || !broker) {
    const missing = own ? "LINEBUS_BROKER_KEY_FILE" : "LINEBUS_KEY_FILE";
    throw new LinebusError("config_error", `one key is set without the other: set ${missing}`, {});
  }
  let publicKey, secretKey;
  if (env.LINEBUS_KEY_FILE) {
    secretKey = certificateField(env.LINEBUS_KEY_FILE, "secret-key");
    publicKey = certificateField(env.LINEBUS_KEY_FILE, "public-key");
  } else {
    secretKey = env.LINEBUS_KEY;
    publicKey = publicOf(secretKey, "$LINEBUS_KEY");
  }
  const serverKey = env.LINEBUS_BROKER_KEY_FILE
    ? certificateField(env.LINEBUS_BROKER_KEY_FILE, "public-key")
    : env.LINEBUS_BROKER_KEY;
  z85Decode(serverKey, "the broker's key");
  return { serverKey, publicKey, secretKey };
}

// Connect `sock` to `endpoint`, under CURVE when keys are configured. Returns a function that
// tells whether the broker refused our key (then the socket is closed: libzmq does not retry).
function connect(sock, endpoint) {
  const keys = curveKeys();
  let refused = null;
  if (keys) {
    sock.curveServerKey = keys.serverKey;
    sock.curvePublicKey = keys.publicKey;
    sock.curveSecretKey = keys.secretKey;
    sock.events.on("handshake:error:auth", () => {
      refused = new LinebusError(
        "unauthenticated",
        `the broker at ${endpoint} refused this client's key ${keys.publicKey}`,
        { endpoint, key: keys.publicKey },
      );
      sock.close();
    });
  }
  sock.connect(endpoint);
  return () => refused;
}

// Send one request and wait for its reply; progress updates go to onProgress.
async function call(endpoint, service, command, args = {}, timeoutS = 10, onProgress = null) {
  const sock = new zmq.Dealer({ linger: 0, receiveTimeout: Math.round((timeoutS + 0.25) * 1000) });
  const refused = connect(sock, endpoint);
  const msgId = `${prefix}-${++counter}`;
  try {
    try {
      await sock.send([encode([VERSION, KIND.REQUEST, msgId, service, command, timeoutS, encode(args)])]);
    } catch (err) {
      throw refused() || err;
    }
    for (;;) {
      let frames;
      try {
        frames = await sock.receive();
      } catch (err) {
        if (refused()) throw refused();
        throw new LinebusError("deadline_exceeded", `no answer from ${endpoint} within ${timeoutS} s`, {});
      }
      const header = decode(frames[0]);
      if (header[2] !== msgId) continue;
      if (header[1] === KIND.PROGRESS) {
        if (onProgress) onProgress(decode(header[3]));
      } else if (header[1] === KIND.REPLY) {
        return header[3].length ? decode(header[3]) : null;
      } else if (header[1] === KIND.ERROR) {
        throw new LinebusError(header[3], header[4], header[5]);
      }
    }
  } finally {
    if (!sock.closed) sock.close();
  }
}

// Yield {topic, src, epoch, seq, ts, data, missed} for events whose topic starts with a prefix.
async function* subscribe(endpoint, prefixes) {
  const sock = new zmq.Subscriber({ linger: 0 });
  const refused = connect(sock, endpoint);
  for (const p of prefixes.length ? prefixes : [""]) sock.subscribe(p);
  const last = new Map();
  try {
    for await (const [frame] of sock) {
      const nul = frame.indexOf(0);
      const topic = frame.subarray(0, nul).toString();
      if (topic.startsWith("_probe.")) continue;
      const [v, kind, src, epoch, seq, ts, data] = decode(frame.subarray(nul + 1));
      if (v !== VERSION || kind !== KIND.EVENT) continue;
      const prev = last.get(topic);
      const missed = prev && prev.epoch === epoch && seq > prev.seq + 1 ? seq - prev.seq - 1 : 0;
      last.set(topic, { epoch, seq });
      yield { topic, src, epoch, seq, ts, data, missed };
    }
    if (refused()) throw refused();
  } catch (err) {
    throw refused() || err;
  } finally {
    if (!sock.closed) sock.close();
  }
}

module.exports = { call, subscribe, curveKeys, LinebusError };
