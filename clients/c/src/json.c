/* Values as JSON text, for the example programs and tests. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

static void print_string(FILE *out, const char *s, size_t size) {
    fputc('"', out);
    for (size_t i = 0; i < size; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out); /* UTF-8 passes through: JSON text is UTF-8 */
    }
    fputc('"', out);
}

static void print_hex(FILE *out, const char *data, size_t size) {
    for (size_t i = 0; i < size; i++) fprintf(out, "%02x", (unsigned char)data[i]);
}

void lb_fprint_json(FILE *out, const msgpack_object *o) {
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: fputs("null", out); break;
    case MSGPACK_OBJECT_BOOLEAN: fputs(o->via.boolean ? "true" : "false", out); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: fprintf(out, "%llu", (unsigned long long)o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: fprintf(out, "%lld", (long long)o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (isfinite(o->via.f64)) {
            /* 17 significant digits: the same double when read back */
            char text[40];
            snprintf(text, sizeof text, "%.17g", o->via.f64);
            fputs(text, out);
            /* keep it a float in JSON readers that tell 2.0 from 2 */
            int integral = 1;
            for (const char *p = text; *p; p++)
                if (*p == '.' || *p == 'e' || *p == 'n' || *p == 'i') integral = 0;
            if (integral) fputs(".0", out);
        } else {
            fputs("null", out); /* JSON has no NaN or infinity */
        }
        break;
    case MSGPACK_OBJECT_STR: print_string(out, o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN:
        fputs("{\"hex\": \"", out);
        print_hex(out, o->via.bin.ptr, o->via.bin.size);
        fputs("\"}", out);
        break;
    case MSGPACK_OBJECT_EXT:
        fprintf(out, "{\"ext\": %d, \"hex\": \"", o->via.ext.type);
        print_hex(out, o->via.ext.ptr, o->via.ext.size);
        fputs("\"}", out);
        break;
    case MSGPACK_OBJECT_ARRAY:
        fputc('[', out);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i) fputs(", ", out);
            lb_fprint_json(out, &o->via.array.ptr[i]);
        }
        fputc(']', out);
        break;
    case MSGPACK_OBJECT_MAP:
        fputc('{', out);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *key = &o->via.map.ptr[i].key;
            if (i) fputs(", ", out);
            if (key->type == MSGPACK_OBJECT_STR) {
                print_string(out, key->via.str.ptr, key->via.str.size);
            } else { /* JSON keys are strings: write the key's JSON as one */
                fputs("\"", out);
                char *text = NULL;
                size_t size = 0;
                FILE *mem = open_memstream(&text, &size);
                if (mem != NULL) {
                    lb_fprint_json(mem, key);
                    fclose(mem);
                    for (size_t k = 0; k < size; k++)
                        if (text[k] == '"' || text[k] == '\\') fprintf(out, "\\%c", text[k]);
                        else fputc(text[k], out);
                    free(text);
                }
                fputs("\"", out);
            }
            fputs(": ", out);
            lb_fprint_json(out, &o->via.map.ptr[i].val);
        }
        fputc('}', out);
        break;
    }
}
