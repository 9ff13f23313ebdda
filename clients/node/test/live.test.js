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

test("calls a command and a broker command", { skip }, async () => {
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

test("routes many concurrent answers on one socket by msg_id", { skip }, async () => {
  const sums = await Promise.all(Array.from({ length: 50 }, (_, i) => client.call(ECHO, "add", { a: i, b: 1000 })));
  assert.deepEqual(sums, Array.from({ length: 50 }, (_, i) => i + 1000));
});

test("errors arrive typed, with their code, details and retryable", { skip }, async () => {
  const invalid = await rejects(client.call(ECHO, "add", { a: "x" }), linebus.InvalidArguments);
  assert.equal(invalid.code, "invalid_arguments");
  assert.equal(invalid.details.argument, "a");
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
});

test("progress reaches onProgress and an async iteration of the call", { skip }, async () => {
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

test("cancel stops a running command and the call ends with Cancelled", { skip }, async () => {
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

test("a deadline that passes ends the call with DeadlineExceeded; a timeout of 0 sends nothing", { skip }, async () => {
  const started = Date.now();
  const late = await rejects(client.call(ECHO, "work", { steps: 100, step_s: 0.1 }, { timeout: 0.3 }), linebus.DeadlineExceeded);
  assert.ok(Date.now() - started < 3000 * FACTOR);
  assert.equal(late.code, "deadline_exceeded");
  const call = client.start(ECHO, "add", { a: 1 }, { timeout: 0 });
  await rejects(call.result, linebus.DeadlineExceeded);
  assert.equal(call.sent, false);
});

test("bulk frames both ways: a large result and a large argument", { skip }, async () => {
  const blob = await client.call(ECHO, "blob", { size: 200_003 });
  assert.ok(Buffer.isBuffer(blob));
  assert.equal(blob.length, 200_003);
  assert.ok(blob.subarray(16, 32).equals(blob.subarray(0, 16)), "not the actor's pattern");
  assert.equal(await client.call(ECHO, "length", { data: Buffer.alloc(150_000, 7) }), 150_000);
  assert.equal(await client.call(ECHO, "length", { data: Buffer.alloc(100, 7) }), 100);
});

test("a broker that is not there is BrokerUnreachable at the deadline, not a hang", { skip }, async () => {
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

test("subscribes by prefix once the subscription is ready, with sequence numbers", { skip }, async () => {
  const sub = new linebus.Subscriber(env.LINEBUS_SUBSCRIBE, { prefixes: [`${ECHO}.tick`] });
  try {
    await sub.waitReady(client, 10 * FACTOR);
    assert.equal(await client.call(ECHO, "emit", { event: "other", count: 1 }), 1);
    assert.equal(await client.call(ECHO, "emit", { event: "tick", count: 3, data: { n: 1 } }), 3);
    const events = [];
    for await (const event of sub) {
      events.push(event);
      if (events.length === 3) break;
    }
    assert.deepEqual(new Set(events.map((e) => e.topic)), new Set([`${ECHO}.tick`]));
    assert.deepEqual(events.map((e) => e.seq - events[0].seq), [0, 1, 2]);
    assert.ok(events.every((e) => e.missed === 0 && e.src === ECHO && e.data.n === 1 && typeof e.ts === "number"));
    assert.equal(sub.missedTotal, 0);
  } finally {
    sub.close();
  }
});

test("a gap in a topic's sequence is reported as missed events", { skip }, async () => {
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
