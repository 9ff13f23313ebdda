/*
 * linebus.h: a C client of the linebus wire protocol (docs/PROTOCOL.md, version 1).
 *
 * Written from the protocol document, on libzmq and msgpack-c. One job per source file:
 *
 *   errors.c      typed error codes (PROTOCOL.md §10) and lb_error
 *   codec.c       headers, payloads and bulk frames (§3-§5, §9): encode and decode, no sockets
 *   gaps.c        per-topic (epoch, seq) tracking: events missed (§9)
 *   keys.c        CURVE keys from certificate files or Z85 text (§18)
 *   monitor.c     the CURVE handshake monitor: a refused key fails at once (§18)
 *   client.c      lb_call: one request with deadline, progress, cancel and typed errors (§6-§7)
 *   subscriber.c  lb_subscriber: events by topic prefix, readiness probe, gaps (§9)
 *   json.c        values as JSON text (examples, tests)
 *
 * Conventions: functions that can fail take an `lb_error *err` (may be NULL) and return an
 * lb_code (LB_OK on success) or NULL; every error names its problem in err->message. Values are
 * msgpack_object trees; the storage behind them belongs to the struct they came in (lb_value,
 * lb_message, lb_event) until its *_destroy. Nothing here is thread-safe: one client or
 * subscriber per thread.
 */
#ifndef LINEBUS_H
#define LINEBUS_H

#include <msgpack.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LB_PROTOCOL_VERSION 1
/** Bytes values of at least this size are sent as bulk frames (§4). */
#define LB_BULK_THRESHOLD 65536
/** How many levels of maps/arrays the encoder looks into for bulk-sized bytes (§4). */
#define LB_BULK_DEPTH 4
/** Largest header frame a decoder accepts (§11). */
#define LB_MAX_HEADER_BYTES 1048576
/** How long past a call's deadline the client waits for the broker's own answer (§7). */
#define LB_DEADLINE_GRACE_S 0.25

/* --- error codes (§10) ------------------------------------------------------------------ */

/** The error codes of PROTOCOL.md §10. LB_REMOTE_ERROR stands for a code this library does
 *  not know: the code itself is kept in lb_error.wire_code. */
typedef enum lb_code {
    LB_OK = 0,
    LB_BAD_REQUEST,
    LB_UNSUPPORTED_VERSION,
    LB_UNKNOWN_SERVICE,
    LB_UNAVAILABLE,
    LB_BROKER_UNREACHABLE,
    LB_DEADLINE_EXCEEDED,
    LB_UNKNOWN_COMMAND,
    LB_INVALID_ARGUMENTS,
    LB_BUSY,
    LB_CANCELLED,
    LB_PERMISSION_DENIED,
    LB_FORBIDDEN,
    LB_UNAUTHENTICATED,
    LB_DEVICE_ERROR,
    LB_DEVICE_UNAVAILABLE,
    LB_DEVICE_TIMEOUT,
    LB_DEVICE_FAULT,
    LB_STORAGE_ERROR,
    LB_CONFIG_ERROR,
    LB_INTERNAL,
    LB_TOO_OLD,
    LB_REMOTE_ERROR
} lb_code;

/** The wire name of a code ("bad_request", ...); "remote_error" for LB_REMOTE_ERROR. */
const char *lb_code_name(lb_code code);
/** The code of a wire name; LB_REMOTE_ERROR for a name not in §10. */
lb_code lb_code_from_name(const char *name, size_t len);
/** Whether the same request may succeed if sent again later (§10's "retryable"). */
int lb_code_retryable(lb_code code);

/** An error: its code, the wire code as received, a message and a details map. */
typedef struct lb_error {
    lb_code code;
    char wire_code[64];
    char message[512];
    msgpack_object details; /* a map ({} when none); valid until lb_error_clear */
    /* private */
    msgpack_zone *zone_;
} lb_error;

/** A cleared error (code LB_OK, empty details). Call before first use. */
void lb_error_init(lb_error *err);
/** Free what the error holds and clear it (it may be reused). */
void lb_error_clear(lb_error *err);

/* --- values and payloads (§4) ----------------------------------------------------------- */

/** Borrowed bytes: one frame. */
typedef struct lb_bytes {
    const void *data;
    size_t size;
} lb_bytes;

/** A payload being built: one msgpack value plus the bulk frames it references.
 *  Pack with msgpack_pack_* on `packer`, and bytes with lb_payload_pack_bytes (which lifts
 *  values of LB_BULK_THRESHOLD bytes or more into bulk frames). Bulk bytes are borrowed: they
 *  must stay valid until the payload is sent or destroyed. */
typedef struct lb_payload {
    msgpack_sbuffer buffer;
    msgpack_packer packer;
    lb_bytes *bulk;
    size_t bulk_count;
    /* private */
    size_t bulk_capacity_;
} lb_payload;

void lb_payload_init(lb_payload *payload);
void lb_payload_destroy(lb_payload *payload);
/** Pack a bytes value: inline bin below LB_BULK_THRESHOLD, else a reference to a new bulk
 *  frame (ext 1, 4-byte big-endian 1-based index). */
lb_code lb_payload_pack_bytes(lb_payload *payload, const void *data, size_t size, lb_error *err);
/** Pack a whole value, lifting bytes as the reference encoder does: the value itself or any bin
 *  within LB_BULK_DEPTH levels of maps/arrays. What §4 forbids (ext values, non-str map keys,
 *  invalid UTF-8) is refused with bad_request, before anything is packed. */
lb_code lb_payload_pack_object(lb_payload *payload, const msgpack_object *value, lb_error *err);

/** An unpacked value (args, progress data, result, event data) with bulk references resolved:
 *  each resolved bin points into its bulk frame. */
typedef struct lb_value {
    msgpack_object object;
    /* private */
    msgpack_unpacked unpacked_;
    void *frames_; /* frames owned by this value (client results), or NULL */
    size_t frame_count_;
} lb_value;

/** Unpack a payload (`packed`, from a header's bin) against its message's bulk frames.
 *  bad_request if it is not exactly one msgpack value, holds invalid UTF-8, an ext other than a
 *  valid bulk reference (type 1, 4 bytes, index 1..bulk_count). `packed` and `bulk` are borrowed:
 *  they must outlive `out`. A zero-length payload is nil. */
lb_code lb_unpack_payload(const lb_bytes *packed, const lb_bytes *bulk, size_t bulk_count,
                          lb_value *out, lb_error *err);
void lb_value_destroy(lb_value *value);

/* --- messages (§5) ---------------------------------------------------------------------- */

typedef enum lb_kind {
    LB_REQUEST = 1,
    LB_PROGRESS = 2,
    LB_REPLY = 3,
    LB_ERROR = 4,
    LB_CANCEL = 5,
    LB_READY = 6,
    LB_HEARTBEAT = 7,
    LB_DISCONNECT = 8,
    LB_EVENT = 9,
    LB_HELLO = 10
} lb_kind;

/** A decoded command-channel message. Fields the kind does not have are nil objects.
 *  `payload` is the raw args/data/result bytes (REQUEST, PROGRESS, REPLY): unpack it with
 *  lb_unpack_payload(&m.payload, m.bulk, m.bulk_count, ...). */
typedef struct lb_message {
    lb_kind kind;
    msgpack_object header; /* the whole header array, as on the wire */
    msgpack_object msg_id, service, command, ttl_s, code, message, details, info, reason,
        versions;
    lb_bytes payload;
    const lb_bytes *bulk; /* the frames after the header (borrowed) */
    size_t bulk_count;
    /* private */
    msgpack_unpacked unpacked_;
} lb_message;

/** Decode frames[0] as a header (§5): version, kind, element count and types, UTF-8, str map
 *  keys, no trailing bytes, at most LB_MAX_HEADER_BYTES; bulk frames only after REQUEST,
 *  PROGRESS and REPLY. bad_request or unsupported_version. The frames are borrowed. */
lb_code lb_decode(const lb_bytes *frames, size_t frame_count, lb_message *out, lb_error *err);
void lb_message_destroy(lb_message *message);

/** Header encoders: each writes frame 0 into `header` (initialised by the caller). A payload's
 *  bulk frames follow the header as frames 1..n. `ttl_s` NULL sends nil. Strings are
 *  NUL-terminated UTF-8; map arguments (details, info) are msgpack maps with str keys. */
lb_code lb_encode_request(msgpack_sbuffer *header, const char *msg_id, const char *service,
                          const char *command, const double *ttl_s, const lb_payload *args,
                          lb_error *err);
lb_code lb_encode_progress(msgpack_sbuffer *header, const char *msg_id, const lb_payload *data,
                           lb_error *err);
lb_code lb_encode_reply(msgpack_sbuffer *header, const char *msg_id, const lb_payload *result,
                        lb_error *err);
lb_code lb_encode_error(msgpack_sbuffer *header, const char *msg_id, const char *code,
                        const char *message, const msgpack_object *details, lb_error *err);
lb_code lb_encode_cancel(msgpack_sbuffer *header, const char *msg_id, lb_error *err);
lb_code lb_encode_ready(msgpack_sbuffer *header, const char *service, const msgpack_object *info,
                        lb_error *err);
lb_code lb_encode_heartbeat(msgpack_sbuffer *header, lb_error *err);
lb_code lb_encode_disconnect(msgpack_sbuffer *header, const char *reason, lb_error *err);
lb_code lb_encode_hello(msgpack_sbuffer *header, const int64_t *versions, size_t version_count,
                        const msgpack_object *info, lb_error *err);

/* --- events (§9) ------------------------------------------------------------------------ */

/** A decoded event, with `missed` from gap tracking when it came from an lb_subscriber. */
typedef struct lb_event {
    const char *topic; /* NUL-terminated copy */
    size_t topic_len;
    msgpack_object body; /* the whole body array */
    msgpack_object src, ts, data;
    uint64_t epoch, seq;
    double ts_s;
    uint64_t missed; /* events of this topic lost just before this one (0 from lb_decode_event) */
    /* private */
    msgpack_unpacked unpacked_;
    char *storage_;
} lb_event;

/** Decode one event frame: `topic NUL msgpack [1, 9, src, epoch, seq, ts, data, ...]`.
 *  bad_request when malformed. The frame is copied. */
lb_code lb_decode_event(const lb_bytes *frame, lb_event *out, lb_error *err);
void lb_event_destroy(lb_event *event);
/** Encode an event frame into `frame` (initialised by the caller). */
lb_code lb_encode_event(msgpack_sbuffer *frame, const char *topic, const char *src,
                        uint64_t epoch, uint64_t seq, double ts, const msgpack_object *data,
                        lb_error *err);

/** Per-topic (epoch, seq) tracking of §9. */
typedef struct lb_gaps lb_gaps;
lb_gaps *lb_gaps_new(void);
void lb_gaps_destroy(lb_gaps *gaps);
/** Record an event; return how many events of the topic were missed just before it. */
uint64_t lb_gaps_observe(lb_gaps *gaps, const char *topic, size_t topic_len, uint64_t epoch,
                         uint64_t seq);

/* --- keys (§18) ------------------------------------------------------------------------- */

/** A CURVE client's keys, Z85 (40 characters + NUL). */
typedef struct lb_keys {
    char public_key[41];
    char secret_key[41];
    char server_key[41]; /* the broker's public key */
} lb_keys;

/** Keys from LINEBUS_KEY_FILE or LINEBUS_KEY (own secret) and LINEBUS_BROKER_KEY_FILE or
 *  LINEBUS_BROKER_KEY (the broker's public key), as the Python client reads them.
 *  Returns LB_OK with *found = 1 (keys loaded) or 0 (none configured: plaintext), or
 *  LB_CONFIG_ERROR when one half is configured without the other, both variables of a half are
 *  set, or a key is missing, unreadable, readable by others (secret files) or malformed. */
lb_code lb_keys_from_env(lb_keys *keys, int *found, lb_error *err);
/** Own key pair from a secret certificate file (NAME.key_secret, mode 0600). */
lb_code lb_keys_load_secret_file(lb_keys *keys, const char *path, lb_error *err);
/** Own key pair from a Z85 secret key (the public half is derived). */
lb_code lb_keys_set_secret(lb_keys *keys, const char *z85, const char *source, lb_error *err);
/** The broker's public key from a certificate file (.key, or .key_secret). */
lb_code lb_keys_load_server_file(lb_keys *keys, const char *path, lb_error *err);
/** The broker's public key from Z85 text. */
lb_code lb_keys_set_server(lb_keys *keys, const char *z85, const char *source, lb_error *err);

/* --- calling (§6, §7) ------------------------------------------------------------------- */

typedef struct lb_client lb_client;

/** A client connected (DEALER, ZMQ_IMMEDIATE) to the broker's command endpoint; CURVE with
 *  `keys` if not NULL. Connecting never waits: an unreachable broker shows in the first call. */
lb_client *lb_client_new(const char *endpoint, const lb_keys *keys, lb_error *err);
void lb_client_destroy(lb_client *client);

/** Called for each PROGRESS of a call, with its data (bulk references resolved; valid during
 *  the call only). Return non-zero to cancel the call. */
typedef int (*lb_progress_fn)(const msgpack_object *data, void *user);

typedef struct lb_call_options {
    double timeout_s;         /* the deadline, sent as ttl_s; <= 0 fails at once */
    lb_progress_fn progress;  /* may be NULL */
    void *user;               /* passed to progress */
    volatile sig_atomic_t *cancel; /* if not NULL: set non-zero (a signal handler may) to cancel */
} lb_call_options;

#define LB_CALL_OPTIONS_INIT {10.0, NULL, NULL, NULL}

/** Call `service.command` with `args` (a map; NULL for none) and wait for its answer.
 *  On LB_OK `result` holds the result (lb_value_destroy it). Otherwise the code is also in
 *  err->code: the actor's or broker's ERROR (unknown codes as LB_REMOTE_ERROR), or locally
 *  deadline_exceeded (no answer by timeout + grace), broker_unreachable (nothing ever received
 *  from the broker, or the request could not be sent), unauthenticated (the broker refused our
 *  key in the CURVE handshake: at once, not at the deadline). A cancelled call sends CANCEL and
 *  still waits for the final answer (usually ERROR cancelled). */
lb_code lb_call(lb_client *client, const char *service, const char *command,
                const lb_payload *args, const lb_call_options *options, lb_value *result,
                lb_error *err);

/* --- subscribing (§9) ------------------------------------------------------------------- */

typedef struct lb_subscriber lb_subscriber;

/** A SUB socket connected to the broker's subscribe endpoint; CURVE with `keys` if not NULL. */
lb_subscriber *lb_subscriber_new(const char *endpoint, const lb_keys *keys, lb_error *err);
void lb_subscriber_destroy(lb_subscriber *subscriber);
/** Subscribe to a topic prefix ("fr1." — end it with a dot; "" is everything). */
lb_code lb_subscriber_add(lb_subscriber *subscriber, const char *prefix, lb_error *err);
/** Wait until the broker applies our subscriptions: subscribe to a unique `_probe.` topic and
 *  call broker.probe through `client` until its event arrives (§9), at most `timeout_s`. */
lb_code lb_subscriber_wait_ready(lb_subscriber *subscriber, lb_client *client, double timeout_s,
                                 lb_error *err);
/** The next event, within `timeout_s` (< 0: no limit). Returns LB_OK with `event` filled
 *  (lb_event_destroy it), LB_DEADLINE_EXCEEDED when nothing came in time, LB_UNAUTHENTICATED
 *  at once when the broker refuses our key (§18), or another code.
 *  Probes and malformed frames are skipped (malformed ones counted). */
lb_code lb_subscriber_next(lb_subscriber *subscriber, lb_event *event, double timeout_s,
                           lb_error *err);
/** Malformed event frames skipped so far. */
uint64_t lb_subscriber_malformed(const lb_subscriber *subscriber);

/* --- output --------------------------------------------------------------------------- */

/** Write a value as JSON: bin as {"hex": "..."}, ext as {"ext": type, "hex": "..."}. */
void lb_fprint_json(FILE *out, const msgpack_object *value);

#ifdef __cplusplus
}
#endif
#endif /* LINEBUS_H */
