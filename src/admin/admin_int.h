/*
 * admin_int.h: what the files of src/admin/ share among themselves (not a public interface).
 *
 * admin.c owns the server, routing, auth and reply helpers; sse.c owns the event ring and the
 * stream responses; throttle.c counts failed tokens per client address.
 */
#ifndef SLUICE_ADMIN_INT_H
#define SLUICE_ADMIN_INT_H

#include <stdint.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "admin/admin.h"

/* Queue a reply: body is malloc'd and taken over (NULL = empty). Adds the common headers and
 * counts the request. */
enum MHD_Result admin_reply_take(struct MHD_Connection *c, unsigned status, const char *ctype,
                                 char *body, size_t len);
/* {"error": msg} with the given status (401 adds WWW-Authenticate). */
enum MHD_Result admin_reply_error(struct MHD_Connection *c, unsigned status, const char *msg);

/* Event ring lifecycle, around the daemon's life. */
void sse_open(void);
void sse_close(void); /* wakes every stream so it ends; the daemon stop then joins them */
void sse_reset(void); /* frees the ring's events (after the daemon stopped) */

/* Answer GET /api/v1/events (already authenticated). */
/* expires: when the caller's credential ends the stream (seconds since the epoch; 0: never) */
enum MHD_Result sse_serve(struct MHD_Connection *c, uint64_t expires);

/* Does the event (one JSON object) pass the stream filters? NULL filter = any; a filter may
 * list several values separated by commas. Exposed for the unit test. */
struct sse_filter {
    const char *identity, *kind, *target, *decision;
};
bool sse_event_matches(const char *json, const struct sse_filter *f);

/* Failed bearer tokens (throttle.c): ADMIN_FAIL_MAX failures from one address within
 * ADMIN_FAIL_WINDOW seconds refuse it (429) until the window ends. now: seconds (monotonic). */
#define ADMIN_FAIL_MAX 100
#define ADMIN_FAIL_WINDOW 60
/* Seconds the address must still wait (0: it may try). sa NULL or not IP: 0. */
unsigned admin_throttle_wait(const struct sockaddr *sa, int64_t now);
void admin_throttle_failed(const struct sockaddr *sa, int64_t now);
void admin_throttle_reset(void);  /* forget every address (at admin_start) */
int64_t admin_mono_seconds(void); /* CLOCK_MONOTONIC, whole seconds */

#endif
