// Calling commands (docs/PROTOCOL.md §6-§7): one DEALER per Client, shared by every call in
// flight, answers routed back to their call by msg_id.
//
// A call has a deadline (sent as ttl_s; the client waits ttl_s + 0.25 s for the broker's own
// deadline_exceeded, then fails locally), may receive PROGRESS updates before its REPLY or
// ERROR, and may be cancelled (CANCEL is sent and the final answer still awaited, §16 item 8).
// Sends go out one at a time (zeromq.js allows one send in progress per socket) through an
// outbox, each with a send timeout of its call's remaining time: with ZMQ_IMMEDIATE set, a send
// to an unreachable broker waits, and fails as broker_unreachable rather than queueing forever.
"use strict";

const zmq = require("zeromq");
const protocol = require("./protocol");
const errors = require("./errors");
const { curveKeys, secure } = require("./keys");

/** Seconds the client waits past a call's ttl_s for the broker's own deadline_exceeded (§7). */
const GRACE_S = 0.25;
/** A call's timeout when none is given (seconds). */
const DEFAULT_TIMEOUT_S = 10;

function checkTimeout(timeout) {
  if (typeof timeout !== "number" || Number.isNaN(timeout)) {
    throw new TypeError(`timeout must be a number of seconds, got ${typeof timeout}`);
  }
  return timeout;
}

function checkArgs(args) {
  if (args === null || args === undefined) return {};
  const proto = typeof args === "object" ? Object.getPrototypeOf(args) : undefined;
  if (args instanceof Map || proto === Object.prototype || proto === null) return args;
  throw new TypeError(`args must be a plain object of argument name to value, got ${args?.constructor?.name ?? typeof args}`);
}

/**
 * One request in flight. `result` settles with the reply's value or a typed error; iterating
 * the call (`for await (const update of call)`) yields its progress updates as they arrive and
 * then ends, or throws the call's error. Start iterating right after `start`: updates that
 * arrived before an iterator existed are not kept.
 */
class Call {
  constructor(client, msgId, service, command, onProgress) {
    this.client = client;
    /** The request id on the wire (§6). */
    this.msgId = msgId;
    this.service = service;
    this.command = command;
    /** Whether the call has finished (answered, failed or expired). */
    this.done = false;
    this.sent = false;
    this._cancelSent = false;
    this._listeners = new Set();
    this._onProgress = onProgress;
    this._cleanup = [];
    /** @type {Promise<unknown>} */
    this.result = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    // Marked handled: a caller who only iterates, or only awaits result, must not crash the
    // process with an unhandled rejection. Awaiting `result` still throws.
    this.result.catch(() => {});
  }

  /**
   * Ask the actor to stop (CANCEL, §6). The call still ends with the actor's answer (typically
   * `Cancelled`, or the result if the command could not be interrupted); a call not yet sent
   * ends at once with `Cancelled`. Does nothing once the call is done.
   */
  cancel() {
    if (this.done) return;
    if (!this.sent) {
      this._finish(new errors.Cancelled(`${this.service}.${this.command} cancelled before it was sent`, { msg_id: this.msgId }));
      return;
    }
    if (this._cancelSent) return;
    this._cancelSent = true;
    this.client._enqueue(protocol.encodeCancel(this.msgId), this._deadline, null);
  }

  _progress(update) {
    if (this._onProgress) {
      try {
        this._onProgress(update);
      } catch (err) {
        // A throwing progress callback must not kill the receive loop: report it once, then
        // leave the call to finish normally.
        process.emitWarning(`linebus: onProgress for ${this.msgId} threw: ${err}`);
      }
    }
    for (const listener of this._listeners) listener.push(update);
  }

  _finish(error, value) {
    if (this.done) return;
    this.done = true;
    for (const undo of this._cleanup) undo();
    this.client._pending.delete(this.msgId);
    if (error) this._reject(error);
    else this._resolve(value);
    for (const listener of this._listeners) listener.wake();
  }

  async *[Symbol.asyncIterator]() {
    const queue = [];
    let wake = null;
    const listener = {
      push: (update) => {
        queue.push(update);
        if (wake) wake();
      },
      wake: () => wake && wake(),
    };
    this._listeners.add(listener);
    try {
      for (;;) {
        while (queue.length) yield queue.shift();
        if (this.done) break;
        await new Promise((resolve) => {
          wake = resolve;
        });
        wake = null;
      }
      await this.result; // the call's error, if it failed, ends the iteration
    } finally {
      this._listeners.delete(listener);
    }
  }
}

/**
 * A connection to a linebus broker's command endpoint, for calls. Close it when done: its
 * socket keeps the process alive.
 */
class Client {
  /**
   * @param {string} [endpoint] the broker's command endpoint (default $LINEBUS_ENDPOINT, else
   *   tcp://127.0.0.1:7750)
   * @param {{timeout?: number, keys?: import("./keys").CurveKeys | null}} [options] `timeout`:
   *   default seconds per call; `keys`: CURVE keys (default from the environment, §18; null
   *   for plaintext)
   */
  constructor(endpoint, { timeout = DEFAULT_TIMEOUT_S, keys } = {}) {
    this.endpoint = endpoint || process.env.LINEBUS_ENDPOINT || protocol.DEFAULT_COMMAND_ENDPOINT;
    this.timeout = checkTimeout(timeout);
    this.keys = keys === undefined ? curveKeys() : keys;
    /** Answers dropped: unknown msg_id (late, or not ours) or not an answer at all. */
    this.dropped = 0;
    this._prefix = protocol.newIdPrefix();
    this._counter = 0;
    this._pending = new Map();
    this._outbox = [];
    this._sending = false;
    this._heard = false;
    this._refused = null;
    this._closed = false;
    this._sock = new zmq.Dealer({ linger: 0, immediate: true });
    secure(this._sock, this.keys, this.endpoint, (error) => this._refuse(error));
    this._sock.connect(this.endpoint);
    this._receiving = this._receiveLoop();
  }

  /**
   * Send a request and return its `Call` at once (for progress iteration and cancel).
   * @param {string} service @param {string} command
   * @param {Record<string, unknown> | null} [args] argument name to value
   * @param {{timeout?: number, onProgress?: (update: unknown) => void, signal?: AbortSignal}} [options]
   *   `timeout` seconds (the call's deadline), `onProgress` for each PROGRESS, `signal` to cancel
   * @returns {Call}
   */
  start(service, command, args = {}, { timeout = this.timeout, onProgress, signal } = {}) {
    if (this._closed) throw new Error("this linebus Client is closed");
    if (typeof service !== "string" || typeof command !== "string") {
      throw new TypeError("service and command must be strings");
    }
    checkTimeout(timeout);
    const msgId = `${this._prefix}-${this._counter + 1}`;
    const frames = protocol.encodeRequest(msgId, service, command, timeout, checkArgs(args));
    this._counter += 1; // only once encoded: an argument that cannot be encoded uses no id
    const call = new Call(this, msgId, service, command, onProgress);
    if (this._refused) {
      call._finish(this._refused);
      return call;
    }
    if (!(timeout > 0)) {
      call._finish(new errors.DeadlineExceeded(`timeout ${timeout} s: ${service}.${command} not sent`, { msg_id: msgId }));
      return call;
    }
    this._pending.set(msgId, call);
    call._deadline = Date.now() + timeout * 1000;
    const timer = setTimeout(() => this._expire(call, timeout), (timeout + GRACE_S) * 1000);
    call._cleanup.push(() => clearTimeout(timer));
    if (signal) {
      if (signal.aborted) {
        call.cancel();
        return call;
      }
      const onAbort = () => call.cancel();
      signal.addEventListener("abort", onAbort, { once: true });
      call._cleanup.push(() => signal.removeEventListener("abort", onAbort));
    }
    this._enqueue(frames, call._deadline, call);
    return call;
  }

  /**
   * Call `service.command(args)` and resolve with its result, or reject with a typed error
   * (lib/errors.js, one class per §10 code).
   * @param {string} service @param {string} command
   * @param {Record<string, unknown> | null} [args]
   * @param {{timeout?: number, onProgress?: (update: unknown) => void, signal?: AbortSignal}} [options]
   */
  call(service, command, args = {}, options = {}) {
    return this.start(service, command, args, options).result;
  }

  /** Stop: calls still in flight end with `Cancelled`; the socket is closed. */
  close() {
    if (this._closed) return;
    this._closed = true;
    for (const call of [...this._pending.values()]) {
      call._finish(new errors.Cancelled(`the client was closed before ${call.service}.${call.command} answered`, { msg_id: call.msgId }));
    }
    this._outbox.length = 0;
    this._sock.close();
  }

  _expire(call, timeout) {
    if (call.done) return;
    if (!call.sent || !this._heard) {
      call._finish(
        new errors.BrokerUnreachable(`no answer from the broker at ${this.endpoint} within ${timeout} s`, { endpoint: this.endpoint }),
      );
    } else {
      call._finish(new errors.DeadlineExceeded(`no answer from '${call.service}' within ${timeout} s`, { msg_id: call.msgId }));
    }
  }

  // The broker refused our key (§18): every call fails now, and so does every later one.
  _refuse(error) {
    this._refused = error;
    for (const call of [...this._pending.values()]) call._finish(error);
    this._outbox.length = 0;
    if (!this._sock.closed) this._sock.close();
  }

  _enqueue(frames, deadline, call) {
    this._outbox.push({ frames, deadline, call });
    if (!this._sending) this._pump();
  }

  async _pump() {
    this._sending = true;
    try {
      while (this._outbox.length && !this._sock.closed) {
        const { frames, deadline, call } = this._outbox[0];
        if (call && call.done) {
          this._outbox.shift();
          continue;
        }
        this._sock.sendTimeout = Math.max(0, Math.round(deadline - Date.now()));
        try {
          await this._sock.send(frames);
          if (call) call.sent = true;
        } catch (err) {
          if (this._sock.closed) break;
          if (call) {
            call._finish(
              new errors.BrokerUnreachable(`could not send ${call.service}.${call.command} to the broker at ${this.endpoint} (${err.code || err.message})`, {
                endpoint: this.endpoint,
              }),
            );
          }
        }
        this._outbox.shift();
      }
    } finally {
      this._sending = false;
    }
  }

  async _receiveLoop() {
    while (!this._sock.closed) {
      let frames;
      try {
        frames = await this._sock.receive();
      } catch (err) {
        if (this._sock.closed) return;
        for (const call of [...this._pending.values()]) call._finish(err);
        return;
      }
      this._heard = true;
      this._dispatch(frames);
    }
  }

  _dispatch(frames) {
    let message;
    try {
      message = protocol.decode(frames);
    } catch (err) {
      // A malformed answer to one of our calls fails that call; anything else is dropped.
      const call = this._pending.get(protocol.peekMsgId(frames[0]));
      if (call) call._finish(err);
      else this.dropped++;
      return;
    }
    const call = message.msgId === undefined ? undefined : this._pending.get(message.msgId);
    if (!call) {
      this.dropped++;
      return;
    }
    if (message.kind === "error") {
      call._finish(errors.fromWire(message.code, message.message, message.details));
      return;
    }
    if (message.kind !== "progress" && message.kind !== "reply") {
      this.dropped++;
      return;
    }
    let value;
    try {
      value = protocol.unpackValue(message.payload, message.frames);
    } catch (err) {
      call._finish(err);
      return;
    }
    if (message.kind === "progress") call._progress(value);
    else call._finish(null, value);
  }
}

/**
 * One call on a Client of its own, closed afterwards: for scripts that make a single call.
 * @param {string} service @param {string} command @param {Record<string, unknown> | null} [args]
 * @param {{endpoint?: string, timeout?: number, onProgress?: (update: unknown) => void, signal?: AbortSignal, keys?: import("./keys").CurveKeys | null}} [options]
 */
async function call(service, command, args = {}, { endpoint, keys, ...options } = {}) {
  const client = new Client(endpoint, { keys });
  try {
    return await client.call(service, command, args, options);
  } finally {
    client.close();
  }
}

module.exports = { Client, Call, call, GRACE_S, DEFAULT_TIMEOUT_S };
