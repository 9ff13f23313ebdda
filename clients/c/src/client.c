/* lb_call: one request through the broker, with deadline, progress, cancel and typed errors
 * (PROTOCOL.md §6, §7, §16), and the CURVE handshake monitor of §18. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "internal.h"

/* How often a call with a cancel flag looks at it while waiting. */
#define CANCEL_POLL_MS 20

struct lb_client {
    void *context;
    void *socket;  /* DEALER */
    lb_monitor monitor; /* the DEALER's handshakes */
    char *endpoint;
    lb_keys keys;
    int secured;
    char prefix[13]; /* 12 hex digits: 48 random bits per client (§6) */
    unsigned long long counter;
    int received_any; /* anything ever came on the DEALER: the broker is there */
};

static lb_code random_prefix(char out[13], lb_error *err) {
    unsigned char raw[6];
    FILE *random = fopen("/dev/urandom", "rb");
    size_t got = random ? fread(raw, 1, sizeof raw, random) : 0;
    if (random) fclose(random);
    if (got != sizeof raw) return lb_fail(err, LB_INTERNAL, "cannot read /dev/urandom");
    for (size_t i = 0; i < sizeof raw; i++) snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return LB_OK;
}

/* CURVE client options, set before connect (§18). Shared with subscriber.c. */
lb_code lb_secure_socket(void *socket, const lb_keys *keys, lb_error *err) {
    if (keys == NULL) return LB_OK;
    if (zmq_setsockopt(socket, ZMQ_CURVE_SERVERKEY, keys->server_key, 40) != 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_PUBLICKEY, keys->public_key, 40) != 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, keys->secret_key, 40) != 0)
        return lb_fail(err, LB_CONFIG_ERROR, "cannot set the CURVE keys: %s",
                       zmq_strerror(zmq_errno()));
    return LB_OK;
}

lb_client *lb_client_new(const char *endpoint, const lb_keys *keys, lb_error *err) {
    lb_client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        lb_fail(err, LB_INTERNAL, "out of memory");
        return NULL;
    }
    if (random_prefix(c->prefix, err) != LB_OK) goto fail;
    c->endpoint = strdup(endpoint);
    c->context = zmq_ctx_new();
    c->socket = c->context ? zmq_socket(c->context, ZMQ_DEALER) : NULL;
    if (c->endpoint == NULL || c->socket == NULL) {
        lb_fail(err, LB_INTERNAL, "cannot create a ZeroMQ socket: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    int one = 1, zero = 0;
    /* Nothing queued while the broker is away (§8): a request cannot be delivered after its
     * caller gave up, and an unreachable broker shows as a send that cannot go out. */
    zmq_setsockopt(c->socket, ZMQ_IMMEDIATE, &one, sizeof one);
    zmq_setsockopt(c->socket, ZMQ_LINGER, &zero, sizeof zero);
    if (keys != NULL) {
        c->keys = *keys;
        c->secured = 1;
        if (lb_secure_socket(c->socket, keys, err) != LB_OK) goto fail;
    }
    if (lb_monitor_open(&c->monitor, c->context, c->socket, c->endpoint,
                        c->secured ? &c->keys : NULL, err) != LB_OK)
        goto fail;
    if (zmq_connect(c->socket, endpoint) != 0) {
        lb_fail(err, LB_CONFIG_ERROR, "cannot connect to %s: %s", endpoint,
                zmq_strerror(zmq_errno()));
        goto fail;
    }
    return c;
fail:
    lb_client_destroy(c);
    return NULL;
}

void lb_client_destroy(lb_client *c) {
    if (c == NULL) return;
    lb_monitor_close(&c->monitor);
    if (c->socket) zmq_close(c->socket);
    if (c->context) zmq_ctx_term(c->context);
    free(c->endpoint);
    memset(&c->keys, 0, sizeof c->keys); /* no secret left behind in freed memory */
    free(c);
}

void lb_release_frames(void *frames, size_t count) {
    zmq_msg_t *msgs = frames;
    for (size_t i = 0; i < count; i++) zmq_msg_close(&msgs[i]);
    free(msgs);
}

/* Receive one whole multipart message (it is waiting: the caller polled). */
static int receive(void *socket, zmq_msg_t **out, size_t *count) {
    size_t capacity = 4, n = 0;
    zmq_msg_t *msgs = malloc(capacity * sizeof *msgs);
    if (msgs == NULL) return -1;
    for (;;) {
        if (n == capacity) {
            zmq_msg_t *grown = realloc(msgs, 2 * capacity * sizeof *msgs);
            if (grown == NULL) break;
            msgs = grown;
            capacity *= 2;
        }
        zmq_msg_init(&msgs[n]);
        if (zmq_msg_recv(&msgs[n], socket, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(&msgs[n]);
            break;
        }
        n++;
        if (!zmq_msg_more(&msgs[n - 1])) {
            *out = msgs;
            *count = n;
            return 0;
        }
    }
    lb_release_frames(msgs, n);
    return -1;
}

/* Send frames: header and bulk; -1 with EAGAIN when the broker is not connected. */
static int send_frames(void *socket, const msgpack_sbuffer *header, const lb_payload *payload) {
    size_t bulk = payload ? payload->bulk_count : 0;
    if (zmq_send(socket, header->data, header->size, ZMQ_DONTWAIT | (bulk ? ZMQ_SNDMORE : 0)) < 0)
        return -1;
    /* Once the first frame is queued the rest of the message goes too (atomic multipart). */
    for (size_t i = 0; i < bulk; i++)
        zmq_send(socket, payload->bulk[i].data, payload->bulk[i].size,
                 i + 1 < bulk ? ZMQ_SNDMORE : 0);
    return 0;
}

static int poll_ms(double seconds) {
    if (seconds <= 0) return 0;
    double ms = seconds * 1000.0 + 1.0;
    return ms > 2e9 ? 2000000000 : (int)ms;
}

/* The answer for our msg_id: progress handled here; REPLY into result, ERROR into err. */
typedef enum { NOT_OURS, PROGRESSED, CANCEL_ASKED, FINISHED } answer;

static answer handle(zmq_msg_t *msgs, size_t count, const char *msg_id,
                     const lb_call_options *options, lb_value *result, lb_code *code,
                     lb_error *err) {
    lb_bytes stack_frames[8];
    lb_bytes *frames = count <= 8 ? stack_frames : malloc(count * sizeof *frames);
    if (frames == NULL) return NOT_OURS;
    for (size_t i = 0; i < count; i++)
        frames[i] = (lb_bytes){zmq_msg_data(&msgs[i]), zmq_msg_size(&msgs[i])};
    answer outcome = NOT_OURS;
    lb_message m;
    lb_error ignored;
    lb_error_init(&ignored);
    /* A malformed message or one for another request is dropped (§6, §16 item 5), except an
     * answer to us that breaks only the bulk-frame rule (an ERROR with bulk frames): the call
     * ends with that bad_request (§3). */
    lb_error malformed;
    lb_error_init(&malformed);
    if (lb_decode(frames, count, &m, &malformed) != LB_OK) {
        if (count > 1 && lb_decode(frames, 1, &m, NULL) == LB_OK) {
            if (lb_str_equals(&m.msg_id, msg_id)) {
                outcome = FINISHED;
                *code = lb_fail(err, malformed.code, "%s", malformed.message);
            }
            lb_message_destroy(&m);
        }
        lb_error_clear(&malformed);
        goto done;
    }
    if (!lb_str_equals(&m.msg_id, msg_id)) {
        lb_message_destroy(&m);
        goto done;
    }
    if (m.kind == LB_PROGRESS) {
        lb_value data;
        outcome = PROGRESSED;
        if (lb_unpack_payload(&m.payload, m.bulk, m.bulk_count, &data, &ignored) == LB_OK) {
            if (options->progress != NULL && options->progress(&data.object, options->user))
                outcome = CANCEL_ASKED;
            lb_value_destroy(&data);
        }
    } else if (m.kind == LB_REPLY) {
        outcome = FINISHED;
        *code = lb_unpack_payload(&m.payload, m.bulk, m.bulk_count, result, err);
        if (*code == LB_OK) {
            /* The result points into the frames: it owns them from now on. */
            result->frames_ = msgs;
            result->frame_count_ = count;
        }
    } else if (m.kind == LB_ERROR) {
        outcome = FINISHED;
        char text[sizeof err->message];
        size_t size = m.message.via.str.size < sizeof text - 1 ? m.message.via.str.size
                                                               : sizeof text - 1;
        memcpy(text, m.message.via.str.ptr, size);
        text[size] = '\0';
        *code = lb_code_from_name(m.code.via.str.ptr, m.code.via.str.size);
        lb_fail(err, *code, "%s", text);
        if (err != NULL) {
            size_t n = m.code.via.str.size < sizeof err->wire_code - 1 ? m.code.via.str.size
                                                                       : sizeof err->wire_code - 1;
            memcpy(err->wire_code, m.code.via.str.ptr, n); /* unknown codes are kept (§10) */
            err->wire_code[n] = '\0';
            lb_error_copy_details(err, &m.details);
        }
    }
    lb_message_destroy(&m);
done:
    lb_error_clear(&ignored);
    if (frames != stack_frames) free(frames);
    return outcome;
}

lb_code lb_call(lb_client *c, const char *service, const char *command, const lb_payload *args,
                const lb_call_options *options, lb_value *result, lb_error *err) {
    static const lb_call_options defaults = LB_CALL_OPTIONS_INIT;
    if (options == NULL) options = &defaults;
    memset(result, 0, sizeof *result);
    result->object.type = MSGPACK_OBJECT_NIL;
    if (!(options->timeout_s > 0))
        return lb_fail(err, LB_DEADLINE_EXCEEDED,
                       "%s.%s: timeout %g s leaves no time; nothing was sent", service, command,
                       options->timeout_s);
    char msg_id[40];
    snprintf(msg_id, sizeof msg_id, "%s-%llu", c->prefix, ++c->counter);
    msgpack_sbuffer header;
    msgpack_sbuffer_init(&header);
    lb_code code = lb_encode_request(&header, msg_id, service, command, &options->timeout_s, args,
                                     err);
    if (code != LB_OK) goto out;

    double start = lb_now();
    double send_deadline = start + options->timeout_s;
    double deadline = send_deadline + LB_DEADLINE_GRACE_S;
    if (lb_monitor_drain(&c->monitor)) {
        /* libzmq never retries a refused handshake: try once more (the key may be known now). */
        c->monitor.refused_event = 0;
        zmq_disconnect(c->socket, c->endpoint);
        zmq_connect(c->socket, c->endpoint);
    }
    /* Send, waiting for a connection until the deadline while watching the handshake. */
    while (send_frames(c->socket, &header, args) != 0) {
        if (zmq_errno() != EAGAIN) {
            code = lb_fail(err, LB_BROKER_UNREACHABLE, "cannot send to the broker at %s: %s",
                           c->endpoint, zmq_strerror(zmq_errno()));
            goto unreachable;
        }
        double remaining = send_deadline - lb_now();
        if (remaining <= 0) {
            code = lb_fail(err, LB_BROKER_UNREACHABLE, "no connection to the broker at %s",
                           c->endpoint);
            goto unreachable;
        }
        zmq_pollitem_t items[] = {{c->socket, 0, ZMQ_POLLOUT, 0}, {c->monitor.pair, 0, ZMQ_POLLIN, 0}};
        zmq_poll(items, 2, poll_ms(remaining < 0.05 ? remaining : 0.05));
        if (lb_monitor_drain(&c->monitor)) {
            code = lb_monitor_refusal(&c->monitor, err);
            goto out;
        }
        if (options->cancel != NULL && *options->cancel) {
            code = lb_fail(err, LB_CANCELLED, "%s.%s cancelled before it was sent", service,
                           command);
            goto out;
        }
    }

    int cancel_sent = 0, cancel_asked = 0; /* asked: by the progress callback */
    for (;;) {
        if (!cancel_sent && (cancel_asked || (options->cancel != NULL && *options->cancel))) {
            msgpack_sbuffer cancel;
            msgpack_sbuffer_init(&cancel);
            if (lb_encode_cancel(&cancel, msg_id, NULL) == LB_OK)
                zmq_send(c->socket, cancel.data, cancel.size, ZMQ_DONTWAIT);
            msgpack_sbuffer_destroy(&cancel);
            cancel_sent = 1; /* and wait for the final answer (§16 item 8) */
        }
        double remaining = deadline - lb_now();
        if (remaining <= 0) break;
        zmq_pollitem_t items[] = {{c->socket, 0, ZMQ_POLLIN, 0}, {c->monitor.pair, 0, ZMQ_POLLIN, 0}};
        int wait = poll_ms(remaining);
        if (options->cancel != NULL && !cancel_sent && wait > CANCEL_POLL_MS) wait = CANCEL_POLL_MS;
        if (zmq_poll(items, 2, wait) < 0 && zmq_errno() != EINTR) {
            code = lb_fail(err, LB_INTERNAL, "poll failed: %s", zmq_strerror(zmq_errno()));
            goto out;
        }
        if (items[1].revents & ZMQ_POLLIN) {
            if (lb_monitor_drain(&c->monitor)) {
                code = lb_monitor_refusal(&c->monitor, err);
                goto out;
            }
        }
        if (!(items[0].revents & ZMQ_POLLIN)) continue;
        zmq_msg_t *msgs;
        size_t count;
        if (receive(c->socket, &msgs, &count) != 0) continue;
        c->received_any = 1;
        answer outcome = handle(msgs, count, msg_id, options, result, &code, err);
        if (outcome == FINISHED && code == LB_OK) goto out; /* the result owns msgs */
        lb_release_frames(msgs, count);
        if (outcome == FINISHED) goto out;
        if (outcome == CANCEL_ASKED) cancel_asked = 1; /* the loop's next turn sends CANCEL */
    }
    if (c->received_any) {
        code = lb_fail(err, LB_DEADLINE_EXCEEDED, "%s.%s: no answer within %g s", service, command,
                       options->timeout_s);
        const char *keys[] = {"msg_id"}, *values[] = {msg_id};
        lb_error_set_details(err, 1, keys, values);
        goto out;
    }
    code = lb_fail(err, LB_BROKER_UNREACHABLE,
                   "%s.%s: nothing received from the broker at %s within %g s", service, command,
                   c->endpoint, options->timeout_s);
unreachable: {
    const char *keys[] = {"endpoint"}, *values[] = {c->endpoint};
    lb_error_set_details(err, 1, keys, values);
}
out:
    msgpack_sbuffer_destroy(&header);
    return code;
}
