/*
 * guardrails.h: internal to src/policy. Which built-in guardrails a statement triggers, and
 * the words that explain it to the client. Messages are built from command, table and
 * function names only, never from literal values of the SQL (they may hold sensitive data).
 */
#ifndef SLUICE_POLICY_GUARDRAILS_H
#define SLUICE_POLICY_GUARDRAILS_H

#include <stddef.h>

#include "core/config.h"
#include "sql/sql.h"

/* Bits (1u << enum cfg_guardrail) that s triggers. */
unsigned guard_detect(const struct sql_stmt *s);

/* Why guardrail g refuses s ("DELETE without WHERE on public.orders"), and the default hint
 * ("add a WHERE clause"). */
void guard_reason(enum cfg_guardrail g, const struct sql_stmt *s, char *buf, size_t len);
const char *guard_hint(enum cfg_guardrail g, const struct sql_stmt *s);

/* "public.orders, public.items" (at most three, then ", ..."), from a list of names. */
void guard_join_names(char *const *names, unsigned n, char *buf, size_t len);

#endif
