/*
 * jsonl.c: the JSON Lines sink: one line per event (the event's JSON with its hash) appended
 * to audit.jsonl for a SIEM to ship, fsync'ed once per batch. A batch that fails to write is
 * cut back off the file so that a retry never leaves half a line or a duplicate. Verification
 * of the file lives in verify.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "audit/audit_int.h"
#include "core/buf.h"

struct audit_jsonl {
    int fd;
    off_t size; /* end of the last complete batch */
};

/* Offset just after the last '\n' of the file (0 when none). */
static int last_newline_end(int fd, off_t size, off_t *out)
{
    char buf[4096];
    off_t pos = size;
    while (pos > 0) {
        off_t start = pos > (off_t)sizeof buf ? pos - (off_t)sizeof buf : 0;
        ssize_t n = pread(fd, buf, (size_t)(pos - start), start);
        if (n != pos - start) return -1;
        for (ssize_t i = n - 1; i >= 0; i--) {
            if (buf[i] == '\n') {
                *out = start + i + 1;
                return 0;
            }
        }
        pos = start;
    }
    *out = 0;
    return 0;
}

int audit_jsonl_open(const char *path, struct audit_jsonl **out, char *err, size_t errlen)
{
    *out = NULL;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open audit.jsonl %s: %s", path, strerror(errno));
        return -1;
    }
    int rfd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    off_t end = 0;
    if (rfd < 0 || fstat(fd, &sb) != 0 || last_newline_end(rfd, sb.st_size, &end) != 0) {
        snprintf(err, errlen, "cannot read audit.jsonl %s: %s", path, strerror(errno));
        if (rfd >= 0) close(rfd);
        close(fd);
        return -1;
    }
    close(rfd);
    if (end != sb.st_size && ftruncate(fd, end) != 0) { /* a crash left half a line */
        snprintf(err, errlen, "cannot repair audit.jsonl %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    struct audit_jsonl *j = xcalloc(1, sizeof *j);
    j->fd = fd;
    j->size = end;
    *out = j;
    return 0;
}

void audit_jsonl_close(struct audit_jsonl *j)
{
    if (!j) return;
    close(j->fd);
    free(j);
}

int audit_jsonl_append(struct audit_jsonl *j, const char *data, size_t len, char *err,
                       size_t errlen)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(j->fd, data + done, len - done, j->size + (off_t)done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) goto fail;
        done += (size_t)n;
    }
    if (fdatasync(j->fd) != 0) goto fail;
    j->size += (off_t)len;
    return 0;
fail:
    snprintf(err, errlen, "writing audit.jsonl: %s", strerror(errno ? errno : EIO));
    if (ftruncate(j->fd, j->size) != 0) { /* the retry rewrites from j->size anyway */
    }
    return -1;
}

int audit_jsonl_last_seq(const char *path, uint64_t *seq, char *err, size_t errlen)
{
    *seq = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    off_t end = 0, start = 0;
    if (fstat(fd, &sb) != 0 || last_newline_end(fd, sb.st_size, &end) != 0 ||
        (end > 0 && last_newline_end(fd, end - 1, &start) != 0)) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    int ret = 0;
    if (end > 0) {
        size_t n = (size_t)(end - start);
        char *line = xmalloc(n + 1);
        if (pread(fd, line, n, start) != (ssize_t)n) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            ret = -1;
        } else {
            line[n] = 0;
            cJSON *o = cJSON_Parse(line);
            cJSON *s = o ? cJSON_GetObjectItemCaseSensitive(o, "seq") : NULL;
            if (cJSON_IsNumber(s) && s->valuedouble >= 1) {
                *seq = (uint64_t)s->valuedouble;
            } else {
                snprintf(err, errlen, "%s: the last line is not an audit event", path);
                ret = -1;
            }
            cJSON_Delete(o);
        }
        free(line);
    }
    close(fd);
    return ret;
}
