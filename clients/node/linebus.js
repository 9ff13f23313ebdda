// A minimal linebus client for Node.js, written from docs/PROTOCOL.md alone:
// call(endpoint, service, command, args, timeoutS) and subscribe(endpoint, prefixes).
"use strict";
const zmq = require("zeromq");
const { encode, decode } = require("@msgpack/msgpack");
const crypto = require("crypto");

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

// Send one request and wait for its reply; progress updates go to onProgress.
async function call(endpoint, service, command, args = {}, timeoutS = 10, onProgress = null) {
  const sock = new zmq.Dealer({ linger: 0, receiveTimeout: Math.round((timeoutS + 0.25) * 1000) });
  sock.connect(endpoint);
  const msgId = `${prefix}-${++counter}`;
  try {
    await sock.send([encode([VERSION, KIND.REQUEST, msgId, service, command, timeoutS, encode(args)])]);
    for (;;) {
      let frames;
      try {
        frames = await sock.receive();
      } catch (err) {
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
    sock.close();
  }
}

// Yield {topic, src, epoch, seq, ts, data, missed} for events whose topic starts with a prefix.
async function* subscribe(endpoint, prefixes) {
  const sock = new zmq.Subscriber({ linger: 0 });
  sock.connect(endpoint);
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
  } finally {
    sock.close();
  }
}

module.exports = { call, subscribe, LinebusError };
