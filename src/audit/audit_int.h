/*
 * audit_int.h: what the files of src/audit/ share among themselves (and with their unit
 * test): the queued copy of an event, its canonical JSON body, the chain hash, checkpoint
 * signing, the JSON Lines sink and verification. Not for other modules: they use audit.h.
 */
#ifndef SLUICE_AUDIT_AUDIT_INT_H
#define SLUICE_AUDIT_AUDIT_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <openssl/evp.h>

#include "audit/audit.h"
#include "store/store.h"

#define AUDIT_HASH_HEX 65
#define AUDIT_GENESIS "0000000000000000000000000000000000000000000000000000000000000000"

/* A growable string. */
struct sbuf {
    char *p;
    size_t len, cap;
};
void sbuf_grow(struct sbuf *b, size_t n); /* room for n more bytes and a NUL */
static inline void sbuf_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) sbuf_grow(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}
void sbuf_adds(struct sbuf *b, const char *s);
void sbuf_addf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sbuf_free(struct sbuf *b);

/* ---- event.c */

/*
 * A queued event, in one allocation (what it points to follows the struct). Either a copy of
 * the caller's event (audit_rec_new, audit_rec_reuse), whose body the writer serializes; or,
 * from audit_emit() and audit_fold(), the body its emitter serialized and began hashing
 * (audit_rec_reserve, audit_rec_body_begin) with only the fields the writer still reads: such
 * a record has no copy of the event (ev NULL), so that its emitter writes as few cache lines
 * as it can (the writer last held them, on another core).
 */
struct audit_rec {
    uint64_t seq;
    atomic_bool ready; /* false while its emitter still writes it (writer.c) */
    /* what the writer reads of every record (identity and decision: NULL for none) */
    enum audit_kind kind;
    int64_t time_us;
    const char *identity, *decision;
    size_t room; /* bytes after the struct */
    /* The body from its start up to the value of prev_hash (room for the rest follows), and
     * the SHA-256 state after those bytes; body_len 0: none (the writer serializes ev). */
    char *body;
    size_t body_len;
    struct audit_digest body_hash;
    struct audit_event *ev; /* the copy (strings follow it), or NULL */
};
/* Copy ev; fills time_us when 0. Free with free(). */
struct audit_rec *audit_rec_new(const struct audit_event *ev);
/* Copy ev into spare when its room is enough, else into a new record with room for at least
 * min_room bytes of strings (spare, if any, is freed). */
struct audit_rec *audit_rec_reuse(struct audit_rec *spare, const struct audit_event *ev,
                                  size_t min_room);

/* A record for an event whose body its emitter serializes (audit_event_head and
 * audit_event_fields, then audit_rec_body_begin once seq is set): ev's kind, time (now when 0),
 * identity and decision are copied, its other fields are not (the record's ev is NULL);
 * body_room bytes (audit_rec_body_room) follow them. Reuses spare as audit_rec_reuse() does. */
struct audit_rec *audit_rec_reserve(struct audit_rec *spare, const struct audit_event *ev,
                                    size_t body_room, size_t min_room);
/* Room for a body whose head (audit_event_head) and fields (audit_event_fields) take head_len
 * and fields_len bytes. */
size_t audit_rec_body_room(size_t head_len, size_t fields_len);
/* The SHA-256 state after a body's head: an emitter keeps it for a head it repeats. */
void audit_head_hash(const char *head, size_t head_len, struct audit_digest *out);
/* The length of ev's head made from its serialized parts (session_json and statement_json
 * both set), and that head written at the start of r's body (room reserved): the same bytes
 * as audit_event_head(). */
size_t audit_head_parts_len(const struct audit_event *ev);
void audit_rec_head_parts(struct audit_rec *r, const struct audit_event *ev);
/* Write r's body from its start up to the value of prev_hash (head, seq and fields) and hash
 * it so far, from head_hash (audit_head_hash of this head) when not NULL: the costly part of
 * the chain, done by the emitter, off the writer's thread. head NULL: the head is already at
 * the start of r's body (audit_rec_head_parts). */
void audit_rec_body_begin(struct audit_rec *r, const char *head, size_t head_len,
                          const struct audit_digest *head_hash, const char *fields,
                          size_t fields_len);
/* Close r's body in place with prev_hash (64 hex digits; the room was left for them) and put
 * its chain hash in hash: the same bytes and hash as audit_event_body() and
 * audit_sha256_hex(). Returns the whole body's length (not NUL-terminated). r->body_len and
 * the saved hash state stay as they were, so a retried batch closes it again. */
size_t audit_rec_body_close(struct audit_rec *r, const char *prev_hash, char hash[AUDIT_HASH_HEX]);

/* The journal's encoding of an event (host byte order, for this machine's recovery only), and
 * back: NULL when p..len is not one encoded event. The decoded record is the caller's. */
void audit_rec_encode(const struct audit_event *ev, struct sbuf *out);
struct audit_rec *audit_rec_decode(const char *p, size_t len);

/* Append the canonical JSON body of ev (seq, prev_hash included; no hash) to out. The body is
 * stored verbatim and hashed as is; default_instance stands in for a NULL ev->instance.
 * It is audit_event_head() (from the opening brace: kind, the session's fields from instance
 * to target and the statement's from statement to tables), seq, audit_event_fields() (from
 * ,"time": to detail) and prev_hash. */
void audit_event_head(const struct audit_event *ev, const char *default_instance, struct sbuf *out);
void audit_event_fields(const struct audit_event *ev, struct sbuf *out);
/* The parts of audit_event_head() that audit_event.session_json and statement_json stand
 * for: the fields from instance to target, and from statement to tables. */
void audit_fields_session(const struct audit_event *ev, const char *default_instance,
                          struct sbuf *out);
void audit_fields_statement(const struct audit_event *ev, struct sbuf *out);
void audit_event_body(const struct audit_event *ev, uint64_t seq, const char *default_instance,
                      const char *prev_hash, struct sbuf *out);
/* The JSON line of an event: body with ,"hash":"..." before its closing brace (no newline). */
void audit_event_line(const char *body, size_t body_len, const char *hash, struct sbuf *out);
/* Split a JSON line back into body and hash. Returns 0, or -1 when it is not such a line. */
int audit_line_split(const char *line, size_t len, struct sbuf *body, char hash[AUDIT_HASH_HEX]);
/* ISO 8601 UTC with microseconds: 2025-01-02T03:04:05.123456Z */
void audit_time_format(int64_t time_us, char out[32]);
/* "1h", "30m", "90d", "45s", "2w" before now, or an ISO date/time (UTC). -1 when invalid. */
int audit_time_parse(const char *s, int64_t now_us, int64_t *out_us);

/* ---- chain.c */

/* hex SHA-256 of data. */
void audit_sha256_hex(const void *data, size_t len, char out[AUDIT_HASH_HEX]);
/* The bytes a checkpoint signature covers: "sluice-audit-checkpoint\n<seq>\n<hash>\n". */
void audit_checkpoint_message(uint64_t seq, const char *hash, struct sbuf *out);
/* Load an Ed25519 private key (PEM). */
int audit_key_load_private(const char *path, EVP_PKEY **out, char *err, size_t errlen);
/* Load an Ed25519 public key (PEM "PUBLIC KEY"; a private key file works too). */
int audit_key_load_public(const char *path, EVP_PKEY **out, char *err, size_t errlen);
/* First 16 hex digits of the SHA-256 of the raw public key. */
int audit_key_id(EVP_PKEY *key, char out[17]);
/* Sign a checkpoint: sig_hex gets 128 hex digits and a NUL. */
int audit_checkpoint_sign(EVP_PKEY *key, uint64_t seq, const char *hash, char sig_hex[129]);
/* 1 valid, 0 invalid. */
int audit_checkpoint_verify(EVP_PKEY *pub, uint64_t seq, const char *hash, const char *sig_hex);

/* ---- jsonl.c */

struct audit_jsonl;
/* Open (create) for appending; a partial last line left by a crash is cut off. */
int audit_jsonl_open(const char *path, struct audit_jsonl **out, char *err, size_t errlen);
void audit_jsonl_close(struct audit_jsonl *j);
/* Append data (whole lines) and fsync. On failure the file is cut back to where it was and
 * -1 returned with the message in err. */
int audit_jsonl_append(struct audit_jsonl *j, const char *data, size_t len, char *err,
                       size_t errlen);
/* seq of the last complete line of the file at path (0 when empty or absent). */
int audit_jsonl_last_seq(const char *path, uint64_t *seq, char *err, size_t errlen);

/* ---- journal.c */

/*
 * The audit journal: durable events (audit_event.durable) are appended by the emitting thread
 * before audit_emit() returns; the writer commits them to the store like any other event, and
 * empties the journal files once the store holds everything they do. Two files,
 * STORE_PATH.audit-journal.0 and .1, alternate so that one can be emptied while the other
 * takes appends. The journal is locked (flock) by the process that opened it.
 */
struct audit_journal;
/* The path of journal file i (0 or 1) of the store at store_path; false when it is too long. */
bool audit_journal_path(const char *store_path, int i, char *out, size_t n);
/* Open (create) the two files next to the store file. Fails when another process holds them. */
int audit_journal_open(const char *store_path, struct audit_journal **out, char *err,
                       size_t errlen);
void audit_journal_close(struct audit_journal *j);
/* Check records with an HMAC keyed from secret (the signing key) instead of a checksum; set
 * before replaying or appending. */
void audit_journal_set_key(struct audit_journal *j, const unsigned char *secret, size_t len);
/* A reserved record: where its header is, and what fill() completes it with. */
struct audit_journal_slot {
    char *at;
    uint64_t seq;
    size_t len;
};
/* Take room for a record of len payload bytes with sequence number seq and write its header.
 * Calls are serialized by the caller (the queue's mutex), so files hold records in sequence
 * order. -1 with errno set when the file cannot grow (disk full). */
int audit_journal_reserve(struct audit_journal *j, uint64_t seq, size_t len,
                          struct audit_journal_slot *out);
/* Copy the encoded event (audit_rec_encode, slot->len bytes) into its slot and write its
 * check: the record is whole, and survives a crash of the process, once this returns. Any
 * thread, no lock; the writer must not commit the event before then. */
void audit_journal_fill(struct audit_journal *j, const struct audit_journal_slot *slot,
                        const char *rec);
/* Writer thread, after a commit: every sequence number up to seq is in the store. Empties a
 * file whose records are all committed and switches files when the current one is large. */
void audit_journal_committed(struct audit_journal *j, uint64_t seq);
/* Recovery: calls fn for each intact record with a sequence number above after, in sequence
 * order. A record a crash left half copied is skipped; one that fails its check is skipped
 * and counted in *rejected. Returns the count, or -1 with a message in err. */
typedef void (*audit_journal_fn)(void *ctx, uint64_t seq, struct audit_rec *rec);
long audit_journal_replay(struct audit_journal *j, uint64_t after, audit_journal_fn fn, void *ctx,
                          unsigned *rejected, char *err, size_t errlen);
/* Records in the journal files of the store at store_path (read only; 0 when none). */
long audit_journal_pending(const char *store_path);
/* Empty both files (after what they held is committed). Returns 0 or -1 with errno set. */
int audit_journal_reset(struct audit_journal *j);

/* ---- verify.c */

struct audit_verify_result {
    bool intact;
    uint64_t events;              /* events checked */
    uint64_t first_seq, last_seq; /* range checked (0 when none) */
    uint64_t anchor_seq;          /* store: retention anchor (0 = none) */
    int64_t anchor_time_us;       /* ... and the time of its checkpoint */
    uint64_t checkpoints;         /* checkpoints checked */
    uint64_t signed_checkpoints;  /* of which signatures verified */
    uint64_t broken_seq;          /* the first broken link (0 when intact) */
    char what[512];               /* what is wrong there */
};
/* Recompute the chain over the store; pub (may be NULL) verifies checkpoint signatures and
 * then requires every checkpoint to be signed. Returns 0 when verification ran (see
 * r->intact), -1 when it could not run (message in r->what). */
int audit_verify_store(struct store *st, EVP_PKEY *pub, struct audit_verify_result *r);
/* Verify a JSON Lines copy: its own chain, and against the store when st is not NULL (every
 * event in both must agree; neither may end before the other). */
int audit_verify_jsonl(const char *path, struct store *st, struct audit_verify_result *r);

/* ---- writer.c (tests) */

/* Ask the writer to run retention now (tests); returns after it ran. */
int audit_writer_prune_now(uint64_t *pruned);

#endif
