// Types of the linebus package (Node.js >= 18). docs/PROTOCOL.md is the contract.

/// <reference types="node" />

/** CURVE keys, Z85: the broker's public key and this peer's key pair (PROTOCOL.md §18). */
export interface CurveKeys {
  serverKey: string;
  publicKey: string;
  secretKey: string;
}

/** A msgpack value as this package decodes it: bytes are Buffers, 64-bit integers beyond 2^53 BigInts. */
export type Value = null | boolean | number | bigint | string | Buffer | Value[] | { [key: string]: Value };

export interface CallOptions {
  /** Seconds: sent as ttl_s; the call fails after it (plus 0.25 s of grace). Default: the client's. */
  timeout?: number;
  /** Called with each PROGRESS update, in order. */
  onProgress?: (update: Value) => void;
  /** Aborting it cancels the call (CANCEL; the actor's answer still ends the call). */
  signal?: AbortSignal;
}

/** One request in flight: await `result`, iterate for progress, `cancel()` to stop it. */
export class Call implements AsyncIterable<Value> {
  readonly msgId: string;
  readonly service: string;
  readonly command: string;
  /** The reply's value, or a rejection with a LinebusError subclass. */
  readonly result: Promise<Value>;
  /** Finished: answered, failed or expired. */
  readonly done: boolean;
  /** The request left this process (false for a call failed or cancelled before sending). */
  readonly sent: boolean;
  cancel(): void;
  [Symbol.asyncIterator](): AsyncIterator<Value>;
}

export class Client {
  /**
   * @param endpoint the broker's command endpoint (default $LINEBUS_ENDPOINT, else tcp://127.0.0.1:7750)
   * @param options.timeout default seconds per call (10)
   * @param options.keys CURVE keys; default from the environment; null for plaintext
   */
  constructor(endpoint?: string, options?: { timeout?: number; keys?: CurveKeys | null });
  readonly endpoint: string;
  readonly timeout: number;
  /** Answers dropped (unknown msg_id: late, or not ours). */
  readonly dropped: number;
  start(service: string, command: string, args?: Record<string, unknown> | null, options?: CallOptions): Call;
  call(service: string, command: string, args?: Record<string, unknown> | null, options?: CallOptions): Promise<Value>;
  close(): void;
}

/** One call on a client of its own, closed afterwards. */
export function call(
  service: string,
  command: string,
  args?: Record<string, unknown> | null,
  options?: CallOptions & { endpoint?: string; keys?: CurveKeys | null },
): Promise<Value>;

/** An event (PROTOCOL.md §9) and the number of events of its topic lost just before it. */
export interface Event {
  topic: string;
  src: string;
  epoch: number;
  seq: number;
  ts: number;
  data: Value;
  missed: number;
}

export class Subscriber implements AsyncIterable<Event> {
  /**
   * @param endpoint the broker's subscribe endpoint (default $LINEBUS_SUBSCRIBE, else $LINEBUS_ENDPOINT's port + 2, else tcp://127.0.0.1:7752)
   * @param options.prefixes topic prefixes, ending in "." (default [""]: everything)
   */
  constructor(endpoint?: string, options?: { prefixes?: string[]; keys?: CurveKeys | null });
  readonly endpoint: string;
  readonly missedTotal: number;
  readonly malformed: number;
  subscribe(prefix: string): void;
  unsubscribe(prefix: string): void;
  /** Resolves once the broker applies the subscription (probe through `client`); DeadlineExceeded after `timeout` s. */
  waitReady(client: Client, timeout?: number): Promise<void>;
  next(): Promise<Event>;
  [Symbol.asyncIterator](): AsyncIterator<Event>;
  close(): void;
}

/** Events from a subscriber of its own, closed when the iteration stops. */
export function subscribe(endpoint?: string, prefixes?: string[], options?: { keys?: CurveKeys | null }): AsyncGenerator<Event>;

/** The subscribe endpoint beside a command endpoint tcp://host:P (port P+2). */
export function subscribeEndpointFor(commandEndpoint: string): string;

/** Decodes event frames and counts gaps per topic (no socket). */
export class GapTracker {
  readonly missedTotal: number;
  readonly malformed: number;
  accept(frame: Uint8Array): Event | null;
}

/** Keys from LINEBUS_KEY_FILE / LINEBUS_KEY and LINEBUS_BROKER_KEY_FILE / LINEBUS_BROKER_KEY; null if none. */
export function curveKeys(env?: NodeJS.ProcessEnv): CurveKeys | null;
/** The public half (Z85) of a Z85 secret key. */
export function publicOf(secretZ85: string, source?: string): string;

// --- errors (PROTOCOL.md §10) --------------------------------------------------------------

export class LinebusError extends Error {
  constructor(message: string, details?: Record<string, unknown>);
  /** The wire code (§10). */
  readonly code: string;
  readonly retryable: boolean;
  readonly details: Record<string, any>;
  static readonly code: string;
  static readonly retryable: boolean;
}
/** A code this version does not know; `remoteCode` (also `code`) keeps it. */
export class RemoteError extends LinebusError {
  constructor(message: string, remoteCode: string, details?: Record<string, unknown>);
  readonly remoteCode: string;
}
export class InternalError extends LinebusError {}
export class BadRequest extends LinebusError {}
export class UnsupportedVersion extends BadRequest {}
export class UnknownService extends LinebusError {}
export class Unavailable extends LinebusError {}
export class BrokerUnreachable extends Unavailable {}
export class DeadlineExceeded extends LinebusError {}
export class UnknownCommand extends LinebusError {}
export class InvalidArguments extends LinebusError {}
export class Busy extends LinebusError {}
export class Cancelled extends LinebusError {}
export class PermissionDenied extends LinebusError {}
export class Forbidden extends PermissionDenied {}
export class Unauthenticated extends PermissionDenied {}
export class DeviceError extends LinebusError {}
export class DeviceUnavailable extends DeviceError {}
export class DeviceTimeout extends DeviceError {}
export class DeviceFault extends DeviceError {}
export class StorageError extends LinebusError {}
export class TooOld extends LinebusError {}
export class ConfigError extends LinebusError {}

/** The wire codes mapped to classes. */
export const WIRE_CODES: readonly string[];
/** The error an ERROR message stands for (RemoteError for an unknown code). */
export function fromWire(code: string, message: string, details?: Record<string, unknown>): LinebusError;
export function errorClass(code: string): typeof LinebusError | undefined;

export const errors: {
  LinebusError: typeof LinebusError;
  RemoteError: typeof RemoteError;
  WIRE_CODES: readonly string[];
  fromWire: typeof fromWire;
  errorClass: typeof errorClass;
  [name: string]: unknown;
};

// --- the codec (PROTOCOL.md §3-§5, §9): for tools and tests ----------------------------------

export namespace protocol {
  const VERSION: 1;
  const Kind: Readonly<{
    REQUEST: 1; PROGRESS: 2; REPLY: 3; ERROR: 4; CANCEL: 5; READY: 6; HEARTBEAT: 7; DISCONNECT: 8; EVENT: 9; HELLO: 10;
  }>;
  const BULK_EXT: 1;
  const BULK_THRESHOLD: number;
  const BULK_DEPTH: number;
  const MAX_HEADER_BYTES: number;
  const DEFAULT_COMMAND_ENDPOINT: string;
  const DEFAULT_SUBSCRIBE_ENDPOINT: string;
  function packValue(value: unknown): { payload: Buffer; frames: Buffer[] };
  function unpackValue(payload: Uint8Array, frames?: Uint8Array[]): Value;
  function encodeRequest(msgId: string, service: string, command: string, ttlS: number | null, args?: Record<string, unknown> | null): Buffer[];
  function encodeProgress(msgId: string, data: unknown): Buffer[];
  function encodeReply(msgId: string, result: unknown): Buffer[];
  function encodeError(msgId: string, code: string, message: string, details?: Record<string, unknown>): Buffer[];
  function encodeCancel(msgId: string): Buffer[];
  function encodeReady(service: string, info: Record<string, unknown>): Buffer[];
  function encodeHeartbeat(): Buffer[];
  function encodeDisconnect(reason: string): Buffer[];
  function encodeHello(versions: number[], info: Record<string, unknown>): Buffer[];
  /** A command-channel message: `kind` ("request", "reply", ...), the raw `header`, and its kind's fields. */
  function decode(frames: Uint8Array[]): { kind: string; header: Value[]; [field: string]: any };
  function peekMsgId(frame: Uint8Array): string | null;
  function encodeEvent(topic: string, src: string, epoch: number, seq: number, ts: number, data: unknown): Buffer;
  function decodeEvent(frame: Uint8Array): Omit<Event, "missed"> & { body: Value[] };
  function isServiceName(name: unknown): boolean;
  function newIdPrefix(): string;
}
