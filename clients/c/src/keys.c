/* CURVE keys from ZeroMQ certificate files or Z85 text (PROTOCOL.md §18), read as the Python
 * client reads them (bus/security/keys.py): a missing, unreadable, too open or malformed key is
 * a config_error naming the file or variable, never a fall-back to plaintext. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "internal.h"

#define Z85_KEY_LENGTH 40

/* Copy `text` (trimmed) into out[41] if it is a 40-character Z85 key. */
static lb_code parse_z85(const char *text, size_t size, char out[41], const char *source,
                         lb_error *err) {
    while (size && isspace((unsigned char)text[0])) text++, size--;
    while (size && isspace((unsigned char)text[size - 1])) size--;
    if (size != Z85_KEY_LENGTH)
        return lb_fail(err, LB_CONFIG_ERROR, "%s: a CURVE key is 40 Z85 characters, found %zu",
                       source, size);
    char key[41];
    memcpy(key, text, Z85_KEY_LENGTH);
    key[Z85_KEY_LENGTH] = '\0';
    uint8_t raw[32];
    if (zmq_z85_decode(raw, key) == NULL)
        return lb_fail(err, LB_CONFIG_ERROR, "%s: not a Z85-encoded key", source);
    memcpy(out, key, sizeof key);
    return LB_OK;
}

lb_code lb_keys_set_secret(lb_keys *keys, const char *z85, const char *source, lb_error *err) {
    lb_code code = parse_z85(z85, strlen(z85), keys->secret_key, source, err);
    if (code != LB_OK) return code;
    if (zmq_curve_public(keys->public_key, keys->secret_key) != 0)
        return lb_fail(err, LB_CONFIG_ERROR, "%s: cannot derive the public key (libzmq without "
                       "CURVE?)", source);
    return LB_OK;
}

lb_code lb_keys_set_server(lb_keys *keys, const char *z85, const char *source, lb_error *err) {
    return parse_z85(z85, strlen(z85), keys->server_key, source, err);
}

/* The public-key and secret-key lines of a certificate (zmq.auth.load_certificate's rules). */
static lb_code read_certificate(const char *path, int want_secret, char public_key[41],
                                char secret_key[41], lb_error *err) {
    FILE *file = fopen(path, "r");
    if (file == NULL)
        return lb_fail(err, LB_CONFIG_ERROR, "%s: %s", path,
                       errno == ENOENT ? "key file not found" : strerror(errno));
    struct stat st;
    if (fstat(fileno(file), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(file);
        return lb_fail(err, LB_CONFIG_ERROR, "%s: is a directory, not a key file", path);
    }
    if (want_secret && (st.st_mode & 077)) {
        fclose(file);
        return lb_fail(err, LB_CONFIG_ERROR,
                       "%s: secret key file is not private (mode %04o); run: chmod 600 %s", path,
                       (unsigned)(st.st_mode & 07777), path);
    }
    int have_public = 0, have_secret = 0;
    lb_code code = LB_OK;
    char line[512];
    while (code == LB_OK && fgets(line, sizeof line, file) != NULL) {
        char *p = line;
        while (isspace((unsigned char)*p)) p++;
        int is_public = strncmp(p, "public-key", 10) == 0;
        int is_secret = strncmp(p, "secret-key", 10) == 0;
        if (!is_public && !is_secret) continue;
        p += 10;
        while (isspace((unsigned char)*p)) p++;
        if (*p != '=') continue;
        p++;
        while (*p == ' ' || *p == '\t' || *p == '"' || *p == '\'') p++;
        size_t size = strcspn(p, "\"'\r\n");
        if (is_public && !have_public) {
            code = parse_z85(p, size, public_key, path, err);
            have_public = 1;
        } else if (is_secret && !have_secret) {
            code = parse_z85(p, size, secret_key, path, err);
            have_secret = 1;
        }
    }
    fclose(file);
    if (code != LB_OK) return code;
    if (!have_public)
        return lb_fail(err, LB_CONFIG_ERROR, "%s: no public-key line: not a CURVE certificate",
                       path);
    if (want_secret && !have_secret)
        return lb_fail(err, LB_CONFIG_ERROR, "%s: holds a public key only, not a secret key", path);
    if (have_secret) {
        char derived[41];
        if (zmq_curve_public(derived, secret_key) != 0 || strcmp(derived, public_key) != 0)
            return lb_fail(err, LB_CONFIG_ERROR,
                           "%s: the secret key does not match the public key", path);
    }
    return LB_OK;
}

lb_code lb_keys_load_secret_file(lb_keys *keys, const char *path, lb_error *err) {
    return read_certificate(path, 1, keys->public_key, keys->secret_key, err);
}

lb_code lb_keys_load_server_file(lb_keys *keys, const char *path, lb_error *err) {
    char secret[41];
    size_t length = strlen(path), suffix = strlen(".key_secret");
    int is_secret = length >= suffix && strcmp(path + length - suffix, ".key_secret") == 0;
    return read_certificate(path, is_secret, keys->server_key, secret, err);
}

/* Where one half comes from: 'f' (file variable), 'v' (value variable) or 0 (neither). */
static lb_code pick(const char *file_var, const char *value_var, char *kind, const char **source,
                    lb_error *err) {
    const char *path = getenv(file_var), *value = getenv(value_var);
    int has_path = path != NULL && *path, has_value = value != NULL && *value;
    if (has_path && has_value)
        return lb_fail(err, LB_CONFIG_ERROR, "$%s: both $%s and $%s are set: keep one", file_var,
                       file_var, value_var);
    *kind = has_path ? 'f' : has_value ? 'v' : 0;
    *source = has_path ? path : has_value ? value : NULL;
    return LB_OK;
}

lb_code lb_keys_from_env(lb_keys *keys, int *found, lb_error *err) {
    memset(keys, 0, sizeof *keys);
    *found = 0;
    char own, broker;
    const char *own_source, *broker_source;
    lb_code code = pick("LINEBUS_KEY_FILE", "LINEBUS_KEY", &own, &own_source, err);
    if (code == LB_OK)
        code = pick("LINEBUS_BROKER_KEY_FILE", "LINEBUS_BROKER_KEY", &broker, &broker_source, err);
    if (code != LB_OK) return code;
    if (!own && !broker) return LB_OK; /* plaintext */
    if (!own)
        return lb_fail(err, LB_CONFIG_ERROR,
                       "$LINEBUS_KEY_FILE: the broker's key is given but not our own: set "
                       "LINEBUS_KEY_FILE to this client's secret key file");
    if (!broker)
        return lb_fail(err, LB_CONFIG_ERROR,
                       "$LINEBUS_BROKER_KEY_FILE: our key is given but not the broker's public "
                       "key: set LINEBUS_BROKER_KEY_FILE to the broker's .key file");
    code = own == 'f' ? lb_keys_load_secret_file(keys, own_source, err)
                      : lb_keys_set_secret(keys, own_source, "$LINEBUS_KEY", err);
    if (code == LB_OK)
        code = broker == 'f' ? lb_keys_load_server_file(keys, broker_source, err)
                             : lb_keys_set_server(keys, broker_source, "$LINEBUS_BROKER_KEY", err);
    if (code == LB_OK) *found = 1;
    return code;
}
