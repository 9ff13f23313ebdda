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
