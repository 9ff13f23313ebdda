/* The CURVE handshake monitor of PROTOCOL.md §18, shared by the client and the subscriber: a
 * refused key fails at once with unauthenticated instead of waiting for a deadline. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "internal.h"

lb_code lb_monitor_open(lb_monitor *m, void *context, void *socket, const char *endpoint,
                        const lb_keys *keys, lb_error *err) {
    memset(m, 0, sizeof *m);
    m->endpoint = endpoint;
    m->keys = keys;
    char address[64];
    snprintf(address, sizeof address, "inproc://linebus-monitor-%p", socket);
    int zero = 0;
    if (zmq_socket_monitor(socket, address,
                           ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) != 0 ||
        (m->pair = zmq_socket(context, ZMQ_PAIR)) == NULL ||
        zmq_setsockopt(m->pair, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_connect(m->pair, address) != 0)
        return lb_fail(err, LB_INTERNAL, "cannot monitor the socket: %s",
                       zmq_strerror(zmq_errno()));
    m->socket = socket;
    return LB_OK;
}

void lb_monitor_close(lb_monitor *m) {
    if (m->socket != NULL) zmq_socket_monitor(m->socket, NULL, 0);
    if (m->pair != NULL) zmq_close(m->pair);
    memset(m, 0, sizeof *m);
}

int lb_monitor_drain(lb_monitor *m) {
    for (;;) {
        zmq_msg_t first;
        zmq_msg_init(&first);
        if (m->pair == NULL || zmq_msg_recv(&first, m->pair, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&first);
            return m->refused_event;
        }
        uint16_t event = 0; /* frame 1: event (uint16) and value (uint32), host order */
        if (zmq_msg_size(&first) >= sizeof event) memcpy(&event, zmq_msg_data(&first), sizeof event);
        zmq_msg_close(&first);
        zmq_msg_t second; /* frame 2: the endpoint */
        zmq_msg_init(&second);
        zmq_msg_recv(&second, m->pair, 0);
        zmq_msg_close(&second);
        m->refused_event = event;
    }
}

lb_code lb_monitor_refusal(const lb_monitor *m, lb_error *err) {
    const char *reason;
    lb_code code;
    if (m->keys == NULL) {
        reason = "key_required";
        code = lb_fail(err, LB_UNAUTHENTICATED,
                       "the broker at %s is secured (CURVE) and this client has no key: set "
                       "LINEBUS_KEY_FILE and LINEBUS_BROKER_KEY_FILE", m->endpoint);
    } else if (m->refused_event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
        reason = "refused_key";
        code = lb_fail(err, LB_UNAUTHENTICATED,
                       "the broker at %s refused our key (public key %s): it is not among the "
                       "broker's known keys, or it was revoked", m->endpoint, m->keys->public_key);
    } else {
        reason = "handshake_failed";
        code = lb_fail(err, LB_UNAUTHENTICATED,
                       "the broker at %s: the CURVE handshake failed; is LINEBUS_BROKER_KEY_FILE "
                       "the public key of this broker, and does the broker use CURVE?",
                       m->endpoint);
    }
    const char *keys[] = {"endpoint", "reason", "key"};
    const char *values[] = {m->endpoint, reason, m->keys ? m->keys->public_key : ""};
    lb_error_set_details(err, m->keys ? 3 : 2, keys, values);
    return code;
}
