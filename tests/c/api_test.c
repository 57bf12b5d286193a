/* Exercises the whole public C API of libpariskv, its bad inputs (null, misaligned and
 * stale pointers, sizes, dtypes and settings out of range) and calls from several threads.
 * Built and run by tests/c_api.rs; exits non-zero on any failed check. */
#define _POSIX_C_SOURCE 200809L /* pthread barriers under -std=c11 */
#include "pariskv.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
static int checks = 0;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        checks++;                                          \
        if (!(cond)) {                                     \
            failures++;                                    \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);    \
            printf(__VA_ARGS__);                           \
            printf("\n");                                  \
        }                                                  \
    } while (0)

/* A bad call must return `want` and leave a message naming `needle`. */
static int bad_cases = 0;
static void expect_error(const char *what, pariskv_status got, pariskv_status want, const char *needle) {
    bad_cases++;
    const char *msg = pariskv_last_error();
    CHECK(got == want, "%s: status %d, expected %d (%s)", what, (int)got, (int)want, msg);
    CHECK(msg != NULL && strstr(msg, needle) != NULL, "%s: message '%s' lacks '%s'", what, msg, needle);
    printf("bad input %2d: %-44s -> status %d: %s\n", bad_cases, what, (int)got, msg);
}

static uint64_t rng_state = 12345;
static float randn(void) {
    /* Sum of 12 uniforms minus 6: close enough to a standard normal for test data. */
    float s = 0.0f;
    for (int i = 0; i < 12; i++) {
        rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
        s += (float)(rng_state >> 40) / (float)(1ULL << 24);
    }
    return s - 6.0f;
}

static uint16_t to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16); /* round to nearest even */
}

/* Dense softmax attention of one head over n keys, in double. */
static void dense_head(const float *q, const float *k, const float *v, size_t n, size_t stride,
                       size_t d, float scale, double *out) {
    double *w = malloc(n * sizeof(double));
    double max = -INFINITY, sum = 0.0;
    for (size_t t = 0; t < n; t++) {
        double s = 0.0;
        for (size_t j = 0; j < d; j++) s += (double)q[j] * k[t * stride + j];
        w[t] = s * scale;
        if (w[t] > max) max = w[t];
    }
    for (size_t t = 0; t < n; t++) sum += (w[t] = exp(w[t] - max));
    for (size_t j = 0; j < d; j++) {
        double acc = 0.0;
        for (size_t t = 0; t < n; t++) acc += w[t] * v[t * stride + j];
        out[j] = acc / sum;
    }
    free(w);
}

/* Searches one handle `rounds` times (0: until a call fails), from a thread. */
typedef struct {
    pariskv_index *ix;
    const float *q;
    uint32_t k;
    int rounds;
    int64_t *pos;
    uint32_t *count;
    pariskv_status last;
    long calls;
    char message[200];
} search_job;

static void *run_search(void *arg) {
    search_job *j = arg;
    j->last = PARISKV_OK;
    for (long c = 0; j->rounds == 0 ? c < 100000000L : c < j->rounds; c++) {
        j->last = pariskv_index_search(j->ix, PARISKV_F32, j->q, j->k, j->pos, j->count);
        if (j->last != PARISKV_OK) {
            snprintf(j->message, sizeof j->message, "%s", pariskv_last_error());
            break;
        }
        __atomic_store_n(&j->calls, c + 1, __ATOMIC_RELEASE); /* read by the thread that frees */
    }
    return NULL;
}

/* Appends `rounds` blocks of `n` tokens to one handle, from a thread. */
typedef struct {
    pariskv_index *ix;
    const float *keys, *vals;
    size_t n;
    int rounds;
    pariskv_status last;
} append_job;

static void *run_append(void *arg) {
    append_job *j = arg;
    j->last = PARISKV_OK;
    for (int r = 0; r < j->rounds && j->last == PARISKV_OK; r++) {
        j->last = pariskv_index_append(j->ix, PARISKV_F32, j->keys, j->vals, j->n);
    }
    return NULL;
}

/* pariskv_attend_cache_team on a team of pthreads meeting at a pthread barrier */
typedef struct {
    const pariskv_step *step;
    const float *q;
    const pariskv_kv *kv;
    const pariskv_codes *codes;
    const pariskv_visibility *vis;
    pthread_barrier_t barrier;
    uint64_t slot[PARISKV_TEAM_SLOT_BYTES / 8];
    pariskv_status status[3];
    pariskv_step_stats stats;
    float out[4 * 128];
} team_job;
typedef struct {
    team_job *job;
    int ith;
} team_arg;
static void team_barrier(void *ctx) { pthread_barrier_wait((pthread_barrier_t *)ctx); }
static void team_noop_barrier(void *ctx) { (void)ctx; }
static void *run_team(void *arg) {
    team_arg *a = arg;
    team_job *j = a->job;
    pariskv_team team = {(uint32_t)a->ith, 3, team_barrier, &j->barrier, j->slot};
    const size_t d = j->step->head_dim;
    j->status[a->ith] = pariskv_attend_cache_team(&team, j->step, j->q, d * 4, j->kv, j->codes, j->vis,
                                                  a->ith == 0 ? j->out : NULL, d * 4, a->ith == 0 ? &j->stats : NULL);
    return NULL;
}

static int thread_cases = 0;
static void thread_case(const char *what, int ok, const char *detail) {
    thread_cases++;
    CHECK(ok, "%s: %s", what, detail);
    printf("threads %d: %-52s -> %s\n", thread_cases, what, ok ? "as required" : detail);
}

int main(void) {
    enum { D = 128, NQ = 8, NKV = 2, N = 6000 };
    /* The version the header names is the library's. */
    char header_version[32];
    snprintf(header_version, sizeof header_version, "%d.%d.%d", PARISKV_VERSION_MAJOR, PARISKV_VERSION_MINOR,
             PARISKV_VERSION_PATCH);
    CHECK(strcmp(pariskv_version(), header_version) == 0, "version %s, header %s", pariskv_version(), header_version);

    pariskv_config cfg = { .struct_size = sizeof(pariskv_config) };
    CHECK(pariskv_config_init(&cfg, D, NQ, NKV) == PARISKV_OK, "config_init: %s", pariskv_last_error());
    CHECK(cfg.n_sink == 4 && cfg.n_local == 512 && cfg.top_k == 2048, "defaults");
    CHECK(cfg.dense_threshold == 0, "dense threshold default: automatic");
    CHECK(cfg.struct_size == sizeof(pariskv_config), "config_init keeps struct_size");
    {
        /* The automatic threshold is derived where it is used: a top-k set after config_init
         * counts (the CPU's: 8 cells per unit of top-k, at least 12288), an explicit one wins. */
        uint64_t depth = 0;
        pariskv_config later = cfg;
        CHECK(pariskv_config_dense_threshold(&later, &depth) == PARISKV_OK && depth == 16384,
              "automatic threshold at top-k 2048: %llu", (unsigned long long)depth);
        later.top_k = 4096;
        CHECK(pariskv_config_dense_threshold(&later, &depth) == PARISKV_OK && depth == 32768,
              "automatic threshold after top_k = 4096: %llu", (unsigned long long)depth);
        later.dense_threshold = 3000;
        CHECK(pariskv_config_dense_threshold(&later, &depth) == PARISKV_OK && depth == 3000,
              "explicit threshold: %llu", (unsigned long long)depth);
    }
    CHECK(cfg.ratio_table == PARISKV_RATIOS_TUNED && cfg.kv_dtype == PARISKV_F16, "ratios and dtype defaults");
    CHECK(cfg.gqa_policy == PARISKV_GQA_GROUP, "GQA default: k rows for the group");
    /* One retrieval per KV head with the group-mean query: exactly k positions per head. */
    cfg.gqa_policy = PARISKV_GQA_MEAN;
    CHECK(fabsf(cfg.scale - 1.0f / sqrtf((float)D)) < 1e-7f, "scale default");
    cfg.kv_dtype = PARISKV_F32;
    cfg.top_k = 256;
    cfg.dense_threshold = 1; /* ParisKV from the first token (0 would be the automatic threshold) */

    pariskv_index *ix = NULL;
    CHECK(pariskv_index_create(&cfg, &ix) == PARISKV_OK && ix != NULL, "create: %s", pariskv_last_error());

    float *keys = malloc(sizeof(float) * N * NKV * D);
    float *vals = malloc(sizeof(float) * N * NKV * D);
    for (size_t i = 0; i < (size_t)N * NKV * D; i++) {
        keys[i] = randn();
        vals[i] = randn();
    }
    /* Append in two calls, the second in bf16 to exercise another dtype. */
    enum { N1 = 4000, N2 = N - N1 };
    CHECK(pariskv_index_append(ix, PARISKV_F32, keys, vals, N1) == PARISKV_OK, "append f32: %s", pariskv_last_error());
    uint16_t *kb = malloc(2 * (size_t)N2 * NKV * D), *vb = malloc(2 * (size_t)N2 * NKV * D);
    for (size_t i = 0; i < (size_t)N2 * NKV * D; i++) {
        kb[i] = to_bf16(keys[(size_t)N1 * NKV * D + i]);
        vb[i] = to_bf16(vals[(size_t)N1 * NKV * D + i]);
        /* Keep the f32 copy equal to what the index stores, for the dense reference. */
        uint32_t u = (uint32_t)kb[i] << 16, w = (uint32_t)vb[i] << 16;
        memcpy(&keys[(size_t)N1 * NKV * D + i], &u, 4);
        memcpy(&vals[(size_t)N1 * NKV * D + i], &w, 4);
    }
    CHECK(pariskv_index_append(ix, PARISKV_BF16, kb, vb, N2) == PARISKV_OK, "append bf16: %s", pariskv_last_error());
    CHECK(pariskv_index_append(ix, PARISKV_F32, NULL, NULL, 0) == PARISKV_OK, "empty append: %s", pariskv_last_error());

    size_t len = 0;
    CHECK(pariskv_index_len(ix, &len) == PARISKV_OK && len == N, "len %zu", len);

    /* A query aimed at key 2500 of KV head 0 (query heads 0-3) and key 1234 of KV head 1
     * (heads 4-7), strongly enough that attention concentrates on them. */
    float q[NQ * D];
    for (int i = 0; i < NQ * D; i++) q[i] = 0.1f * randn();
    for (int h = 0; h < 8; h++) {
        size_t target = h < 4 ? (size_t)2500 * NKV : (size_t)1234 * NKV + 1;
        for (int j = 0; j < D; j++) q[h * D + j] += 2.0f * keys[target * D + j];
    }

    int64_t pos[NKV * 300];
    uint32_t count[NKV];
    CHECK(pariskv_index_search(ix, PARISKV_F32, q, 300, pos, count) == PARISKV_OK, "search: %s", pariskv_last_error());
    CHECK(count[0] == 300 && count[1] == 300, "counts %u %u", count[0], count[1]);
    CHECK(pos[0] == 2500 && pos[300] == 1234, "planted keys first: %lld %lld", (long long)pos[0], (long long)pos[300]);
    int in_zone = 1;
    for (int h = 0; h < NKV; h++)
        for (uint32_t i = 0; i < count[h]; i++) in_zone &= pos[h * 300 + i] >= 4 && pos[h * 300 + i] < N - 512;
    CHECK(in_zone, "positions inside the retrieval zone");

    int64_t many[NKV * 6000];
    uint32_t cnt2[NKV];
    CHECK(pariskv_index_search(ix, PARISKV_F32, q, 6000, many, cnt2) == PARISKV_OK, "search all");
    CHECK(cnt2[0] == N - 4 - 512 && many[N - 4 - 512] == -1, "k beyond the zone: %u, tail %lld", cnt2[0],
          (long long)many[N - 4 - 512]);

    pariskv_stats st;
    CHECK(pariskv_index_stats(ix, &st) == PARISKV_OK, "stats");
    CHECK(st.len == N && st.index_bytes == (size_t)N * NKV * 112 && st.kv_bytes == (size_t)N * NKV * D * 4 * 2,
          "stats: len %zu index %zu kv %zu", st.len, st.index_bytes, st.kv_bytes);
    CHECK(st.last_zone == (size_t)NKV * (N - 516), "last_zone %zu", st.last_zone);

    /* Per-head retrieval: each of the 4 query heads of a group retrieves its share of k and
     * the group gets the union, at most k positions, its planted key first. */
    {
        pariskv_config ph = cfg;
        ph.gqa_policy = PARISKV_GQA_PER_HEAD;
        pariskv_index *px = NULL;
        CHECK(pariskv_index_create(&ph, &px) == PARISKV_OK, "create per-head: %s", pariskv_last_error());
        CHECK(pariskv_index_append(px, PARISKV_F32, keys, vals, N) == PARISKV_OK, "append per-head");
        CHECK(pariskv_index_search(px, PARISKV_F32, q, 300, pos, count) == PARISKV_OK, "search per-head");
        CHECK(count[0] > 0 && count[0] <= 300 && count[1] > 0 && count[1] <= 300, "per-head counts %u %u", count[0], count[1]);
        CHECK(pos[0] == 2500 && pos[300] == 1234, "per-head: planted keys first: %lld %lld", (long long)pos[0], (long long)pos[300]);
        CHECK(count[0] == 300 || pos[count[0]] == -1, "per-head: unused slots are -1");
        pariskv_index_free(px);
    }

    /* Group retrieval: exactly k distinct zone positions per KV head, the planted key among
     * them (the group's attention concentrates on it). */
    {
        pariskv_config gr = cfg;
        gr.gqa_policy = PARISKV_GQA_GROUP;
        pariskv_index *gx = NULL;
        CHECK(pariskv_index_create(&gr, &gx) == PARISKV_OK, "create group: %s", pariskv_last_error());
        CHECK(pariskv_index_append(gx, PARISKV_F32, keys, vals, N) == PARISKV_OK, "append group");
        CHECK(pariskv_index_search(gx, PARISKV_F32, q, 300, pos, count) == PARISKV_OK, "search group");
        CHECK(count[0] == 300 && count[1] == 300, "group counts %u %u", count[0], count[1]);
        CHECK(pos[0] == 2500 && pos[300] == 1234, "group: planted keys first: %lld %lld", (long long)pos[0], (long long)pos[300]);
        int distinct = 1;
        for (int h = 0; h < NKV; h++)
            for (int i = 0; i < 300; i++)
                for (int j = 0; j < i; j++) distinct &= pos[h * 300 + i] != pos[h * 300 + j];
        CHECK(distinct, "group: distinct positions");
        pariskv_index_free(gx);
    }

    /* Attention: retrieval path vs dense; then dense path vs the C reference. */
    float out[NQ * D];
    CHECK(pariskv_index_attend(ix, PARISKV_F32, q, out) == PARISKV_OK, "attend: %s", pariskv_last_error());
    double ref[D], worst = 0.0;
    for (int h = 0; h < NQ; h++) {
        dense_head(q + h * D, keys + (h / 4) * D, vals + (h / 4) * D, N, NKV * D, D, cfg.scale, ref);
        for (int j = 0; j < D; j++) worst = fmax(worst, fabs(out[h * D + j] - ref[j]));
    }
    printf("retrieval path: max |ParisKV - dense| = %.3g\n", worst);
    CHECK(worst < 1e-3, "retrieval-path attention far from dense: %g", worst);

    pariskv_config dense_cfg = cfg;
    dense_cfg.dense_threshold = 1u << 30;
    pariskv_index *dx = NULL;
    CHECK(pariskv_index_create(&dense_cfg, &dx) == PARISKV_OK, "create dense");
    CHECK(pariskv_index_append(dx, PARISKV_F32, keys, vals, N) == PARISKV_OK, "append dense");
    CHECK(pariskv_index_attend(dx, PARISKV_F32, q, out) == PARISKV_OK, "attend dense");
    worst = 0.0;
    for (int h = 0; h < NQ; h++) {
        dense_head(q + h * D, keys + (h / 4) * D, vals + (h / 4) * D, N, NKV * D, D, cfg.scale, ref);
        for (int j = 0; j < D; j++) worst = fmax(worst, fabs(out[h * D + j] - ref[j]));
    }
    printf("dense path: max |out - C reference| = %.3g\n", worst);
    CHECK(worst < 2e-4, "dense path differs from the reference: %g", worst); /* f32 rounding */

    /* ---- bad inputs ---- */
    pariskv_config bad;
    expect_error("config_init(NULL)", pariskv_config_init(NULL, D, NQ, NKV), PARISKV_ERR_INVALID_ARGUMENT, "cfg");
    memset(&bad, 0x5A, sizeof bad);
    bad.struct_size = sizeof bad;
    pariskv_config untouched = bad;
    expect_error("config_init head_dim 100", pariskv_config_init(&bad, 100, NQ, NKV), PARISKV_ERR_UNSUPPORTED, "head_dim 100");
    CHECK(memcmp(&bad, &untouched, sizeof bad) == 0, "failed config_init left cfg untouched");
    expect_error("config_init head_dim 1024", pariskv_config_init(&bad, 1024, NQ, NKV), PARISKV_ERR_UNSUPPORTED, "head_dim");
    expect_error("config_init 6 q heads / 4 kv heads", pariskv_config_init(&bad, D, 6, 4), PARISKV_ERR_INVALID_ARGUMENT, "n_q_heads");
    expect_error("config_init 0 kv heads", pariskv_config_init(&bad, D, NQ, 0), PARISKV_ERR_INVALID_ARGUMENT, "n_kv_heads");

    pariskv_index *nx = (pariskv_index *)0x1;
    expect_error("create(NULL cfg)", pariskv_index_create(NULL, &nx), PARISKV_ERR_INVALID_ARGUMENT, "cfg");
    CHECK(nx == NULL, "failed create sets *out to NULL");
    expect_error("create(cfg, NULL out)", pariskv_index_create(&cfg, NULL), PARISKV_ERR_INVALID_ARGUMENT, "out");
    bad = cfg; bad.ratio_table = PARISKV_RATIOS_FIXED; bad.rho_cand = 2.0;
    expect_error("create rho_cand 2.0", pariskv_index_create(&bad, &nx), PARISKV_ERR_INVALID_ARGUMENT, "rho_cand");
    bad = cfg; bad.ratio_table = PARISKV_RATIOS_FIXED; bad.rho_coll = NAN;
    expect_error("create rho_coll NaN", pariskv_index_create(&bad, &nx), PARISKV_ERR_INVALID_ARGUMENT, "rho_coll");
    bad = cfg; bad.kv_dtype = 99;
    expect_error("create kv_dtype 99", pariskv_index_create(&bad, &nx), PARISKV_ERR_UNSUPPORTED, "dtype 99");
    bad = cfg; bad.gqa_policy = 7;
    expect_error("create gqa_policy 7", pariskv_index_create(&bad, &nx), PARISKV_ERR_UNSUPPORTED, "GQA policy 7");
    bad = cfg; bad.top_k = 0;
    expect_error("create top_k 0", pariskv_index_create(&bad, &nx), PARISKV_ERR_INVALID_ARGUMENT, "top_k");
    bad = cfg; bad.scale = -1.0f;
    expect_error("create scale -1", pariskv_index_create(&bad, &nx), PARISKV_ERR_INVALID_ARGUMENT, "scale");
    bad = cfg; bad.softcap = INFINITY;
    expect_error("create softcap inf", pariskv_index_create(&bad, &nx), PARISKV_ERR_INVALID_ARGUMENT, "softcap");
    bad = cfg; bad.ratio_table = 3;
    expect_error("create ratio_table 3", pariskv_index_create(&bad, &nx), PARISKV_ERR_UNSUPPORTED, "ratio table 3");
    bad = cfg; bad.refine = 65;
    expect_error("create refine 65", pariskv_index_create(&bad, &nx), PARISKV_ERR_INVALID_ARGUMENT, "refine 65");
    bad = cfg; bad.head_dim = 12;
    expect_error("create head_dim 12", pariskv_index_create(&bad, &nx), PARISKV_ERR_UNSUPPORTED, "head_dim 12");
    CHECK(cfg.device == -1 && cfg.kv_in_host == 0, "default device is the CPU");
    bad = cfg; bad.kv_in_host = 1;
    expect_error("create kv_in_host on the CPU", pariskv_index_create(&bad, &nx), PARISKV_ERR_INVALID_ARGUMENT, "kv_in_host");
    bad = cfg; bad.device = -2;
    expect_error("create device -2", pariskv_index_create(&bad, &nx), PARISKV_ERR_INVALID_ARGUMENT, "device -2");
    uint32_t has_cuda = 1;
    CHECK(pariskv_cuda_available(&has_cuda) == PARISKV_OK, "cuda_available");
    if (!has_cuda) {
        /* this library has no CUDA (or no GPU): a device index is a clean error */
        bad = cfg; bad.device = 0;
        pariskv_status got = pariskv_index_create(&bad, &nx);
        CHECK((got == PARISKV_ERR_UNSUPPORTED || got == PARISKV_ERR_CUDA) && nx == NULL,
              "create on CUDA device 0 without CUDA: status %d, %s", (int)got, pariskv_last_error());
        CHECK(strstr(pariskv_last_error(), "CUDA") != NULL, "the message names CUDA: %s", pariskv_last_error());
    }

    expect_error("append(NULL index)", pariskv_index_append(NULL, PARISKV_F32, keys, vals, 1), PARISKV_ERR_INVALID_ARGUMENT, "index");
    expect_error("append dtype 7", pariskv_index_append(ix, 7, keys, vals, 1), PARISKV_ERR_UNSUPPORTED, "dtype 7");
    expect_error("append NULL keys", pariskv_index_append(ix, PARISKV_F32, NULL, vals, 1), PARISKV_ERR_INVALID_ARGUMENT, "keys");
    expect_error("append NULL values", pariskv_index_append(ix, PARISKV_F32, keys, NULL, 1), PARISKV_ERR_INVALID_ARGUMENT, "values");
    expect_error("append misaligned f32 keys", pariskv_index_append(ix, PARISKV_F32, (const char *)keys + 1, vals, 1),
                 PARISKV_ERR_INVALID_ARGUMENT, "aligned");
    expect_error("append SIZE_MAX/2 tokens", pariskv_index_append(ix, PARISKV_F32, keys, vals, SIZE_MAX / 2),
                 PARISKV_ERR_INVALID_ARGUMENT, "too large");
    CHECK(pariskv_index_len(ix, &len) == PARISKV_OK && len == N, "failed appends left the length at %zu", len);

    expect_error("len(NULL index)", pariskv_index_len(NULL, &len), PARISKV_ERR_INVALID_ARGUMENT, "index");
    expect_error("len(index, NULL)", pariskv_index_len(ix, NULL), PARISKV_ERR_INVALID_ARGUMENT, "out");
    expect_error("stats(index, NULL)", pariskv_index_stats(ix, NULL), PARISKV_ERR_INVALID_ARGUMENT, "out");
    expect_error("search k = 0", pariskv_index_search(ix, PARISKV_F32, q, 0, pos, count), PARISKV_ERR_INVALID_ARGUMENT, "k must");
    expect_error("search NULL queries", pariskv_index_search(ix, PARISKV_F32, NULL, 8, pos, count), PARISKV_ERR_INVALID_ARGUMENT, "queries");
    expect_error("search NULL out_positions", pariskv_index_search(ix, PARISKV_F32, q, 8, NULL, count), PARISKV_ERR_INVALID_ARGUMENT, "out_positions");
    expect_error("search NULL out_count", pariskv_index_search(ix, PARISKV_F32, q, 8, pos, NULL), PARISKV_ERR_INVALID_ARGUMENT, "out_count");
    expect_error("search misaligned out_positions", pariskv_index_search(ix, PARISKV_F32, q, 8, (int64_t *)((char *)pos + 4), count),
                 PARISKV_ERR_INVALID_ARGUMENT, "aligned");
    expect_error("search dtype 4", pariskv_index_search(ix, 4, q, 8, pos, count), PARISKV_ERR_UNSUPPORTED, "dtype 4");
    expect_error("attend NULL out", pariskv_index_attend(ix, PARISKV_F32, q, NULL), PARISKV_ERR_INVALID_ARGUMENT, "out");
    expect_error("attend(NULL index)", pariskv_index_attend(NULL, PARISKV_F32, q, out), PARISKV_ERR_INVALID_ARGUMENT, "index");
    pariskv_index *empty = NULL;
    CHECK(pariskv_index_create(&cfg, &empty) == PARISKV_OK, "create empty");
    expect_error("attend on an empty index", pariskv_index_attend(empty, PARISKV_F32, q, out), PARISKV_ERR_INVALID_ARGUMENT, "empty");
    pariskv_index_free(empty);
    pariskv_index_free(NULL);

    /* ---- the cache entry points (caller-owned index memory) ---- */
    enum { NC = 64 };
    pariskv_layout lay;
    CHECK(pariskv_layout_for(D, &lay) == PARISKV_OK && lay.code_bytes == 16 && lay.nibble_bytes == 64, "layout_for");
    uint8_t *cb = malloc((size_t)NC * lay.code_bytes), *nb = malloc((size_t)NC * lay.nibble_bytes);
    uint16_t *wb = malloc(2 * (size_t)NC * lay.n_weights);
    pariskv_codes dst = {cb, nb, wb, NC, NULL, NULL};
    int64_t cells[NC];
    for (int c = 0; c < NC; c++) cells[c] = c;
    const size_t kstride = sizeof(float) * NKV * D; /* KV head 0's rows of the interleaved keys */
    /* centred keys: the centre from the first 32 cells, then fixed */
    CHECK(lay.center_len == D + 1, "layout center_len %u", lay.center_len);
    float center[D + 1] = {0};
    CHECK(pariskv_center_init(D, PARISKV_F32, keys, kstride, NC, cells, 32, center) == PARISKV_OK && center[D] == 32.0f,
          "center_init: %s (count %g)", pariskv_last_error(), center[D]);
    float c0 = center[0];
    CHECK(pariskv_center_init(D, PARISKV_F32, keys, kstride, NC, cells + 32, 32, center) == PARISKV_OK &&
              center[0] == c0 && center[D] == 32.0f, "a set centre stays as it is");
    CHECK(pariskv_encode_cells(D, cfg.seed, PARISKV_F32, keys, kstride, cells, NC, center, &dst) == PARISKV_OK,
          "encode_cells: %s", pariskv_last_error());
    {
        /* the same as encoding key - centre without one, bit for bit */
        static float shifted[NC * D];
        for (int c = 0; c < NC; c++)
            for (int j = 0; j < D; j++) shifted[c * D + j] = keys[(size_t)c * NKV * D + j] - center[j];
        uint8_t *cb2 = malloc((size_t)NC * lay.code_bytes), *nb2 = malloc((size_t)NC * lay.nibble_bytes);
        uint16_t *wb2 = malloc(2 * (size_t)NC * lay.n_weights);
        pariskv_codes dst2 = {cb2, nb2, wb2, NC, NULL, NULL};
        CHECK(pariskv_encode_cells(D, cfg.seed, PARISKV_F32, shifted, sizeof(float) * D, cells, NC, NULL, &dst2) == PARISKV_OK &&
                  memcmp(cb, cb2, (size_t)NC * lay.code_bytes) == 0 && memcmp(nb, nb2, (size_t)NC * lay.nibble_bytes) == 0 &&
                  memcmp(wb, wb2, 2 * (size_t)NC * lay.n_weights) == 0,
              "encoding with a centre = encoding key - centre");
        free(cb2); free(nb2); free(wb2);
    }
    pariskv_step step = {D, D, 4, 16, 4, 8, 1, PARISKV_GQA_PER_HEAD, 0.3, 0.3, cfg.scale, 0.0f, cfg.seed, 2};
    pariskv_kv kv = {PARISKV_F32, keys, kstride, PARISKV_F32, vals, kstride, NC};
    float mask[NC];
    int32_t cpos[NC];
    for (int c = 0; c < NC; c++) { mask[c] = 0.0f; cpos[c] = c; }
    pariskv_visibility vis = {PARISKV_F32, mask, cpos};
    pariskv_step_stats sst;
    float cout[4 * D];
    /* per-head: sink + window + the union of the 4 heads' 16/4 retrieved rows */
    CHECK(pariskv_attend_cache(&step, q, D * 4, &kv, &dst, &vis, cout, D * 4, &sst) == PARISKV_OK &&
              sst.n_visible == NC && sst.n_attended >= 4 + 8 + 4 && sst.n_attended <= 4 + 8 + 16,
          "attend_cache: %s (%zu visible, %zu attended)", pariskv_last_error(), sst.n_visible, sst.n_attended);
    {
        /* a kept histogram (pariskv_codes_tally over every cell) gives the step's result to the bit */
        uint32_t *kh = calloc((size_t)lay.n_blocks * 256, sizeof(uint32_t));
        uint8_t *flags = calloc(NC, 1);
        pariskv_codes kept = dst;
        kept.hist = kh, kept.counted = flags;
        CHECK(pariskv_codes_tally(D, &kept, cells, NC, 1) == PARISKV_OK && flags[0] == 1 && flags[NC - 1] == 1,
              "codes_tally add: %s", pariskv_last_error());
        uint32_t total = 0;
        for (int c = 0; c < 256; c++) total += kh[c];
        CHECK(total == NC, "every cell counted once in each block's histogram (%u)", total);
        float kout[4 * D];
        pariskv_step_stats kst;
        CHECK(pariskv_attend_cache(&step, q, D * 4, &kv, &kept, &vis, kout, D * 4, &kst) == PARISKV_OK &&
                  memcmp(kout, cout, sizeof cout) == 0 && sst.zone_counted == 1 && kst.zone_counted == 0,
              "attend_cache with a kept histogram = without, and takes the histogram from it: %s",
              pariskv_last_error());
        kst.zone_counted = sst.zone_counted;
        CHECK(memcmp(&kst, &sst, sizeof sst) == 0, "attend_cache with a kept histogram: the same stats");
        CHECK(pariskv_codes_tally(D, &kept, cells, 3, 0) == PARISKV_OK && flags[0] == 0 && flags[3] == 1,
              "codes_tally remove");
        CHECK(pariskv_attend_cache(&step, q, D * 4, &kv, &kept, &vis, kout, D * 4, &kst) == PARISKV_OK &&
                  memcmp(kout, cout, sizeof cout) == 0, "cells not counted: the step counts instead, same result");
        pariskv_codes half = kept;
        half.counted = NULL;
        expect_error("attend_cache hist without counted", pariskv_attend_cache(&step, q, D * 4, &kv, &half, &vis, kout, D * 4, NULL),
                     PARISKV_ERR_INVALID_ARGUMENT, "together");
        expect_error("codes_tally without hist", pariskv_codes_tally(D, &dst, cells, NC, 1), PARISKV_ERR_INVALID_ARGUMENT,
                     "must be set");
        int64_t bad_cell = NC;
        expect_error("codes_tally cell out of range", pariskv_codes_tally(D, &kept, &bad_cell, 1, 1),
                     PARISKV_ERR_INVALID_ARGUMENT, "out of range");
        free(kh);
        free(flags);
    }
    {
        /* three threads sharing the same call give its result to the bit */
        static team_job tj;
        memset(&tj, 0, sizeof tj);
        tj.step = &step, tj.q = q, tj.kv = &kv, tj.codes = &dst, tj.vis = &vis;
        pthread_barrier_init(&tj.barrier, NULL, 3);
        pthread_t th[3];
        team_arg ta[3];
        for (int t = 0; t < 3; t++) {
            ta[t].job = &tj;
            ta[t].ith = t;
            pthread_create(&th[t], NULL, run_team, &ta[t]);
        }
        for (int t = 0; t < 3; t++) pthread_join(th[t], NULL);
        pthread_barrier_destroy(&tj.barrier);
        CHECK(tj.status[0] == PARISKV_OK && tj.status[1] == PARISKV_OK && tj.status[2] == PARISKV_OK &&
                  memcmp(tj.out, cout, sizeof cout) == 0 && memcmp(&tj.stats, &sst, sizeof sst) == 0,
              "attend_cache_team on 3 threads = attend_cache (statuses %d %d %d)", tj.status[0], tj.status[1], tj.status[2]);
        uint64_t slot[PARISKV_TEAM_SLOT_BYTES / 8];
        pariskv_team solo = {0, 1, team_noop_barrier, NULL, slot};
        float tout[4 * D];
        CHECK(pariskv_attend_cache_team(&solo, &step, q, D * 4, &kv, &dst, &vis, tout, D * 4, NULL) == PARISKV_OK &&
                  memcmp(tout, cout, sizeof cout) == 0, "a team of one");
        expect_error("attend_cache_team NULL team", pariskv_attend_cache_team(NULL, &step, q, D * 4, &kv, &dst, &vis, tout, D * 4, NULL),
                     PARISKV_ERR_INVALID_ARGUMENT, "team");
        pariskv_team bad = solo;
        bad.barrier = NULL;
        expect_error("attend_cache_team NULL barrier", pariskv_attend_cache_team(&bad, &step, q, D * 4, &kv, &dst, &vis, tout, D * 4, NULL),
                     PARISKV_ERR_INVALID_ARGUMENT, "barrier");
        bad = solo;
        bad.slot = (char *)slot + 4;
        expect_error("attend_cache_team misaligned slot", pariskv_attend_cache_team(&bad, &step, q, D * 4, &kv, &dst, &vis, tout, D * 4, NULL),
                     PARISKV_ERR_INVALID_ARGUMENT, "slot");
        bad = solo;
        bad.ith = 1;
        expect_error("attend_cache_team thread 1 of 1", pariskv_attend_cache_team(&bad, &step, q, D * 4, &kv, &dst, &vis, tout, D * 4, NULL),
                     PARISKV_ERR_INVALID_ARGUMENT, "thread 1 of 1");
    }
    expect_error("layout_for(D, NULL)", pariskv_layout_for(D, NULL), PARISKV_ERR_INVALID_ARGUMENT, "out");
    expect_error("layout_for head_dim 12", pariskv_layout_for(12, &lay), PARISKV_ERR_UNSUPPORTED, "head_dim 12");
    expect_error("encode_cells NULL dst", pariskv_encode_cells(D, 1, PARISKV_F32, keys, kstride, cells, NC, NULL, NULL),
                 PARISKV_ERR_INVALID_ARGUMENT, "dst");
    expect_error("encode_cells NULL keys", pariskv_encode_cells(D, 1, PARISKV_F32, NULL, kstride, cells, NC, NULL, &dst),
                 PARISKV_ERR_INVALID_ARGUMENT, "keys");
    expect_error("encode_cells key dtype 9", pariskv_encode_cells(D, 1, 9, keys, kstride, cells, NC, NULL, &dst),
                 PARISKV_ERR_UNSUPPORTED, "dtype 9");
    int64_t outside[2] = {3, NC};
    expect_error("encode_cells cell == n_cells", pariskv_encode_cells(D, 1, PARISKV_F32, keys, kstride, outside, 2, NULL, &dst),
                 PARISKV_ERR_INVALID_ARGUMENT, "out of range");
    outside[1] = -1;
    expect_error("encode_cells cell -1", pariskv_encode_cells(D, 1, PARISKV_F32, keys, kstride, outside, 2, NULL, &dst),
                 PARISKV_ERR_INVALID_ARGUMENT, "out of range");
    expect_error("center_init NULL center", pariskv_center_init(D, PARISKV_F32, keys, kstride, NC, cells, NC, NULL),
                 PARISKV_ERR_INVALID_ARGUMENT, "center");
    expect_error("center_init NULL cells", pariskv_center_init(D, PARISKV_F32, keys, kstride, NC, NULL, NC, center),
                 PARISKV_ERR_INVALID_ARGUMENT, "cells");
    expect_error("center_init cell -1", pariskv_center_init(D, PARISKV_F32, keys, kstride, NC, outside, 2, center),
                 PARISKV_ERR_INVALID_ARGUMENT, "out of range");
    expect_error("center_init head_dim 12", pariskv_center_init(12, PARISKV_F32, keys, kstride, NC, cells, NC, center),
                 PARISKV_ERR_UNSUPPORTED, "head_dim 12");
    expect_error("encode_cells misaligned center", pariskv_encode_cells(D, 1, PARISKV_F32, keys, kstride, cells, NC,
                 (const float *)((const char *)center + 1), &dst), PARISKV_ERR_INVALID_ARGUMENT, "aligned");
    expect_error("attend_cache NULL step", pariskv_attend_cache(NULL, q, D * 4, &kv, &dst, &vis, cout, D * 4, NULL),
                 PARISKV_ERR_INVALID_ARGUMENT, "step");
    pariskv_step bad_step = step;
    bad_step.top_k = 0;
    expect_error("attend_cache top_k 0", pariskv_attend_cache(&bad_step, q, D * 4, &kv, &dst, &vis, cout, D * 4, NULL),
                 PARISKV_ERR_INVALID_ARGUMENT, "top_k");
    bad_step = step;
    bad_step.refine = UINT32_MAX;
    expect_error("attend_cache refine 2^32-1", pariskv_attend_cache(&bad_step, q, D * 4, &kv, &dst, &vis, cout, D * 4, NULL),
                 PARISKV_ERR_INVALID_ARGUMENT, "refine");
    bad_step = step;
    bad_step.head_dim = 12;
    expect_error("attend_cache head_dim 12", pariskv_attend_cache(&bad_step, q, D * 4, &kv, &dst, &vis, cout, D * 4, NULL),
                 PARISKV_ERR_UNSUPPORTED, "head_dim 12");
    pariskv_codes short_codes = dst;
    short_codes.n_cells = NC - 1;
    expect_error("attend_cache codes shorter than the cache",
                 pariskv_attend_cache(&step, q, D * 4, &kv, &short_codes, &vis, cout, D * 4, NULL),
                 PARISKV_ERR_INVALID_ARGUMENT, "codes hold");
    expect_error("attend_cache out_stride 6", pariskv_attend_cache(&step, q, D * 4, &kv, &dst, &vis, cout, 6, NULL),
                 PARISKV_ERR_INVALID_ARGUMENT, "out_stride");
    pariskv_visibility no_pos = {PARISKV_F32, mask, NULL};
    expect_error("attend_cache NULL positions", pariskv_attend_cache(&step, q, D * 4, &kv, &dst, &no_pos, cout, D * 4, NULL),
                 PARISKV_ERR_INVALID_ARGUMENT, "visibility.pos");
    free(cb); free(nb); free(wb);

    /* ---- the CUDA entry points' argument checks (any build, with or without a GPU) ---- */
    expect_error("cuda_available(NULL)", pariskv_cuda_available(NULL), PARISKV_ERR_INVALID_ARGUMENT, "out");
    void *hbuf = NULL;
    uint64_t dptr = 0;
    expect_error("host_alloc NULL host", pariskv_host_alloc(64, NULL, &dptr), PARISKV_ERR_INVALID_ARGUMENT, "host");
    expect_error("host_alloc NULL device", pariskv_host_alloc(64, &hbuf, NULL), PARISKV_ERR_INVALID_ARGUMENT, "device");
    expect_error("cuda_step_create NULL out", pariskv_cuda_step_create(D, D, 1, 1024, 4, 8, NULL),
                 PARISKV_ERR_INVALID_ARGUMENT, "out");
    pariskv_cuda_row_cache rc;
    memset(&rc, 0, sizeof rc);
    rc.n_streams = 1;
    rc.n_kv_heads = 2;
    rc.slots = 4096;
    rc.k_row_bytes = rc.v_row_bytes = 2 * D;
    size_t rc_bytes = 0;
    expect_error("row_cache_bytes NULL cache", pariskv_cuda_row_cache_bytes(NULL, &rc_bytes),
                 PARISKV_ERR_INVALID_ARGUMENT, "cache");
    expect_error("row_cache_bytes NULL out", pariskv_cuda_row_cache_bytes(&rc, NULL), PARISKV_ERR_INVALID_ARGUMENT, "out");
    expect_error("row_cache_clear NULL cache", pariskv_cuda_row_cache_clear(NULL, NULL), PARISKV_ERR_INVALID_ARGUMENT,
                 "cache");
    uint64_t rc_hits = 0, rc_misses = 0;
    expect_error("row_cache_stats NULL cache", pariskv_cuda_row_cache_stats(NULL, &rc_hits, &rc_misses),
                 PARISKV_ERR_INVALID_ARGUMENT, "cache");
    expect_error("row_cache_stats NULL hits", pariskv_cuda_row_cache_stats(&rc, NULL, &rc_misses),
                 PARISKV_ERR_INVALID_ARGUMENT, "hits");
    CHECK(pariskv_host_free(NULL) == PARISKV_OK, "host_free(NULL) is a no-op");
    pariskv_cuda_step_free(NULL);
    if (!has_cuda) {
        pariskv_status got = pariskv_host_alloc(64, &hbuf, &dptr);
        CHECK((got == PARISKV_ERR_UNSUPPORTED || got == PARISKV_ERR_CUDA) && strstr(pariskv_last_error(), "CUDA"),
              "host_alloc without CUDA: status %d, %s", (int)got, pariskv_last_error());
        pariskv_cuda_step *cs = (pariskv_cuda_step *)0x1;
        got = pariskv_cuda_step_create(D, D, 1, 1024, 4, 8, &cs);
        CHECK((got == PARISKV_ERR_UNSUPPORTED || got == PARISKV_ERR_CUDA) && cs == NULL,
              "cuda_step_create without CUDA: status %d, %s", (int)got, pariskv_last_error());
    }
    /* (its shape's checks need a CUDA build: tests/gpu.rs, row_cache_c_abi_checks_its_shape) */
    if (pariskv_cuda_row_cache_bytes(&rc, &rc_bytes) == PARISKV_OK) {
        CHECK(rc_bytes > 4096u * 2 * 4 * D, "row cache of 2 x 4096 slots: %zu bytes", rc_bytes);
    } else {
        CHECK(strstr(pariskv_last_error(), "CUDA") != NULL, "row_cache_bytes without CUDA: %s", pariskv_last_error());
    }

    /* ---- stale and forged handles ---- */
    size_t dummy = 0;
    expect_error("len on a freed handle", pariskv_index_len(empty, &dummy), PARISKV_ERR_INVALID_ARGUMENT, "not a live handle");
    expect_error("search on a freed handle", pariskv_index_search(empty, PARISKV_F32, q, 8, pos, count),
                 PARISKV_ERR_INVALID_ARGUMENT, "not a live handle");
    pariskv_index_free(empty); /* a double free is a no-op that says so */
    bad_cases++;
    CHECK(strstr(pariskv_last_error(), "not a live handle") != NULL, "double free: %s", pariskv_last_error());
    printf("bad input %2d: %-44s -> no-op: %s\n", bad_cases, "free twice", pariskv_last_error());
    expect_error("append on a forged handle", pariskv_index_append((pariskv_index *)(uintptr_t)0x1230, PARISKV_F32, keys, vals, 1),
                 PARISKV_ERR_INVALID_ARGUMENT, "not a live handle");

    /* ---- several threads ---- */
    {
        enum { T = 4, K = 300 };
        int64_t ref_pos[NKV * K];
        uint32_t ref_count[NKV];
        CHECK(pariskv_index_search(ix, PARISKV_F32, q, K, ref_pos, ref_count) == PARISKV_OK, "reference search");
        static int64_t tpos[T][NKV * K];
        static uint32_t tcount[T][NKV];
        search_job jobs[T];
        pthread_t th[T];
        pariskv_index *own[T];

        /* one handle, four threads searching it at once: every answer the single-threaded one */
        for (int t = 0; t < T; t++) {
            jobs[t] = (search_job){ix, q, K, 20, tpos[t], tcount[t], PARISKV_OK, 0, ""};
            pthread_create(&th[t], NULL, run_search, &jobs[t]);
        }
        int same = 1;
        for (int t = 0; t < T; t++) {
            pthread_join(th[t], NULL);
            same &= jobs[t].last == PARISKV_OK && memcmp(tpos[t], ref_pos, sizeof ref_pos) == 0;
        }
        thread_case("4 threads x 20 searches on one handle", same, "an answer differs from the single-threaded one");

        /* four handles, one thread each */
        for (int t = 0; t < T; t++) {
            own[t] = NULL;
            CHECK(pariskv_index_create(&cfg, &own[t]) == PARISKV_OK, "create %d", t);
            /* appended in the same two calls as ix: the first append sets the key centre */
            CHECK(pariskv_index_append(own[t], PARISKV_F32, keys, vals, N1) == PARISKV_OK &&
                      pariskv_index_append(own[t], PARISKV_F32, keys + (size_t)N1 * NKV * D, vals + (size_t)N1 * NKV * D, N2) ==
                          PARISKV_OK, "append %d", t);
            jobs[t] = (search_job){own[t], q, K, 20, tpos[t], tcount[t], PARISKV_OK, 0, ""};
            pthread_create(&th[t], NULL, run_search, &jobs[t]);
        }
        same = 1;
        for (int t = 0; t < T; t++) {
            pthread_join(th[t], NULL);
            same &= jobs[t].last == PARISKV_OK && memcmp(tpos[t], ref_pos, sizeof ref_pos) == 0;
        }
        thread_case("4 threads x 20 searches, one handle each", same, "an answer differs from the single-threaded one");

        /* appends racing searches on one handle: all succeed, no token lost */
        append_job aj = {own[0], keys, vals, 100, 10, PARISKV_OK};
        pthread_t at;
        pthread_create(&at, NULL, run_append, &aj);
        for (int t = 1; t < 3; t++) {
            jobs[t] = (search_job){own[0], q, K, 20, tpos[t], tcount[t], PARISKV_OK, 0, ""};
            pthread_create(&th[t], NULL, run_search, &jobs[t]);
        }
        pthread_join(at, NULL);
        int ok = aj.last == PARISKV_OK;
        for (int t = 1; t < 3; t++) {
            pthread_join(th[t], NULL);
            ok &= jobs[t].last == PARISKV_OK;
        }
        size_t grown = 0;
        ok &= pariskv_index_len(own[0], &grown) == PARISKV_OK && grown == (size_t)N + 1000;
        thread_case("1 thread appending, 2 searching one handle", ok, "a call failed or tokens were lost");

        /* a free racing a thread that searches the handle until a call fails */
        jobs[1] = (search_job){own[1], q, K, 0, tpos[1], tcount[1], PARISKV_OK, 0, ""};
        pthread_create(&th[1], NULL, run_search, &jobs[1]);
        while (__atomic_load_n(&jobs[1].calls, __ATOMIC_ACQUIRE) < 3) {
        } /* searches are under way */
        pariskv_index_free(own[1]);
        pthread_join(th[1], NULL);
        ok = jobs[1].last == PARISKV_ERR_INVALID_ARGUMENT && strstr(jobs[1].message, "not a live handle") != NULL;
        thread_case("free while another thread searches the handle", ok, jobs[1].message);
        printf("  (the searching thread made %ld calls before the free)\n", jobs[1].calls);

        /* each thread keeps its own last error */
        pariskv_status mine = pariskv_index_len(NULL, &dummy);
        jobs[2] = (search_job){own[2], q, 0, 1, tpos[2], tcount[2], PARISKV_OK, 0, ""}; /* k = 0: fails */
        pthread_create(&th[2], NULL, run_search, &jobs[2]);
        pthread_join(th[2], NULL);
        ok = mine == PARISKV_ERR_INVALID_ARGUMENT && strstr(pariskv_last_error(), "NULL") != NULL &&
             strstr(jobs[2].message, "k must") != NULL;
        thread_case("error messages are per thread", ok, pariskv_last_error());

        for (int t = 0; t < T; t++) pariskv_index_free(t == 1 ? NULL : own[t]);
    }

    /* Engine settings: the text form, one setting at a time, the table, the threshold, op params. */
    {
        pariskv_settings ps, back;
        char text[256];
        size_t tlen = 0;
        CHECK(pariskv_settings_init(&ps) == PARISKV_OK && ps.top_k == 0 && ps.n_sink == 4 && ps.n_window == 512 &&
                  ps.refine == PARISKV_DEFAULT_REFINE && ps.center == 1 && ps.offload == 0 &&
                  ps.ratios == PARISKV_RATIOS_TUNED && ps.gqa == PARISKV_GQA_GROUP,
              "settings defaults");
        CHECK(pariskv_settings_format(&ps, text, sizeof(text), &tlen) == PARISKV_OK && tlen == 0 && text[0] == 0,
              "defaults format as \"\": '%s'", text);
        CHECK(pariskv_settings_parse("topk=256,window=64,gqa=mean,center=off,candidates=0.25", &ps) == PARISKV_OK &&
                  ps.top_k == 256 && ps.n_window == 64 && ps.gqa == PARISKV_GQA_MEAN && ps.center == 0 &&
                  ps.candidates == 0.25f,
              "parse: %s", pariskv_last_error());
        CHECK(pariskv_settings_set(&ps, "refine", "3") == PARISKV_OK && ps.refine == 3, "set refine");
        CHECK(pariskv_settings_format(&ps, text, sizeof(text), &tlen) == PARISKV_OK &&
                  pariskv_settings_parse(text, &back) == PARISKV_OK && memcmp(&ps, &back, sizeof(ps)) == 0,
              "format then parse gives the settings back: '%s'", text);
        char value[16];
        size_t vlen = 0;
        CHECK(pariskv_settings_value(&ps, "gqa", value, sizeof(value), &vlen) == PARISKV_OK && strcmp(value, "mean") == 0,
              "value of gqa: '%s'", value);
        uint64_t threshold = 0;
        CHECK(pariskv_settings_dense_threshold(&ps, PARISKV_BACKEND_CUDA, &threshold) == PARISKV_OK && threshold == UINT64_MAX,
              "dense threshold on CUDA, K/V in GPU memory: none yet (%llu)", (unsigned long long)threshold);
        ps.offload = 1;
        CHECK(pariskv_settings_dense_threshold(&ps, PARISKV_BACKEND_CUDA, &threshold) == PARISKV_OK && threshold == 4 + 64 + 2 * 256,
              "dense threshold on CUDA with offload %llu", (unsigned long long)threshold);
        ps.offload = 0;
        CHECK(pariskv_settings_dense_threshold(&ps, PARISKV_BACKEND_CPU, &threshold) == PARISKV_OK && threshold == 12288,
              "dense threshold on the CPU %llu", (unsigned long long)threshold);
        expect_error("dense threshold: backend 7", pariskv_settings_dense_threshold(&ps, 7, &threshold),
                     PARISKV_ERR_UNSUPPORTED, "backend 7");
        uint32_t n_settings = 0;
        pariskv_setting_info info;
        CHECK(pariskv_setting_count(&n_settings) == PARISKV_OK && n_settings >= 10 &&
                  pariskv_setting_describe(0, &info) == PARISKV_OK && strcmp(info.key, "topk") == 0 &&
                  info.kind == PARISKV_SETTING_COUNT && strlen(info.help) > 20,
              "the settings table: %u settings", n_settings);
        int32_t op[PARISKV_OP_PARAMS];
        pariskv_step step;
        CHECK(pariskv_op_params_pack(&ps, 0.125f, 30.0f, op) == PARISKV_OK &&
                  pariskv_op_params_step(op, 128, 128, 4, &step) == PARISKV_OK && step.top_k == 256 &&
                  step.n_local == 64 && step.refine == 3 && step.gqa_policy == PARISKV_GQA_MEAN &&
                  step.ratio_table == PARISKV_RATIOS_FIXED && step.rho_cand == 0.25 && step.scale == 0.125f &&
                  step.softcap == 30.0f && step.n_heads == 4 && step.seed == PARISKV_DEFAULT_SEED,
              "op params round trip: %s", pariskv_last_error());

        back = ps;
        expect_error("settings parse: top-k '1e3'", pariskv_settings_parse("topk=1e3", &back),
                     PARISKV_ERR_INVALID_ARGUMENT, "not a whole number");
        CHECK(memcmp(&back, &ps, sizeof(ps)) == 0, "a failed parse leaves the settings untouched");
        expect_error("settings parse: window 2147483648", pariskv_settings_parse("window=2147483648", &back),
                     PARISKV_ERR_INVALID_ARGUMENT, "out of range");
        expect_error("settings parse: unknown key", pariskv_settings_parse("speed=max", &back),
                     PARISKV_ERR_INVALID_ARGUMENT, "no setting 'speed'");
        expect_error("settings set: refine 0", pariskv_settings_set(&back, "refine", "0"),
                     PARISKV_ERR_INVALID_ARGUMENT, "out of range 1..=64");
        expect_error("settings set: gqa 'both'", pariskv_settings_set(&back, "gqa", "both"),
                     PARISKV_ERR_INVALID_ARGUMENT, "per-head, mean or group");
        expect_error("settings format: buffer too small", pariskv_settings_format(&ps, text, 4, &tlen),
                     PARISKV_ERR_INVALID_ARGUMENT, "too small");
        CHECK(tlen > 4, "the needed length is reported: %zu", tlen);
        pariskv_settings odd = ps;
        odd.ratios = PARISKV_RATIOS_FIXED;
        expect_error("settings: ratios FIXED", pariskv_settings_dense_threshold(&odd, PARISKV_BACKEND_CPU, &threshold),
                     PARISKV_ERR_INVALID_ARGUMENT, "candidates");
        odd = ps;
        odd.top_k = 0;
        expect_error("op params: top-k 0", pariskv_op_params_pack(&odd, 1.0f, 0.0f, op), PARISKV_ERR_INVALID_ARGUMENT,
                     "at least one key");
        expect_error("op params: scale NaN", pariskv_op_params_pack(&ps, NAN, 0.0f, op), PARISKV_ERR_INVALID_ARGUMENT,
                     "attention scale");
        CHECK(pariskv_op_params_pack(&ps, 0.125f, 30.0f, op) == PARISKV_OK, "pack again: %s", pariskv_last_error());
        op[5] = 7;
        expect_error("op params: GQA policy 7", pariskv_op_params_step(op, 128, 128, 4, &step),
                     PARISKV_ERR_INVALID_ARGUMENT, "0 (per-head), 1 (mean) or 2 (group)");
        expect_error("setting describe: past the end", pariskv_setting_describe(n_settings, &info),
                     PARISKV_ERR_INVALID_ARGUMENT, "settings)");
    }
    {
        /* A config of another header's size is refused before anything is read or written. */
        uint64_t depth = 0;
        pariskv_config later = cfg;
        pariskv_config other = { .struct_size = sizeof(pariskv_config) - 8 };
        expect_error("config_init struct_size of another header", pariskv_config_init(&other, D, NQ, NKV),
                     PARISKV_ERR_INVALID_ARGUMENT, "struct_size");
        CHECK(other.head_dim == 0, "refused config_init wrote nothing");
        pariskv_index *no = NULL;
        later.struct_size = 0;
        expect_error("create with struct_size 0", pariskv_index_create(&later, &no), PARISKV_ERR_INVALID_ARGUMENT,
                     "struct_size");
        expect_error("dense_threshold with struct_size 0", pariskv_config_dense_threshold(&later, &depth),
                     PARISKV_ERR_INVALID_ARGUMENT, "struct_size");
        /* The last error belongs to the last call: a call that succeeds clears it. */
        CHECK(pariskv_config_dense_threshold(&cfg, &depth) == PARISKV_OK && pariskv_last_error()[0] == '\0',
              "last error after a successful call: '%s'", pariskv_last_error());
    }

    {
        /* q8_0 K/V (ggml's block_q8_0: f16 scale, 32 int8): the cache calls read each row as
           its dequantized values, so q8_0 rows give, bit for bit, the codes and outputs of
           the same values in f32. The scale 2^-6 is exact in f16 and f32. */
        enum { QB = D / 32, QROW = QB * 34 };
        const uint16_t scale_bits = 9 << 10; /* 2^-6 */
        uint8_t *kq = calloc(NC, QROW), *vq = calloc(NC, QROW);
        float *kf = malloc(sizeof(float) * NC * D), *vf = malloc(sizeof(float) * NC * D);
        for (int c = 0; c < NC; c++) {
            for (int b = 0; b < QB; b++) {
                uint8_t *kb8 = kq + (size_t)c * QROW + b * 34, *vb8 = vq + (size_t)c * QROW + b * 34;
                memcpy(kb8, &scale_bits, 2);
                memcpy(vb8, &scale_bits, 2);
                for (int j = 0; j < 32; j++) {
                    const int e = b * 32 + j;
                    float kx = roundf(keys[(size_t)c * NKV * D + e] * 64.0f), vx = roundf(vals[(size_t)c * NKV * D + e] * 64.0f);
                    kx = kx > 127 ? 127 : kx < -127 ? -127 : kx;
                    vx = vx > 127 ? 127 : vx < -127 ? -127 : vx;
                    kb8[2 + j] = (uint8_t)(int8_t)kx;
                    vb8[2 + j] = (uint8_t)(int8_t)vx;
                    kf[(size_t)c * D + e] = kx / 64.0f;
                    vf[(size_t)c * D + e] = vx / 64.0f;
                }
            }
        }
        uint8_t *c8 = malloc((size_t)NC * lay.code_bytes), *n8 = malloc((size_t)NC * lay.nibble_bytes);
        uint8_t *c32 = malloc((size_t)NC * lay.code_bytes), *n32 = malloc((size_t)NC * lay.nibble_bytes);
        uint16_t *w8 = malloc(2 * (size_t)NC * lay.n_weights), *w32 = malloc(2 * (size_t)NC * lay.n_weights);
        pariskv_codes q8c = {c8, n8, w8, NC, NULL, NULL}, f32c = {c32, n32, w32, NC, NULL, NULL};
        float cq[D + 1] = {0}, cf[D + 1] = {0};
        CHECK(pariskv_center_init(D, PARISKV_Q8_0, kq, QROW, NC, cells, NC, cq) == PARISKV_OK &&
                  pariskv_center_init(D, PARISKV_F32, kf, sizeof(float) * D, NC, cells, NC, cf) == PARISKV_OK &&
                  memcmp(cq, cf, sizeof cq) == 0,
              "q8_0 key centre = the f32 one: %s", pariskv_last_error());
        CHECK(pariskv_encode_cells(D, cfg.seed, PARISKV_Q8_0, kq, QROW, cells, NC, cq, &q8c) == PARISKV_OK &&
                  pariskv_encode_cells(D, cfg.seed, PARISKV_F32, kf, sizeof(float) * D, cells, NC, cf, &f32c) == PARISKV_OK &&
                  memcmp(c8, c32, (size_t)NC * lay.code_bytes) == 0 && memcmp(n8, n32, (size_t)NC * lay.nibble_bytes) == 0 &&
                  memcmp(w8, w32, 2 * (size_t)NC * lay.n_weights) == 0,
              "q8_0 codes = the f32 codes: %s", pariskv_last_error());
        pariskv_kv q8kv = {PARISKV_Q8_0, kq, QROW, PARISKV_Q8_0, vq, QROW, NC};
        pariskv_kv f32kv = {PARISKV_F32, kf, sizeof(float) * D, PARISKV_F32, vf, sizeof(float) * D, NC};
        float o8[4 * D], o32[4 * D];
        pariskv_step_stats s8, s32;
        CHECK(pariskv_attend_cache(&step, q, D * 4, &q8kv, &q8c, &vis, o8, D * 4, &s8) == PARISKV_OK &&
                  pariskv_attend_cache(&step, q, D * 4, &f32kv, &f32c, &vis, o32, D * 4, &s32) == PARISKV_OK &&
                  memcmp(o8, o32, sizeof o8) == 0 && memcmp(&s8, &s32, sizeof s8) == 0 && s8.n_attended < NC,
              "q8_0 step = the f32 step over the same values, bit for bit (%zu of %d rows): %s", s8.n_attended, NC,
              pariskv_last_error());
        expect_error("encode_cells q8_0 stride 100", pariskv_encode_cells(D, 1, PARISKV_Q8_0, kq, 100, cells, NC, NULL, &q8c),
                     PARISKV_ERR_INVALID_ARGUMENT, "block) size 34");
        expect_error("center_init q8_0 head_dim 48", pariskv_center_init(48, PARISKV_Q8_0, kq, QROW, NC, cells, NC, cq),
                     PARISKV_ERR_INVALID_ARGUMENT, "whole blocks");
        pariskv_visibility q8mask = {PARISKV_Q8_0, kq, cpos};
        expect_error("attend_cache q8_0 mask", pariskv_attend_cache(&step, q, D * 4, &q8kv, &q8c, &q8mask, o8, D * 4, NULL),
                     PARISKV_ERR_INVALID_ARGUMENT, "not q8_0");
        free(kq); free(vq); free(kf); free(vf); free(c8); free(n8); free(w8); free(c32); free(n32); free(w32);
    }

    /* The index still works after all of that. */
    CHECK(pariskv_index_search(ix, PARISKV_F32, q, 300, pos, count) == PARISKV_OK && pos[300] == 1234, "index intact");
    {
        /* Fewer than k come back where the zone holds fewer: N - sink - window cells. */
        int64_t *all = malloc(sizeof(int64_t) * NKV * N);
        uint32_t got[NKV] = { 0 };
        CHECK(pariskv_index_search(ix, PARISKV_F32, q, N, all, got) == PARISKV_OK && got[0] == N - 516 &&
                  got[1] == N - 516 && all[N - 516] == -1 && all[N - 1] == -1,
              "search with k = N: %u and %u positions, the zone holds %d", got[0], got[1], N - 516);
        free(all);
    }

    pariskv_index_free(ix);
    pariskv_index_free(dx);
    free(keys); free(vals); free(kb); free(vb);
    printf("%d checks, %d bad-input cases, %d thread cases, %d failures\n", checks, bad_cases, thread_cases, failures);
    return failures == 0 && bad_cases >= 30 && thread_cases >= 5 ? 0 : 1;
}
