/* Helpers shared by the library's source files; not part of the public API. */
#ifndef LINEBUS_INTERNAL_H
#define LINEBUS_INTERNAL_H

#include "linebus.h"

/** Set `err` (if not NULL): code, wire name, printf-style message; details {}. Returns code. */
lb_code lb_fail(lb_error *err, lb_code code, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
/** Set `err`'s details to a map of string pairs: keys[i] -> values[i]. */
void lb_error_set_details(lb_error *err, size_t count, const char *const *keys,
                          const char *const *values);
/** Copy `details` (a map) into `err`'s own storage. */
void lb_error_copy_details(lb_error *err, const msgpack_object *details);

/** CURVE client options on a socket not yet connected (§18); nothing when keys is NULL. */
lb_code lb_secure_socket(void *socket, const lb_keys *keys, lb_error *err);

/** A socket's handshake monitor (monitor.c). */
typedef struct lb_monitor {
    void *socket, *pair;
    const char *endpoint; /* borrowed from the owner */
    const lb_keys *keys;  /* borrowed; NULL for a plaintext socket */
    int refused_event;    /* the last ZMQ_EVENT_HANDSHAKE_FAILED_*, or 0 */
} lb_monitor;
/** Watch `socket`'s handshakes (before it connects). */
lb_code lb_monitor_open(lb_monitor *m, void *context, void *socket, const char *endpoint,
                        const lb_keys *keys, lb_error *err);
void lb_monitor_close(lb_monitor *m);
/** Read the waiting events; the last handshake failure, or 0. */
int lb_monitor_drain(lb_monitor *m);
/** The unauthenticated error of a refused handshake, as §18 and the Python client word it. */
lb_code lb_monitor_refusal(const lb_monitor *m, lb_error *err);

/** Set `err`'s details to the map packed in [packed, packed + size). */
void lb_error_set_details_packed(lb_error *err, const char *packed, size_t size);
/** Release the zmq frames a client result owns (client.c). */
void lb_release_frames(void *frames, size_t count);

/** Whether [data, data+size) is valid UTF-8. */
int lb_utf8_valid(const char *data, size_t size);
/** Whether a str object equals the C string `text`. */
int lb_str_equals(const msgpack_object *object, const char *text);
/** Seconds on a monotonic clock. */
double lb_now(void);

#endif
