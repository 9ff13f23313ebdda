/* linebus-watch: print the events of some topic prefixes as JSON lines, gaps included.
 *
 *   linebus-watch [--count N] [--ready COMMAND_ENDPOINT] SUBSCRIBE_ENDPOINT PREFIX...
 *
 * Each line: {"topic", "src", "epoch", "seq", "ts", "missed", "data"}; "missed" counts the
 * events of that topic lost just before this one (§9). With --ready, waits until the broker has
 * applied the subscriptions (a probe through the command endpoint) and then prints "subscribed"
 * on stderr. Stops after N events (default: never). Keys as for linebus-call.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linebus.h"

static int fail(const char *what, const lb_error *err) {
    fprintf(stderr, "%s: %s: %s\n", what, err->wire_code, err->message);
    return 1;
}

int main(int argc, char **argv) {
    long count = -1;
    const char *ready_endpoint = NULL;
    int i = 1;
    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--count") == 0)
            count = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--ready") == 0)
            ready_endpoint = argv[i + 1];
        else
            break;
    }
    if (argc - i < 2) {
        fprintf(stderr, "usage: %s [--count N] [--ready COMMAND_ENDPOINT] SUBSCRIBE_ENDPOINT "
                        "PREFIX...\n", argv[0]);
        return 2;
    }
    lb_error err;
    lb_error_init(&err);
    lb_keys keys;
    int secured = 0;
    if (lb_keys_from_env(&keys, &secured, &err) != LB_OK) return fail("keys", &err);
    lb_subscriber *subscriber = lb_subscriber_new(argv[i], secured ? &keys : NULL, &err);
    if (subscriber == NULL) return fail("subscribe", &err);
    for (int k = i + 1; k < argc; k++)
        if (lb_subscriber_add(subscriber, argv[k], &err) != LB_OK) return fail("subscribe", &err);
    if (ready_endpoint != NULL) {
        lb_client *client = lb_client_new(ready_endpoint, secured ? &keys : NULL, &err);
        if (client == NULL) return fail("client", &err);
        lb_code code = lb_subscriber_wait_ready(subscriber, client, 15.0, &err);
        lb_client_destroy(client);
        if (code != LB_OK) return fail("wait_ready", &err);
        fprintf(stderr, "subscribed\n");
    }
    for (long seen = 0; count < 0 || seen < count; seen++) {
        lb_event event;
        if (lb_subscriber_next(subscriber, &event, -1, &err) != LB_OK) return fail("next", &err);
        printf("{\"topic\": ");
        msgpack_object topic = {.type = MSGPACK_OBJECT_STR};
        topic.via.str.ptr = event.topic;
        topic.via.str.size = (uint32_t)event.topic_len;
        lb_fprint_json(stdout, &topic);
        printf(", \"src\": ");
        lb_fprint_json(stdout, &event.src);
        printf(", \"epoch\": %llu, \"seq\": %llu, \"ts\": ", (unsigned long long)event.epoch,
               (unsigned long long)event.seq);
        lb_fprint_json(stdout, &event.ts);
        printf(", \"missed\": %llu, \"data\": ", (unsigned long long)event.missed);
        lb_fprint_json(stdout, &event.data);
        printf("}\n");
        fflush(stdout);
        lb_event_destroy(&event);
    }
    lb_subscriber_destroy(subscriber);
    lb_error_clear(&err);
    return 0;
}
