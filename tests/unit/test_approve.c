/*
 * test_approve.c: unit tests of src/approve/ (requests, grants, expiry, wakeups, the CLI as a
 * second process, Slack signatures and payloads, and the notifier against a local HTTP server).
 *
 * Each test gets a fresh state file in a temporary directory and a config built from structs.
 * Expiry runs on the test-only clock (approve_test_set_clock). The "second process" test
 * re-executes this binary with --cli, which runs approvals_cli_main() on the same file. The
 * "locked file" test holds the file's write lock from a second SQLite connection, as the
 * audit writer does while it commits. The fail-closed tests reach the module's connections
 * through approve_int.h (a read-only writer, a reader that cannot read); the "second server"
 * test re-executes this binary with --second-server, which calls approve_start() on the file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>
#include <sqlite3.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "approve/approve.h"
#include "approve/approve_int.h"

/* ---- fixtures: config, state file, audit hook, clock */

static char tmpdir[256], dbpath[300];
static struct sluice_config cfg;
static char *approver_groups_cfg[] = {"dba"};
static struct cfg_notify notifiers[4];

static pthread_mutex_t ev_mu = PTHREAD_MUTEX_INITIALIZER;
static int ev_count[16];
static char ev_last_approver[128];

static void hook(const struct approve_audit *ev)
{
    pthread_mutex_lock(&ev_mu);
    if ((unsigned)ev->event < 16) ev_count[ev->event]++;
    if (ev->event == APPROVE_EV_APPROVED && ev->approver)
        snprintf(ev_last_approver, sizeof ev_last_approver, "%s", ev->approver);
    pthread_mutex_unlock(&ev_mu);
}

static int events(enum approve_event e)
{
    pthread_mutex_lock(&ev_mu);
    int n = ev_count[e];
    pthread_mutex_unlock(&ev_mu);
    return n;
}

static int64_t fake_now_ms;
static int64_t fake_clock(void)
{
    return fake_now_ms;
}

static void config_fill(unsigned n_notify)
{
    memset(&cfg, 0, sizeof cfg);
    cfg.refs = 1;
    cfg.state.driver = CFG_STATE_SQLITE;
    cfg.state.path = dbpath;
    cfg.approvals.approvers = approver_groups_cfg;
    cfg.approvals.n_approvers = 1;
    cfg.approvals.timeout = 600;
    cfg.approvals.grant_ttl = 3600;
    cfg.approvals.grant_max_uses = 2;
    cfg.approvals.grant_max_rows = 1000;
    cfg.approvals.notify = n_notify ? notifiers : NULL;
    cfg.approvals.n_notify = n_notify;
    cfg.approvals.public_url = "https://sluice.example.com";
}

/* clock: the test clock to start with (NULL: the real one). A test that runs on the fake
 * clock must have it before approve_start(): a timer cycle that read the real clock before a
 * switch to a clock in the past expires the requests made meanwhile. */
static int setup_common(unsigned n_notify, int64_t (*clock)(void))
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sluice-approve-XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    snprintf(dbpath, sizeof dbpath, "%s/state.db", tmpdir);
    config_fill(n_notify);
    memset(ev_count, 0, sizeof ev_count);
    ev_last_approver[0] = '\0';
    approve_set_audit_hook(hook);
    approve_test_set_clock(clock);
    approve_test_set_backoff_ms(20);
    approve_test_set_write_lag_ms(0);
    char err[256];
    if (approve_start(&cfg, err, sizeof err) < 0) {
        fprintf(stderr, "approve_start: %s\n", err);
        return -1;
    }
    return 0;
}

static int setup(void **state)
{
    (void)state;
    return setup_common(0, NULL);
}

static int setup_fake_clock(void **state)
{
    (void)state;
    fake_now_ms = 1700000000000LL;
    return setup_common(0, fake_clock);
}

static int teardown(void **state)
{
    (void)state;
    approve_stop();
    approve_test_set_clock(NULL);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *alice_groups[] = {"eng", "oncall"};

static void ask_for(struct approve_ask *a, const char *identity, const char *fp)
{
    memset(a, 0, sizeof *a);
    a->identity = identity;
    a->kind = IDENT_AGENT;
    a->groups = alice_groups;
    a->n_groups = 2;
    a->target = "shop";
    a->statement = "UPDATE orders SET status = $1 WHERE id = $2";
    a->fingerprint = fp;
    a->command = "UPDATE";
    a->class_name = "write";
    a->tables = "orders";
    a->rule = "agents-writes-need-review";
    a->reason = "agents' writes need a human";
    a->session_id = 42;
}

static void request(const char *identity, const char *fp, char id[APPROVE_ID_LEN])
{
    struct approve_ask a;
    ask_for(&a, identity, fp);
    char err[256] = "";
    assert_int_equal(approve_request(&a, id, err, sizeof err), 0);
    assert_memory_equal(id, "req_", 4);
    assert_int_equal(strlen(id), 14);
}

static const char *dba[] = {"dba"};

/* ---- requests and grants */

static void test_request_approve_grant(void **state)
{
    (void)state;
    char id[APPROVE_ID_LEN], id2[APPROVE_ID_LEN];
    request("alice@corp.com", "fp0001", id);
    request("alice@corp.com", "fp0001", id2);
    assert_string_not_equal(id, id2);
    assert_int_equal(events(APPROVE_EV_REQUESTED), 2);

    struct approve_status st;
    assert_int_equal(approve_state(id, &st), 0);
    assert_int_equal(st.state, APPROVE_PENDING);
    assert_int_equal(st.mode, CFG_MODE_DEFER); /* agents defer by default */
    assert_string_equal(st.identity, "alice@corp.com");
    assert_true(st.expires_at - st.created_at == 600 * 1000);
    assert_int_equal(approve_state("req_nonexistent", &st), -1);

    struct approve_grant g;
    assert_false(approve_grant_find("alice@corp.com", alice_groups, 2, "shop", "fp0001", &g));

    char err[256] = "";
    assert_int_equal(approve_decide(id, true, "bob@corp.com", dba, 1, NULL, APPROVE_SCOPE_IDENTITY,
                                    err, sizeof err),
                     0);
    assert_int_equal(approve_state(id, &st), 0);
    assert_int_equal(st.state, APPROVE_APPROVED);
    assert_string_equal(st.approver, "bob@corp.com");
    assert_memory_equal(st.grant_id, "grt_", 4);
    assert_int_equal(events(APPROVE_EV_APPROVED), 1);

    /* The same fingerprint for the same identity and target: found. */
    assert_true(approve_grant_find("alice@corp.com", alice_groups, 2, "shop", "fp0001", &g));
    assert_string_equal(g.id, st.grant_id);
    assert_string_equal(g.approver, "bob@corp.com");
    assert_string_equal(g.request_id, id);
    assert_int_equal(g.uses_left, 2);
    assert_int_equal(g.max_rows, 1000);
    assert_int_equal(g.scope, APPROVE_SCOPE_IDENTITY);
    /* Another fingerprint, another target, another member of the same groups: not found. */
    assert_false(approve_grant_find("alice@corp.com", alice_groups, 2, "shop", "fp0002", &g));
    assert_false(approve_grant_find("alice@corp.com", alice_groups, 2, "crm", "fp0001", &g));
    assert_false(approve_grant_find("carol@corp.com", alice_groups, 2, "shop", "fp0001", &g));

    /* Uses run out; a use gives the grant as it is after it; a used-up grant is not live. */
    assert_true(approve_grant_find("alice@corp.com", alice_groups, 2, "shop", "fp0001", &g));
    struct approve_grant used, live;
    assert_true(approve_grant_live(g.id, &live));
    assert_int_equal(live.uses_left, 2);
    assert_int_equal(approve_grant_use(g.id, 3, &used), 1);
    assert_int_equal(used.uses_left, 1);
    assert_int_equal(used.max_rows, 1000);
    assert_int_equal(approve_grant_use(g.id, 4, NULL), 0);
    assert_false(approve_grant_live(g.id, &live));
    assert_int_equal(approve_grant_use(g.id, 1, NULL), -1);
    assert_int_equal(events(APPROVE_EV_GRANT_USED), 2);
    assert_int_equal(events(APPROVE_EV_GRANT_EXHAUSTED), 1);
    assert_false(approve_grant_find("alice@corp.com", alice_groups, 2, "shop", "fp0001", &g));

    /* Listings. */
    char *js = approve_list_json("approved");
    assert_non_null(js);
    cJSON *arr = cJSON_Parse(js);
    assert_int_equal(cJSON_GetArraySize(arr), 1);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 0), "id")),
                        id);
    cJSON_Delete(arr);
    free(js);
    js = approve_list_json("pending");
    arr = cJSON_Parse(js);
    assert_int_equal(cJSON_GetArraySize(arr), 1);
    cJSON_Delete(arr);
    free(js);
    assert_null(approve_list_json("bogus"));
    js = approve_grants_json_all(true);
    arr = cJSON_Parse(js);
    assert_int_equal(cJSON_GetArraySize(arr), 1);
    assert_string_equal(
        cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 0), "status")),
        "exhausted");
    cJSON_Delete(arr);
    free(js);
    js = approve_grants_json(); /* live only */
    arr = cJSON_Parse(js);
    assert_int_equal(cJSON_GetArraySize(arr), 0);
    cJSON_Delete(arr);
    free(js);

    struct approve_counters c;
    approve_get_counters(&c);
    assert_int_equal(c.requested, 2);
    assert_true(c.decided >= 1);
    assert_int_equal(c.pending, 1);
}

static void test_group_scope_and_revoke(void **state)
{
    (void)state;
    char id[APPROVE_ID_LEN], grant[APPROVE_ID_LEN], err[256] = "";
    request("alice@corp.com", "fp00aa", id);
    struct approve_decision d = {.approve = true,
                                 .approver = "bob@corp.com",
                                 .approver_groups = dba,
                                 .n_approver_groups = 1,
                                 .scope = APPROVE_SCOPE_GROUP,
                                 .group = "oncall"};
    assert_int_equal(approve_decide_ex(id, &d, grant, err, sizeof err), 0);
    assert_memory_equal(grant, "grt_", 4);

    struct approve_grant g;
    const char *carol[] = {"oncall"}, *dave[] = {"eng", "ops"};
    assert_true(approve_grant_find("carol@corp.com", carol, 1, "shop", "fp00aa", &g));
    assert_int_equal(g.scope, APPROVE_SCOPE_GROUP);
    assert_string_equal(g.group, "oncall");
    assert_string_equal(g.id, grant);
    assert_false(approve_grant_find("dave@corp.com", dave, 2, "shop", "fp00aa", &g));
    assert_false(approve_grant_find("erin@corp.com", NULL, 0, "shop", "fp00aa", &g));
    /* its approver, a member of the group too, does not run under it (two people decide) */
    assert_false(approve_grant_find("bob@corp.com", carol, 1, "shop", "fp00aa", &g));
    assert_false(approve_grant_find("bob", carol, 1, "shop", "fp00aa", &g));

    /* A group the requester is not in is refused. */
    char id2[APPROVE_ID_LEN];
    request("alice@corp.com", "fp00bb", id2);
    d.group = "ops";
    assert_int_equal(approve_decide_ex(id2, &d, grant, err, sizeof err), APPROVE_ERR_FORBIDDEN);
    assert_non_null(strstr(err, "not in group ops"));

    /* Revoked grants are not found; revoking twice fails. */
    assert_true(approve_grant_find("carol@corp.com", carol, 1, "shop", "fp00aa", &g));
    assert_int_equal(approve_grant_revoke(g.id, "cli:root"), 0);
    assert_int_equal(approve_grant_revoke(g.id, "cli:root"), -1);
    assert_false(approve_grant_find("carol@corp.com", carol, 1, "shop", "fp00aa", &g));
    assert_int_equal(approve_grant_use(g.id, 0, NULL), -1);
    assert_false(approve_grant_live(g.id, &g));
}

static void test_bounds(void **state)
{
    (void)state;
    char id[APPROVE_ID_LEN], grant[APPROVE_ID_LEN], err[256] = "";
    request("alice@corp.com", "fp00cc", id);
    /* Narrower than the config: taken; wider: capped at the config. */
    struct approve_bounds b = {.ttl = 999999, .max_uses = 1, .max_rows = 5};
    struct approve_decision d = {.approve = true,
                                 .approver = "bob@corp.com",
                                 .approver_groups = dba,
                                 .n_approver_groups = 1,
                                 .bounds = &b};
    int64_t before = (int64_t)time(NULL) * 1000;
    assert_int_equal(approve_decide_ex(id, &d, grant, err, sizeof err), 0);
    struct approve_grant g;
    assert_true(approve_grant_find("alice@corp.com", NULL, 0, "shop", "fp00cc", &g));
    assert_int_equal(g.uses_left, 1);
    assert_int_equal(g.max_rows, 5);
    assert_true(g.expires_at <= before + 3600 * 1000 + 2000);
    assert_true(g.expires_at >= before + 3600 * 1000 - 2000);
    assert_int_equal(approve_grant_use(g.id, 5, NULL), 0);
    assert_false(approve_grant_find("alice@corp.com", NULL, 0, "shop", "fp00cc", &g));
}

static void test_refusals_and_deny(void **state)
{
    (void)state;
    char id[APPROVE_ID_LEN], err[256] = "";
    request("alice@corp.com", "fp00dd", id);
    const char *both[] = {"eng", "dba"}, *eng[] = {"eng"};
    /* Self-approval, even by an approver, even from the trusted CLI. */
    assert_int_equal(approve_decide(id, true, "alice@corp.com", both, 2, NULL,
                                    APPROVE_SCOPE_IDENTITY, err, sizeof err),
                     APPROVE_ERR_FORBIDDEN);
    assert_non_null(strstr(err, "own request"));
    struct approve_decision d = {.approve = true, .approver = "cli:alice", .trusted = true};
    assert_int_equal(approve_decide_ex(id, &d, NULL, err, sizeof err), APPROVE_ERR_FORBIDDEN);
    assert_non_null(strstr(err, "own request"));
    /* Not in approvals.approvers.groups. */
    assert_int_equal(approve_decide(id, true, "bob@corp.com", eng, 1, NULL, APPROVE_SCOPE_IDENTITY,
                                    err, sizeof err),
                     APPROVE_ERR_FORBIDDEN);
    assert_non_null(strstr(err, "not an approver"));
    assert_int_equal(approve_decide(id, true, "bob@corp.com", NULL, 0, NULL, APPROVE_SCOPE_IDENTITY,
                                    err, sizeof err),
                     APPROVE_ERR_FORBIDDEN);
    /* Unknown request. */
    assert_int_equal(approve_decide("req_zzzzzzzzzz", true, "bob@corp.com", dba, 1, NULL,
                                    APPROVE_SCOPE_IDENTITY, err, sizeof err),
                     APPROVE_ERR_NOT_FOUND);
    struct approve_status st;
    assert_int_equal(approve_state(id, &st), 0);
    assert_int_equal(st.state, APPROVE_PENDING);
    assert_int_equal(events(APPROVE_EV_APPROVED), 0);

    /* Deny with a reason. */
    d = (struct approve_decision){.approve = false,
                                  .approver = "bob@corp.com",
                                  .approver_groups = dba,
                                  .n_approver_groups = 1,
                                  .reason = "not during the freeze"};
    assert_int_equal(approve_decide_ex(id, &d, NULL, err, sizeof err), 0);
    assert_int_equal(approve_state(id, &st), 0);
    assert_int_equal(st.state, APPROVE_DENIED);
    assert_string_equal(st.approver, "bob@corp.com");
    assert_string_equal(st.reason, "not during the freeze");
    assert_string_equal(st.grant_id, "");
    assert_int_equal(events(APPROVE_EV_DENIED), 1);
    struct approve_grant g;
    assert_false(approve_grant_find("alice@corp.com", NULL, 0, "shop", "fp00dd", &g));
    /* Decided once: refused after. */
    assert_int_equal(approve_decide(id, true, "bob@corp.com", dba, 1, NULL, APPROVE_SCOPE_IDENTITY,
                                    err, sizeof err),
                     APPROVE_ERR_CONFLICT);
    assert_non_null(strstr(err, "denied, not pending"));
}

static bool efd_ready(int efd, int timeout_ms)
{
    struct pollfd p = {.fd = efd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) != 1) return false;
    uint64_t v;
    return read(efd, &v, sizeof v) == sizeof v && v > 0;
}

static void test_cancel_and_wakeup(void **state)
{
    (void)state;
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    assert_true(efd >= 0);
    approve_subscribe(efd);
    char id[APPROVE_ID_LEN], id2[APPROVE_ID_LEN], err[256];
    request("alice@corp.com", "fp00ee", id);
    request("alice@corp.com", "fp00ee", id2);
    assert_false(efd_ready(efd, 0));

    approve_cancel(id, "client disconnected");
    assert_true(efd_ready(efd, 0));
    struct approve_status st;
    assert_int_equal(approve_state(id, &st), 0);
    assert_int_equal(st.state, APPROVE_CANCELLED);
    assert_int_equal(events(APPROVE_EV_CANCELLED), 1);
    assert_int_equal(approve_decide(id, true, "bob@corp.com", dba, 1, NULL, APPROVE_SCOPE_IDENTITY,
                                    err, sizeof err),
                     APPROVE_ERR_CONFLICT);
    approve_cancel(id, "client disconnected"); /* twice: nothing more */
    assert_int_equal(events(APPROVE_EV_CANCELLED), 1);
    assert_false(efd_ready(efd, 0));

    /* A decision wakes too. */
    assert_int_equal(approve_decide(id2, true, "bob@corp.com", dba, 1, NULL, APPROVE_SCOPE_IDENTITY,
                                    err, sizeof err),
                     0);
    assert_true(efd_ready(efd, 0));
    approve_unsubscribe(efd);
    close(efd);
}

static void test_expiry(void **state)
{
    (void)state;
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    approve_subscribe(efd);
    char id[APPROVE_ID_LEN], id2[APPROVE_ID_LEN], err[256];
    request("alice@corp.com", "fp00ff", id);
    request("alice@corp.com", "fp0100", id2);
    struct approve_status st;
    assert_int_equal(approve_state(id, &st), 0);
    assert_true(st.expires_at == fake_now_ms + 600000);

    /* Approve the second now; its grant lives 3600 s. */
    assert_int_equal(approve_decide(id2, true, "bob@corp.com", dba, 1, NULL, APPROVE_SCOPE_IDENTITY,
                                    err, sizeof err),
                     0);
    (void)efd_ready(efd, 0);

    fake_now_ms += 599 * 1000;
    approve_test_tick();
    assert_int_equal(approve_state(id, &st), 0);
    assert_int_equal(st.state, APPROVE_PENDING);
    assert_int_equal(events(APPROVE_EV_EXPIRED), 0);

    fake_now_ms += 2000;
    /* Past the deadline: reported expired at once, refused, and marked by the timer. */
    assert_int_equal(approve_state(id, &st), 0);
    assert_int_equal(st.state, APPROVE_EXPIRED);
    assert_int_equal(approve_decide(id, true, "bob@corp.com", dba, 1, NULL, APPROVE_SCOPE_IDENTITY,
                                    err, sizeof err),
                     APPROVE_ERR_CONFLICT);
    approve_test_tick();
    assert_int_equal(events(APPROVE_EV_EXPIRED), 1);
    assert_true(efd_ready(efd, 0));
    char *js = approve_list_json("expired");
    cJSON *arr = cJSON_Parse(js);
    assert_int_equal(cJSON_GetArraySize(arr), 1);
    cJSON_Delete(arr);
    free(js);
    struct approve_counters c;
    approve_get_counters(&c);
    assert_int_equal(c.pending, 0);

    /* Grants expire too. */
    struct approve_grant g;
    assert_true(approve_grant_find("alice@corp.com", NULL, 0, "shop", "fp0100", &g));
    fake_now_ms += 3600 * 1000;
    assert_false(approve_grant_find("alice@corp.com", NULL, 0, "shop", "fp0100", &g));
    assert_int_equal(approve_grant_use(g.id, 0, NULL), -1);
    approve_unsubscribe(efd);
    close(efd);
}

static char self_exe[512];

/* This binary again, with args (its mode first: --cli, --second-server); its stdout into out,
 * its exit code returned. */
static int run_self(const char *const *args, char *out, size_t outlen)
{
    int pfd[2];
    if (pipe(pfd) < 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        char *argv[32];
        int n = 0;
        argv[n++] = self_exe;
        for (int i = 0; args[i] && n < 31; i++)
            argv[n++] = (char *)args[i];
        argv[n] = NULL;
        execv(self_exe, argv);
        _exit(127);
    }
    close(pfd[1]);
    size_t len = 0;
    ssize_t r;
    while ((r = read(pfd[0], out + len, outlen - 1 - len)) > 0 && len + 1 < outlen)
        len += (size_t)r;
    out[len] = '\0';
    close(pfd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int run_cli(const char *const *args, char *out, size_t outlen)
{
    const char *argv[32] = {"--cli"};
    int n = 1;
    for (int i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    return run_self(argv, out, outlen);
}

static void test_second_process(void **state)
{
    (void)state;
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    approve_subscribe(efd);
    char id[APPROVE_ID_LEN], id2[APPROVE_ID_LEN], out[8192];
    request("alice@corp.com", "fp0200", id);
    request("alice@corp.com", "fp0201", id2);
    approve_test_tick(); /* (written to the file by the timer thread; now, for certain) */

    /* The CLI lists the pending request as JSON. */
    const char *list[] = {"--db", dbpath, "list", "--json", NULL};
    assert_int_equal(run_cli(list, out, sizeof out), 0);
    assert_non_null(strstr(out, id));

    /* The CLI refuses the requester approving itself (exit 1) and bad usage (exit 2). */
    const char *self[] = {"--db", dbpath, "approve", id, "--as", "alice", NULL};
    assert_int_equal(run_cli(self, out, sizeof out), 1);
    const char *bad[] = {"--db", dbpath, "approve", NULL};
    assert_int_equal(run_cli(bad, out, sizeof out), 2);

    /* Approve from the other process; this one sees it within a second. */
    const char *appr[] = {"--db", dbpath, "approve", id, "--as", "carol", "--uses", "1", NULL};
    struct timespec t0, t1;
    assert_int_equal(run_cli(appr, out, sizeof out), 0);
    assert_non_null(strstr(out, "grant grt_"));
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_true(efd_ready(efd, 1000));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 1000);
    struct approve_status st;
    assert_int_equal(approve_state(id, &st), 0);
    assert_int_equal(st.state, APPROVE_APPROVED);
    assert_string_equal(st.approver, "carol");
    assert_int_equal(events(APPROVE_EV_APPROVED), 1); /* emitted here, by the poll */
    pthread_mutex_lock(&ev_mu);
    assert_string_equal(ev_last_approver, "carol");
    pthread_mutex_unlock(&ev_mu);
    struct approve_grant g;
    assert_true(approve_grant_find("alice@corp.com", NULL, 0, "shop", "fp0200", &g));
    assert_int_equal(g.uses_left, 1);

    /* Deny the other; grants list and revoke from the CLI. */
    const char *deny[] = {"--db", dbpath, "deny", id2, "--reason", "no", NULL};
    assert_int_equal(run_cli(deny, out, sizeof out), 0);
    assert_true(efd_ready(efd, 1000));
    assert_int_equal(approve_state(id2, &st), 0);
    assert_int_equal(st.state, APPROVE_DENIED);
    assert_int_equal(events(APPROVE_EV_DENIED), 1);

    const char *grants[] = {"--db", dbpath, "grants", NULL};
    assert_int_equal(run_cli(grants, out, sizeof out), 0);
    assert_non_null(strstr(out, g.id));
    const char *revoke[] = {"--db", dbpath, "revoke", g.id, NULL};
    assert_int_equal(run_cli(revoke, out, sizeof out), 0);
    assert_false(approve_grant_find("alice@corp.com", NULL, 0, "shop", "fp0200", &g));
    approve_unsubscribe(efd);
    close(efd);
}

/* ---- approvals.max_pending_per_identity */

static int ask(const char *identity, const char *fp, char id[APPROVE_ID_LEN], char *err,
               size_t errlen)
{
    struct approve_ask a;
    ask_for(&a, identity, fp);
    return approve_request(&a, id, err, errlen);
}

static void test_pending_limit(void **state)
{
    (void)state;
    cfg.approvals.max_pending_per_identity = 2;
    struct approve_counters c;
    approve_get_counters(&c); /* (the counters are the process's: they count from here) */
    uint64_t requested_before = c.requested;
    char a1[APPROVE_ID_LEN], a2[APPROVE_ID_LEN], a3[APPROVE_ID_LEN], b1[APPROVE_ID_LEN];
    char err[256] = "";
    request("alice@corp.com", "fp0400", a1);
    request("alice@corp.com", "fp0401", a2);
    /* a third is refused, with no request, no event, no notification */
    assert_int_equal(ask("alice@corp.com", "fp0402", a3, err, sizeof err), APPROVE_ERR_LIMIT);
    assert_non_null(strstr(err, "alice@corp.com has 2 approval requests pending"));
    assert_non_null(strstr(err, "approvals.max_pending_per_identity allows 2"));
    assert_int_equal(events(APPROVE_EV_REQUESTED), 2);
    approve_get_counters(&c);
    assert_int_equal(c.pending, 2);
    assert_int_equal(c.requested - requested_before, 2);
    /* per identity: another one asks as usual */
    request("bob@corp.com", "fp0402", b1);
    /* a decision frees a slot, and so does a cancel */
    assert_int_equal(approve_decide(a1, false, "bob@corp.com", dba, 1, NULL, APPROVE_SCOPE_IDENTITY,
                                    err, sizeof err),
                     0);
    request("alice@corp.com", "fp0403", a3);
    assert_int_equal(ask("alice@corp.com", "fp0404", a1, err, sizeof err), APPROVE_ERR_LIMIT);
    approve_cancel(a3, "client disconnected");
    request("alice@corp.com", "fp0404", a3);
    assert_int_equal(ask("alice@corp.com", "fp0405", a1, err, sizeof err), APPROVE_ERR_LIMIT);
    /* requests past their deadline do not count, even before the timer marks them */
    fake_now_ms += 601 * 1000;
    request("alice@corp.com", "fp0405", a1);
    request("alice@corp.com", "fp0406", a2);
    assert_int_equal(ask("alice@corp.com", "fp0407", a3, err, sizeof err), APPROVE_ERR_LIMIT);
    /* 0: no limit */
    cfg.approvals.max_pending_per_identity = 0;
    for (int i = 0; i < 5; i++)
        request("alice@corp.com", "fp0408", a3);
    approve_test_tick();
    char *js = approve_list_json("pending");
    cJSON *arr = cJSON_Parse(js);
    assert_int_equal(cJSON_GetArraySize(arr), 7); /* alice 2 + 5 (the older ones expired) */
    cJSON_Delete(arr);
    free(js);
}

/* ---- the state file locked by another connection */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int count_rows(sqlite3 *db, const char *sql, const char *arg)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_text(st, 1, arg, -1, SQLITE_TRANSIENT);
    int n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_finalize(st);
    return n;
}

/* While another connection holds the file's write lock (for longer than SQLite's 5 s busy
 * wait would allow, before), every call of the statement path answers at once: a request, its
 * state, a grant found and used, a cancel. The file gets them once the lock is gone. */
static void test_locked_file_does_not_stall(void **state)
{
    (void)state;
    char id[APPROVE_ID_LEN], id2[APPROVE_ID_LEN], id3[APPROVE_ID_LEN], err[256] = "";
    request("alice@corp.com", "fp0500", id);
    assert_int_equal(approve_decide(id, true, "bob@corp.com", dba, 1, NULL, APPROVE_SCOPE_IDENTITY,
                                    err, sizeof err),
                     0);
    struct approve_grant g;
    assert_true(approve_grant_find("alice@corp.com", alice_groups, 2, "shop", "fp0500", &g));
    approve_test_tick();

    sqlite3 *lock = NULL;
    assert_int_equal(sqlite3_open(dbpath, &lock), SQLITE_OK);
    assert_int_equal(sqlite3_exec(lock, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    int64_t t0 = mono_ms();
    request("alice@corp.com", "fp0501", id2); /* the timer thread now waits for the file */
    usleep(300 * 1000);
    int64_t t1 = mono_ms();
    struct approve_status st;
    assert_int_equal(approve_state(id2, &st), 0);
    assert_int_equal(st.state, APPROVE_PENDING);
    assert_true(approve_grant_find("alice@corp.com", alice_groups, 2, "shop", "fp0500", &g));
    assert_int_equal(approve_grant_use(g.id, 0, NULL), 1);
    request("alice@corp.com", "fp0502", id3);
    approve_cancel(id2, "client disconnected");
    assert_int_equal(approve_state(id2, &st), 0);
    assert_int_equal(st.state, APPROVE_CANCELLED);
    int64_t t2 = mono_ms();
    assert_true(t1 - t0 < 400);
    assert_true(t2 - t1 < 100);
    /* none of it is in the file yet */
    assert_int_equal(count_rows(lock, "SELECT count(*) FROM approval_requests WHERE id = ?1", id2),
                     0);
    assert_int_equal(sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(lock);

    approve_test_tick(); /* (waits for the timer thread, which writes the queue as it can) */
    sqlite3 *rd = NULL;
    assert_int_equal(sqlite3_open(dbpath, &rd), SQLITE_OK);
    assert_int_equal(count_rows(rd,
                                "SELECT count(*) FROM approval_requests WHERE id = ?1 AND"
                                " state = 'cancelled'",
                                id2),
                     1);
    assert_int_equal(count_rows(rd,
                                "SELECT count(*) FROM approval_requests WHERE id = ?1 AND"
                                " state = 'pending'",
                                id3),
                     1);
    assert_int_equal(count_rows(rd,
                                "SELECT count(*) FROM grants WHERE id = ?1 AND uses_left = 1"
                                " AND uses = 1",
                                g.id),
                     1);
    sqlite3_close(rd);
}

/* ---- two sessions racing for a grant's uses */

struct racer {
    const char *grant;
    int won;
};

static void *race_uses(void *arg)
{
    struct racer *r = arg;
    for (int i = 0; i < 40; i++)
        if (approve_grant_use(r->grant, 0, NULL) >= 0) r->won++;
    return NULL;
}

static void test_grant_uses_race(void **state)
{
    (void)state;
    cfg.approvals.grant_max_uses = 50;
    char id[APPROVE_ID_LEN], grant[APPROVE_ID_LEN], err[256] = "";
    request("alice@corp.com", "fp0600", id);
    struct approve_decision d = {.approve = true,
                                 .approver = "bob@corp.com",
                                 .approver_groups = dba,
                                 .n_approver_groups = 1};
    assert_int_equal(approve_decide_ex(id, &d, grant, err, sizeof err), 0);
    pthread_t th[4];
    struct racer r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (struct racer){grant, 0};
        assert_int_equal(pthread_create(&th[i], NULL, race_uses, &r[i]), 0);
    }
    int won = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        won += r[i].won;
    }
    assert_int_equal(won, 50);
    assert_int_equal(events(APPROVE_EV_GRANT_USED), 50);
    assert_int_equal(events(APPROVE_EV_GRANT_EXHAUSTED), 1);
    char *js = approve_grants_json_all(true);
    cJSON *arr = cJSON_Parse(js);
    cJSON *g0 = cJSON_GetArrayItem(arr, 0);
    assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(g0, "uses")), 50);
    assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(g0, "uses_left")), 0);
    cJSON_Delete(arr);
    free(js);
}

/* ---- the state file refusing writes, a second server, a revocation that cannot be read
 *
 * These reach into the module's instance (approve_int.h) for its two connections: the writer's
 * is made read-only (PRAGMA query_only: every write gets SQLITE_READONLY, as a file on a
 * read-only or full disk would), the reader's refuses every read (an authorizer). */

/* The writer's connection refuses writes (SQLITE_READONLY) or takes them again. false when
 * it is not open. */
static bool set_file_writable(bool on)
{
    pthread_mutex_lock(&approve_m.dbmu);
    bool ok = approve_m.db &&
              sqlite3_exec(approve_m.db, on ? "PRAGMA query_only=0" : "PRAGMA query_only=1", NULL,
                           NULL, NULL) == SQLITE_OK;
    pthread_mutex_unlock(&approve_m.dbmu);
    return ok;
}

static void file_writable(bool on)
{
    assert_true(set_file_writable(on));
}

static int file_int(const char *sql, const char *arg)
{
    sqlite3 *rd = NULL;
    assert_int_equal(sqlite3_open(dbpath, &rd), SQLITE_OK);
    int n = count_rows(rd, sql, arg);
    sqlite3_close(rd);
    return n;
}

static void approve_with_uses(const char *id, unsigned uses, char grant[APPROVE_ID_LEN])
{
    struct approve_bounds b = {0, uses, 0};
    struct approve_decision d = {.approve = true,
                                 .approver = "bob@corp.com",
                                 .approver_groups = dba,
                                 .n_approver_groups = 1,
                                 .bounds = &b};
    char err[256] = "";
    assert_int_equal(approve_decide_ex(id, &d, grant, err, sizeof err), 0);
}

static void restart(void)
{
    approve_stop();
    char err[256];
    if (approve_start(&cfg, err, sizeof err) < 0) fail_msg("approve_start: %s", err);
}

/* A write the file refuses (not because it is locked) stays queued and is written once the
 * file takes it again; meanwhile no grant is used and no request made (fail closed): a
 * restart then finds every use counted. (Before: the write was dropped for good, and the
 * grant could be used again after a restart; a new request never reached the file.) */
static void test_refused_write_kept_and_fails_closed(void **state)
{
    (void)state;
    char id[APPROVE_ID_LEN], id0[APPROVE_ID_LEN], id2[APPROVE_ID_LEN], id3[APPROVE_ID_LEN];
    char grant[APPROVE_ID_LEN], err[256] = "";
    request("alice@corp.com", "fp0700", id);
    approve_with_uses(id, 2, grant);
    request("alice@corp.com", "fp0701", id0);
    approve_test_tick();

    /* the file refuses writes: a use and a request made before the writer learns it */
    pthread_mutex_lock(&approve_m.dbmu); /* (the timer thread waits meanwhile) */
    assert_int_equal(sqlite3_exec(approve_m.db, "PRAGMA query_only=1", NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(approve_grant_use(grant, 0, NULL), 1);
    request("alice@corp.com", "fp0702", id2);
    pthread_mutex_unlock(&approve_m.dbmu);
    approve_test_tick(); /* the writer fails: the changes stay queued */
    approve_test_tick();

    /* fail closed: the grant's last use is refused, no request is made */
    assert_int_equal(approve_grant_use(grant, 0, NULL), -1);
    assert_int_equal(events(APPROVE_EV_GRANT_USED), 1);
    assert_int_equal(ask("alice@corp.com", "fp0703", id3, err, sizeof err), APPROVE_ERR);
    assert_non_null(strstr(err, "the state file refuses writes"));
    assert_int_equal(events(APPROVE_EV_REQUESTED), 3);
    /* a decision needs the file: refused, try again */
    assert_int_equal(approve_decide(id2, true, "bob@corp.com", dba, 1, NULL, APPROVE_SCOPE_IDENTITY,
                                    err, sizeof err),
                     APPROVE_ERR);
    assert_non_null(strstr(err, "does not take writes"));
    /* a cancel is made in memory (and audited: its session ended); queued for the file */
    approve_cancel(id0, "client disconnected");
    struct approve_status st;
    assert_int_equal(approve_state(id0, &st), 0);
    assert_int_equal(st.state, APPROVE_CANCELLED);
    assert_int_equal(events(APPROVE_EV_CANCELLED), 1);

    /* the file takes writes again: everything queued reaches it, in order */
    file_writable(true);
    approve_test_tick();
    assert_int_equal(file_int("SELECT count(*) FROM grants WHERE id = ?1 AND uses = 1 AND"
                              " uses_left = 1",
                              grant),
                     1);
    assert_int_equal(file_int("SELECT count(*) FROM approval_requests WHERE id = ?1 AND"
                              " state = 'pending'",
                              id2),
                     1);
    assert_int_equal(file_int("SELECT count(*) FROM approval_requests WHERE id = ?1 AND"
                              " state = 'cancelled'",
                              id0),
                     1);
    assert_int_equal(events(APPROVE_EV_CANCELLED), 1);
    assert_int_equal(approve_decide(id2, false, "bob@corp.com", dba, 1, NULL,
                                    APPROVE_SCOPE_IDENTITY, err, sizeof err),
                     0);
    assert_int_equal(approve_grant_use(grant, 0, NULL), 0);
    approve_test_tick();

    /* after a restart the file's count holds: the grant is used up */
    restart();
    struct approve_grant g;
    assert_false(approve_grant_find("alice@corp.com", alice_groups, 2, "shop", "fp0700", &g));
    assert_int_equal(approve_grant_use(grant, 0, NULL), -1);
}

/* A decision refused because the file refuses a queued write says why: the failing
 * statement's error, not what the rollback after it left in the connection ("not an error",
 * "cannot rollback - no transaction is active"). */
static int deny_grant_updates(void *arg, int action, const char *a, const char *b, const char *c,
                              const char *d)
{
    (void)arg, (void)b, (void)c, (void)d;
    return action == SQLITE_UPDATE && a && !strcmp(a, "grants") ? SQLITE_DENY : SQLITE_OK;
}

static void test_refused_write_reason_in_decision(void **state)
{
    (void)state;
    char id[APPROVE_ID_LEN], id2[APPROVE_ID_LEN], grant[APPROVE_ID_LEN], err[256] = "";
    request("alice@corp.com", "fp0900", id);
    approve_with_uses(id, 5, grant);
    request("alice@corp.com", "fp0901", id2);
    approve_test_tick();
    pthread_mutex_lock(&approve_m.dbmu); /* (the timer thread waits meanwhile) */
    sqlite3_set_authorizer(approve_m.db, deny_grant_updates, NULL);
    pthread_mutex_unlock(&approve_m.dbmu);
    assert_int_equal(approve_grant_use(grant, 0, NULL), 1); /* queued; the file refuses it */
    approve_test_tick();
    assert_int_equal(approve_decide(id2, true, "bob@corp.com", dba, 1, NULL, APPROVE_SCOPE_IDENTITY,
                                    err, sizeof err),
                     APPROVE_ERR);
    assert_non_null(strstr(err, "does not take writes (not authorized)"));
    pthread_mutex_lock(&approve_m.dbmu);
    sqlite3_set_authorizer(approve_m.db, NULL, NULL);
    pthread_mutex_unlock(&approve_m.dbmu);
    approve_test_tick();
    assert_int_equal(file_int("SELECT count(*) FROM grants WHERE id = ?1 AND uses = 1", grant), 1);
}

/* While another connection holds the file's write lock for longer than the bound, the queue
 * waits and the statement path stops spending uses and making requests; it goes on once the
 * file has the queue. */
static void test_locked_too_long_fails_closed(void **state)
{
    (void)state;
    approve_test_set_write_lag_ms(200);
    char id[APPROVE_ID_LEN], id2[APPROVE_ID_LEN], grant[APPROVE_ID_LEN], err[256] = "";
    request("alice@corp.com", "fp0710", id);
    approve_with_uses(id, 2, grant);
    approve_test_tick();
    sqlite3 *lock = NULL;
    assert_int_equal(sqlite3_open(dbpath, &lock), SQLITE_OK);
    assert_int_equal(sqlite3_exec(lock, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(approve_grant_use(grant, 0, NULL), 1); /* at once, queued */
    usleep(300 * 1000);
    assert_int_equal(approve_grant_use(grant, 0, NULL), -1);
    assert_int_equal(ask("alice@corp.com", "fp0711", id2, err, sizeof err), APPROVE_ERR);
    assert_non_null(strstr(err, "has not taken the changes queued"));
    assert_int_equal(sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(lock);
    approve_test_tick();
    assert_int_equal(approve_grant_use(grant, 0, NULL), 0);
    approve_test_set_write_lag_ms(0);
}

/* A write that can never succeed (here: a request whose id the file already has) is dropped,
 * and the queue behind it goes on; nothing is refused for it. */
static void test_impossible_write_dropped(void **state)
{
    (void)state;
    char id[APPROVE_ID_LEN], id2[APPROVE_ID_LEN], grant[APPROVE_ID_LEN], sql[400];
    request("alice@corp.com", "fp0720", id);
    approve_with_uses(id, 2, grant);
    approve_test_tick();
    sqlite3 *x = NULL;
    assert_int_equal(sqlite3_open(dbpath, &x), SQLITE_OK);
    assert_int_equal(sqlite3_exec(x, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    request("alice@corp.com", "fp0721", id2); /* queued: the file is locked */
    assert_int_equal(approve_grant_use(grant, 0, NULL), 1);
    snprintf(sql, sizeof sql,
             "INSERT INTO approval_requests (id, state, identity, target, statement, fingerprint,"
             " created_at, expires_at) VALUES ('%s', 'denied', 'x', 'shop', 'x', 'x', 1, 2);"
             " COMMIT",
             id2);
    assert_int_equal(sqlite3_exec(x, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(x);
    approve_test_tick();
    assert_int_equal(file_int("SELECT count(*) FROM grants WHERE id = ?1 AND uses = 1", grant), 1);
    assert_int_equal(approve_grant_use(grant, 0, NULL), 0);
}

static pthread_t writable_later_th;

static void *writable_later(void *arg)
{
    (void)arg;
    usleep(500 * 1000);
    (void)set_file_writable(true); /* (false: stop closed the file without waiting) */
    return NULL;
}

/* Stopping writes what is still queued, trying again while the file refuses it (for up to
 * server.shutdown_timeout), before it closes the file. */
static void test_stop_waits_for_the_file(void **state)
{
    (void)state;
    cfg.server.shutdown_timeout = 10;
    char id[APPROVE_ID_LEN], grant[APPROVE_ID_LEN];
    request("alice@corp.com", "fp0730", id);
    approve_with_uses(id, 1, grant);
    approve_test_tick();
    file_writable(false);
    assert_int_equal(approve_grant_use(grant, 0, NULL), 0);
    approve_test_tick(); /* refused: queued */
    assert_int_equal(pthread_create(&writable_later_th, NULL, writable_later, NULL), 0);
    int64_t t0 = mono_ms();
    approve_stop();
    pthread_join(writable_later_th, NULL);
    assert_true(mono_ms() - t0 < 5000);
    assert_int_equal(file_int("SELECT count(*) FROM grants WHERE id = ?1 AND uses = 1 AND"
                              " uses_left = 0",
                              grant),
                     1);
    char err[256];
    assert_int_equal(approve_start(&cfg, err, sizeof err), 0);
    struct approve_grant g;
    assert_false(approve_grant_find("alice@corp.com", alice_groups, 2, "shop", "fp0730", &g));
}

/* ---- the queue's bound, and its batches */

/* While another connection holds the file's write lock, the queue takes at most
 * approvals.max_queued_writes changes: past them a grant's use and a new request are refused
 * as when the file is behind (fail closed), long before the busy wait (5 s) runs out; a cancel
 * is still made. Once the lock is gone the file has every use spent, and a restart finds them.
 * (Before: the queue grew without a bound until the 5 s had passed.) */
static void test_queue_bound_fails_closed(void **state)
{
    (void)state;
    cfg.approvals.max_queued_writes = 3;
    cfg.approvals.grant_max_uses = 10;
    char id[APPROVE_ID_LEN], id0[APPROVE_ID_LEN], id2[APPROVE_ID_LEN], grant[APPROVE_ID_LEN];
    char err[256] = "";
    request("alice@corp.com", "fp0760", id);
    approve_with_uses(id, 10, grant);
    request("alice@corp.com", "fp0761", id0);
    approve_test_tick();
    sqlite3 *lock = NULL;
    assert_int_equal(sqlite3_open(dbpath, &lock), SQLITE_OK);
    assert_int_equal(sqlite3_exec(lock, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    int64_t t0 = mono_ms();
    for (int i = 0; i < 3; i++)
        assert_int_equal(approve_grant_use(grant, 0, NULL), 9 - i);
    assert_int_equal(approve_grant_use(grant, 0, NULL), -1); /* the 4th: the queue is full */
    assert_int_equal(ask("alice@corp.com", "fp0762", id2, err, sizeof err), APPROVE_ERR);
    assert_non_null(strstr(err, "approvals.max_queued_writes"));
    assert_true(mono_ms() - t0 < 2000); /* (not the 5 s bound) */
    assert_int_equal(events(APPROVE_EV_GRANT_USED), 3);
    approve_cancel(id0, "client disconnected"); /* queued past the bound */
    struct approve_status st;
    assert_int_equal(approve_state(id0, &st), 0);
    assert_int_equal(st.state, APPROVE_CANCELLED);
    assert_int_equal(sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(lock);
    approve_test_tick();
    assert_int_equal(file_int("SELECT count(*) FROM grants WHERE id = ?1 AND uses = 3 AND"
                              " uses_left = 7",
                              grant),
                     1);
    assert_int_equal(file_int("SELECT count(*) FROM approval_requests WHERE id = ?1 AND"
                              " state = 'cancelled'",
                              id0),
                     1);
    assert_int_equal(approve_grant_use(grant, 0, NULL), 6); /* the file has them: goes on */
    restart();
    assert_int_equal(approve_grant_use(grant, 0, NULL), 5);
}

static int commits;
static int count_commit(void *arg)
{
    (void)arg;
    __atomic_add_fetch(&commits, 1, __ATOMIC_SEQ_CST);
    return 0;
}

/* The writer's connection counts its commits (dbmu held while the hook is set). */
static void writer_counts_commits(bool on)
{
    pthread_mutex_lock(&approve_m.dbmu);
    sqlite3_commit_hook(approve_m.db, on ? count_commit : NULL, NULL);
    __atomic_store_n(&commits, 0, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&approve_m.dbmu);
}

/* What waited while the file was locked (uses, new requests, a cancel) reaches it in one
 * transaction, in order: one commit of the writer's connection. (Before: one each.) */
static void test_queue_written_in_one_transaction(void **state)
{
    (void)state;
    cfg.approvals.grant_max_uses = 100;
    char id[APPROVE_ID_LEN], ids[3][APPROVE_ID_LEN], grant[APPROVE_ID_LEN];
    request("alice@corp.com", "fp0770", id);
    approve_with_uses(id, 100, grant);
    approve_test_tick();
    writer_counts_commits(true);
    sqlite3 *lock = NULL;
    assert_int_equal(sqlite3_open(dbpath, &lock), SQLITE_OK);
    assert_int_equal(sqlite3_exec(lock, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    for (int i = 0; i < 40; i++)
        assert_int_equal(approve_grant_use(grant, 1, NULL), 99 - i);
    char fp[16];
    for (int i = 0; i < 3; i++) {
        snprintf(fp, sizeof fp, "fp077%d", i + 1);
        request("alice@corp.com", fp, ids[i]);
    }
    approve_cancel(ids[1], "client disconnected"); /* after its insert, in the same batch */
    assert_int_equal(sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(lock);
    approve_test_tick();
    assert_int_equal(__atomic_load_n(&commits, __ATOMIC_SEQ_CST), 1);
    writer_counts_commits(false);
    assert_int_equal(file_int("SELECT count(*) FROM grants WHERE id = ?1 AND uses = 40 AND"
                              " uses_left = 60 AND rows_total = 40",
                              grant),
                     1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(file_int("SELECT count(*) FROM approval_requests WHERE id = ?1", ids[i]),
                         1);
    assert_int_equal(file_int("SELECT count(*) FROM approval_requests WHERE id = ?1 AND"
                              " state = 'cancelled'",
                              ids[1]),
                     1);
    assert_int_equal(events(APPROVE_EV_CANCELLED), 1);
}

static int deny_request_updates(void *arg, int action, const char *a, const char *b, const char *c,
                                const char *d)
{
    (void)arg, (void)b, (void)c, (void)d;
    return action == SQLITE_UPDATE && a && !strcmp(a, "approval_requests") ? SQLITE_DENY
                                                                           : SQLITE_OK;
}

static void writer_refuses_request_updates(bool on)
{
    pthread_mutex_lock(&approve_m.dbmu);
    sqlite3_set_authorizer(approve_m.db, on ? deny_request_updates : NULL, NULL);
    pthread_mutex_unlock(&approve_m.dbmu);
}

/* A batch the file refuses part-way (here the writer's connection refuses the expiry behind a
 * grant's use) is rolled back whole and kept: the file has neither the use nor the expiry, the
 * expiry is not reported, and the statement path fails closed. Once the file takes writes
 * again both reach it, in order, and the expiry is reported once. (Before: the use was
 * committed on its own.) */
static void test_refused_batch_rolled_back_whole(void **state)
{
    (void)state;
    cfg.approvals.grant_max_uses = 10;
    char id[APPROVE_ID_LEN], id3[APPROVE_ID_LEN], grant[APPROVE_ID_LEN];
    request("alice@corp.com", "fp0780", id);
    approve_with_uses(id, 5, grant);
    request("alice@corp.com", "fp0781", id3);
    approve_test_tick();
    /* the file locked: a use, then (past id3's deadline) its expiry, wait in the queue */
    pthread_mutex_lock(&approve_m.dbmu);
    sqlite3_busy_timeout(approve_m.db, 20);
    pthread_mutex_unlock(&approve_m.dbmu);
    sqlite3 *lock = NULL;
    assert_int_equal(sqlite3_open(dbpath, &lock), SQLITE_OK);
    assert_int_equal(sqlite3_exec(lock, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(approve_grant_use(grant, 0, NULL), 4);
    fake_now_ms += 601 * 1000;
    approve_test_tick();
    struct approve_status st;
    assert_int_equal(approve_state(id3, &st), 0);
    assert_int_equal(st.state, APPROVE_EXPIRED);
    writer_refuses_request_updates(true);
    assert_int_equal(sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(lock);
    approve_test_tick(); /* the use is written, the expiry refused: both rolled back */
    assert_int_equal(file_int("SELECT uses FROM grants WHERE id = ?1", grant), 0);
    assert_int_equal(file_int("SELECT count(*) FROM approval_requests WHERE id = ?1 AND"
                              " state = 'pending'",
                              id3),
                     1);
    assert_int_equal(events(APPROVE_EV_EXPIRED), 0);
    assert_int_equal(approve_grant_use(grant, 0, NULL), -1); /* fail closed meanwhile */
    writer_refuses_request_updates(false);
    approve_test_tick();
    assert_int_equal(file_int("SELECT uses FROM grants WHERE id = ?1", grant), 1);
    assert_int_equal(file_int("SELECT count(*) FROM approval_requests WHERE id = ?1 AND"
                              " state = 'expired'",
                              id3),
                     1);
    assert_int_equal(events(APPROVE_EV_EXPIRED), 1);
    approve_test_tick();
    assert_int_equal(events(APPROVE_EV_EXPIRED), 1);
    assert_int_equal(approve_grant_use(grant, 0, NULL), 3);
    pthread_mutex_lock(&approve_m.dbmu);
    sqlite3_busy_timeout(approve_m.db, ADB_BUSY_TIMEOUT_MS);
    pthread_mutex_unlock(&approve_m.dbmu);
}

/* `--second-server DB` (below): approve_start on DB in another process; prints the error. */
static int second_server_main(const char *db)
{
    snprintf(dbpath, sizeof dbpath, "%s", db);
    config_fill(0);
    char err[512];
    if (approve_start(&cfg, err, sizeof err) < 0) {
        printf("%s\n", err);
        return 3;
    }
    approve_stop();
    return 0;
}

/* One server per state file: a second one is refused while the first runs; the CLI is not. */
static void test_second_server_refused(void **state)
{
    (void)state;
    char out[2048], lock_path[400];
    const char *second[] = {"--second-server", dbpath, NULL};
    assert_int_equal(run_self(second, out, sizeof out), 3);
    snprintf(lock_path, sizeof lock_path, "%s.approvals-lock", dbpath);
    assert_non_null(strstr(out, "another sluice server uses the state file"));
    assert_non_null(strstr(out, lock_path));
    const char *list[] = {"--cli", "--db", dbpath, "list", "--json", NULL};
    assert_int_equal(run_self(list, out, sizeof out), 0);
    approve_stop(); /* the lock goes with the server */
    assert_int_equal(run_self(second, out, sizeof out), 0);
    char err[256];
    assert_int_equal(approve_start(&cfg, err, sizeof err), 0);
}

static int deny_reads(void *arg, int action, const char *a, const char *b, const char *c,
                      const char *d)
{
    (void)arg, (void)action, (void)a, (void)b, (void)c, (void)d;
    return SQLITE_DENY;
}

static void reader_fails(bool on)
{
    pthread_mutex_lock(&approve_m.rdmu);
    sqlite3_set_authorizer(approve_m.rd, on ? deny_reads : NULL, NULL);
    pthread_mutex_unlock(&approve_m.rdmu);
}

/* Whether a grant was revoked cannot be read: the grant is not used (a revocation is never
 * missed). Once it can be read again, it is. */
static void test_unreadable_revocation_fails_closed(void **state)
{
    (void)state;
    char id[APPROVE_ID_LEN], grant[APPROVE_ID_LEN];
    request("alice@corp.com", "fp0740", id);
    approve_with_uses(id, 2, grant);
    struct approve_grant g;
    assert_true(approve_grant_find("alice@corp.com", alice_groups, 2, "shop", "fp0740", &g));
    reader_fails(true);
    assert_int_equal(approve_grant_use(grant, 0, NULL), -1);
    assert_false(approve_grant_live(grant, &g));
    assert_false(approve_grant_find("alice@corp.com", alice_groups, 2, "shop", "fp0740", &g));
    reader_fails(false);
    assert_true(approve_grant_find("alice@corp.com", alice_groups, 2, "shop", "fp0740", &g));
    assert_int_equal(approve_grant_use(grant, 0, NULL), 1);
    assert_int_equal(events(APPROVE_EV_GRANT_USED), 1);
}

static sqlite3 *cli_tx;

static void *commit_later(void *arg)
{
    (void)arg;
    usleep(300 * 1000);
    assert_int_equal(sqlite3_exec(cli_tx, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    return NULL;
}

/* The CLI approves a request just before its deadline; its transaction commits after the
 * deadline passed here, while this process's expiry waits for the file. The approval stands:
 * memory takes it, and it alone is audited (no approval.expired for the expiry that did not
 * happen). */
static void test_expiry_loses_to_file_decision(void **state)
{
    (void)state;
    char id[APPROVE_ID_LEN], sql[400];
    request("alice@corp.com", "fp0750", id);
    approve_test_tick();
    struct approve_counters c0, c1;
    approve_get_counters(&c0);
    assert_int_equal(sqlite3_open(dbpath, &cli_tx), SQLITE_OK);
    snprintf(sql, sizeof sql,
             "BEGIN IMMEDIATE; UPDATE approval_requests SET state = 'approved', approver ="
             " 'cli:dana', decided_at = %lld WHERE id = '%s' AND state = 'pending'",
             (long long)(fake_now_ms + 599999), id);
    assert_int_equal(sqlite3_exec(cli_tx, sql, NULL, NULL, NULL), SQLITE_OK);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, commit_later, NULL), 0);
    fake_now_ms += 600 * 1000; /* the deadline passes here */
    approve_test_tick();       /* expired in memory; its write waits for the lock, then loses */
    pthread_join(th, NULL);
    approve_test_tick();
    sqlite3_close(cli_tx);
    struct approve_status st;
    assert_int_equal(approve_state(id, &st), 0);
    assert_int_equal(st.state, APPROVE_APPROVED);
    assert_string_equal(st.approver, "cli:dana");
    assert_int_equal(events(APPROVE_EV_EXPIRED), 0);
    assert_int_equal(events(APPROVE_EV_APPROVED), 1);
    approve_get_counters(&c1);
    assert_int_equal(c1.expired, c0.expired);
    assert_int_equal(c1.approved, c0.approved + 1);
}

/* ---- Slack */

static void slack_sign(const char *secret, const char *ts, const char *body, char out[80])
{
    size_t n = strlen(ts) + strlen(body) + 8;
    char *msg = malloc(n);
    snprintf(msg, n, "v0:%s:%s", ts, body);
    unsigned char mac[32];
    unsigned int len = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)msg, strlen(msg), mac, &len);
    free(msg);
    strcpy(out, "v0=");
    for (unsigned i = 0; i < 32; i++)
        sprintf(out + 3 + 2 * i, "%02x", mac[i]);
}

static void test_slack_signature(void **state)
{
    (void)state;
    const char *secret = "8f742231b10e8888abcd99yyyzzz85a5";
    const char *body = "payload=%7B%22type%22%3A%22block_actions%22%7D";
    int64_t now = 1700000000;
    char ts[32], sig[80];
    snprintf(ts, sizeof ts, "%lld", (long long)now);
    slack_sign(secret, ts, body, sig);
    assert_int_equal(slack_verify_signature(secret, ts, sig, body, strlen(body), now), 0);
    assert_int_equal(slack_verify_signature(secret, ts, sig, body, strlen(body), now + 299), 0);
    /* Wrong secret. */
    assert_int_equal(slack_verify_signature("another-secret", ts, sig, body, strlen(body), now),
                     -1);
    /* Tampered body. */
    char tampered[128];
    snprintf(tampered, sizeof tampered, "%s", body);
    tampered[strlen(tampered) - 1] = 'E';
    assert_int_equal(slack_verify_signature(secret, ts, sig, tampered, strlen(tampered), now), -1);
    /* Stale (more than five minutes old) and from the future, even when correctly signed. */
    assert_int_equal(slack_verify_signature(secret, ts, sig, body, strlen(body), now + 301), -1);
    assert_int_equal(slack_verify_signature(secret, ts, sig, body, strlen(body), now - 301), -1);
    char old_ts[32], old_sig[80];
    snprintf(old_ts, sizeof old_ts, "%lld", (long long)(now - 600));
    slack_sign(secret, old_ts, body, old_sig);
    assert_int_equal(slack_verify_signature(secret, old_ts, old_sig, body, strlen(body), now), -1);
    /* Malformed signatures and timestamps. */
    assert_int_equal(slack_verify_signature(secret, ts, sig + 3, body, strlen(body), now), -1);
    char upper[80];
    snprintf(upper, sizeof upper, "%s", sig);
    upper[10] = upper[10] == 'a' ? 'b' : 'a';
    assert_int_equal(slack_verify_signature(secret, ts, upper, body, strlen(body), now), -1);
    assert_int_equal(slack_verify_signature(secret, "17e8", sig, body, strlen(body), now), -1);
    assert_int_equal(slack_verify_signature(secret, "", sig, body, strlen(body), now), -1);
    assert_int_equal(slack_verify_signature("", ts, sig, body, strlen(body), now), -1);
}

/* Form-encode s as Slack does (application/x-www-form-urlencoded). */
static char *form_encode(const char *s)
{
    char *out = malloc(strlen(s) * 3 + 16);
    strcpy(out, "payload=");
    size_t o = strlen(out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.')
            out[o++] = (char)*p;
        else if (*p == ' ')
            out[o++] = '+';
        else
            o += (size_t)sprintf(out + o, "%%%02X", *p);
    }
    out[o] = '\0';
    return out;
}

static char *action_payload(const char *action, const char *value, const char *user,
                            const char *response_url)
{
    char json[2048];
    snprintf(json, sizeof json,
             "{\"type\":\"block_actions\",\"user\":{\"id\":\"U024BE7LH\",\"username\":\"%s\","
             "\"name\":\"%s\",\"team_id\":\"T1\"},\"api_app_id\":\"A1\",\"token\":\"x\","
             "\"container\":{\"type\":\"message\"},\"trigger_id\":\"1.2.3\","
             "\"response_url\":\"%s\",\"actions\":[{\"action_id\":\"%s\",\"block_id\":"
             "\"sluice_%s\",\"text\":{\"type\":\"plain_text\",\"text\":\"Approve me & you\"},"
             "\"value\":\"%s\",\"type\":\"button\",\"action_ts\":\"1548426417.840180\"}]}",
             user, user, response_url, action, value, value);
    return form_encode(json);
}

static void test_slack_parse(void **state)
{
    (void)state;
    char err[128];
    struct slack_action a;
    char *body = action_payload("approve", "req_abcdefghij", "dana", "https://hooks.slack.com/x");
    assert_int_equal(slack_parse_action(body, strlen(body), &a, err, sizeof err), 0);
    assert_true(a.approve);
    assert_string_equal(a.request_id, "req_abcdefghij");
    assert_string_equal(a.user_id, "U024BE7LH");
    assert_string_equal(a.user_name, "dana");
    assert_string_equal(a.response_url, "https://hooks.slack.com/x");
    free(body);
    body = action_payload("deny", "req_abcdefghij", "dana", "");
    assert_int_equal(slack_parse_action(body, strlen(body), &a, err, sizeof err), 0);
    assert_false(a.approve);
    free(body);
    /* Other fields around payload are fine. */
    body = action_payload("deny", "req_x", "dana", "");
    char *two = malloc(strlen(body) + 32);
    sprintf(two, "foo=bar&%s&z=1", body);
    assert_int_equal(slack_parse_action(two, strlen(two), &a, err, sizeof err), 0);
    assert_string_equal(a.request_id, "req_x");
    free(two);
    free(body);
    /* Refused: unknown action, no payload, not JSON, wrong type, bad escapes, no value. */
    body = action_payload("delete_everything", "req_x", "dana", "");
    assert_int_equal(slack_parse_action(body, strlen(body), &a, err, sizeof err), -1);
    free(body);
    body = action_payload("approve", "", "dana", "");
    assert_int_equal(slack_parse_action(body, strlen(body), &a, err, sizeof err), -1);
    free(body);
    const char *bad[] = {"",
                         "foo=bar",
                         "payload=%7Bnot json",
                         "payload=%7B%22type%22%3A%22x%22%7D",
                         "payload=%ZZ",
                         "payload=%7"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(slack_parse_action(bad[i], strlen(bad[i]), &a, err, sizeof err), -1);
}

/* ---- a tiny HTTP server standing in for Slack and webhook receivers */

struct post {
    char path[128];
    char headers[2048];
    char *body;
};
static struct {
    pthread_mutex_t mu;
    int lfd;
    int port;
    volatile bool stop;
    pthread_t thread;
    struct post posts[64];
    unsigned n_posts;
    unsigned fail_left; /* /flaky answers 500 this many times */
} srv = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void *srv_main(void *arg)
{
    (void)arg;
    while (!srv.stop) {
        struct pollfd p = {.fd = srv.lfd, .events = POLLIN};
        if (poll(&p, 1, 50) != 1) continue;
        int c = accept(srv.lfd, NULL, NULL);
        if (c < 0) continue;
        char buf[65536];
        size_t len = 0;
        char *hdr_end = NULL;
        long clen = -1;
        for (;;) {
            ssize_t r = read(c, buf + len, sizeof buf - 1 - len);
            if (r <= 0) break;
            len += (size_t)r;
            buf[len] = '\0';
            if (!hdr_end && (hdr_end = strstr(buf, "\r\n\r\n"))) {
                char *cl = strcasestr(buf, "Content-Length:");
                clen = cl ? strtol(cl + 15, NULL, 10) : 0;
            }
            if (hdr_end && (long)(len - (size_t)(hdr_end + 4 - buf)) >= clen) break;
        }
        int code = 200;
        if (hdr_end) {
            pthread_mutex_lock(&srv.mu);
            if (srv.n_posts < 64) {
                struct post *ps = &srv.posts[srv.n_posts++];
                sscanf(buf, "POST %127s", ps->path);
                size_t hl = (size_t)(hdr_end - buf);
                if (hl >= sizeof ps->headers) hl = sizeof ps->headers - 1;
                memcpy(ps->headers, buf, hl);
                ps->headers[hl] = '\0';
                ps->body = strdup(hdr_end + 4);
                if (!strcmp(ps->path, "/dead")) code = 500;
                if (!strcmp(ps->path, "/flaky") && srv.fail_left > 0) {
                    srv.fail_left--;
                    code = 500;
                }
            }
            pthread_mutex_unlock(&srv.mu);
        }
        char resp[128];
        int n = snprintf(resp, sizeof resp,
                         "HTTP/1.1 %d X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", code);
        if (write(c, resp, (size_t)n) < 0) { /* the client went away */
        }
        close(c);
    }
    return NULL;
}

static int srv_start(void)
{
    memset(srv.posts, 0, sizeof srv.posts);
    srv.n_posts = 0;
    srv.stop = false;
    srv.lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(srv.lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(srv.lfd, 16) < 0 ||
        getsockname(srv.lfd, (struct sockaddr *)&a, &al) < 0)
        return -1;
    srv.port = ntohs(a.sin_port);
    return pthread_create(&srv.thread, NULL, srv_main, NULL) == 0 ? 0 : -1;
}

static void srv_stop(void)
{
    srv.stop = true;
    pthread_join(srv.thread, NULL);
    close(srv.lfd);
    for (unsigned i = 0; i < srv.n_posts; i++)
        free(srv.posts[i].body);
    srv.n_posts = 0;
}

static unsigned srv_count(const char *path)
{
    unsigned n = 0;
    pthread_mutex_lock(&srv.mu);
    for (unsigned i = 0; i < srv.n_posts; i++)
        n += !strcmp(srv.posts[i].path, path);
    pthread_mutex_unlock(&srv.mu);
    return n;
}

static bool wait_for(const char *path, unsigned n, int ms)
{
    for (int waited = 0; waited < ms; waited += 10) {
        if (srv_count(path) >= n) return true;
        usleep(10000);
    }
    return srv_count(path) >= n;
}

static const struct post *srv_find(const char *path, const char *type)
{
    for (unsigned i = 0; i < srv.n_posts; i++)
        if (!strcmp(srv.posts[i].path, path) && (!type || strstr(srv.posts[i].body, type)))
            return &srv.posts[i];
    return NULL;
}

static char urls[4][128];

static int setup_notify(void **state)
{
    (void)state;
    if (srv_start() < 0) return -1;
    const char *paths[] = {"/slack", "/hook", "/flaky", "/dead"};
    for (int i = 0; i < 4; i++) {
        snprintf(urls[i], sizeof urls[i], "http://127.0.0.1:%d%s", srv.port, paths[i]);
        notifiers[i].kind = i == 0 ? CFG_NOTIFY_SLACK : CFG_NOTIFY_WEBHOOK;
        notifiers[i].url = urls[i];
        notifiers[i].secret = i == 0 ? "slack-signing-secret" : "hook-secret";
    }
    srv.fail_left = 2;
    return setup_common(4, NULL);
}

static int teardown_notify(void **state)
{
    int rc = teardown(state);
    srv_stop();
    return rc;
}

static const char *header_value(const char *headers, const char *name, char *out, size_t cap)
{
    const char *h = strcasestr(headers, name);
    if (!h) return NULL;
    h += strlen(name);
    while (*h == ' ' || *h == ':')
        h++;
    size_t n = strcspn(h, "\r\n");
    if (n >= cap) n = cap - 1;
    memcpy(out, h, n);
    out[n] = '\0';
    return out;
}

static void test_notify(void **state)
{
    (void)state;
    char id[APPROVE_ID_LEN];
    request("alice@corp.com", "fp0300", id);

    assert_true(wait_for("/slack", 1, 3000));
    assert_true(wait_for("/hook", 1, 3000));
    assert_true(wait_for("/flaky", 3, 3000)); /* 500, 500, then 200 */
    assert_true(wait_for("/dead", APPROVE_NOTIFY_TRIES, 5000));
    for (int i = 0; i < 100 && events(APPROVE_EV_NOTIFY_FAILED) == 0; i++)
        usleep(10000);
    usleep(200000); /* no sixth try */
    assert_int_equal(srv_count("/dead"), APPROVE_NOTIFY_TRIES);
    assert_int_equal(srv_count("/flaky"), 3);
    assert_int_equal(events(APPROVE_EV_NOTIFY_FAILED), 1);
    assert_int_equal(events(APPROVE_EV_NOTIFIED), 3);
    struct approve_counters c;
    approve_get_counters(&c);
    assert_int_equal(c.notify_failures, 1);
    assert_int_equal(c.notify_sent, 3);
    assert_int_equal(c.notify_retries, 2 + (APPROVE_NOTIFY_TRIES - 1));

    pthread_mutex_lock(&srv.mu);
    /* Webhook: JSON body, signature recomputed here. */
    const struct post *h = srv_find("/hook", "approval.requested");
    assert_non_null(h);
    char ts[64], sig[128];
    assert_non_null(header_value(h->headers, "X-Sluice-Timestamp", ts, sizeof ts));
    assert_non_null(header_value(h->headers, "X-Sluice-Signature", sig, sizeof sig));
    assert_true(llabs(strtoll(ts, NULL, 10) - (long long)time(NULL)) < 60);
    size_t mlen = strlen(ts) + 1 + strlen(h->body);
    char *msg = malloc(mlen + 1);
    sprintf(msg, "%s.%s", ts, h->body);
    unsigned char mac[32];
    unsigned int maclen;
    HMAC(EVP_sha256(), "hook-secret", 11, (unsigned char *)msg, mlen, mac, &maclen);
    free(msg);
    char want[80] = "sha256=";
    for (int i = 0; i < 32; i++)
        sprintf(want + 7 + 2 * i, "%02x", mac[i]);
    assert_string_equal(sig, want);
    cJSON *wj = cJSON_Parse(h->body);
    assert_non_null(wj);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(wj, "type")),
                        "approval.requested");
    cJSON *wr = cJSON_GetObjectItem(wj, "request");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(wr, "id")), id);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(wr, "identity")),
                        "alice@corp.com");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(wr, "fingerprint")), "fp0300");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(wr, "statement")),
                        "UPDATE orders SET status = $1 WHERE id = $2");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(wr, "state")), "pending");
    cJSON_Delete(wj);
    char ct[64];
    assert_non_null(header_value(h->headers, "Content-Type", ct, sizeof ct));
    assert_string_equal(ct, "application/json");

    /* Slack: Block Kit with the statement, who, why and the two buttons. */
    const struct post *s = srv_find("/slack", NULL);
    assert_non_null(s);
    assert_null(strcasestr(s->headers, "X-Sluice-Signature")); /* nothing to sign for Slack */
    cJSON *sj = cJSON_Parse(s->body);
    assert_non_null(sj);
    assert_non_null(strstr(cJSON_GetStringValue(cJSON_GetObjectItem(sj, "text")), id));
    cJSON *blocks = cJSON_GetObjectItem(sj, "blocks");
    assert_true(cJSON_IsArray(blocks));
    bool saw_approve = false, saw_deny = false, saw_stmt = false, saw_who = false, saw_why = false;
    cJSON *b;
    cJSON_ArrayForEach(b, blocks)
    {
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItem(b, "type"));
        char *text = cJSON_PrintUnformatted(b);
        if (strstr(text, "UPDATE orders SET status = $1 WHERE id = $2")) saw_stmt = true;
        if (strstr(text, "alice@corp.com")) saw_who = true;
        if (strstr(text, "agents' writes need a human")) saw_why = true;
        free(text);
        if (!type || strcmp(type, "actions") != 0) continue;
        cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(b, "elements"))
        {
            const char *aid = cJSON_GetStringValue(cJSON_GetObjectItem(e, "action_id"));
            assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(e, "type")), "button");
            assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(e, "value")), id);
            if (aid && !strcmp(aid, "approve")) saw_approve = true;
            if (aid && !strcmp(aid, "deny")) saw_deny = true;
        }
    }
    assert_true(saw_approve && saw_deny && saw_stmt && saw_who && saw_why);
    cJSON_Delete(sj);
    pthread_mutex_unlock(&srv.mu);

    /* The decision goes to webhooks too. */
    char err[256];
    assert_int_equal(approve_decide(id, false, "bob@corp.com", dba, 1, NULL, APPROVE_SCOPE_IDENTITY,
                                    err, sizeof err),
                     0);
    assert_true(wait_for("/hook", 2, 3000));
    pthread_mutex_lock(&srv.mu);
    assert_non_null(srv_find("/hook", "approval.denied"));
    pthread_mutex_unlock(&srv.mu);
}

static void test_slack_callback(void **state)
{
    (void)state;
    char id[APPROVE_ID_LEN], msg[256];
    request("alice@corp.com", "fp0400", id);
    char rurl[160];
    snprintf(rurl, sizeof rurl, "http://127.0.0.1:%d/response", srv.port);
    char *body = action_payload("approve", id, "dana", rurl);
    char ts[32], sig[80];
    snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
    /* Signed with the wrong secret: 401, nothing decided. */
    slack_sign("not-the-secret", ts, body, sig);
    assert_int_equal(approve_slack_action(ts, sig, body, strlen(body), msg, sizeof msg), 401);
    /* A stale timestamp, correctly signed: 401. */
    char old[32], oldsig[80];
    snprintf(old, sizeof old, "%lld", (long long)time(NULL) - 400);
    slack_sign("slack-signing-secret", old, body, oldsig);
    assert_int_equal(approve_slack_action(old, oldsig, body, strlen(body), msg, sizeof msg), 401);
    struct approve_status st;
    assert_int_equal(approve_state(id, &st), 0);
    assert_int_equal(st.state, APPROVE_PENDING);

    slack_sign("slack-signing-secret", ts, body, sig);
    assert_int_equal(approve_slack_action(ts, sig, body, strlen(body), msg, sizeof msg), 200);
    assert_int_equal(approve_state(id, &st), 0);
    assert_int_equal(st.state, APPROVE_APPROVED);
    assert_string_equal(st.approver, "slack:dana");
    assert_true(wait_for("/response", 1, 3000));
    pthread_mutex_lock(&srv.mu);
    assert_non_null(strstr(srv_find("/response", NULL)->body, "approved by slack:dana"));
    pthread_mutex_unlock(&srv.mu);
    /* Clicked twice: 409. */
    assert_int_equal(approve_slack_action(ts, sig, body, strlen(body), msg, sizeof msg), 409);
    free(body);

    /* The requester's own Slack user cannot approve. */
    char id2[APPROVE_ID_LEN];
    request("alice@corp.com", "fp0401", id2);
    body = action_payload("approve", id2, "alice", "");
    slack_sign("slack-signing-secret", ts, body, sig);
    assert_int_equal(approve_slack_action(ts, sig, body, strlen(body), msg, sizeof msg), 403);
    assert_non_null(strstr(msg, "own request"));
    free(body);
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "--cli")) return approvals_cli_main(argc - 1, argv + 1);
    if (argc >= 3 && !strcmp(argv[1], "--second-server")) return second_server_main(argv[2]);
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (n <= 0) return 1;
    self_exe[n] = '\0';
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_request_approve_grant, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_scope_and_revoke, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals_and_deny, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_and_wakeup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry, setup_fake_clock, teardown),
        cmocka_unit_test_setup_teardown(test_second_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_limit, setup_fake_clock, teardown),
        cmocka_unit_test_setup_teardown(test_locked_file_does_not_stall, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grant_uses_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_write_kept_and_fails_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_write_reason_in_decision, setup, teardown),
        cmocka_unit_test_setup_teardown(test_locked_too_long_fails_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_impossible_write_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_waits_for_the_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_bound_fails_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_written_in_one_transaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_batch_rolled_back_whole, setup_fake_clock,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_second_server_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreadable_revocation_fails_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry_loses_to_file_decision, setup_fake_clock,
                                        teardown),
        cmocka_unit_test(test_slack_signature),
        cmocka_unit_test(test_slack_parse),
        cmocka_unit_test_setup_teardown(test_notify, setup_notify, teardown_notify),
        cmocka_unit_test_setup_teardown(test_slack_callback, setup_notify, teardown_notify),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
