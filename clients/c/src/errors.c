/* Error codes of PROTOCOL.md §10 and the lb_error type. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static const struct {
    lb_code code;
    const char *name;
    int retryable;
} CODES[] = {
    {LB_OK, "ok", 0},
    {LB_BAD_REQUEST, "bad_request", 0},
    {LB_UNSUPPORTED_VERSION, "unsupported_version", 0},
    {LB_UNKNOWN_SERVICE, "unknown_service", 0},
    {LB_UNAVAILABLE, "unavailable", 1},
    {LB_BROKER_UNREACHABLE, "broker_unreachable", 1},
    {LB_DEADLINE_EXCEEDED, "deadline_exceeded", 0},
    {LB_UNKNOWN_COMMAND, "unknown_command", 0},
    {LB_INVALID_ARGUMENTS, "invalid_arguments", 0},
    {LB_BUSY, "busy", 1},
    {LB_CANCELLED, "cancelled", 0},
    {LB_PERMISSION_DENIED, "permission_denied", 0},
    {LB_FORBIDDEN, "forbidden", 0},
    {LB_UNAUTHENTICATED, "unauthenticated", 0},
    {LB_DEVICE_ERROR, "device_error", 0},
    {LB_DEVICE_UNAVAILABLE, "device_unavailable", 1},
    {LB_DEVICE_TIMEOUT, "device_timeout", 0},
    {LB_DEVICE_FAULT, "device_fault", 0},
    {LB_STORAGE_ERROR, "storage_error", 0},
    {LB_CONFIG_ERROR, "config_error", 0},
    {LB_INTERNAL, "internal", 0},
    {LB_TOO_OLD, "too_old", 0},
    {LB_REMOTE_ERROR, "remote_error", 0},
};
#define CODE_COUNT (sizeof CODES / sizeof CODES[0])

const char *lb_code_name(lb_code code) {
    for (size_t i = 0; i < CODE_COUNT; i++)
        if (CODES[i].code == code) return CODES[i].name;
    return "remote_error";
}

lb_code lb_code_from_name(const char *name, size_t len) {
    /* LB_OK and LB_REMOTE_ERROR are not wire codes: an ERROR saying "ok" is an unknown code. */
    for (size_t i = 1; i + 1 < CODE_COUNT; i++)
        if (strlen(CODES[i].name) == len && memcmp(CODES[i].name, name, len) == 0)
            return CODES[i].code;
    return LB_REMOTE_ERROR;
}

int lb_code_retryable(lb_code code) {
    for (size_t i = 0; i < CODE_COUNT; i++)
        if (CODES[i].code == code) return CODES[i].retryable;
    return 0;
}

static void set_empty_details(lb_error *err) {
    err->details.type = MSGPACK_OBJECT_MAP;
    err->details.via.map.size = 0;
    err->details.via.map.ptr = NULL;
}

void lb_error_init(lb_error *err) {
    memset(err, 0, sizeof *err);
    set_empty_details(err);
}

void lb_error_clear(lb_error *err) {
    if (err->zone_ != NULL) msgpack_zone_free(err->zone_);
    lb_error_init(err);
}

lb_code lb_fail(lb_error *err, lb_code code, const char *format, ...) {
    if (err == NULL) return code;
    lb_error_clear(err);
    err->code = code;
    snprintf(err->wire_code, sizeof err->wire_code, "%s", lb_code_name(code));
    va_list args;
    va_start(args, format);
    vsnprintf(err->message, sizeof err->message, format, args);
    va_end(args);
    return code;
}

/* Details live in the error's own zone, so the error outlives the message it came from. */
static msgpack_zone *error_zone(lb_error *err) {
    if (err->zone_ == NULL) err->zone_ = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    return err->zone_;
}

static char *zone_strdup(msgpack_zone *zone, const char *data, size_t size) {
    char *copy = msgpack_zone_malloc(zone, size ? size : 1);
    if (copy != NULL && size) memcpy(copy, data, size);
    return copy;
}

static int deep_copy(msgpack_zone *zone, const msgpack_object *from, msgpack_object *to) {
    *to = *from;
    switch (from->type) {
    case MSGPACK_OBJECT_STR:
        to->via.str.ptr = zone_strdup(zone, from->via.str.ptr, from->via.str.size);
        return to->via.str.ptr != NULL;
    case MSGPACK_OBJECT_BIN:
        to->via.bin.ptr = zone_strdup(zone, from->via.bin.ptr, from->via.bin.size);
        return to->via.bin.ptr != NULL;
    case MSGPACK_OBJECT_EXT:
        to->via.ext.ptr = zone_strdup(zone, from->via.ext.ptr, from->via.ext.size);
        return to->via.ext.ptr != NULL;
    case MSGPACK_OBJECT_ARRAY: {
        uint32_t n = from->via.array.size;
        to->via.array.ptr = n ? msgpack_zone_malloc(zone, n * sizeof(msgpack_object)) : NULL;
        if (n && to->via.array.ptr == NULL) return 0;
        for (uint32_t i = 0; i < n; i++)
            if (!deep_copy(zone, &from->via.array.ptr[i], &to->via.array.ptr[i])) return 0;
        return 1;
    }
    case MSGPACK_OBJECT_MAP: {
        uint32_t n = from->via.map.size;
        to->via.map.ptr = n ? msgpack_zone_malloc(zone, n * sizeof(msgpack_object_kv)) : NULL;
        if (n && to->via.map.ptr == NULL) return 0;
        for (uint32_t i = 0; i < n; i++)
            if (!deep_copy(zone, &from->via.map.ptr[i].key, &to->via.map.ptr[i].key) ||
                !deep_copy(zone, &from->via.map.ptr[i].val, &to->via.map.ptr[i].val))
                return 0;
        return 1;
    }
    default:
        return 1;
    }
}

void lb_error_copy_details(lb_error *err, const msgpack_object *details) {
    if (err == NULL) return;
    msgpack_zone *zone = error_zone(err);
    if (zone == NULL || !deep_copy(zone, details, &err->details)) set_empty_details(err);
}

void lb_error_set_details(lb_error *err, size_t count, const char *const *keys,
                          const char *const *values) {
    if (err == NULL) return;
    msgpack_zone *zone = error_zone(err);
    msgpack_object_kv *pairs =
        zone ? msgpack_zone_malloc(zone, (count ? count : 1) * sizeof *pairs) : NULL;
    if (pairs == NULL) return;
    for (size_t i = 0; i < count; i++) {
        const char *texts[2] = {keys[i], values[i]};
        msgpack_object *slots[2] = {&pairs[i].key, &pairs[i].val};
        for (int j = 0; j < 2; j++) {
            size_t size = strlen(texts[j]);
            slots[j]->type = MSGPACK_OBJECT_STR;
            slots[j]->via.str.size = (uint32_t)size;
            slots[j]->via.str.ptr = zone_strdup(zone, texts[j], size);
        }
    }
    err->details.type = MSGPACK_OBJECT_MAP;
    err->details.via.map.size = (uint32_t)count;
    err->details.via.map.ptr = pairs;
}

void lb_error_set_details_packed(lb_error *err, const char *packed, size_t size) {
    if (err == NULL) return;
    msgpack_unpacked unpacked;
    msgpack_unpacked_init(&unpacked);
    size_t offset = 0;
    if (msgpack_unpack_next(&unpacked, packed, size, &offset) == MSGPACK_UNPACK_SUCCESS &&
        unpacked.data.type == MSGPACK_OBJECT_MAP)
        lb_error_copy_details(err, &unpacked.data);
    msgpack_unpacked_destroy(&unpacked);
}

int lb_utf8_valid(const char *data, size_t size) {
    const unsigned char *s = (const unsigned char *)data;
    size_t i = 0;
    while (i < size) {
        unsigned char c = s[i];
        size_t extra;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            extra = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            extra = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            extra = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + extra >= size) return 0; /* truncated sequence */
        for (size_t k = 1; k <= extra; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        /* Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8. */
        if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) ||
            (extra == 3 && cp < 0x10000) || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return 0;
        i += extra + 1;
    }
    return 1;
}

int lb_str_equals(const msgpack_object *object, const char *text) {
    size_t size = strlen(text);
    return object->type == MSGPACK_OBJECT_STR && object->via.str.size == size &&
           memcmp(object->via.str.ptr, text, size) == 0;
}

double lb_now(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}
