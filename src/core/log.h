/*
 * log.h: one line per event to stderr, with time, level and thread.
 *
 * Callers never pass secrets: passwords, tokens and upstream credentials stay out of every
 * format string. A line is written with a single write(2) so lines from threads never mix.
 */
#ifndef SLUICE_CORE_LOG_H
#define SLUICE_CORE_LOG_H

#include "core/config.h"

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_get_level() <= LOG_DEBUG) log_msg(LOG_DEBUG, __VA_ARGS__);                         \
    } while (0)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
