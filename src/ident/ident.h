/*
 * ident.h: verifying who a client is, on top of the config model.
 *
 * Static users and service/agent tokens both carry a SCRAM-SHA-256 verifier in their
 * cfg_identity (secret_hash). This module checks a cleartext secret against it (with a
 * per-thread cache of recent successes so a reconnecting client does not pay PBKDF2 again),
 * makes unknown names cost the same work as known ones, and slows down addresses that keep
 * failing. It never stores, logs or returns a secret. Finding the identity by name
 * (config_find_identity) and telling the client the outcome are the session's job.
 */
#ifndef SLUICE_IDENT_IDENT_H
#define SLUICE_IDENT_IDENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/config.h"

/* Verify a cleartext secret for identity `id` (NULL for an unknown name: still does the same work
 * against a mock verifier, so timing does not tell). True when it matches. A successful check is
 * cached per thread (key: SHA-256 over name, verifier text and secret, salted with a per-process
 * random key; 256 entries, thread-local) so a reconnecting client does not pay PBKDF2 again; the
 * cache never stores the secret itself. name may be NULL when id is set (id->name is used). */
bool ident_check_secret(const struct cfg_identity *id, const char *name, const char *secret,
                        size_t len);

/* Failure throttling per client address (IP only, port ignored; IPv4-mapped IPv6 counts as IPv4;
 * all Unix-socket clients share one entry). Thread-safe (one mutex, off the relay path).
 * ident_fail_delay_ms returns how long to wait before answering this address's next failure:
 * 0 for the first 2 failures within 60 s, then 250 ms doubling up to 8 s from the third. A failure
 * more than 60 s after the previous one starts the count again. The table holds at most 4096
 * addresses; the least recently failing one is evicted when a new address needs room. */
unsigned ident_fail_delay_ms(const struct sockaddr_storage *addr);
/* How long this address must still wait, after its last failure and that failure's delay,
 * before a secret it sends is checked at all (0: now). A secret sent sooner is refused
 * unchecked, so that answering a right guess at once cannot tell it from the delayed wrong
 * ones. */
unsigned ident_blocked_ms(const struct sockaddr_storage *addr);
/* A failed login of user from addr (counted for the address, whatever the name). */
void ident_record_failure(const struct sockaddr_storage *addr, const char *user);
/* A login of user succeeded: the address's failures are forgotten only when every one of
 * them in the window was for this same user (a typo, then the right secret); a success of
 * another name leaves them, so one valid credential does not restart the count of guesses
 * at others. */
void ident_record_success(const struct sockaddr_storage *addr, const char *user);

/* `sluice hash-token`: SCRAM-SHA-256 verifier (4096 iterations, random salt) for secret, for
 * password_hash / token_hash in the config. 0, or -1 if outcap is too small (160 is enough). */
int ident_hash_secret(const char *secret, char *out, size_t outcap);

/* Tests only. Fix the throttle clock at now_ms (0 returns to the real monotonic clock); forget
 * every address; drop this thread's success cache; count cache hits on this thread. */
void ident_test_set_clock(uint64_t now_ms);
void ident_throttle_reset(void);
void ident_cache_clear(void);
unsigned long ident_cache_hits(void);

#endif
