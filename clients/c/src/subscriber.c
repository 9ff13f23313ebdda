/* lb_subscriber: events by topic prefix with gap detection and subscription readiness (§9). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "internal.h"

#define PROBE_PREFIX "_probe."

/* An event frame received while waiting for the probe, kept for lb_subscriber_next. */
typedef struct pending {
    struct pending *next;
    size_t size;
    char data[];
} pending;

struct lb_subscriber {
    void *context;
    void *socket; /* SUB */
    lb_monitor monitor; /* its handshakes */
    char *endpoint;
    lb_keys keys;
    int secured;
    lb_gaps *gaps;
    uint64_t malformed;
    pending *head, *tail;
};

lb_subscriber *lb_subscriber_new(const char *endpoint, const lb_keys *keys, lb_error *err) {
    lb_subscriber *s = calloc(1, sizeof *s);
    if (s == NULL) {
        lb_fail(err, LB_INTERNAL, "out of memory");
        return NULL;
    }
    s->gaps = lb_gaps_new();
    s->context = zmq_ctx_new();
    s->socket = s->context ? zmq_socket(s->context, ZMQ_SUB) : NULL;
    if (s->gaps == NULL || s->socket == NULL) {
        lb_fail(err, LB_INTERNAL, "cannot create a ZeroMQ socket: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    int zero = 0;
    zmq_setsockopt(s->socket, ZMQ_LINGER, &zero, sizeof zero);
    s->endpoint = strdup(endpoint);
    if (s->endpoint == NULL) {
        lb_fail(err, LB_INTERNAL, "out of memory");
        goto fail;
    }
    if (keys != NULL) {
        s->keys = *keys;
        s->secured = 1;
    }
    if (lb_secure_socket(s->socket, keys, err) != LB_OK ||
        lb_monitor_open(&s->monitor, s->context, s->socket, s->endpoint,
                        s->secured ? &s->keys : NULL, err) != LB_OK)
        goto fail;
    if (zmq_connect(s->socket, endpoint) != 0) {
        lb_fail(err, LB_CONFIG_ERROR, "cannot connect to %s: %s", endpoint,
                zmq_strerror(zmq_errno()));
        goto fail;
    }
    return s;
fail:
    lb_subscriber_destroy(s);
    return NULL;
}

void lb_subscriber_destroy(lb_subscriber *s) {
    if (s == NULL) return;
    lb_monitor_close(&s->monitor);
    if (s->socket) zmq_close(s->socket);
    if (s->context) zmq_ctx_term(s->context);
    lb_gaps_destroy(s->gaps);
    free(s->endpoint);
    memset(&s->keys, 0, sizeof s->keys);
    for (pending *p = s->head, *next; p != NULL; p = next) {
        next = p->next;
        free(p);
    }
    free(s);
}

lb_code lb_subscriber_add(lb_subscriber *s, const char *prefix, lb_error *err) {
    if (zmq_setsockopt(s->socket, ZMQ_SUBSCRIBE, prefix, strlen(prefix)) != 0)
        return lb_fail(err, LB_INTERNAL, "cannot subscribe to '%s': %s", prefix,
                       zmq_strerror(zmq_errno()));
    return LB_OK;
}

uint64_t lb_subscriber_malformed(const lb_subscriber *s) { return s->malformed; }

/* Wait for an event frame, at most `seconds` (< 0: no limit); 1 if one is waiting. A refused
 * handshake ends the wait at once: *refused is set (the monitor holds why). */
static int poll_in(lb_subscriber *s, double seconds, int *refused) {
    zmq_pollitem_t items[] = {{s->socket, 0, ZMQ_POLLIN, 0}, {s->monitor.pair, 0, ZMQ_POLLIN, 0}};
    long ms = seconds < 0 ? -1 : (long)(seconds * 1000.0 + 1.0);
    if (ms > 2000000000L) ms = 2000000000L;
    if (zmq_poll(items, 2, ms) <= 0) return 0;
    if ((items[1].revents & ZMQ_POLLIN) && lb_monitor_drain(&s->monitor)) *refused = 1;
    return (items[0].revents & ZMQ_POLLIN) != 0;
}

/* One frame (an event is one frame; any further parts are read and dropped). */
static int receive_frame(void *socket, zmq_msg_t *frame) {
    zmq_msg_init(frame);
    if (zmq_msg_recv(frame, socket, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(frame);
        return -1;
    }
    int more = zmq_msg_more(frame);
    while (more) {
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        zmq_msg_recv(&extra, socket, 0);
        more = zmq_msg_more(&extra);
        zmq_msg_close(&extra);
    }
    return 0;
}

lb_code lb_subscriber_wait_ready(lb_subscriber *s, lb_client *client, double timeout_s,
                                 lb_error *err) {
    unsigned char raw[8];
    FILE *random = fopen("/dev/urandom", "rb");
    size_t got = random ? fread(raw, 1, sizeof raw, random) : 0;
    if (random) fclose(random);
    if (got != sizeof raw) return lb_fail(err, LB_INTERNAL, "cannot read /dev/urandom");
    char topic[sizeof PROBE_PREFIX + 2 * sizeof raw];
    int length = snprintf(topic, sizeof topic, PROBE_PREFIX);
    for (size_t i = 0; i < sizeof raw; i++)
        length += snprintf(topic + length, sizeof topic - (size_t)length, "%02x", raw[i]);
    lb_code code = lb_subscriber_add(s, topic, err);
    if (code != LB_OK) return code;
    double deadline = lb_now() + timeout_s;
    int ready = 0;
    while (!ready) {
        double remaining = deadline - lb_now();
        if (remaining <= 0) {
            code = lb_fail(err, LB_DEADLINE_EXCEEDED,
                           "the broker did not apply our subscriptions within %g s", timeout_s);
            break;
        }
        lb_payload args;
        lb_payload_init(&args);
        msgpack_pack_map(&args.packer, 1);
        msgpack_pack_str_with_body(&args.packer, "topic", 5);
        msgpack_pack_str_with_body(&args.packer, topic, (size_t)length);
        lb_call_options options = LB_CALL_OPTIONS_INIT;
        options.timeout_s = remaining < 1.0 ? remaining : 1.0;
        lb_value result;
        code = lb_call(client, "broker", "probe", &args, &options, &result, err);
        lb_payload_destroy(&args);
        if (code == LB_OK) lb_value_destroy(&result);
        else if (code != LB_DEADLINE_EXCEEDED && code != LB_BROKER_UNREACHABLE) break;
        code = LB_OK;
        /* The probe event, if our subscription is active; keep anything else for next(). */
        double until = lb_now() + 0.2;
        int refused = 0;
        while (!ready && !refused && poll_in(s, until - lb_now(), &refused)) {
            zmq_msg_t frame;
            if (receive_frame(s->socket, &frame) != 0) break;
            size_t size = zmq_msg_size(&frame);
            const char *data = zmq_msg_data(&frame);
            if (size > (size_t)length && memcmp(data, topic, (size_t)length) == 0 &&
                data[length] == '\0') {
                ready = 1;
            } else {
                pending *p = malloc(sizeof *p + size);
                if (p != NULL) {
                    p->next = NULL;
                    p->size = size;
                    memcpy(p->data, data, size);
                    if (s->tail) s->tail->next = p;
                    else s->head = p;
                    s->tail = p;
                }
            }
            zmq_msg_close(&frame);
        }
        if (refused) {
            code = lb_monitor_refusal(&s->monitor, err);
            break;
        }
    }
    zmq_setsockopt(s->socket, ZMQ_UNSUBSCRIBE, topic, (size_t)length);
    if (ready && err != NULL) lb_error_clear(err);
    return ready ? LB_OK : code;
}

/* Decode a frame into `event`; 1 if it is an event of the line, 0 if skipped. */
static int accept_frame(lb_subscriber *s, const void *data, size_t size, lb_event *event) {
    lb_bytes frame = {data, size};
    if (lb_decode_event(&frame, event, NULL) != LB_OK) {
        s->malformed++; /* skipped and counted, never fatal (§9) */
        return 0;
    }
    if (strncmp(event->topic, PROBE_PREFIX, strlen(PROBE_PREFIX)) == 0) {
        lb_event_destroy(event); /* subscription probes are not events of the line */
        return 0;
    }
    event->missed = lb_gaps_observe(s->gaps, event->topic, event->topic_len, event->epoch,
                                    event->seq);
    return 1;
}

lb_code lb_subscriber_next(lb_subscriber *s, lb_event *event, double timeout_s, lb_error *err) {
    while (s->head != NULL) {
        pending *p = s->head;
        s->head = p->next;
        if (s->head == NULL) s->tail = NULL;
        int accepted = accept_frame(s, p->data, p->size, event);
        free(p);
        if (accepted) return LB_OK;
    }
    double deadline = timeout_s < 0 ? -1 : lb_now() + timeout_s;
    for (;;) {
        double remaining = deadline < 0 ? -1 : deadline - lb_now();
        if (deadline >= 0 && remaining <= 0)
            return lb_fail(err, LB_DEADLINE_EXCEEDED, "no event within %g s", timeout_s);
        int refused = 0;
        int waiting = poll_in(s, remaining, &refused);
        if (refused) return lb_monitor_refusal(&s->monitor, err);
        if (!waiting) continue;
        zmq_msg_t frame;
        if (receive_frame(s->socket, &frame) != 0) continue;
        int accepted = accept_frame(s, zmq_msg_data(&frame), zmq_msg_size(&frame), event);
        zmq_msg_close(&frame);
        if (accepted) return LB_OK;
    }
}
