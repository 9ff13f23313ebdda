// Subscribing to events (docs/PROTOCOL.md §9): a SUB socket on the broker's subscribe
// endpoint, prefix subscriptions, and per-topic gap detection from (epoch, seq).
"use strict";

const crypto = require("crypto");
const zmq = require("zeromq");
const protocol = require("./protocol");
const errors = require("./errors");
const { curveKeys, secure } = require("./keys");

const PROBE_PREFIX = "_probe.";
const PROBE_BYTES = Buffer.from(PROBE_PREFIX);

/**
 * Decodes event frames and works out, per topic, how many events were lost before each one
 * (§9 "Sequence numbers and gaps"). No sockets: feed it frames.
 */
class GapTracker {
  constructor() {
    this._last = new Map(); // topic -> {epoch, seq}
    /** Events lost in all, over every topic. */
    this.missedTotal = 0;
    /** Frames skipped because they were not well-formed version-1 events. */
    this.malformed = 0;
  }

  /**
   * The event in `frame` with its `missed` count, or null for a subscription probe or a
   * malformed frame (counted in `malformed`; never an exception).
   * @param {Uint8Array} frame
   */
  accept(frame) {
    const buf = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
    if (buf.subarray(0, PROBE_BYTES.length).equals(PROBE_BYTES)) return null;
    let event;
    try {
      event = protocol.decodeEvent(buf);
    } catch (err) {
      if (!(err instanceof errors.BadRequest)) throw err;
      this.malformed++;
      return null;
    }
    const { topic, src, epoch, seq, ts, data } = event;
    const last = this._last.get(topic);
    let missed = 0;
    if (!last || last.epoch !== epoch) {
      // First event of the topic, or a new epoch (another publisher incarnation): count from here.
      this._last.set(topic, { epoch, seq });
    } else if (seq > last.seq) {
      // Same epoch: seq beyond last + 1 is a gap. One at or below last is late or repeated:
      // missed 0, and the last seen stays (the next event in order is then no gap).
      missed = Number(seq) - Number(last.seq) - 1;
      last.seq = seq;
    }
    this.missedTotal += missed;
    return { topic, src, epoch, seq, ts, data, missed };
  }
}

/**
 * The subscribe endpoint next to a command endpoint `tcp://host:P`: `tcp://host:P+2` (§2).
 * @param {string} commandEndpoint
 */
function subscribeEndpointFor(commandEndpoint) {
  const match = /^tcp:\/\/(.+):(\d+)$/.exec(commandEndpoint);
  if (!match) {
    throw new errors.ConfigError(`cannot derive a subscribe endpoint from ${commandEndpoint}: give it explicitly`, {
      endpoint: commandEndpoint,
    });
  }
  return `tcp://${match[1]}:${Number(match[2]) + 2}`;
}

/**
 * A subscription to events by topic prefix. Iterate it (`for await (const event of sub)`) for
 * `{topic, src, epoch, seq, ts, data, missed}`; `missed` counts the events of that topic lost
 * just before this one. Close it when done: its socket keeps the process alive.
 */
class Subscriber {
  /**
   * @param {string} [endpoint] the broker's subscribe endpoint (default $LINEBUS_SUBSCRIBE, else
   *   the port after next of $LINEBUS_ENDPOINT's (§2), else tcp://127.0.0.1:7752)
   * @param {{prefixes?: string[], keys?: import("./keys").CurveKeys | null}} [options]
   *   `prefixes`: topic prefixes (end them with "."; [""] is everything, the default)
   */
  constructor(endpoint, { prefixes = [""], keys } = {}) {
    const env = process.env;
    this.endpoint =
      endpoint ||
      env.LINEBUS_SUBSCRIBE ||
      (env.LINEBUS_ENDPOINT ? subscribeEndpointFor(env.LINEBUS_ENDPOINT) : protocol.DEFAULT_SUBSCRIBE_ENDPOINT);
    this.keys = keys === undefined ? curveKeys() : keys;
    this._tracker = new GapTracker();
    this._buffered = [];
    this._refused = null;
    this._sock = new zmq.Subscriber({ linger: 0 });
    secure(this._sock, this.keys, this.endpoint, (error) => {
      this._refused = error;
      this._sock.close();
    });
    this._sock.connect(this.endpoint);
    for (const prefix of prefixes) this.subscribe(prefix);
  }

  /** Events lost in all (the sum of every `missed`). */
  get missedTotal() {
    return this._tracker.missedTotal;
  }

  /** Malformed frames skipped. */
  get malformed() {
    return this._tracker.malformed;
  }

  /** Add a topic prefix. @param {string} prefix */
  subscribe(prefix) {
    if (typeof prefix !== "string") throw new TypeError("a topic prefix must be a string");
    this._sock.subscribe(prefix);
  }

  /** Remove a topic prefix. @param {string} prefix */
  unsubscribe(prefix) {
    this._sock.unsubscribe(prefix);
  }

  /**
   * Resolve once the broker applies this subscription (ZeroMQ subscriptions travel
   * asynchronously, §9): subscribe to a fresh `_probe.` topic and ask the broker, through
   * `client`, to publish on it until the probe arrives. Events received meanwhile are kept.
   * @param {import("./client").Client} client a client of the same broker
   * @param {number} [timeout] seconds
   * @throws {DeadlineExceeded} the probe did not arrive in time
   */
  async waitReady(client, timeout = 10) {
    const topic = `${PROBE_PREFIX}${crypto.randomBytes(8).toString("hex")}`;
    const expected = Buffer.from(`${topic}\0`);
    const end = Date.now() + timeout * 1000;
    this._sock.subscribe(topic);
    try {
      while (Date.now() < end) {
        const left = (end - Date.now()) / 1000;
        await client.call("broker", "probe", { topic }, { timeout: Math.max(0.05, Math.min(1, left)) });
        this._sock.receiveTimeout = Math.max(1, Math.min(200, end - Date.now()));
        for (;;) {
          let frame;
          try {
            [frame] = await this._sock.receive();
          } catch (err) {
            if (this._refused) throw this._refused;
            if (err.code === "EAGAIN") break; // nothing for now: probe again
            throw err;
          }
          if (frame.subarray(0, expected.length).equals(expected)) return;
          this._buffered.push(frame);
        }
      }
      throw new errors.DeadlineExceeded(`subscription at ${this.endpoint} not ready within ${timeout} s`, {
        endpoint: this.endpoint,
      });
    } finally {
      if (!this._sock.closed) {
        this._sock.receiveTimeout = -1;
        this._sock.unsubscribe(topic);
      }
    }
  }

  /**
   * The next event (skipping probes and malformed frames).
   * @returns {Promise<{topic: string, src: string, epoch: number, seq: number, ts: number, data: unknown, missed: number}>}
   * @throws {Unauthenticated} the broker refused our key; an Error once closed
   */
  async next() {
    for (;;) {
      let frame = this._buffered.shift();
      if (!frame) {
        try {
          [frame] = await this._sock.receive();
        } catch (err) {
          throw this._refused || err;
        }
      }
      const event = this._tracker.accept(frame);
      if (event) return event;
    }
  }

  /** Events until `close()` (which ends the iteration quietly). */
  async *[Symbol.asyncIterator]() {
    for (;;) {
      let event;
      try {
        event = await this.next();
      } catch (err) {
        if (this._sock.closed && !this._refused) return;
        throw err;
      }
      yield event;
    }
  }

  /** Close the socket; an iteration in progress ends. */
  close() {
    if (!this._sock.closed) this._sock.close();
  }
}

/**
 * Events whose topic starts with one of `prefixes`, from a Subscriber of its own that is
 * closed when the iteration stops.
 * @param {string} [endpoint] @param {string[]} [prefixes]
 * @param {{keys?: import("./keys").CurveKeys | null}} [options]
 */
async function* subscribe(endpoint, prefixes = [""], options = {}) {
  const sub = new Subscriber(endpoint, { ...options, prefixes });
  try {
    yield* sub;
  } finally {
    sub.close();
  }
}

module.exports = { Subscriber, GapTracker, subscribe, subscribeEndpointFor };
