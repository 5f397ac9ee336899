/*
 * journal.c: the audit journal, where durable events wait for the store.
 *
 * A statement that writes (or that policy refuses or sends to review) must have its event
 * recorded before it goes upstream. Instead of waiting for the writer's next store commit,
 * the emitting thread copies the event into the journal and the relay forwards at once; the
 * writer then commits it with the other events of its batch. The files are mapped into memory
 * (MAP_SHARED): a record is in the kernel's page cache as soon as the copy is done, so it
 * survives a crash of sluice exactly as a commit of the store does (SQLite in WAL mode with
 * synchronous=NORMAL does not fsync commits either); neither survives a power loss of the
 * host. On the next start, audit_start() replays what the store is missing
 * (audit_journal_replay) and commits it before anything else.
 *
 * Appending takes two steps so that emitting threads do not wait on one another:
 * audit_journal_reserve(), under the audit queue's mutex, takes the next bytes of the current
 * file and writes the record's header (magic, length, seq) there, so the files are always a
 * chain of records; audit_journal_fill(), outside any lock, copies the payload and writes the
 * check last. A record whose check is still 0 was being copied when the process died: its
 * statement was never forwarded, and replay skips it. A zeroed header follows the last
 * record, so replay knows where the records end. Files grow by JOURNAL_GROW bytes allocated
 * on disk (posix_fallocate) under the lock, so a full disk is an error returned to the
 * emitter, never a fault while copying; they are not shrunk while sluice runs (an emptied
 * file starts again at offset 0 with its pages in memory: no allocation, no page faults),
 * and are cut to nothing at a clean stop.
 *
 * Record: header {magic, payload length, seq, check} and the payload of audit_rec_encode().
 * The check is check64() of seq and payload (magic "SLJ2"; records of an older sluice, magic
 * "SLJ1", have FNV-1a 64 and are still replayed); with audit.signing_key set it is the first 8
 * bytes of an HMAC-SHA-256 keyed from the signing key instead, so that whoever can write the
 * state directory but not read the key cannot plant records that the next start would chain
 * and sign. Two files alternate: the writer moves appends to the other (empty) file once the
 * current one's records are all committed (or it passed JOURNAL_ROTATE bytes), and empties a
 * file whose records are all in the store, so the journal holds no record when sluice is
 * idle.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "audit/audit_int.h"
#include "core/buf.h"

#define JOURNAL_MAGIC 0x324a4c53u    /* "SLJ2": the check is check64() */
#define JOURNAL_MAGIC_V1 0x314a4c53u /* "SLJ1": the check is FNV-1a (read, never written) */
/* Appends move to the other file once it is empty and the current one holds this much: the
 * records written between two commits (50 ms) fit, and the pages the workers write stay few
 * and warm. Under a steady stream of writes the current file is never all committed, so it
 * switched only at this size: at 4 MiB, each record was copied into lines (and pages) not
 * touched for a second, which the kernel had also written back and write-protected meanwhile:
 * `audit_journal_reserve` took 5 to 9 µs of the workers' time per TPC-B transaction (4
 * records), most of it on its lock's waiters; at 256 KiB, under 1.3. */
#define JOURNAL_ROTATE (256u << 10)
#define JOURNAL_MAX_RECORD (64u << 20)
#define JOURNAL_GROW (1u << 20)  /* bytes allocated at a time */
#define JOURNAL_MAP (1ull << 30) /* address space reserved per file: the most a file holds */

struct journal_header {
    uint32_t magic;
    uint32_t len; /* payload bytes */
    uint64_t seq;
    uint64_t check; /* check64(), or truncated HMAC-SHA-256, over seq and the payload */
};

struct audit_journal {
    pthread_mutex_t mu; /* cur, used, alloc and max_seq */
    int fd[2];
    char *map[2]; /* JOURNAL_MAP bytes each, of which alloc[i] are backed by the file */
    char path[2][PATH_MAX];
    unsigned cur;          /* the file appends go to */
    size_t used[2];        /* bytes of reserved records */
    size_t alloc[2];       /* the file's size */
    uint64_t max_seq[2];   /* highest seq in each file (0 when empty) */
    unsigned char key[32]; /* HMAC key for the check (audit_journal_set_key) */
    bool keyed;
};

static uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* The unkeyed check of a record: eight bytes at a time (FNV-1a went a byte at a time, about
 * 0.6 µs per write's record), finished with MurmurHash3's fmix64 so that every bit of the input
 * reaches every bit of the check. Never 0, which marks a record still being copied. */
static uint64_t check64(uint64_t seq, const void *data, size_t len)
{
    const uint64_t k1 = 0x9e3779b97f4a7c15ull, k2 = 0xc2b2ae3d27d4eb4full;
    const unsigned char *p = data;
    uint64_t h = (seq ^ k1) * k2 ^ (uint64_t)len;
    for (; len >= 8; p += 8, len -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h ^= w * k1;
        h = (h << 31 | h >> 33) * k2;
    }
    uint64_t tail = 0;
    memcpy(&tail, p, len);
    h ^= tail * k1;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h ? h : 1;
}

/* The check of a record with magic (JOURNAL_MAGIC or, from an older sluice, JOURNAL_MAGIC_V1). */
static uint64_t record_check(const struct audit_journal *j, uint32_t magic, uint64_t seq,
                             const char *payload, size_t len)
{
    if (!j->keyed && magic == JOURNAL_MAGIC_V1)
        return fnv1a(fnv1a(0xcbf29ce484222325ull, &seq, sizeof seq), payload, len);
    if (!j->keyed) return check64(seq, payload, len);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    uint64_t out = 0;
    unsigned char msg_seq[8];
    memcpy(msg_seq, &seq, 8);
    /* HMAC over seq then payload: one call on a stack copy when small */
    unsigned char small[1024];
    if (len + 8 <= sizeof small) {
        memcpy(small, msg_seq, 8);
        memcpy(small + 8, payload, len);
        HMAC(EVP_sha256(), j->key, sizeof j->key, small, len + 8, md, &mdlen);
    } else {
        unsigned char *big = xmalloc(len + 8);
        memcpy(big, msg_seq, 8);
        memcpy(big + 8, payload, len);
        HMAC(EVP_sha256(), j->key, sizeof j->key, big, len + 8, md, &mdlen);
        free(big);
    }
    memcpy(&out, md, sizeof out);
    return out;
}

void audit_journal_set_key(struct audit_journal *j, const unsigned char *secret, size_t len)
{
    /* the journal's own key: SHA-256("sluice-audit-journal" || secret) */
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned int n = 0;
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    EVP_DigestUpdate(c, "sluice-audit-journal", 20);
    EVP_DigestUpdate(c, secret, len);
    EVP_DigestFinal_ex(c, j->key, &n);
    EVP_MD_CTX_free(c);
    j->keyed = n == sizeof j->key;
}

bool audit_journal_path(const char *store_path, int i, char *out, size_t n)
{
    return (size_t)snprintf(out, n, "%s.audit-journal.%d", store_path, i) < n;
}

int audit_journal_open(const char *store_path, struct audit_journal **out, char *err, size_t errlen)
{
    struct audit_journal *j = xcalloc(1, sizeof *j);
    pthread_mutex_init(&j->mu, NULL);
    j->fd[0] = j->fd[1] = -1;
    j->map[0] = j->map[1] = MAP_FAILED;
    for (int i = 0; i < 2; i++) {
        if (!audit_journal_path(store_path, i, j->path[i], sizeof j->path[i])) {
            snprintf(err, errlen, "audit journal: the path %s is too long", store_path);
            goto fail;
        }
        j->fd[i] = open(j->path[i], O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        struct stat st;
        if (j->fd[i] < 0 || fstat(j->fd[i], &st) != 0 ||
            (j->map[i] = mmap(NULL, JOURNAL_MAP, PROT_READ | PROT_WRITE, MAP_SHARED, j->fd[i],
                              0)) == MAP_FAILED) {
            snprintf(err, errlen, "audit journal %s: %s", j->path[i], strerror(errno));
            goto fail;
        }
        /* what a crash left is read by replay and emptied by reset before any append */
        j->used[i] = j->alloc[i] = (size_t)st.st_size;
    }
    if (flock(j->fd[0], LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen, "audit journal %s: %s", j->path[0],
                 errno == EWOULDBLOCK ? "another sluice process is using this audit store"
                                      : strerror(errno));
        goto fail;
    }
    *out = j;
    return 0;
fail:
    audit_journal_close(j);
    return -1;
}

void audit_journal_close(struct audit_journal *j)
{
    if (!j) return;
    for (int i = 0; i < 2; i++) {
        if (j->map[i] != MAP_FAILED) munmap(j->map[i], JOURNAL_MAP);
        /* leave no allocated tail (or stale records) behind the records */
        if (j->fd[i] >= 0 && j->alloc[i] > j->used[i])
            (void)!ftruncate(j->fd[i], (off_t)j->used[i]);
        if (j->fd[i] >= 0) close(j->fd[i]);
    }
    OPENSSL_cleanse(j->key, sizeof j->key);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

int audit_journal_reserve(struct audit_journal *j, uint64_t seq, size_t len,
                          struct audit_journal_slot *out)
{
    if (len > JOURNAL_MAX_RECORD) {
        errno = EFBIG;
        return -1;
    }
    const size_t hs = sizeof(struct journal_header);
    size_t want = hs + len;
    pthread_mutex_lock(&j->mu);
    unsigned c = j->cur;
    if (j->used[c] + want + hs > JOURNAL_MAP && j->used[1 - c] == 0) c = j->cur = 1 - c;
    size_t off = j->used[c];
    if (off + want + hs > j->alloc[c]) { /* room for the record and the end marker */
        size_t to = (off + want + hs + JOURNAL_GROW - 1) / JOURNAL_GROW * JOURNAL_GROW;
        int e = to > JOURNAL_MAP
                    ? EFBIG /* both files full: the store is far behind */
                    : posix_fallocate(j->fd[c], (off_t)j->alloc[c], (off_t)(to - j->alloc[c]));
        if (e != 0) {
            pthread_mutex_unlock(&j->mu);
            errno = e;
            return -1;
        }
        j->alloc[c] = to;
    }
    struct journal_header h = {JOURNAL_MAGIC, (uint32_t)len, seq, 0};
    memset(j->map[c] + off + want, 0, hs); /* the end marker (what follows is stale) */
    /* a crash sees these stores in program order: the marker before the header */
    atomic_signal_fence(memory_order_release);
    memcpy(j->map[c] + off, &h, hs);
    j->used[c] = off + want;
    j->max_seq[c] = seq > j->max_seq[c] ? seq : j->max_seq[c];
    pthread_mutex_unlock(&j->mu);
    *out = (struct audit_journal_slot){j->map[c] + off, seq, len};
    return 0;
}

void audit_journal_fill(struct audit_journal *j, const struct audit_journal_slot *slot,
                        const char *rec)
{
    char *p = slot->at;
    memcpy(p + sizeof(struct journal_header), rec, slot->len);
    uint64_t check = record_check(j, JOURNAL_MAGIC, slot->seq, rec, slot->len);
    atomic_signal_fence(memory_order_release); /* the payload before its check */
    memcpy(p + offsetof(struct journal_header, check), &check, sizeof check);
}

/* Empty file i, which takes no appends (it is not the current file); j->mu held. Its space
 * and pages stay for the next use: only the first header is zeroed. */
static void empty_file(struct audit_journal *j, unsigned i)
{
    if (j->alloc[i]) memset(j->map[i], 0, sizeof(struct journal_header));
    j->used[i] = 0;
    j->max_seq[i] = 0;
}

void audit_journal_committed(struct audit_journal *j, uint64_t seq)
{
    /* Every record reserved in a file has a seq at most max_seq and was filled before the
     * writer could commit it, so a file with max_seq <= seq holds nothing still needed. */
    pthread_mutex_lock(&j->mu);
    unsigned c = j->cur, other = 1 - c;
    if (j->used[other] > 0 && j->max_seq[other] <= seq) empty_file(j, other);
    bool done = j->used[c] > 0 && j->max_seq[c] <= seq;
    /* Move appends to the other file when this one is all committed (then empty it: records
     * still being reserved go to the other file) or large. */
    if (j->used[other] == 0 && (done || j->used[c] >= JOURNAL_ROTATE)) {
        j->cur = other;
        if (done) empty_file(j, c);
    }
    pthread_mutex_unlock(&j->mu);
}

int audit_journal_reset(struct audit_journal *j)
{
    pthread_mutex_lock(&j->mu);
    int rc = 0;
    for (int i = 0; i < 2; i++) {
        if (ftruncate(j->fd[i], 0) != 0) {
            rc = -1;
            continue;
        }
        j->used[i] = j->alloc[i] = 0;
        j->max_seq[i] = 0;
    }
    j->cur = 0;
    pthread_mutex_unlock(&j->mu);
    return rc;
}

/* ---- replay */

struct replayed {
    uint64_t seq;
    struct audit_rec *rec;
};

static int replayed_cmp(const void *a, const void *b)
{
    const struct replayed *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Read the whole file; NULL with a message when it cannot be read. */
static char *read_all(int fd, const char *path, size_t *len, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0) goto fail;
    size_t n = (size_t)st.st_size, got = 0;
    char *p = xmalloc(n + 1);
    while (got < n) {
        ssize_t r = pread(fd, p + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            free(p);
            goto fail;
        }
        got += (size_t)r;
    }
    *len = n;
    return p;
fail:
    snprintf(err, errlen, "audit journal %s: %s", path, strerror(errno ? errno : EIO));
    return NULL;
}

/* The next record at data + *off (header in *h), or false at the end of the records. */
static bool next_record(const char *data, size_t len, size_t *off, struct journal_header *h)
{
    if (len - *off < sizeof *h) return false;
    memcpy(h, data + *off, sizeof *h);
    /* the end: the zeroed header after the last record, or bytes a crash cut short */
    if ((h->magic != JOURNAL_MAGIC && h->magic != JOURNAL_MAGIC_V1) ||
        h->len > len - *off - sizeof *h)
        return false;
    *off += sizeof *h + h->len;
    return true;
}

long audit_journal_pending(const char *store_path)
{
    long n = 0;
    for (int i = 0; i < 2; i++) {
        char path[PATH_MAX], err[64];
        int fd = audit_journal_path(store_path, i, path, sizeof path)
                     ? open(path, O_RDONLY | O_CLOEXEC)
                     : -1;
        if (fd < 0) continue;
        size_t len = 0, off = 0;
        char *data = read_all(fd, path, &len, err, sizeof err);
        close(fd);
        struct journal_header h;
        while (data && next_record(data, len, &off, &h))
            n += h.check != 0;
        free(data);
    }
    return n;
}

long audit_journal_replay(struct audit_journal *j, uint64_t after, audit_journal_fn fn, void *ctx,
                          unsigned *rejected, char *err, size_t errlen)
{
    *rejected = 0;
    struct replayed *list = NULL;
    size_t n = 0, cap = 0;
    for (int i = 0; i < 2; i++) {
        size_t len;
        char *data = read_all(j->fd[i], j->path[i], &len, err, errlen);
        if (!data) goto fail;
        size_t off = 0;
        struct journal_header h;
        while (next_record(data, len, &off, &h)) {
            const char *payload = data + off - h.len;
            /* check 0: the record was being copied when the process died; its statement
             * was never forwarded */
            if (h.seq <= after || h.check == 0) continue;
            struct audit_rec *rec = NULL;
            if (record_check(j, h.magic, h.seq, payload, h.len) != h.check ||
                !(rec = audit_rec_decode(payload, h.len))) {
                ++*rejected; /* not written by this sluice (or with another key) */
                continue;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                list = xrealloc(list, cap * sizeof *list);
            }
            list[n++] = (struct replayed){h.seq, rec};
        }
        free(data);
    }
    if (n) qsort(list, n, sizeof *list, replayed_cmp);
    long count = 0;
    for (size_t k = 0; k < n; k++) {
        if (k && list[k].seq == list[k - 1].seq) { /* cannot happen: appended once */
            free(list[k].rec);
            continue;
        }
        fn(ctx, list[k].seq, list[k].rec);
        count++;
    }
    free(list);
    return count;
fail:
    for (size_t k = 0; k < n; k++)
        free(list[k].rec);
    free(list);
    return -1;
}
