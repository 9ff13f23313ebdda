// The package without a line: error classes (§10), CURVE keys (§18), gap tracking (§9), bulk
// lifting (§4) and the checks a call makes before anything is sent.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const zmq = require("zeromq");
const linebus = require("..");
const { pack, unpack, Ext } = require("../lib/msgpack");
const protocol = require("../lib/protocol");
const { z85Decode, z85Encode } = require("../lib/keys");

test("every wire code of the Python client has its class here, and only those", () => {
  const python = process.env.LINEBUS_WIRE_CODES ? JSON.parse(process.env.LINEBUS_WIRE_CODES) : null;
  if (python) assert.deepEqual([...linebus.WIRE_CODES].sort(), [...python].sort());
  for (const code of linebus.WIRE_CODES) {
    const error = linebus.fromWire(code, "m", { k: 1 });
    assert.ok(error instanceof linebus.LinebusError && error instanceof Error);
    assert.equal(error.code, code);
    assert.equal(linebus.errorClass(code).code, code);
  }
});

test("the error hierarchy and retryable follow §10", () => {
  const is = (code, cls) => assert.ok(linebus.fromWire(code, "") instanceof cls, `${code} is a ${cls.name}`);
  is("unsupported_version", linebus.BadRequest);
  is("broker_unreachable", linebus.Unavailable);
  is("forbidden", linebus.PermissionDenied);
  is("unauthenticated", linebus.PermissionDenied);
  for (const code of ["device_unavailable", "device_timeout", "device_fault"]) is(code, linebus.DeviceError);
  const retryable = linebus.WIRE_CODES.filter((code) => linebus.fromWire(code, "").retryable).sort();
  assert.deepEqual(retryable, ["broker_unreachable", "busy", "device_unavailable", "unavailable"]);
  const fault = linebus.fromWire("device_fault", "FR_SendFile: NOT_EXIST", { device_code: "NOT_EXIST" });
  assert.deepEqual([fault.name, fault.message, fault.details.device_code], ["DeviceFault", "FR_SendFile: NOT_EXIST", "NOT_EXIST"]);
});

test("an unknown code is kept in a RemoteError, never a crash", () => {
  const error = linebus.fromWire("vendor_overheated", "too hot", { celsius: 90 });
  assert.ok(error instanceof linebus.RemoteError && error instanceof linebus.LinebusError);
  assert.deepEqual([error.code, error.remoteCode, error.retryable, error.details], ["vendor_overheated", "vendor_overheated", false, { celsius: 90 }]);
});

test("Z85 round-trips and a public key is derived from its secret as libzmq does", () => {
  const pair = zmq.curveKeyPair();
  assert.equal(z85Encode(z85Decode(pair.secretKey, "test")), pair.secretKey);
  assert.equal(linebus.publicOf(pair.secretKey), pair.publicKey);
  assert.throws(() => z85Decode("short", "$LINEBUS_KEY"), (e) => e instanceof linebus.ConfigError && /\$LINEBUS_KEY/.test(e.message));
  assert.throws(() => z85Decode("~".repeat(40), "k"), linebus.ConfigError);
});

test("keys: none is plaintext; one half alone, or an unreadable file, is a ConfigError", () => {
  assert.equal(linebus.curveKeys({}), null);
  const pair = zmq.curveKeyPair();
  const keys = linebus.curveKeys({ LINEBUS_KEY: pair.secretKey, LINEBUS_BROKER_KEY: pair.publicKey });
  assert.deepEqual(keys, { serverKey: pair.publicKey, publicKey: pair.publicKey, secretKey: pair.secretKey });
  assert.throws(() => linebus.curveKeys({ LINEBUS_KEY: pair.secretKey }), (e) => e instanceof linebus.ConfigError && /LINEBUS_BROKER_KEY/.test(e.message));
  assert.throws(
    () => linebus.curveKeys({ LINEBUS_KEY_FILE: "/nonexistent/me.key_secret", LINEBUS_BROKER_KEY: pair.publicKey }),
    (e) => e instanceof linebus.ConfigError && e.message.includes("/nonexistent/me.key_secret"),
  );
});

test("gap tracking follows the table of §9", () => {
  const tracker = new linebus.GapTracker();
  const frame = (topic, epoch, seq) => protocol.encodeEvent(topic, "fr1", epoch, seq, 1767225600.25, { seq });
  const missed = (topic, epoch, seq) => tracker.accept(frame(topic, epoch, seq)).missed;
  assert.equal(missed("fr1.a", 5, 3), 0); // first of the topic
  assert.equal(missed("fr1.a", 5, 4), 0); // in order
  assert.equal(missed("fr1.a", 5, 9), 4); // 5..8 lost
  assert.equal(missed("fr1.a", 5, 9), 0); // repeated
  assert.equal(missed("fr1.a", 5, 2), 0); // late: the last seen stays 9
  assert.equal(missed("fr1.a", 5, 10), 0); // so the next in order is no gap
  assert.equal(missed("fr1.b", 5, 7), 0); // topics are counted apart
  assert.equal(missed("fr1.a", 6, 50), 0); // a new epoch starts afresh
  assert.equal(missed("fr1.a", 6, 52), 1);
  assert.equal(tracker.missedTotal, 5);
  assert.equal(tracker.accept(frame("_probe.abc", 1, 0)), null); // probes are not events
  assert.equal(tracker.accept(Buffer.from("fr1.a\0\xc1", "latin1")), null);
  assert.equal(tracker.accept(Buffer.from("no nul at all")), null);
  assert.equal(tracker.malformed, 2);
  const event = tracker.accept(frame("fr1.c", 1, 1));
  assert.deepEqual(event, { topic: "fr1.c", src: "fr1", epoch: 1, seq: 1, ts: 1767225600.25, data: { seq: 1 }, missed: 0 });
});

test("bulk: bytes of 64 KiB and more within 4 levels become frames; smaller or deeper stay inline", () => {
  const big = Buffer.alloc(protocol.BULK_THRESHOLD, 1);
  const nest = (value, levels) => (levels === 0 ? value : { v: nest(value, levels - 1) });
  assert.equal(protocol.packValue(nest(big, 4)).frames.length, 1);
  assert.equal(protocol.packValue(nest(big, 5)).frames.length, 0);
  assert.equal(protocol.packValue(big).frames.length, 1);
  assert.equal(protocol.packValue({ small: big.subarray(1) }).frames.length, 0);
  const { payload, frames } = protocol.packValue({ a: big, b: [big, "x"] });
  assert.equal(frames.length, 2);
  assert.deepEqual(protocol.unpackValue(payload, frames), { a: big, b: [big, "x"] });
});

test("msgpack: 64-bit integers beyond 2^53 are BigInt, never rounded; bad input names the problem", () => {
  assert.equal(unpack(pack(2n ** 63n + 5n)), 2n ** 63n + 5n);
  assert.equal(unpack(pack(-(2n ** 62n))), -(2n ** 62n));
  assert.equal(unpack(pack(Number.MAX_SAFE_INTEGER)), Number.MAX_SAFE_INTEGER);
  assert.deepEqual(unpack(pack({ __proto__key: 1, ["__proto__"]: 2 })), JSON.parse('{"__proto__key": 1, "__proto__": 2}'));
  const refused = (bytes, pattern) =>
    assert.throws(() => unpack(Buffer.from(bytes)), (e) => e instanceof linebus.BadRequest && pattern.test(e.message));
  refused([0x01, 0x02], /1 bytes left over/);
  refused([0xa2, 0xc3, 0x28], /UTF-8/);
  refused([0x81, 0x01, 0x02], /map key is a number/);
  refused([0xd6, 0x02, 0, 0, 0, 1], /ext value \(type 2\)/);
  refused([0xc1], /0xc1 begins no msgpack value/);
  refused([0x92, 0x01], /middle of a value/);
  assert.throws(() => pack(new Date()), /cannot encode Date/);
  assert.throws(() => pack(new Map([[1, 2]])), /map key of type number/);
  assert.ok(pack(new Ext(1, Buffer.from([0, 0, 0, 1]))).equals(Buffer.from("d60100000001", "hex")));
});

test("a payload that breaks §4 is bad_request with details {reason: invalid_payload, problem}", () => {
  const problem = (hex, frames = []) => {
    try {
      protocol.unpackValue(Buffer.from(hex, "hex"), frames);
    } catch (err) {
      assert.ok(err instanceof linebus.BadRequest);
      assert.match(err.message, /^payload is not valid msgpack: /);
      assert.equal(err.details.reason, "invalid_payload");
      return err.details.problem;
    }
    return assert.fail("accepted");
  };
  assert.equal(problem("92"), "truncated");
  assert.equal(problem("0101"), "trailing_bytes");
  assert.equal(problem("c1"), "invalid_byte");
  assert.equal(problem("a1ff"), "invalid_utf8");
  assert.equal(problem("810102"), "map_key_not_str");
  assert.equal(problem("91".repeat(1100) + "c0"), "too_deep");
  assert.equal(problem("d6ff00000000"), "ext_type"); // a msgpack timestamp is not decoded as a time
  assert.equal(problem("d5010001"), "bulk_reference");
  assert.equal(problem("d60100000002", [Buffer.from("x")]), "bulk_reference");
});

test("bulk frames after a kind that carries none are bad_request; a header error comes first", () => {
  const frames = [...protocol.encodeCancel("ab-1"), Buffer.from("x")];
  assert.throws(() => protocol.decode(frames), (e) => e instanceof linebus.BadRequest && /CANCEL carries no bulk frames, got 1/.test(e.message));
  const error = [...protocol.encodeError("ab-1", "busy", "m"), Buffer.from("x")];
  assert.throws(() => protocol.decode(error), /ERROR carries no bulk frames/);
  // [1] with a bulk frame: the short header is the error reported, not the bulk frame.
  assert.throws(() => protocol.decode([Buffer.from("9101", "hex"), Buffer.from("x")]), (e) => e.code === "bad_request" && !/bulk/.test(e.message));
  assert.throws(() => protocol.decode([Buffer.from("91cb3ff0000000000000", "hex")]), (e) => e.code === "bad_request"); // version 1.0
  assert.throws(() => protocol.decode([Buffer.from("9102", "hex")]), (e) => e.code === "unsupported_version");
});

test("a call checks its arguments before sending, and fails locally on a timeout of 0", async () => {
  const client = new linebus.Client("tcp://127.0.0.1:1", { keys: null });
  try {
    assert.throws(() => client.start("echo1", "add", [1, 2]), /args must be a plain object/);
    assert.throws(() => client.start("echo1", "add", { when: new Date() }), /cannot encode Date/);
    assert.throws(() => client.start("echo1", 7), TypeError);
    assert.throws(() => client.start("echo1", "add", {}, { timeout: "10" }), /timeout must be a number/);
    const call = client.start("echo1", "add", { a: 1 }, { timeout: 0 });
    await assert.rejects(call.result, linebus.DeadlineExceeded);
    assert.equal(call.sent, false);
    assert.match(call.msgId, /^[0-9a-f]{12}-1$/); // the refused calls above used no id
  } finally {
    client.close();
  }
  assert.throws(() => client.start("echo1", "add"), /closed/);
});

test("the subscribe endpoint defaults to $LINEBUS_SUBSCRIBE, else the command endpoint's port + 2", () => {
  assert.equal(linebus.subscribeEndpointFor("tcp://10.0.0.5:7750"), "tcp://10.0.0.5:7752");
  assert.throws(() => linebus.subscribeEndpointFor("ipc:///run/linebus/cmd"), linebus.ConfigError);
  const saved = { ...process.env };
  try {
    delete process.env.LINEBUS_SUBSCRIBE;
    process.env.LINEBUS_ENDPOINT = "tcp://127.0.0.1:17750";
    const derived = new linebus.Subscriber(undefined, { keys: null });
    derived.close();
    assert.equal(derived.endpoint, "tcp://127.0.0.1:17752");
    process.env.LINEBUS_SUBSCRIBE = "tcp://127.0.0.1:17999";
    const given = new linebus.Subscriber(undefined, { keys: null });
    given.close();
    assert.equal(given.endpoint, "tcp://127.0.0.1:17999");
  } finally {
    process.env = saved;
  }
});
