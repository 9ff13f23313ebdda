// CURVE keys for a secured line (docs/PROTOCOL.md §18), found as the Python client finds them.
//
// Own key: LINEBUS_KEY_FILE (a ZeroMQ secret certificate, `NAME.key_secret`) or LINEBUS_KEY (the
// Z85 secret; the public half is derived from it). The broker's: LINEBUS_BROKER_KEY_FILE (its
// public certificate) or LINEBUS_BROKER_KEY (Z85). None set: plaintext. A key that is set but
// unusable, or one half without the other, is a ConfigError: never a fall-back to plaintext.
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const { ConfigError, Unauthenticated } = require("./errors");

const Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/**
 * The 32 bytes of a 40-character Z85 key.
 * @param {string} text @param {string} source where the key came from, for the error
 */
function z85Decode(text, source) {
  if (typeof text !== "string" || text.length !== 40) {
    throw new ConfigError(`${source}: not a 40-character Z85 key`, { source });
  }
  const out = Buffer.alloc(32);
  for (let i = 0; i < 8; i++) {
    let value = 0;
    for (const char of text.slice(i * 5, i * 5 + 5)) {
      const digit = Z85.indexOf(char);
      if (digit < 0) throw new ConfigError(`${source}: not a Z85 key (bad character)`, { source });
      value = value * 85 + digit;
    }
    if (value > 0xffffffff) throw new ConfigError(`${source}: not a Z85 key (out of range)`, { source });
    out.writeUInt32BE(value, i * 4);
  }
  return out;
}

/** The Z85 text of bytes whose length is a multiple of 4. @param {Uint8Array} bytes */
function z85Encode(bytes) {
  const buf = Buffer.from(bytes);
  let text = "";
  for (let i = 0; i < buf.length; i += 4) {
    let value = buf.readUInt32BE(i);
    let chunk = "";
    for (let j = 0; j < 5; j++, value = Math.floor(value / 85)) chunk = Z85[value % 85] + chunk;
    text += chunk;
  }
  return text;
}

const X25519_PKCS8 = Buffer.from("302e020100300506032b656e04220420", "hex"); // + the 32 raw bytes

/**
 * The public half (Z85) of a Z85 Curve25519 secret, as zmq_curve_public computes it.
 * @param {string} secretZ85 @param {string} [source]
 */
function publicOf(secretZ85, source = "the secret key") {
  const pkcs8 = Buffer.concat([X25519_PKCS8, z85Decode(secretZ85, source)]);
  const secret = crypto.createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" });
  return z85Encode(crypto.createPublicKey(secret).export({ format: "der", type: "spki" }).subarray(-32));
}

function certificateField(path, field) {
  let text;
  try {
    text = fs.readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(`${path}: cannot read the key file (${err.code})`, { source: path });
  }
  const match = text.match(new RegExp(`^\\s*${field}\\s*=\\s*"(.{40})"`, "m"));
  if (!match) throw new ConfigError(`${path}: no ${field} in this certificate`, { source: path });
  z85Decode(match[1], path);
  return match[1];
}

/**
 * @typedef {{serverKey: string, publicKey: string, secretKey: string}} CurveKeys
 * Z85 keys: the broker's public key, and this client's key pair.
 */

/**
 * The CURVE keys configured in `env` (LINEBUS_KEY_FILE / LINEBUS_KEY and LINEBUS_BROKER_KEY_FILE
 * / LINEBUS_BROKER_KEY), or null when none is set (a plaintext line).
 * @param {NodeJS.ProcessEnv} [env]
 * @returns {CurveKeys | null}
 * @throws {ConfigError} a key unreadable or malformed, or one half set without the other
 */
function curveKeys(env = process.env) {
  const own = env.LINEBUS_KEY_FILE || env.LINEBUS_KEY;
  const broker = env.LINEBUS_BROKER_KEY_FILE || env.LINEBUS_BROKER_KEY;
  if (!own && !broker) return null;
  if (!own || !broker) {
    const missing = own ? "LINEBUS_BROKER_KEY_FILE or LINEBUS_BROKER_KEY" : "LINEBUS_KEY_FILE or LINEBUS_KEY";
    throw new ConfigError(`one key is set without the other: set ${missing}`, { missing });
  }
  let publicKey;
  let secretKey;
  if (env.LINEBUS_KEY_FILE) {
    secretKey = certificateField(env.LINEBUS_KEY_FILE, "secret-key");
    publicKey = certificateField(env.LINEBUS_KEY_FILE, "public-key");
  } else {
    secretKey = env.LINEBUS_KEY;
    publicKey = publicOf(secretKey, "$LINEBUS_KEY");
  }
  let serverKey;
  if (env.LINEBUS_BROKER_KEY_FILE) {
    serverKey = certificateField(env.LINEBUS_BROKER_KEY_FILE, "public-key");
  } else {
    serverKey = env.LINEBUS_BROKER_KEY;
    z85Decode(serverKey, "$LINEBUS_BROKER_KEY");
  }
  return { serverKey, publicKey, secretKey };
}

/**
 * Make `sock` (not yet connected) a CURVE client when `keys` is set, and watch its handshake:
 * `onRefused` gets an Unauthenticated error at once when the broker refuses the key (libzmq
 * does not retry that connection, §18). Returns nothing; plaintext when `keys` is null.
 * @param {import("zeromq").Socket} sock
 * @param {CurveKeys | null} keys
 * @param {string} endpoint
 * @param {(error: Error) => void} onRefused
 */
function secure(sock, keys, endpoint, onRefused) {
  if (!keys) return;
  sock.curveServerKey = keys.serverKey;
  sock.curvePublicKey = keys.publicKey;
  sock.curveSecretKey = keys.secretKey;
  sock.events.on("handshake:error:auth", () => {
    onRefused(
      new Unauthenticated(`the broker at ${endpoint} refused this client's key ${keys.publicKey}`, {
        endpoint,
        key: keys.publicKey,
      }),
    );
  });
}

module.exports = { curveKeys, publicOf, z85Decode, z85Encode, secure };
