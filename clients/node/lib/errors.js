// Typed errors: one class per error code of docs/PROTOCOL.md §10, in the same hierarchy as the
// Python client's bus/errors.py. An ERROR from the wire becomes an instance through `fromWire`;
// a code this version does not know becomes a RemoteError that keeps it (§10: never a crash).
"use strict";

/** Base of every linebus error: `code` (the §10 wire code), `details` (a plain object). */
class LinebusError extends Error {
  /**
   * @param {string} message human-readable text (the wire message)
   * @param {Record<string, unknown>} [details] machine-readable facts
   */
  constructor(message, details = {}) {
    super(message);
    this.name = new.target.name;
    this.details = details ?? {};
  }

  /** The wire code of this error (§10). */
  get code() {
    return /** @type {typeof LinebusError} */ (this.constructor).code;
  }

  /** Whether the same request may succeed if sent again later (§10). */
  get retryable() {
    return /** @type {typeof LinebusError} */ (this.constructor).retryable;
  }
}
LinebusError.code = "internal";
LinebusError.retryable = false;

// [class name, code, parent, retryable]: the §10 table. Parents come before their children.
const TABLE = [
  ["InternalError", "internal", LinebusError, false],
  ["BadRequest", "bad_request", LinebusError, false],
  ["UnsupportedVersion", "unsupported_version", "BadRequest", false],
  ["UnknownService", "unknown_service", LinebusError, false],
  ["Unavailable", "unavailable", LinebusError, true],
  ["BrokerUnreachable", "broker_unreachable", "Unavailable", true],
  ["DeadlineExceeded", "deadline_exceeded", LinebusError, false],
  ["UnknownCommand", "unknown_command", LinebusError, false],
  ["InvalidArguments", "invalid_arguments", LinebusError, false],
  ["Busy", "busy", LinebusError, true],
  ["Cancelled", "cancelled", LinebusError, false],
  ["PermissionDenied", "permission_denied", LinebusError, false],
  ["Forbidden", "forbidden", "PermissionDenied", false],
  ["Unauthenticated", "unauthenticated", "PermissionDenied", false],
  ["DeviceError", "device_error", LinebusError, false],
  ["DeviceUnavailable", "device_unavailable", "DeviceError", true],
  ["DeviceTimeout", "device_timeout", "DeviceError", false],
  ["DeviceFault", "device_fault", "DeviceError", false],
  ["StorageError", "storage_error", LinebusError, false],
  ["TooOld", "too_old", LinebusError, false],
  ["ConfigError", "config_error", LinebusError, false],
];

const classes = {};
const byCode = new Map();
for (const [name, code, parent, retryable] of TABLE) {
  const Parent = typeof parent === "string" ? classes[parent] : parent;
  // A named class per code, so `instanceof` and stack traces show it.
  const cls = { [name]: class extends Parent {} }[name];
  cls.code = code;
  cls.retryable = retryable;
  classes[name] = cls;
  byCode.set(code, cls);
}

/** An error whose code this version does not know; `remoteCode` keeps the code received. */
class RemoteError extends LinebusError {
  /**
   * @param {string} message
   * @param {string} remoteCode the code as it came from the wire
   * @param {Record<string, unknown>} [details]
   */
  constructor(message, remoteCode, details = {}) {
    super(message, details);
    this.remoteCode = remoteCode;
  }

  get code() {
    return this.remoteCode;
  }
}
RemoteError.code = "remote_error";
RemoteError.retryable = false;

/** The wire codes this version maps to classes (§10). */
const WIRE_CODES = Object.freeze([...byCode.keys()]);

/**
 * The error an ERROR message stands for: the class of its code, or RemoteError.
 * @param {string} code
 * @param {string} message
 * @param {Record<string, unknown>} [details]
 * @returns {LinebusError}
 */
function fromWire(code, message, details = {}) {
  const cls = byCode.get(code);
  return cls ? new cls(message, details) : new RemoteError(message, code, details);
}

/**
 * The class of a wire code, or undefined when this version does not know it.
 * @param {string} code
 */
function errorClass(code) {
  return byCode.get(code);
}

module.exports = { LinebusError, RemoteError, WIRE_CODES, fromWire, errorClass, ...classes };
