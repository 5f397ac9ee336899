/*
 * journal.c: the audit journal, where durable events wait for the store.
 *
 * A statement that writes (or that policy refuses or sends to review) must have its event
 * recorded before it goes upstream. Instead of waiting for the writer's next store commit,
 * the emitting thread appends the event here (one writev) and the relay forwards at once;
 * the writer then commits it with the other events of its batch. An append reaches the
 * kernel before audit_emit() returns, so it survives a crash of sluice exactly as a commit
 * of the store does (SQLite in WAL mode with synchronous=NORMAL does not fsync commits
 * either); neither survives a power loss of the host. On the next start, audit_start()
 * replays what the store is missing (audit_journal_replay) and commits it before anything
 * else.
 *
 * Record: header {magic, payload length, seq, check} and the payload of audit_rec_encode().
 * The check is FNV-1a 64 of seq and payload (it finds torn records); with audit.signing_key
 * set it is the first 8 bytes of an HMAC-SHA-256 keyed from the signing key instead, so that
 * whoever can write the state directory but not read the key cannot plant records that the
 * next start would chain and sign. Two files alternate: the writer switches appends to the other
 * file when the current one passes JOURNAL_ROTATE bytes, and empties a file once the store holds
 * all of its records, so the journal stays small and is empty when sluice is idle.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "audit/audit_int.h"
#include "core/buf.h"

#define JOURNAL_MAGIC 0x314a4c53u /* "SLJ1" */
#define JOURNAL_ROTATE (4u << 20)
#define JOURNAL_MAX_RECORD (64u << 20)

struct journal_header {
    uint32_t magic;
    uint32_t len; /* payload bytes */
    uint64_t seq;
    uint64_t check; /* FNV-1a 64, or truncated HMAC-SHA-256, over seq and the payload */
};

struct audit_journal {
    pthread_mutex_t mu; /* cur, size and max_seq; appends are serialized by the caller */
    int fd[2];
    char path[2][PATH_MAX];
    unsigned cur;          /* the file appends go to */
    off_t size[2];         /* bytes of complete records */
    uint64_t max_seq[2];   /* highest seq in each file (0 when empty) */
    bool torn[2];          /* a failed append could not be cut off: replay would stop there */
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

static uint64_t record_check(const struct audit_journal *j, uint64_t seq, const char *payload,
                             size_t len)
{
    if (!j->keyed) return fnv1a(fnv1a(0xcbf29ce484222325ull, &seq, sizeof seq), payload, len);
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
    for (int i = 0; i < 2; i++) {
        if (!audit_journal_path(store_path, i, j->path[i], sizeof j->path[i])) {
            snprintf(err, errlen, "audit journal: the path %s is too long", store_path);
            goto fail;
        }
        j->fd[i] = open(j->path[i], O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        struct stat st;
        if (j->fd[i] < 0 || fstat(j->fd[i], &st) != 0) {
            snprintf(err, errlen, "audit journal %s: %s", j->path[i], strerror(errno));
            goto fail;
        }
        j->size[i] = st.st_size;
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
    for (int i = 0; i < 2; i++)
        if (j->fd[i] >= 0) close(j->fd[i]);
    OPENSSL_cleanse(j->key, sizeof j->key);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

int audit_journal_append(struct audit_journal *j, uint64_t seq, const char *rec, size_t len)
{
    if (len > JOURNAL_MAX_RECORD) {
        errno = EFBIG;
        return -1;
    }
    struct journal_header h = {JOURNAL_MAGIC, (uint32_t)len, seq, record_check(j, seq, rec, len)};
    struct iovec iov[2] = {{&h, sizeof h}, {(void *)rec, len}};
    pthread_mutex_lock(&j->mu);
    unsigned c = j->cur;
    if (j->torn[c]) {
        /* Nothing appended after torn bytes could be replayed: use the other file once it
         * is empty, else refuse (the writer empties a file once the store holds it). */
        if (j->size[1 - c] != 0 || j->torn[1 - c]) {
            pthread_mutex_unlock(&j->mu);
            errno = EIO;
            return -1;
        }
        c = j->cur = 1 - c;
    }
    size_t want = sizeof h + len;
    ssize_t n = writev(j->fd[c], iov, 2);
    if (n != (ssize_t)want) {
        int e = n < 0 ? errno : ENOSPC;
        if (n > 0 && ftruncate(j->fd[c], j->size[c]) != 0) j->torn[c] = true;
        pthread_mutex_unlock(&j->mu);
        errno = e;
        return -1;
    }
    j->size[c] += (off_t)want;
    j->max_seq[c] = seq;
    pthread_mutex_unlock(&j->mu);
    return 0;
}

void audit_journal_committed(struct audit_journal *j, uint64_t seq)
{
    pthread_mutex_lock(&j->mu);
    unsigned other = 1 - j->cur;
    bool empty_other = (j->size[other] > 0 || j->torn[other]) && j->max_seq[other] <= seq;
    pthread_mutex_unlock(&j->mu);
    /* Nobody appends to the other file: only this thread switches files. */
    if (empty_other && ftruncate(j->fd[other], 0) == 0) {
        pthread_mutex_lock(&j->mu);
        j->size[other] = 0;
        j->max_seq[other] = 0;
        j->torn[other] = false;
        pthread_mutex_unlock(&j->mu);
    }
    pthread_mutex_lock(&j->mu);
    unsigned c = j->cur;
    if ((j->size[c] > 0 || j->torn[c]) && j->max_seq[c] <= seq) {
        /* everything appended is committed: empty the file (small, or idle) */
        if (ftruncate(j->fd[c], 0) == 0) {
            j->size[c] = 0;
            j->max_seq[c] = 0;
            j->torn[c] = false;
        }
    } else if (j->size[c] >= JOURNAL_ROTATE && j->size[1 - c] == 0) {
        j->cur = 1 - c;
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
        j->size[i] = 0;
        j->max_seq[i] = 0;
        j->torn[i] = false;
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

/* Read the whole file i; NULL with a message when it cannot be read. */
static char *read_all(struct audit_journal *j, int i, size_t *len, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(j->fd[i], &st) != 0) goto fail;
    size_t n = (size_t)st.st_size, got = 0;
    char *p = xmalloc(n + 1);
    while (got < n) {
        ssize_t r = pread(j->fd[i], p + got, n - got, (off_t)got);
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
    snprintf(err, errlen, "audit journal %s: %s", j->path[i], strerror(errno ? errno : EIO));
    return NULL;
}

long audit_journal_replay(struct audit_journal *j, uint64_t after, audit_journal_fn fn, void *ctx,
                          unsigned *rejected, char *err, size_t errlen)
{
    *rejected = 0;
    struct replayed *list = NULL;
    size_t n = 0, cap = 0;
    for (int i = 0; i < 2; i++) {
        size_t len;
        char *data = read_all(j, i, &len, err, errlen);
        if (!data) goto fail;
        size_t off = 0;
        while (len - off >= sizeof(struct journal_header)) {
            struct journal_header h;
            memcpy(&h, data + off, sizeof h);
            if (h.magic != JOURNAL_MAGIC || h.len > len - off - sizeof h) break; /* torn */
            const char *payload = data + off + sizeof h;
            struct audit_rec *rec = NULL;
            if (record_check(j, h.seq, payload, h.len) != h.check ||
                (h.seq > after && !(rec = audit_rec_decode(payload, h.len)))) {
                ++*rejected; /* a whole record that is not ours: nothing after it is trusted */
                break;
            }
            off += sizeof h + h.len;
            if (!rec) continue;
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
