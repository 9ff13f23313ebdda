/* test-live: the client against a running line (broker + the echo actor "echo1" of
 * bus.testing.EchoActor). One JSON line per case on stdout; the pytest driver
 * (tests/integration/test_c_client.py) checks them.
 *
 *   test-live COMMAND_ENDPOINT UNREACHABLE_ENDPOINT
 *
 * Keys for a secured line come from the environment, as for linebus-call.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "linebus.h"

static lb_client *client;
static lb_keys keys;
static int secured;

typedef struct {
    int count;
    uint64_t done[256];
    int cancel_after; /* 0: never */
} progress_log;

static int on_progress(const msgpack_object *data, void *user) {
    progress_log *log = user;
    for (uint32_t i = 0; data->type == MSGPACK_OBJECT_MAP && i < data->via.map.size; i++) {
        const msgpack_object_kv *kv = &data->via.map.ptr[i];
        if (kv->key.via.str.size == 4 && memcmp(kv->key.via.str.ptr, "done", 4) == 0 &&
            log->count < 256)
            log->done[log->count++] = kv->val.via.u64;
    }
    return log->cancel_after && log->count >= log->cancel_after;
}

/* Print one case: its code, wire code, elapsed time, result or error details, progress. */
static void report(const char *name, lb_code code, const lb_error *err, const lb_value *result,
                   double elapsed, const progress_log *log) {
    printf("{\"case\": \"%s\", \"code\": \"%s\", \"retryable\": %s, \"elapsed\": %.3f", name,
           lb_code_name(code), lb_code_retryable(code) ? "true" : "false", elapsed);
    if (code == LB_OK) {
        printf(", \"result\": ");
        lb_fprint_json(stdout, &result->object);
    } else {
        printf(", \"wire_code\": \"%s\", \"details\": ", err->wire_code);
        lb_fprint_json(stdout, &err->details);
        msgpack_object message = {.type = MSGPACK_OBJECT_STR};
        message.via.str.ptr = err->message;
        message.via.str.size = (uint32_t)strlen(err->message);
        printf(", \"message\": ");
        lb_fprint_json(stdout, &message);
    }
    if (log != NULL) {
        printf(", \"progress\": [");
        for (int i = 0; i < log->count; i++)
            printf("%s%llu", i ? ", " : "", (unsigned long long)log->done[i]);
        printf("]");
    }
    printf("}\n");
    fflush(stdout);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Arguments: pairs of (name, kind, value) with kind 'i' (int), 'f' (float), 's' (str). */
static void pack_args(lb_payload *args, int count, const char *const *names, const char *kinds,
                      const char *const *values) {
    msgpack_pack_map(&args->packer, (size_t)count);
    for (int i = 0; i < count; i++) {
        msgpack_pack_str_with_body(&args->packer, names[i], strlen(names[i]));
        if (kinds[i] == 'i') msgpack_pack_long_long(&args->packer, atoll(values[i]));
        if (kinds[i] == 'f') msgpack_pack_double(&args->packer, atof(values[i]));
        if (kinds[i] == 's') msgpack_pack_str_with_body(&args->packer, values[i], strlen(values[i]));
    }
}

static void call_case(const char *name, lb_client *through, const char *service,
                      const char *command, lb_payload *args, lb_call_options *options,
                      progress_log *log) {
    lb_error err;
    lb_error_init(&err);
    lb_value result;
    double start = now();
    lb_code code = lb_call(through, service, command, args, options, &result, &err);
    report(name, code, &err, &result, now() - start, log);
    if (code == LB_OK) lb_value_destroy(&result);
    lb_error_clear(&err);
}

static void work_case(const char *name, const char *steps, const char *step_s, double timeout_s,
                      int cancel_after, volatile sig_atomic_t *flag) {
    lb_payload args;
    lb_payload_init(&args);
    const char *names[] = {"steps", "step_s"}, *values[] = {steps, step_s};
    pack_args(&args, 2, names, "if", values);
    progress_log log = {.cancel_after = cancel_after};
    lb_call_options options = {timeout_s, on_progress, &log, flag};
    call_case(name, client, "echo1", "work", &args, &options, &log);
    lb_payload_destroy(&args);
}

static volatile sig_atomic_t alarm_cancel = 0;
static void on_alarm(int signal_number) {
    (void)signal_number;
    alarm_cancel = 1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s COMMAND_ENDPOINT UNREACHABLE_ENDPOINT\n", argv[0]);
        return 2;
    }
    lb_error err;
    lb_error_init(&err);
    if (lb_keys_from_env(&keys, &secured, &err) != LB_OK ||
        (client = lb_client_new(argv[1], secured ? &keys : NULL, &err)) == NULL) {
        fprintf(stderr, "%s: %s\n", err.wire_code, err.message);
        return 1;
    }
    lb_call_options options = LB_CALL_OPTIONS_INIT;
    options.timeout_s = 10;

    /* A call with progress: every PROGRESS before the REPLY, in order. */
    work_case("progress", "3", "0.02", 10, 0, NULL);

    /* Typed errors: from the actor (with details), a code this library does not know, and from
     * the broker. */
    lb_payload args;
    lb_payload_init(&args);
    const char *add_names[] = {"a"}, *add_values[] = {"x"};
    pack_args(&args, 1, add_names, "s", add_values);
    call_case("invalid_arguments", client, "echo1", "add", &args, &options, NULL);
    lb_payload_destroy(&args);
    const char *raised[] = {"device_unavailable", "too_old"};
    for (size_t i = 0; i < sizeof raised / sizeof raised[0]; i++) {
        lb_payload_init(&args);
        const char *fail_names[] = {"code"}, *fail_values[] = {raised[i]};
        pack_args(&args, 1, fail_names, "s", fail_values);
        call_case(raised[i], client, "echo1", "fail", &args, &options, NULL);
        lb_payload_destroy(&args);
    }
    call_case("unknown_service", client, "no-such-service", "ping", NULL, &options, NULL);

    /* Deadlines: the broker's (the command outlives it) and the local refusal of timeout 0. */
    work_case("deadline", "40", "0.05", 0.3, 0, NULL);
    options.timeout_s = 0;
    call_case("no_time", client, "echo1", "ping", NULL, &options, NULL);
    options.timeout_s = 10;

    /* Cancel: from the progress callback, and from a flag set by a signal handler. */
    work_case("cancel_from_progress", "100", "0.05", 10, 1, NULL);
    struct sigaction action = {.sa_handler = on_alarm};
    sigaction(SIGALRM, &action, NULL);
    struct itimerval timer = {{0, 0}, {0, 200000}};
    setitimer(ITIMER_REAL, &timer, NULL);
    work_case("cancel_from_flag", "100", "0.05", 10, 0, &alarm_cancel);

    /* Bulk frames: 100 000 bytes up (lifted into a bulk frame), 70 000 bytes down. */
    size_t size = 100000;
    unsigned char *data = malloc(size);
    for (size_t i = 0; i < size; i++) data[i] = (unsigned char)(i * 7);
    lb_payload_init(&args);
    msgpack_pack_map(&args.packer, 1);
    msgpack_pack_str_with_body(&args.packer, "data", 4);
    lb_payload_pack_bytes(&args, data, size, NULL);
    printf("{\"case\": \"bulk_frames_sent\", \"count\": %zu}\n", args.bulk_count);
    call_case("bulk_up", client, "echo1", "length", &args, &options, NULL);
    lb_payload_destroy(&args);
    free(data);
    lb_payload_init(&args);
    const char *blob_names[] = {"size"}, *blob_values[] = {"70000"};
    pack_args(&args, 1, blob_names, "i", blob_values);
    lb_value result;
    lb_code code = lb_call(client, "echo1", "blob", &args, &options, &result, &err);
    lb_payload_destroy(&args);
    /* blob returns 16 random bytes repeated, then "x" * (size % 16): check the whole value. */
    int pattern = code == LB_OK && result.object.type == MSGPACK_OBJECT_BIN;
    uint32_t got = pattern ? result.object.via.bin.size : 0;
    const unsigned char *bytes = pattern ? (const unsigned char *)result.object.via.bin.ptr : NULL;
    for (uint32_t i = 16; pattern && i < got - got % 16; i++) pattern = bytes[i] == bytes[i % 16];
    for (uint32_t i = got - got % 16; pattern && i < got; i++) pattern = bytes[i] == 'x';
    printf("{\"case\": \"bulk_down\", \"code\": \"%s\", \"size\": %u, \"pattern\": %s}\n",
           lb_code_name(code), got, pattern ? "true" : "false");
    if (code == LB_OK) lb_value_destroy(&result);

    /* No broker at all: broker_unreachable at the deadline, naming the endpoint. */
    lb_client *nowhere = lb_client_new(argv[2], secured ? &keys : NULL, &err);
    options.timeout_s = 0.3;
    call_case("unreachable", nowhere, "echo1", "ping", NULL, &options, NULL);
    lb_client_destroy(nowhere);

    lb_client_destroy(client);
    lb_error_clear(&err);
    return 0;
}
