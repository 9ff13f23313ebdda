/* Headers, payloads and bulk frames (PROTOCOL.md §3-§5, §9, §11): no sockets here. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define BULK_EXT 1

static lb_code check_tree(msgpack_object *o, const lb_bytes *bulk, size_t bulk_count, int payload,
                          const char *where, lb_error *err);

/* --- payloads ------------------------------------------------------------------------------ */

void lb_payload_init(lb_payload *payload) {
    memset(payload, 0, sizeof *payload);
    msgpack_sbuffer_init(&payload->buffer);
    msgpack_packer_init(&payload->packer, &payload->buffer, msgpack_sbuffer_write);
}

void lb_payload_destroy(lb_payload *payload) {
    msgpack_sbuffer_destroy(&payload->buffer);
    free(payload->bulk);
    memset(payload, 0, sizeof *payload);
}

lb_code lb_payload_pack_bytes(lb_payload *payload, const void *data, size_t size,
                              lb_error *err) {
    if (size > UINT32_MAX) return lb_fail(err, LB_BAD_REQUEST, "bytes value too large for msgpack");
    if (size < LB_BULK_THRESHOLD) {
        msgpack_pack_bin(&payload->packer, size);
        msgpack_pack_bin_body(&payload->packer, data, size);
        return LB_OK;
    }
    if (payload->bulk_count == payload->bulk_capacity_) {
        size_t capacity = payload->bulk_capacity_ ? payload->bulk_capacity_ * 2 : 4;
        lb_bytes *grown = realloc(payload->bulk, capacity * sizeof *grown);
        if (grown == NULL) return lb_fail(err, LB_INTERNAL, "out of memory");
        payload->bulk = grown;
        payload->bulk_capacity_ = capacity;
    }
    payload->bulk[payload->bulk_count++] = (lb_bytes){data, size};
    uint32_t index = (uint32_t)payload->bulk_count; /* 1-based: 1 is the first frame after the header */
    unsigned char ref[4] = {(unsigned char)(index >> 24), (unsigned char)(index >> 16),
                            (unsigned char)(index >> 8), (unsigned char)index};
    msgpack_pack_ext(&payload->packer, sizeof ref, BULK_EXT);
    msgpack_pack_ext_body(&payload->packer, ref, sizeof ref);
    return LB_OK;
}

/* The reference encoder's rule (§4): bytes are lifted when they are the payload itself or lie
 * within LB_BULK_DEPTH levels of maps/arrays; a container at depth 0 is packed as it is. */
static lb_code pack_lifting(lb_payload *payload, const msgpack_object *value, int depth,
                            lb_error *err) {
    lb_code code = LB_OK;
    switch (value->type) {
    case MSGPACK_OBJECT_BIN:
        return lb_payload_pack_bytes(payload, value->via.bin.ptr, value->via.bin.size, err);
    case MSGPACK_OBJECT_EXT:
        return lb_fail(err, LB_BAD_REQUEST,
                       "ext type %d cannot be sent: only bulk references (ext 1), which the "
                       "encoder makes itself", value->via.ext.type);
    case MSGPACK_OBJECT_ARRAY:
        if (depth <= 0) break;
        msgpack_pack_array(&payload->packer, value->via.array.size);
        for (uint32_t i = 0; i < value->via.array.size && code == LB_OK; i++)
            code = pack_lifting(payload, &value->via.array.ptr[i], depth - 1, err);
        return code;
    case MSGPACK_OBJECT_MAP:
        if (depth <= 0) break;
        msgpack_pack_map(&payload->packer, value->via.map.size);
        for (uint32_t i = 0; i < value->via.map.size && code == LB_OK; i++) {
            msgpack_pack_object(&payload->packer, value->via.map.ptr[i].key);
            code = pack_lifting(payload, &value->via.map.ptr[i].val, depth - 1, err);
        }
        return code;
    default:
        break;
    }
    msgpack_pack_object(&payload->packer, *value);
    return LB_OK;
}

lb_code lb_payload_pack_object(lb_payload *payload, const msgpack_object *value, lb_error *err) {
    /* What §4 forbids is refused before anything is packed: invalid UTF-8, non-str map keys
     * and ext values (check_tree outside payload mode rewrites nothing). */
    msgpack_object copy = *value;
    lb_code code = check_tree(&copy, NULL, 0, 0, "value to send", err);
    return code != LB_OK ? code : pack_lifting(payload, value, LB_BULK_DEPTH, err);
}

static void pack_str(msgpack_packer *pk, const char *text) {
    size_t size = strlen(text);
    msgpack_pack_str(pk, size);
    msgpack_pack_str_body(pk, text, size);
}

/* A breach of §4's msgpack rules in `where` ("header", "payload", "event body"). In a payload
 * the message and details are §4's: "payload is not valid msgpack: <what>",
 * {"reason": "invalid_payload", "problem": P}. */
static lb_code malformed(lb_error *err, const char *where, const char *problem,
                         const char *format, ...) __attribute__((format(printf, 4, 5)));
static lb_code malformed(lb_error *err, const char *where, const char *problem,
                         const char *format, ...) {
    char what[400];
    va_list args;
    va_start(args, format);
    vsnprintf(what, sizeof what, format, args);
    va_end(args);
    if (strcmp(where, "payload") != 0) return lb_fail(err, LB_BAD_REQUEST, "%s: %s", where, what);
    lb_fail(err, LB_BAD_REQUEST, "payload is not valid msgpack: %s", what);
    const char *keys[] = {"reason", "problem"}, *values[] = {"invalid_payload", problem};
    lb_error_set_details(err, 2, keys, values);
    return LB_BAD_REQUEST;
}

/* --- checking unpacked trees ---------------------------------------------------------------- */

/* Check a tree: strs valid UTF-8, map keys str. In payloads, resolve bulk references in place
 * (`bulk` not NULL); in headers (`bulk` NULL) any ext is refused. */
static lb_code check_tree(msgpack_object *o, const lb_bytes *bulk, size_t bulk_count, int payload,
                          const char *where, lb_error *err) {
    switch (o->type) {
    case MSGPACK_OBJECT_STR:
        if (!lb_utf8_valid(o->via.str.ptr, o->via.str.size))
            return malformed(err, where, "invalid_utf8", "a str is not valid UTF-8");
        return LB_OK;
    case MSGPACK_OBJECT_EXT: {
        if (!payload)
            return malformed(err, where, "ext_type", "msgpack ext type %d outside a payload",
                             o->via.ext.type);
        if (o->via.ext.type != BULK_EXT)
            return malformed(err, where, "ext_type", "msgpack ext type %d is not defined by the "
                             "protocol (only 1, a bulk reference)", o->via.ext.type);
        if (o->via.ext.size != 4)
            return malformed(err, where, "bulk_reference",
                             "a bulk reference has %u bytes of data, not 4", o->via.ext.size);
        const unsigned char *p = (const unsigned char *)o->via.ext.ptr;
        uint32_t index = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if (index == 0 || index > bulk_count)
            return malformed(err, where, "bulk_reference",
                             "bulk reference %u out of range (the message has %zu bulk frames, "
                             "numbered from 1)", index, bulk_count);
        const lb_bytes *frame = &bulk[index - 1];
        if (frame->size > UINT32_MAX)
            return malformed(err, where, "bulk_reference", "bulk frame %u too large", index);
        o->type = MSGPACK_OBJECT_BIN;
        o->via.bin.ptr = frame->data;
        o->via.bin.size = (uint32_t)frame->size;
        return LB_OK;
    }
    case MSGPACK_OBJECT_ARRAY:
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            lb_code code = check_tree(&o->via.array.ptr[i], bulk, bulk_count, payload, where, err);
            if (code != LB_OK) return code;
        }
        return LB_OK;
    case MSGPACK_OBJECT_MAP:
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR)
                return malformed(err, where, "map_key_not_str", "a map key is not a str");
            lb_code code = check_tree(&kv->key, bulk, bulk_count, payload, where, err);
            if (code == LB_OK)
                code = check_tree(&kv->val, bulk, bulk_count, payload, where, err);
            if (code != LB_OK) return code;
        }
        return LB_OK;
    default:
        return LB_OK;
    }
}

/* Exactly one msgpack value in [data, data + size). */
static lb_code unpack_one(const void *data, size_t size, msgpack_unpacked *out, const char *where,
                          lb_error *err) {
    size_t offset = 0;
    msgpack_unpack_return ret = msgpack_unpack_next(out, data, size, &offset);
    if (ret == MSGPACK_UNPACK_CONTINUE)
        return malformed(err, where, "truncated", "ends in the middle of a value");
    if (ret == MSGPACK_UNPACK_NOMEM_ERROR) /* msgpack-c's nesting limit (32 levels) */
        return malformed(err, where, "too_deep", "nests deeper than msgpack-c's limit");
    if (ret != MSGPACK_UNPACK_SUCCESS)
        return malformed(err, where, "invalid_byte", "holds a byte that begins no msgpack value");
    if (offset != size)
        return malformed(err, where, "trailing_bytes", "%zu bytes after the value",
                         size - offset);
    return LB_OK;
}

lb_code lb_unpack_payload(const lb_bytes *packed, const lb_bytes *bulk, size_t bulk_count,
                          lb_value *out, lb_error *err) {
    memset(out, 0, sizeof *out);
    msgpack_unpacked_init(&out->unpacked_);
    out->object.type = MSGPACK_OBJECT_NIL;
    if (packed->size == 0) return LB_OK; /* a zero-length payload is nil (§4) */
    lb_code code = unpack_one(packed->data, packed->size, &out->unpacked_, "payload", err);
    if (code == LB_OK) {
        out->object = out->unpacked_.data;
        static const lb_bytes none[1] = {{NULL, 0}};
        code = check_tree(&out->object, bulk_count ? bulk : none, bulk_count, 1, "payload", err);
    }
    if (code != LB_OK) lb_value_destroy(out);
    return code;
}

/* --- headers --------------------------------------------------------------------------------- */

typedef enum { T_STR, T_BIN, T_MAP, T_ARRAY, T_TTL } elem_type;

static const char *type_name(elem_type t) {
    static const char *names[] = {"a str", "a bin", "a map", "an array",
                                  "an int, a float or nil"};
    return names[t];
}

static int has_type(const msgpack_object *o, elem_type t) {
    switch (t) {
    case T_STR: return o->type == MSGPACK_OBJECT_STR;
    case T_BIN: return o->type == MSGPACK_OBJECT_BIN;
    case T_MAP: return o->type == MSGPACK_OBJECT_MAP;
    case T_ARRAY: return o->type == MSGPACK_OBJECT_ARRAY;
    case T_TTL:
        return o->type == MSGPACK_OBJECT_NIL || o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
               o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER || o->type == MSGPACK_OBJECT_FLOAT32 ||
               o->type == MSGPACK_OBJECT_FLOAT64;
    }
    return 0;
}

/* The layout of each kind (§5): element names and types after [version, kind]. */
typedef struct {
    const char *name;
    int count;
    const char *elements[5];
    elem_type types[5];
    int bulk; /* bulk frames allowed after this kind */
} layout;

static const layout LAYOUTS[] = {
    [LB_REQUEST] = {"REQUEST", 5, {"msg_id", "service", "command", "ttl_s", "args"},
                    {T_STR, T_STR, T_STR, T_TTL, T_BIN}, 1},
    [LB_PROGRESS] = {"PROGRESS", 2, {"msg_id", "data"}, {T_STR, T_BIN}, 1},
    [LB_REPLY] = {"REPLY", 2, {"msg_id", "result"}, {T_STR, T_BIN}, 1},
    [LB_ERROR] = {"ERROR", 4, {"msg_id", "code", "message", "details"},
                  {T_STR, T_STR, T_STR, T_MAP}, 0},
    [LB_CANCEL] = {"CANCEL", 1, {"msg_id"}, {T_STR}, 0},
    [LB_READY] = {"READY", 2, {"service", "info"}, {T_STR, T_MAP}, 0},
    [LB_HEARTBEAT] = {"HEARTBEAT", 0, {0}, {0}, 0},
    [LB_DISCONNECT] = {"DISCONNECT", 1, {"reason"}, {T_STR}, 0},
    [LB_EVENT] = {NULL, 0, {0}, {0}, 0},
    [LB_HELLO] = {"HELLO", 2, {"versions", "info"}, {T_ARRAY, T_MAP}, 0},
};

static msgpack_object *field_slot(lb_message *m, const char *name) {
    static const struct {
        const char *name;
        size_t offset;
    } FIELDS[] = {
        {"msg_id", offsetof(lb_message, msg_id)},   {"service", offsetof(lb_message, service)},
        {"command", offsetof(lb_message, command)}, {"ttl_s", offsetof(lb_message, ttl_s)},
        {"code", offsetof(lb_message, code)},       {"message", offsetof(lb_message, message)},
        {"details", offsetof(lb_message, details)}, {"info", offsetof(lb_message, info)},
        {"reason", offsetof(lb_message, reason)},   {"versions", offsetof(lb_message, versions)},
    };
    for (size_t i = 0; i < sizeof FIELDS / sizeof FIELDS[0]; i++)
        if (strcmp(FIELDS[i].name, name) == 0)
            return (msgpack_object *)((char *)m + FIELDS[i].offset);
    return NULL;
}

static int is_int(const msgpack_object *o) {
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER || o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
}

static lb_code decode_header(const lb_bytes *frames, size_t frame_count, lb_message *m,
                             lb_error *err) {
    if (frame_count == 0) return lb_fail(err, LB_BAD_REQUEST, "a message with no frames");
    const lb_bytes *head = &frames[0];
    if (head->size > LB_MAX_HEADER_BYTES) {
        lb_fail(err, LB_BAD_REQUEST, "header of %zu bytes is larger than %d", head->size,
                LB_MAX_HEADER_BYTES);
        /* details {"reason": "header_too_large", "size": n} (§10) */
        msgpack_sbuffer details;
        msgpack_sbuffer_init(&details);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &details, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 2);
        pack_str(&pk, "reason");
        pack_str(&pk, "header_too_large");
        pack_str(&pk, "size");
        msgpack_pack_uint64(&pk, head->size);
        lb_error_set_details_packed(err, details.data, details.size);
        msgpack_sbuffer_destroy(&details);
        return LB_BAD_REQUEST;
    }
    if (head->size == 0) return lb_fail(err, LB_BAD_REQUEST, "empty header frame");
    /* §5's order of checks: 1. one msgpack value under §4's rules; 2. an array... */
    lb_code code = unpack_one(head->data, head->size, &m->unpacked_, "header", err);
    if (code != LB_OK) return code;
    m->header = m->unpacked_.data;
    code = check_tree(&m->header, NULL, 0, 0, "header", err);
    if (code != LB_OK) return code;
    if (m->header.type != MSGPACK_OBJECT_ARRAY)
        return lb_fail(err, LB_BAD_REQUEST, "header is not a msgpack array");
    const msgpack_object *items = m->header.via.array.ptr;
    uint32_t count = m->header.via.array.size;
    if (count == 0) return lb_fail(err, LB_BAD_REQUEST, "header is an empty array");
    if (!is_int(&items[0]))
        return lb_fail(err, LB_BAD_REQUEST, "header version is not an integer");
    if (items[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || items[0].via.u64 != LB_PROTOCOL_VERSION) {
        lb_fail(err, LB_UNSUPPORTED_VERSION, "protocol version %lld is not supported (only 1)",
                items[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (long long)items[0].via.u64
                                                                 : (long long)items[0].via.i64);
        /* details {"supported": [1]} */
        static const char supported[] = "\x81\xa9supported\x91\x01";
        lb_error_set_details_packed(err, supported, sizeof supported - 1);
        return LB_UNSUPPORTED_VERSION;
    }
    if (count < 2) return lb_fail(err, LB_BAD_REQUEST, "header has no kind");
    if (!is_int(&items[1])) return lb_fail(err, LB_BAD_REQUEST, "header kind is not an integer");
    uint64_t kind = items[1].via.u64;
    if (items[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER || kind < LB_REQUEST || kind > LB_HELLO)
        return lb_fail(err, LB_BAD_REQUEST, "unknown message kind %lld", (long long)items[1].via.i64);
    if (kind == LB_EVENT)
        return lb_fail(err, LB_BAD_REQUEST, "EVENT (kind 9) is not valid on the command channel");
    const layout *l = &LAYOUTS[kind];
    if (count < (uint32_t)(2 + l->count))
        return lb_fail(err, LB_BAD_REQUEST, "%s header has %u elements, needs %d", l->name, count,
                       2 + l->count);
    m->kind = (lb_kind)kind;
    for (int i = 0; i < l->count; i++) {
        const msgpack_object *item = &items[2 + i];
        if (!has_type(item, l->types[i]))
            return lb_fail(err, LB_BAD_REQUEST, "%s %s is not %s", l->name, l->elements[i],
                           type_name(l->types[i]));
        msgpack_object *slot = field_slot(m, l->elements[i]);
        if (slot != NULL) {
            *slot = *item;
        } else { /* args, data, result: the payload */
            m->payload.data = item->via.bin.ptr;
            m->payload.size = item->via.bin.size;
        }
    }
    if (kind == LB_HELLO)
        for (uint32_t i = 0; i < m->versions.via.array.size; i++)
            if (!is_int(&m->versions.via.array.ptr[i]))
                return lb_fail(err, LB_BAD_REQUEST, "HELLO versions holds a non-integer");
    if (frame_count > 1 && !l->bulk)
        return lb_fail(err, LB_BAD_REQUEST, "%s carries %zu bulk frames; only REQUEST, PROGRESS "
                       "and REPLY may", l->name, frame_count - 1);
    m->bulk = frames + 1;
    m->bulk_count = frame_count - 1;
    return LB_OK;
}

lb_code lb_decode(const lb_bytes *frames, size_t frame_count, lb_message *out, lb_error *err) {
    memset(out, 0, sizeof *out);
    msgpack_unpacked_init(&out->unpacked_);
    msgpack_object *fields[] = {&out->msg_id, &out->service, &out->command, &out->ttl_s,
                                &out->code,   &out->message, &out->details, &out->info,
                                &out->reason, &out->versions};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) fields[i]->type = MSGPACK_OBJECT_NIL;
    lb_code code = decode_header(frames, frame_count, out, err);
    if (code != LB_OK) lb_message_destroy(out);
    return code;
}

void lb_message_destroy(lb_message *message) {
    msgpack_unpacked_destroy(&message->unpacked_);
    memset(message, 0, sizeof *message);
}

void lb_value_destroy(lb_value *value) {
    msgpack_unpacked_destroy(&value->unpacked_);
    /* Frames owned by a client result are released by the client's code (client.c). */
    if (value->frames_ != NULL) lb_release_frames(value->frames_, value->frame_count_);
    memset(value, 0, sizeof *value);
    value->object.type = MSGPACK_OBJECT_NIL;
}

/* --- header encoders ------------------------------------------------------------------------ */

static lb_code check_str(const char *text, const char *what, lb_error *err) {
    if (text == NULL) return lb_fail(err, LB_BAD_REQUEST, "%s is missing", what);
    if (!lb_utf8_valid(text, strlen(text)))
        return lb_fail(err, LB_BAD_REQUEST, "%s is not valid UTF-8", what);
    return LB_OK;
}

static lb_code check_map(const msgpack_object *map, const char *what, lb_error *err) {
    if (map == NULL || map->type != MSGPACK_OBJECT_MAP)
        return lb_fail(err, LB_BAD_REQUEST, "%s is not a map", what);
    msgpack_object copy = *map; /* check_tree only rewrites exts, which it refuses here */
    return check_tree(&copy, NULL, 0, 0, what, err);
}

static void start(msgpack_sbuffer *header, msgpack_packer *pk, size_t elements, lb_kind kind) {
    msgpack_packer_init(pk, header, msgpack_sbuffer_write);
    msgpack_pack_array(pk, elements);
    msgpack_pack_int(pk, LB_PROTOCOL_VERSION);
    msgpack_pack_int(pk, kind);
}

static void pack_payload(msgpack_packer *pk, const lb_payload *payload, int empty_map) {
    if (payload == NULL) {
        /* No payload: {} for args (0x80), nil otherwise */
        msgpack_pack_bin(pk, 1);
        msgpack_pack_bin_body(pk, empty_map ? "\x80" : "\xc0", 1);
        return;
    }
    msgpack_pack_bin(pk, payload->buffer.size);
    msgpack_pack_bin_body(pk, payload->buffer.data, payload->buffer.size);
}

lb_code lb_encode_request(msgpack_sbuffer *header, const char *msg_id, const char *service,
                          const char *command, const double *ttl_s, const lb_payload *args,
                          lb_error *err) {
    lb_code code = check_str(msg_id, "msg_id", err);
    if (code == LB_OK) code = check_str(service, "service", err);
    if (code == LB_OK) code = check_str(command, "command", err);
    if (code != LB_OK) return code;
    msgpack_packer pk;
    start(header, &pk, 7, LB_REQUEST);
    pack_str(&pk, msg_id);
    pack_str(&pk, service);
    pack_str(&pk, command);
    if (ttl_s == NULL)
        msgpack_pack_nil(&pk);
    else
        msgpack_pack_double(&pk, *ttl_s);
    pack_payload(&pk, args, 1);
    return LB_OK;
}

static lb_code encode_id_payload(msgpack_sbuffer *header, lb_kind kind, const char *msg_id,
                                 const lb_payload *payload, lb_error *err) {
    lb_code code = check_str(msg_id, "msg_id", err);
    if (code != LB_OK) return code;
    msgpack_packer pk;
    start(header, &pk, 4, kind);
    pack_str(&pk, msg_id);
    pack_payload(&pk, payload, 0);
    return LB_OK;
}

lb_code lb_encode_progress(msgpack_sbuffer *header, const char *msg_id, const lb_payload *data,
                           lb_error *err) {
    return encode_id_payload(header, LB_PROGRESS, msg_id, data, err);
}

lb_code lb_encode_reply(msgpack_sbuffer *header, const char *msg_id, const lb_payload *result,
                        lb_error *err) {
    return encode_id_payload(header, LB_REPLY, msg_id, result, err);
}

lb_code lb_encode_error(msgpack_sbuffer *header, const char *msg_id, const char *code_name,
                        const char *message, const msgpack_object *details, lb_error *err) {
    lb_code code = check_str(msg_id, "msg_id", err);
    if (code == LB_OK) code = check_str(code_name, "code", err);
    if (code == LB_OK) code = check_str(message, "message", err);
    if (code == LB_OK && details != NULL) code = check_map(details, "details", err);
    if (code != LB_OK) return code;
    msgpack_packer pk;
    start(header, &pk, 6, LB_ERROR);
    pack_str(&pk, msg_id);
    pack_str(&pk, code_name);
    pack_str(&pk, message);
    if (details == NULL)
        msgpack_pack_map(&pk, 0);
    else
        msgpack_pack_object(&pk, *details);
    return LB_OK;
}

lb_code lb_encode_cancel(msgpack_sbuffer *header, const char *msg_id, lb_error *err) {
    lb_code code = check_str(msg_id, "msg_id", err);
    if (code != LB_OK) return code;
    msgpack_packer pk;
    start(header, &pk, 3, LB_CANCEL);
    pack_str(&pk, msg_id);
    return LB_OK;
}

lb_code lb_encode_ready(msgpack_sbuffer *header, const char *service, const msgpack_object *info,
                        lb_error *err) {
    lb_code code = check_str(service, "service", err);
    if (code == LB_OK) code = check_map(info, "info", err);
    if (code != LB_OK) return code;
    msgpack_packer pk;
    start(header, &pk, 4, LB_READY);
    pack_str(&pk, service);
    msgpack_pack_object(&pk, *info);
    return LB_OK;
}

lb_code lb_encode_heartbeat(msgpack_sbuffer *header, lb_error *err) {
    (void)err;
    msgpack_packer pk;
    start(header, &pk, 2, LB_HEARTBEAT);
    return LB_OK;
}

lb_code lb_encode_disconnect(msgpack_sbuffer *header, const char *reason, lb_error *err) {
    lb_code code = check_str(reason, "reason", err);
    if (code != LB_OK) return code;
    msgpack_packer pk;
    start(header, &pk, 3, LB_DISCONNECT);
    pack_str(&pk, reason);
    return LB_OK;
}

lb_code lb_encode_hello(msgpack_sbuffer *header, const int64_t *versions, size_t version_count,
                        const msgpack_object *info, lb_error *err) {
    lb_code code = check_map(info, "info", err);
    if (code != LB_OK) return code;
    msgpack_packer pk;
    start(header, &pk, 4, LB_HELLO);
    msgpack_pack_array(&pk, version_count);
    for (size_t i = 0; i < version_count; i++) msgpack_pack_int64(&pk, versions[i]);
    msgpack_pack_object(&pk, *info);
    return LB_OK;
}

/* --- events ------------------------------------------------------------------------------- */

static int is_number(const msgpack_object *o) {
    return is_int(o) || o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64;
}

lb_code lb_decode_event(const lb_bytes *frame, lb_event *out, lb_error *err) {
    memset(out, 0, sizeof *out);
    msgpack_unpacked_init(&out->unpacked_);
    lb_code code = LB_OK;
    const char *data = frame->data;
    const char *nul = frame->size ? memchr(data, 0, frame->size) : NULL;
    if (nul == NULL) {
        code = lb_fail(err, LB_BAD_REQUEST, "event frame has no NUL after the topic");
        goto done;
    }
    size_t topic_len = (size_t)(nul - data);
    if (!lb_utf8_valid(data, topic_len)) {
        code = lb_fail(err, LB_BAD_REQUEST, "event topic is not valid UTF-8");
        goto done;
    }
    /* One copy: the topic (NUL-terminated, as it is in the frame) and the body after it. */
    out->storage_ = malloc(frame->size ? frame->size : 1);
    if (out->storage_ == NULL) {
        code = lb_fail(err, LB_INTERNAL, "out of memory");
        goto done;
    }
    memcpy(out->storage_, data, frame->size);
    out->topic = out->storage_;
    out->topic_len = topic_len;
    code = unpack_one(out->storage_ + topic_len + 1, frame->size - topic_len - 1, &out->unpacked_,
                      "event body", err);
    if (code != LB_OK) goto done;
    out->body = out->unpacked_.data;
    code = check_tree(&out->body, NULL, 0, 0, "event body", err); /* §4: UTF-8, str keys, no ext */
    if (code != LB_OK) goto done;
    if (out->body.type != MSGPACK_OBJECT_ARRAY) {
        code = lb_fail(err, LB_BAD_REQUEST, "event body is not an array");
        goto done;
    }
    const msgpack_object *items = out->body.via.array.ptr;
    uint32_t count = out->body.via.array.size;
    if (count < 1 || items[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || items[0].via.u64 != 1) {
        code = lb_fail(err, LB_BAD_REQUEST, "event body is not version 1");
        goto done;
    }
    if (count < 2 || items[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER || items[1].via.u64 != LB_EVENT) {
        code = lb_fail(err, LB_BAD_REQUEST, "event body is not kind 9 (EVENT)");
        goto done;
    }
    if (count < 7) {
        code = lb_fail(err, LB_BAD_REQUEST, "event body has %u elements, needs 7", count);
        goto done;
    }
    if (items[2].type != MSGPACK_OBJECT_STR || items[3].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
        items[4].type != MSGPACK_OBJECT_POSITIVE_INTEGER || !is_number(&items[5])) {
        code = lb_fail(err, LB_BAD_REQUEST,
                       "event body types: src must be a str, epoch and seq unsigned integers, ts "
                       "a number");
        goto done;
    }
    out->src = items[2];
    out->epoch = items[3].via.u64;
    out->seq = items[4].via.u64;
    out->ts = items[5];
    out->ts_s = is_int(&items[5]) ? (items[5].type == MSGPACK_OBJECT_POSITIVE_INTEGER
                                         ? (double)items[5].via.u64
                                         : (double)items[5].via.i64)
                                  : items[5].via.f64;
    out->data = items[6];
done:
    if (code != LB_OK) lb_event_destroy(out);
    return code;
}

void lb_event_destroy(lb_event *event) {
    msgpack_unpacked_destroy(&event->unpacked_);
    free(event->storage_);
    memset(event, 0, sizeof *event);
}

lb_code lb_encode_event(msgpack_sbuffer *frame, const char *topic, const char *src,
                        uint64_t epoch, uint64_t seq, double ts, const msgpack_object *data,
                        lb_error *err) {
    lb_code code = check_str(topic, "topic", err);
    if (code == LB_OK) code = check_str(src, "src", err);
    if (code != LB_OK) return code;
    if (data != NULL) {
        msgpack_object copy = *data;
        code = check_tree(&copy, NULL, 0, 0, "event data", err);
        if (code != LB_OK) return code;
    }
    msgpack_sbuffer_write(frame, topic, strlen(topic) + 1); /* the topic and its NUL */
    msgpack_packer pk;
    msgpack_packer_init(&pk, frame, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 7);
    msgpack_pack_int(&pk, LB_PROTOCOL_VERSION);
    msgpack_pack_int(&pk, LB_EVENT);
    pack_str(&pk, src);
    msgpack_pack_uint64(&pk, epoch);
    msgpack_pack_uint64(&pk, seq);
    msgpack_pack_double(&pk, ts);
    if (data == NULL)
        msgpack_pack_nil(&pk);
    else
        msgpack_pack_object(&pk, *data);
    return LB_OK;
}
