/* test-vectors: run the codec over golden vectors (tests/vectors/, PROTOCOL.md §15).
 *
 * Reads from stdin a msgpack stream of vectors, each a map
 *   {"name": str, "channel": "command" | "event", "frames": [bin...], "decoded": map | nil}
 * (the JSON files with {"hex": ...} turned into bin by the pytest driver), and writes to stdout
 * one msgpack map per vector:
 *   {"name": str,
 *    "decoded": map | nil,              what the codec decoded, in the vectors' "decoded" form
 *    "error": {"code", "stage"} | nil,  why it refused the frames ("decode" or "value" stage)
 *    "encoded": [bin...] | nil,         the frames it encodes from the vector's "decoded"
 *    "encode_error": str | nil}
 * The driver (tests/integration/test_c_client_vectors.py) compares them with the vector.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack/fbuffer.h>

#include "linebus.h"

static const char *KIND_NAMES[] = {NULL,    "request",   "progress",   "reply",
                                   "error", "cancel",    "ready",      "heartbeat",
                                   "disconnect", "event", "hello"};

static const msgpack_object *get(const msgpack_object *map, const char *key) {
    if (map == NULL || map->type != MSGPACK_OBJECT_MAP) return NULL;
    size_t size = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == size &&
            memcmp(k->via.str.ptr, key, size) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

/* A str object as a NUL-terminated copy (NULL if not a str). */
static char *text(const msgpack_object *o) {
    if (o == NULL || o->type != MSGPACK_OBJECT_STR) return NULL;
    char *copy = malloc(o->via.str.size + 1);
    memcpy(copy, o->via.str.ptr, o->via.str.size);
    copy[o->via.str.size] = '\0';
    return copy;
}

static void pack_key(msgpack_packer *pk, const char *key) {
    msgpack_pack_str_with_body(pk, key, strlen(key));
}

static void pack_error(msgpack_packer *pk, const lb_error *err, const char *stage) {
    pack_key(pk, "error");
    msgpack_pack_map(pk, 4);
    pack_key(pk, "details");
    msgpack_pack_object(pk, err->details);
    pack_key(pk, "code");
    pack_key(pk, lb_code_name(err->code));
    pack_key(pk, "stage");
    pack_key(pk, stage);
    pack_key(pk, "message");
    pack_key(pk, err->message);
}

/* "decoded" and "error" of a command-channel vector. */
static void decode_command(msgpack_packer *pk, const lb_bytes *frames, size_t count) {
    lb_error err;
    lb_error_init(&err);
    lb_message m;
    if (lb_decode(frames, count, &m, &err) != LB_OK) {
        pack_key(pk, "decoded");
        msgpack_pack_nil(pk);
        pack_error(pk, &err, "decode");
        lb_error_clear(&err);
        return;
    }
    const char *payload_key = m.kind == LB_REQUEST    ? "args"
                              : m.kind == LB_PROGRESS ? "data"
                              : m.kind == LB_REPLY    ? "result"
                                                      : NULL;
    lb_value value;
    if (payload_key != NULL &&
        lb_unpack_payload(&m.payload, m.bulk, m.bulk_count, &value, &err) != LB_OK) {
        pack_key(pk, "decoded");
        msgpack_pack_nil(pk);
        pack_error(pk, &err, "value");
        lb_error_clear(&err);
        lb_message_destroy(&m);
        return;
    }
    struct {
        const char *key;
        const msgpack_object *value;
    } fields[] = {{"msg_id", &m.msg_id},   {"service", &m.service}, {"command", &m.command},
                  {"ttl_s", &m.ttl_s},     {"code", &m.code},       {"message", &m.message},
                  {"details", &m.details}, {"info", &m.info},       {"reason", &m.reason},
                  {"versions", &m.versions}};
    /* The kind's own fields: those the header has (ttl_s may be nil: present for REQUEST). */
    size_t present = 0;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (fields[i].value->type != MSGPACK_OBJECT_NIL || (i == 3 && m.kind == LB_REQUEST))
            present++;
    pack_key(pk, "decoded");
    msgpack_pack_map(pk, 2 + present + (payload_key != NULL));
    pack_key(pk, "kind");
    pack_key(pk, KIND_NAMES[m.kind]);
    pack_key(pk, "header");
    msgpack_pack_object(pk, m.header);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (fields[i].value->type != MSGPACK_OBJECT_NIL || (i == 3 && m.kind == LB_REQUEST)) {
            pack_key(pk, fields[i].key);
            msgpack_pack_object(pk, *fields[i].value);
        }
    if (payload_key != NULL) {
        pack_key(pk, payload_key);
        msgpack_pack_object(pk, value.object);
        lb_value_destroy(&value);
    }
    pack_key(pk, "error");
    msgpack_pack_nil(pk);
    lb_message_destroy(&m);
}

static void decode_event(msgpack_packer *pk, const lb_bytes *frames, size_t count) {
    lb_error err;
    lb_error_init(&err);
    lb_event event;
    lb_bytes none = {"", 0};
    if (lb_decode_event(count ? &frames[0] : &none, &event, &err) != LB_OK) {
        pack_key(pk, "decoded");
        msgpack_pack_nil(pk);
        pack_error(pk, &err, "decode");
        lb_error_clear(&err);
        return;
    }
    pack_key(pk, "decoded");
    msgpack_pack_map(pk, 8);
    pack_key(pk, "kind");
    pack_key(pk, "event");
    pack_key(pk, "body");
    msgpack_pack_object(pk, event.body);
    pack_key(pk, "topic");
    msgpack_pack_str_with_body(pk, event.topic, event.topic_len);
    pack_key(pk, "src");
    msgpack_pack_object(pk, event.src);
    pack_key(pk, "epoch");
    msgpack_pack_uint64(pk, event.epoch);
    pack_key(pk, "seq");
    msgpack_pack_uint64(pk, event.seq);
    pack_key(pk, "ts");
    msgpack_pack_object(pk, event.ts);
    pack_key(pk, "data");
    msgpack_pack_object(pk, event.data);
    pack_key(pk, "error");
    msgpack_pack_nil(pk);
    lb_event_destroy(&event);
}

static double number(const msgpack_object *o) {
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) return (double)o->via.u64;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) return (double)o->via.i64;
    return o->via.f64;
}

/* Encode the vector's "decoded" form; LB_OK with frames in header (+ payload bulk). */
static lb_code encode(const msgpack_object *d, msgpack_sbuffer *header, lb_payload *payload,
                      lb_error *err) {
    char *kind = text(get(d, "kind"));
    char *msg_id = text(get(d, "msg_id")), *service = text(get(d, "service"));
    char *command = text(get(d, "command")), *code_name = text(get(d, "code"));
    char *message = text(get(d, "message")), *reason = text(get(d, "reason"));
    char *topic = text(get(d, "topic")), *src = text(get(d, "src"));
    const msgpack_object *value = NULL;
    lb_code code = LB_INTERNAL;
    if (kind == NULL) goto out;
    if (strcmp(kind, "request") == 0) value = get(d, "args");
    if (strcmp(kind, "progress") == 0) value = get(d, "data");
    if (strcmp(kind, "reply") == 0) value = get(d, "result");
    if (value != NULL) {
        code = lb_payload_pack_object(payload, value, err);
        if (code != LB_OK) goto out;
    }
    if (strcmp(kind, "request") == 0) {
        const msgpack_object *ttl = get(d, "ttl_s");
        double ttl_s = ttl && ttl->type != MSGPACK_OBJECT_NIL ? number(ttl) : 0;
        code = lb_encode_request(header, msg_id, service, command,
                                 ttl && ttl->type != MSGPACK_OBJECT_NIL ? &ttl_s : NULL, payload,
                                 err);
    } else if (strcmp(kind, "progress") == 0) {
        code = lb_encode_progress(header, msg_id, payload, err);
    } else if (strcmp(kind, "reply") == 0) {
        code = lb_encode_reply(header, msg_id, payload, err);
    } else if (strcmp(kind, "error") == 0) {
        code = lb_encode_error(header, msg_id, code_name, message, get(d, "details"), err);
    } else if (strcmp(kind, "cancel") == 0) {
        code = lb_encode_cancel(header, msg_id, err);
    } else if (strcmp(kind, "ready") == 0) {
        code = lb_encode_ready(header, service, get(d, "info"), err);
    } else if (strcmp(kind, "heartbeat") == 0) {
        code = lb_encode_heartbeat(header, err);
    } else if (strcmp(kind, "disconnect") == 0) {
        code = lb_encode_disconnect(header, reason, err);
    } else if (strcmp(kind, "hello") == 0) {
        const msgpack_object *versions = get(d, "versions");
        int64_t list[16];
        size_t n = 0;
        for (; versions && n < versions->via.array.size && n < 16; n++)
            list[n] = versions->via.array.ptr[n].via.i64;
        code = lb_encode_hello(header, list, n, get(d, "info"), err);
    } else if (strcmp(kind, "event") == 0) {
        code = lb_encode_event(header, topic, src, get(d, "epoch")->via.u64,
                               get(d, "seq")->via.u64, number(get(d, "ts")), get(d, "data"), err);
    }
out:
    free(kind), free(msg_id), free(service), free(command), free(code_name), free(message);
    free(reason), free(topic), free(src);
    return code;
}

static void run(msgpack_packer *pk, const msgpack_object *vector) {
    const msgpack_object *name = get(vector, "name"), *frames_obj = get(vector, "frames");
    const msgpack_object *decoded = get(vector, "decoded");
    size_t count = frames_obj->via.array.size;
    lb_bytes *frames = calloc(count ? count : 1, sizeof *frames);
    for (size_t i = 0; i < count; i++)
        frames[i] = (lb_bytes){frames_obj->via.array.ptr[i].via.bin.ptr,
                               frames_obj->via.array.ptr[i].via.bin.size};
    msgpack_pack_map(pk, 5);
    pack_key(pk, "name");
    msgpack_pack_object(pk, *name);
    const msgpack_object *channel = get(vector, "channel");
    if (channel != NULL && channel->type == MSGPACK_OBJECT_STR && channel->via.str.size == 5 &&
        memcmp(channel->via.str.ptr, "event", 5) == 0)
        decode_event(pk, frames, count);
    else
        decode_command(pk, frames, count);
    pack_key(pk, "encoded");
    msgpack_sbuffer header;
    msgpack_sbuffer_init(&header);
    lb_payload payload;
    lb_payload_init(&payload);
    lb_error err;
    lb_error_init(&err);
    if (decoded != NULL && decoded->type == MSGPACK_OBJECT_MAP &&
        encode(decoded, &header, &payload, &err) == LB_OK) {
        msgpack_pack_array(pk, 1 + payload.bulk_count);
        msgpack_pack_bin_with_body(pk, header.data, header.size);
        for (size_t i = 0; i < payload.bulk_count; i++)
            msgpack_pack_bin_with_body(pk, payload.bulk[i].data, payload.bulk[i].size);
        pack_key(pk, "encode_error");
        msgpack_pack_nil(pk);
    } else {
        msgpack_pack_nil(pk);
        pack_key(pk, "encode_error");
        if (decoded == NULL || decoded->type != MSGPACK_OBJECT_MAP)
            msgpack_pack_nil(pk);
        else
            pack_key(pk, err.message[0] ? err.message : "cannot encode this kind");
    }
    lb_error_clear(&err);
    lb_payload_destroy(&payload);
    msgpack_sbuffer_destroy(&header);
    free(frames);
}

int main(void) {
    size_t size = 0, capacity = 1 << 20;
    char *input = malloc(capacity);
    size_t got;
    while ((got = fread(input + size, 1, capacity - size, stdin)) > 0) {
        size += got;
        if (size == capacity) input = realloc(input, capacity *= 2);
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, stdout, msgpack_fbuffer_write);
    msgpack_unpacked vector;
    msgpack_unpacked_init(&vector);
    size_t offset = 0;
    int status = 0;
    while (offset < size) {
        if (msgpack_unpack_next(&vector, input, size, &offset) != MSGPACK_UNPACK_SUCCESS) {
            fprintf(stderr, "test-vectors: malformed input at byte %zu\n", offset);
            status = 2;
            break;
        }
        run(&pk, &vector.data);
    }
    msgpack_unpacked_destroy(&vector);
    free(input);
    return status;
}
