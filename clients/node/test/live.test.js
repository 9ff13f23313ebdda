// The package against a running line: a broker and an echo actor (bus.testing.EchoActor), started
// by tests/integration/test_node_client.py, which passes their endpoints in the environment:
// LINEBUS_ENDPOINT, LINEBUS_SUBSCRIBE, LINEBUS_PUBLISH, LINEBUS_TEST_ECHO (the echo service) and
// LINEBUS_TEST_DEAD_ENDPOINT (a port nothing listens on). On a secured line the CURVE keys come
// from the environment as well (LINEBUS_KEY_FILE, LINEBUS_BROKER_KEY_FILE). Without a line
// (a bare `npm test`), these tests are skipped, and say so.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const zmq = require("zeromq");
const linebus = require("..");
const { curveKeys } = require("../lib/keys");
const { encodeEvent } = require("../lib/protocol");

const env = process.env;
const skip = env.LINEBUS_ENDPOINT ? false : "no line: tests/integration/test_node_client.py starts one";
const ECHO = env.LINEBUS_TEST_ECHO || "echo1";
const FACTOR = Number(env.LINEBUS_TEST_TIME_FACTOR || "1");
// Every test has a deadline: a lost event fails its test instead of hanging the suite.
const opts = { skip, timeout: 20_000 * FACTOR };

let client;
test.before(() => {
  if (!skip) client = new linebus.Client(env.LINEBUS_ENDPOINT, { timeout: 10 * FACTOR });
});
test.after(() => client && client.close());

async function rejects(promise, cls) {
  const error = await promise.then(
    (value) => assert.fail(`resolved with ${JSON.stringify(value)}, expected ${cls.name}`),
    (err) => err,
  );
  assert.ok(error instanceof cls, `${error} is not a ${cls.name}`);
  return error;
}

test("calls a command and a broker command", opts, async () => {
  assert.equal(await client.call(ECHO, "add", { a: 2, b: 40 }), 42);
  assert.deepEqual(await client.call(ECHO, "echo", { value: { list: [1, -1, 300], ok: true, ratio: 0.75, none: null } }), {
    list: [1, -1, 300],
    ok: true,
    ratio: 0.75,
    none: null,
  });
  const pong = await client.call("broker", "ping");
  assert.equal(pong.pong, true);
});

test("routes many concurrent answers on one socket by msg_id", opts, async () => {
  const sums = await Promise.all(Array.from({ length: 50 }, (_, i) => client.call(ECHO, "add", { a: i, b: 1000 })));
  assert.deepEqual(sums, Array.from({ length: 50 }, (_, i) => i + 1000));
});

test("errors arrive typed, with their code, details and retryable", opts, async () => {
  const invalid = await rejects(client.call(ECHO, "add", { a: "x" }), linebus.InvalidArguments);
  assert.equal(invalid.code, "invalid_arguments");
  assert.deepEqual([invalid.details.argument, invalid.details.problem, invalid.details.expected], ["a", "type", "int"]);
  const unknown = await rejects(client.call("no-such-service", "x"), linebus.UnknownService);
  assert.equal(unknown.retryable, false);
  const command = await rejects(client.call(ECHO, "nope"), linebus.UnknownCommand);
  assert.ok(command.details.known.includes("add"));
  const fault = await rejects(client.call(ECHO, "fail"), linebus.DeviceFault);
  assert.ok(fault instanceof linebus.DeviceError);
  assert.equal(fault.details.device_code, "SIMULATED");
  const busy = await rejects(client.call(ECHO, "fail", { code: "busy", message: "try later" }), linebus.Busy);
  assert.deepEqual([busy.retryable, busy.message], [true, "try later"]);
  await rejects(client.call(ECHO, "crash"), linebus.InternalError);
  // A code this version does not know travels as it is (§10) and arrives as a RemoteError.
  const vendor = await rejects(client.call(ECHO, "fail", { code: "vendor_overheated", message: "hot" }), linebus.RemoteError);
  assert.deepEqual([vendor.code, vendor.remoteCode, vendor.message], ["vendor_overheated", "vendor_overheated", "hot"]);
});

test("progress reaches onProgress and an async iteration of the call", opts, async () => {
  const seen = [];
  const result = await client.call(ECHO, "work", { steps: 3, step_s: 0.01 }, { onProgress: (p) => seen.push(p) });
  assert.deepEqual(result, { steps: 3 });
  assert.deepEqual(seen, [1, 2, 3].map((done) => ({ done, total: 3 })));

  const call = client.start(ECHO, "work", { steps: 3, step_s: 0.01 });
  const iterated = [];
  for await (const update of call) iterated.push(update.done);
  assert.deepEqual(iterated, [1, 2, 3]);
  assert.deepEqual(await call.result, { steps: 3 });
});

test("cancel stops a running command and the call ends with Cancelled", opts, async () => {
  const started = Date.now();
  const call = client.start(ECHO, "work", { steps: 200, step_s: 0.05 });
  for await (const update of call) {
    assert.equal(update.done, 1);
    call.cancel();
    break;
  }
  await rejects(call.result, linebus.Cancelled);
  assert.ok(Date.now() - started < 5000 * FACTOR, "cancel took as long as the command");

  const controller = new AbortController();
  const aborted = client.call(ECHO, "work", { steps: 200, step_s: 0.05 }, { signal: controller.signal, onProgress: () => controller.abort() });
  await rejects(aborted, linebus.Cancelled);
});

test("a deadline that passes ends the call with DeadlineExceeded; a timeout of 0 sends nothing", opts, async () => {
  const started = Date.now();
  const late = await rejects(client.call(ECHO, "work", { steps: 100, step_s: 0.1 }, { timeout: 0.3 }), linebus.DeadlineExceeded);
  assert.ok(Date.now() - started < 3000 * FACTOR);
  assert.equal(late.code, "deadline_exceeded");
  const call = client.start(ECHO, "add", { a: 1 }, { timeout: 0 });
  await rejects(call.result, linebus.DeadlineExceeded);
  assert.equal(call.sent, false);
});

test("bulk frames both ways: a large result and a large argument", opts, async () => {
  const blob = await client.call(ECHO, "blob", { size: 200_003 });
  assert.ok(Buffer.isBuffer(blob));
  assert.equal(blob.length, 200_003);
  assert.ok(blob.subarray(16, 32).equals(blob.subarray(0, 16)), "not the actor's pattern");
  assert.equal(await client.call(ECHO, "length", { data: Buffer.alloc(150_000, 7) }), 150_000);
  assert.equal(await client.call(ECHO, "length", { data: Buffer.alloc(100, 7) }), 100);
});

test("a broker that is not there is BrokerUnreachable at the deadline, not a hang", opts, async () => {
  const dead = new linebus.Client(env.LINEBUS_TEST_DEAD_ENDPOINT, { timeout: 0.3 });
  try {
    const started = Date.now();
    const error = await rejects(dead.call(ECHO, "add", { a: 1 }), linebus.BrokerUnreachable);
    assert.ok(error instanceof linebus.Unavailable && error.retryable);
    assert.equal(error.details.endpoint, env.LINEBUS_TEST_DEAD_ENDPOINT);
    assert.ok(Date.now() - started < 3000 * FACTOR);
  } finally {
    dead.close();
  }
});

test("subscribes by prefix, with sequence numbers and no gaps", opts, async () => {
  // waitReady proves the broker has the subscription; the actor's publisher gets it a moment
  // later (subscriber -> broker -> actor, §9) and skips events nobody subscribed to until then.
  // So: emit one event at a time until the first arrives, then every later one must arrive.
  const sub = new linebus.Subscriber(env.LINEBUS_SUBSCRIBE, { prefixes: [`${ECHO}.tick`] });
  try {
    await sub.waitReady(client, 10 * FACTOR);
    const pending = sub.next(); // one receive at a time: the same promise across the tries
    let first = null;
    let emitted = 0; // the actor is this test's own: a tick's seq is its number among those emitted
    while (!first && emitted < 200) {
      emitted += await client.call(ECHO, "emit", { event: "tick", count: 1, data: { n: 1 } });
      first = await Promise.race([pending, new Promise((resolve) => setTimeout(resolve, 50))]);
    }
    assert.ok(first, "no event arrived");
    assert.equal(await client.call(ECHO, "emit", { event: "other", count: 1 }), 1);
    emitted += await client.call(ECHO, "emit", { event: "tick", count: 3, data: { n: 1 } });
    // Every tick from the first that arrived to the last emitted, in order.
    const events = [first];
    while (events[events.length - 1].seq < emitted) events.push(await sub.next());
    assert.ok(events.every((e) => e.topic === `${ECHO}.tick`), "an event of another topic");
    assert.deepEqual(events.map((e) => e.seq - first.seq), events.map((_, i) => i));
    assert.ok(events.length >= 4);
    assert.ok(events.every((e) => e.missed === 0 && e.src === ECHO && e.data.n === 1 && typeof e.ts === "number"));
    assert.equal(sub.missedTotal, 0);
  } finally {
    sub.close();
  }
});

test("a gap in a topic's sequence is reported as missed events", opts, async () => {
  // A publisher of our own on the broker's publish endpoint writes seq 1, 2, 5 (3 and 4 lost),
  // then a new epoch (a restarted publisher): counting starts afresh there.
  const keys = curveKeys();
  const pub = new zmq.Publisher({ linger: 0 });
  if (keys) Object.assign(pub, { curveServerKey: keys.serverKey, curvePublicKey: keys.publicKey, curveSecretKey: keys.secretKey });
  pub.connect(env.LINEBUS_PUBLISH);
  const sub = new linebus.Subscriber(env.LINEBUS_SUBSCRIBE, { prefixes: ["nodetest."] });
  try {
    await sub.waitReady(client, 10 * FACTOR);
    // The publisher drops events until the broker's subscription reaches it: send a warm-up
    // event until one comes through, then the sequence (ZeroMQ keeps one socket's order).
    const ts = Date.now() / 1000;
    const first = sub.next(); // one receive at a time: the same promise across the tries
    let warm = null;
    for (let i = 1; !warm && i <= 200; i++) {
      await pub.send(encodeEvent("nodetest.warm", "nodetest", 1, i, ts, null));
      warm = await Promise.race([first, new Promise((resolve) => setTimeout(resolve, 50))]);
    }
    assert.ok(warm, "the publisher's events never arrived");
    for (const [epoch, seq] of [[7, 1], [7, 2], [7, 5], [7, 5], [8, 3]]) {
      await pub.send(encodeEvent("nodetest.gap", "nodetest", epoch, seq, ts, { seq }));
    }
    const seen = [];
    while (seen.length < 5) {
      const event = await sub.next();
      if (event.topic === "nodetest.gap") seen.push([event.epoch, event.seq, event.missed]);
    }
    assert.deepEqual(seen, [[7, 1, 0], [7, 2, 0], [7, 5, 2], [7, 5, 0], [8, 3, 0]]);
    assert.equal(sub.missedTotal, 2);
  } finally {
    sub.close();
    pub.close();
  }
});
