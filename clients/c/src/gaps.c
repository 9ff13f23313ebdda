/* Per-topic (epoch, seq) tracking (PROTOCOL.md §9): how many events were lost before each one. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct entry {
    struct entry *next;
    uint64_t epoch, last_seq;
    size_t topic_len;
    char topic[]; /* not NUL-terminated */
} entry;

struct lb_gaps {
    entry **buckets;
    size_t bucket_count, entry_count;
};

lb_gaps *lb_gaps_new(void) {
    lb_gaps *gaps = calloc(1, sizeof *gaps);
    if (gaps == NULL) return NULL;
    gaps->bucket_count = 64;
    gaps->buckets = calloc(gaps->bucket_count, sizeof *gaps->buckets);
    if (gaps->buckets == NULL) {
        free(gaps);
        return NULL;
    }
    return gaps;
}

void lb_gaps_destroy(lb_gaps *gaps) {
    if (gaps == NULL) return;
    for (size_t i = 0; i < gaps->bucket_count; i++)
        for (entry *e = gaps->buckets[i], *next; e != NULL; e = next) {
            next = e->next;
            free(e);
        }
    free(gaps->buckets);
    free(gaps);
}

static size_t hash(const char *topic, size_t len) { /* FNV-1a */
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)topic[i]) * 1099511628211ULL;
    return (size_t)h;
}

static void grow(lb_gaps *gaps) {
    size_t count = gaps->bucket_count * 2;
    entry **buckets = calloc(count, sizeof *buckets);
    if (buckets == NULL) return; /* keep the longer chains */
    for (size_t i = 0; i < gaps->bucket_count; i++)
        for (entry *e = gaps->buckets[i], *next; e != NULL; e = next) {
            next = e->next;
            size_t b = hash(e->topic, e->topic_len) % count;
            e->next = buckets[b];
            buckets[b] = e;
        }
    free(gaps->buckets);
    gaps->buckets = buckets;
    gaps->bucket_count = count;
}

uint64_t lb_gaps_observe(lb_gaps *gaps, const char *topic, size_t topic_len, uint64_t epoch,
                         uint64_t seq) {
    size_t b = hash(topic, topic_len) % gaps->bucket_count;
    for (entry *e = gaps->buckets[b]; e != NULL; e = e->next) {
        if (e->topic_len != topic_len || memcmp(e->topic, topic, topic_len) != 0) continue;
        if (e->epoch != epoch) { /* a new publisher incarnation: count afresh */
            e->epoch = epoch;
            e->last_seq = seq;
            return 0;
        }
        /* A late or repeated event (seq <= last) misses nothing and never lowers the last seen,
         * so the next event in order is not taken for a gap (§9). */
        if (seq <= e->last_seq) return 0;
        uint64_t missed = seq - e->last_seq - 1; /* the events in between were lost */
        e->last_seq = seq;
        return missed;
    }
    entry *e = malloc(sizeof *e + topic_len);
    if (e == NULL) return 0;
    e->epoch = epoch;
    e->last_seq = seq;
    e->topic_len = topic_len;
    memcpy(e->topic, topic, topic_len);
    e->next = gaps->buckets[b];
    gaps->buckets[b] = e;
    if (++gaps->entry_count > gaps->bucket_count) grow(gaps);
    return 0;
}
