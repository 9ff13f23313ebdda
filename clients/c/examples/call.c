/* linebus-call: call one command and print its answer as JSON.
 *
 *   linebus-call [--timeout S] [--progress] ENDPOINT SERVICE COMMAND [NAME=VALUE ...]
 *
 * VALUE is read as an integer, a float, true, false or null when it looks like one, bytes from a
 * file when written @PATH (64 KiB or more go as a bulk frame), else a string. Prints
 * {"result": ...} and exits 0, or {"error": {"code", "message", "details"}} and exits 1.
 * --progress prints each progress update to stderr as a JSON line. Ctrl-C cancels the call
 * (CANCEL is sent; the answer, usually "cancelled", is still printed). Keys for a secured line
 * come from LINEBUS_KEY_FILE and LINEBUS_BROKER_KEY_FILE (or LINEBUS_KEY, LINEBUS_BROKER_KEY).
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linebus.h"

static volatile sig_atomic_t cancel_requested = 0;

static void on_interrupt(int signal_number) {
    (void)signal_number;
    cancel_requested = 1;
}

static int print_progress(const msgpack_object *data, void *user) {
    (void)user;
    lb_fprint_json(stderr, data);
    fputc('\n', stderr);
    return 0; /* keep going */
}

static int fail(const lb_error *err) {
    printf("{\"error\": {\"code\": \"%s\", \"message\": ", err->wire_code);
    msgpack_object message = {.type = MSGPACK_OBJECT_STR};
    message.via.str.ptr = err->message;
    message.via.str.size = (uint32_t)strlen(err->message);
    lb_fprint_json(stdout, &message);
    printf(", \"details\": ");
    lb_fprint_json(stdout, &err->details);
    printf("}}\n");
    return 1;
}

static char *read_file(const char *path, size_t *size) {
    FILE *file = fopen(path, "rb");
    if (file == NULL) return NULL;
    char *data = NULL;
    size_t capacity = 0;
    *size = 0;
    for (;;) {
        if (*size == capacity) {
            capacity = capacity ? capacity * 2 : 65536;
            char *grown = realloc(data, capacity);
            if (grown == NULL) break;
            data = grown;
        }
        size_t got = fread(data + *size, 1, capacity - *size, file);
        *size += got;
        if (got == 0) break;
    }
    fclose(file);
    return data;
}

/* Pack one NAME=VALUE argument's value. */
static int pack_value(lb_payload *args, const char *text, char **owned, lb_error *err) {
    msgpack_packer *pk = &args->packer;
    char *end;
    if (text[0] == '@') {
        size_t size;
        *owned = read_file(text + 1, &size);
        if (*owned == NULL) {
            fprintf(stderr, "cannot read %s\n", text + 1);
            return -1;
        }
        return lb_payload_pack_bytes(args, *owned, size, err) == LB_OK ? 0 : -1;
    }
    long long integer = strtoll(text, &end, 10);
    if (*text && *end == '\0') return msgpack_pack_long_long(pk, integer);
    double number = strtod(text, &end);
    if (*text && *end == '\0') return msgpack_pack_double(pk, number);
    if (strcmp(text, "true") == 0) return msgpack_pack_true(pk);
    if (strcmp(text, "false") == 0) return msgpack_pack_false(pk);
    if (strcmp(text, "null") == 0) return msgpack_pack_nil(pk);
    return msgpack_pack_str_with_body(pk, text, strlen(text));
}

int main(int argc, char **argv) {
    lb_call_options options = LB_CALL_OPTIONS_INIT;
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
            options.timeout_s = atof(argv[++i]);
        else if (strcmp(argv[i], "--progress") == 0)
            options.progress = print_progress;
        else
            break;
    }
    if (argc - i < 3) {
        fprintf(stderr, "usage: %s [--timeout S] [--progress] ENDPOINT SERVICE COMMAND "
                        "[NAME=VALUE ...]\n", argv[0]);
        return 2;
    }
    const char *endpoint = argv[i], *service = argv[i + 1], *command = argv[i + 2];
    int first_arg = i + 3, arg_count = argc - first_arg;

    lb_error err;
    lb_error_init(&err);
    lb_keys keys;
    int secured = 0;
    if (lb_keys_from_env(&keys, &secured, &err) != LB_OK) return fail(&err);
    lb_client *client = lb_client_new(endpoint, secured ? &keys : NULL, &err);
    if (client == NULL) return fail(&err);

    lb_payload args;
    lb_payload_init(&args);
    char **owned = calloc((size_t)arg_count + 1, sizeof *owned);
    msgpack_pack_map(&args.packer, (size_t)arg_count);
    for (int k = 0; k < arg_count; k++) {
        const char *pair = argv[first_arg + k], *equals = strchr(pair, '=');
        if (equals == NULL) {
            fprintf(stderr, "argument '%s' is not NAME=VALUE\n", pair);
            return 2;
        }
        msgpack_pack_str_with_body(&args.packer, pair, (size_t)(equals - pair));
        if (pack_value(&args, equals + 1, &owned[k], &err) != 0) return err.code ? fail(&err) : 2;
    }

    struct sigaction action = {.sa_handler = on_interrupt};
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    options.cancel = &cancel_requested;

    lb_value result;
    int status = 0;
    if (lb_call(client, service, command, &args, &options, &result, &err) == LB_OK) {
        printf("{\"result\": ");
        lb_fprint_json(stdout, &result.object);
        printf("}\n");
        lb_value_destroy(&result);
    } else {
        status = fail(&err);
    }
    lb_payload_destroy(&args);
    for (int k = 0; k < arg_count; k++) free(owned[k]);
    free(owned);
    lb_client_destroy(client);
    lb_error_clear(&err);
    return status;
}
