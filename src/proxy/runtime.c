/*
 * runtime.c: the current configuration snapshot and the TLS contexts made from it,
 * swapped whole on reload. Sessions take a reference when they start and keep their
 * snapshot for life; the old one is freed when its last session ends.
 */
#include "proxy/proxy.h"

#include <stdlib.h>
#include <time.h>

#include "core/buf.h"
#include "net/net.h"
#include "admin/metrics.h"
#include "ident/oidc.h"
#include "mask/mask.h"
#include "policy/policy.h"

static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static struct runtime *current;

uint64_t clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void runtime_free(struct runtime *rt)
{
    if (rt->target_tls) {
        for (unsigned i = 0; i < rt->cfg->n_targets; i++)
            SSL_CTX_free(rt->target_tls[i]);
        free(rt->target_tls);
    }
    SSL_CTX_free(rt->server_tls);
    if (rt->policy) policy_free(rt->policy);
    mask_db_free(rt->mask);
    if (rt->oidc) oidc_verifier_free(rt->oidc);
    config_unref(rt->cfg);
    free(rt);
}

int runtime_install(struct sluice_config *cfg, char *err, size_t errlen)
{
    static atomic_uint_least64_t generations;
    struct runtime *rt = xcalloc(1, sizeof *rt);
    rt->cfg = cfg;
    rt->generation = atomic_fetch_add(&generations, 1) + 1;
    atomic_init(&rt->refs, 1);
    rt->policy = policy_compile(cfg, err, errlen);
    if (!rt->policy) goto fail;
    if (cfg->masking.enabled) {
        rt->mask = mask_db_build(&cfg->masking, err, errlen);
        if (!rt->mask) goto fail;
        for (unsigned i = 0; i < mask_db_detector_count(rt->mask) && i < MASK_MAX_DETECTORS; i++)
            rt->det_metric[i] = metrics_register_detector(mask_db_detector_name(rt->mask, i));
    }
    if (cfg->oidc.enabled) {
        rt->oidc = oidc_verifier_new(&cfg->oidc, err, errlen);
        if (!rt->oidc) goto fail;
        struct runtime *prev = runtime_acquire(); /* a reload: keep the keys it fetched */
        if (prev && prev->oidc) oidc_verifier_adopt_keys(rt->oidc, prev->oidc);
        runtime_release(prev);
    }
    if (cfg->tls.cert) {
        rt->server_tls = tls_server_ctx(&cfg->tls, err, errlen);
        if (!rt->server_tls) goto fail;
    }
    rt->target_tls = xcalloc(cfg->n_targets ? cfg->n_targets : 1, sizeof *rt->target_tls);
    for (unsigned i = 0; i < cfg->n_targets; i++) {
        if (cfg->targets[i].sslmode == SSLMODE_DISABLE) continue;
        rt->target_tls[i] = tls_client_ctx(&cfg->targets[i], err, errlen);
        if (!rt->target_tls[i]) goto fail;
    }
    pthread_mutex_lock(&current_lock);
    struct runtime *old = current;
    current = rt;
    pthread_mutex_unlock(&current_lock);
    if (old) runtime_release(old);
    return 0;
fail:
    runtime_free(rt);
    return -1;
}

struct runtime *runtime_acquire(void)
{
    pthread_mutex_lock(&current_lock);
    struct runtime *rt = current;
    if (rt) atomic_fetch_add(&rt->refs, 1);
    pthread_mutex_unlock(&current_lock);
    return rt;
}

void runtime_release(struct runtime *rt)
{
    if (rt && atomic_fetch_sub(&rt->refs, 1) == 1) runtime_free(rt);
}
