/*
 * log.c: the stderr logger. Formats "TIME LEVEL [tid] message" into a stack buffer and
 * writes it with one write(2); long messages are cut, never split. Control characters in a
 * message are escaped (\n, \x1b), so a value from a client cannot forge a line.
 */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static enum log_level current_level = LOG_INFO;

static const char *level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void log_set_level(enum log_level level)
{
    current_level = level;
}

enum log_level log_get_level(void)
{
    return current_level;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level < current_level) return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s [%ld] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_names[level], (long)syscall(SYS_gettid));
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t mlen = m < 0 ? 0 : (size_t)m < sizeof msg ? (size_t)m : sizeof msg - 1;
    /* One event, one line: control characters from clients (a user name, a statement) are
     * escaped, so none can end the line and forge the next one, or steer a terminal. */
    size_t len = (size_t)n;
    for (size_t i = 0; i < mlen && len + 5 < sizeof line; i++) {
        unsigned char c = (unsigned char)msg[i];
        if (c >= 0x20 && c != 0x7f) {
            line[len++] = (char)c;
        } else {
            static const char hex[] = "0123456789abcdef";
            char esc = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : 0;
            line[len++] = '\\';
            if (esc) {
                line[len++] = esc;
            } else {
                line[len++] = 'x';
                line[len++] = hex[c >> 4];
                line[len++] = hex[c & 15];
            }
        }
    }
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
