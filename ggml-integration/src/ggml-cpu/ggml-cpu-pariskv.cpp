// ParisKV ops on the CPU backend: the work is split over the ggml thread pool and done by
// the pariskv library, one call per stream and KV head (encode) or per token and KV head
// (attention; threads share a call when there are fewer such units than threads).
// GGML_PARISKV_STATS=1 logs what each attention call did (ggml_pariskv_log_steps).

#include "ggml-pariskv.h"

#include "ggml-cpu-impl.h"
#include "ggml-impl.h"
#include "ops.h"

#include <algorithm>
#include <cstdlib>
#include <vector>

static pariskv_dtype pariskv_dtype_of(ggml_type type) {
    pariskv_dtype d;
    if (!ggml_pariskv_dtype(type, &d)) {
        GGML_ABORT("pariskv: unsupported type %s", ggml_type_name(type));
    }
    return d;
}

static void pariskv_check(pariskv_status status, const char * what) {
    if (status != PARISKV_OK) {
        GGML_ABORT("pariskv: %s failed: %s", what, pariskv_last_error());
    }
}

static void ggml_compute_forward_pariskv_encode(const ggml_compute_params * params, ggml_tensor * dst) {
    const ggml_tensor * k       = dst->src[0];
    const ggml_tensor * idxs    = dst->src[1];
    const ggml_tensor * codes   = dst->src[2];
    const ggml_tensor * nibbles = dst->src[3];
    const ggml_tensor * weights = dst->src[4];
    const ggml_tensor * centers = dst->src[5];
    // the kept code histogram, or NULL (a device's row cache, GGML_PARISKV_ENCODE_ROWS, is
    // not the CPU's)
    const ggml_tensor * kept    = dst->src[GGML_PARISKV_ENCODE_KEPT];

    const int64_t n_cells   = codes->ne[1];
    const int64_t n_head_kv = codes->ne[2];
    const int64_t n_stream  = codes->ne[3];
    const int64_t head_dim  = k->ne[0]/n_head_kv;
    const pariskv_dtype dtype = pariskv_dtype_of(k->type);

    // key centres not set yet are set from all the written cells (by one thread) first
    const int64_t * all = (const int64_t *) idxs->data;
    if (centers) {
        if (params->ith == 0) {
            for (int64_t h = 0; h < n_head_kv; ++h) {
                const char * keys = (const char *) k->data + ggml_row_size(k->type, h*head_dim);
                pariskv_check(pariskv_center_init((uint32_t) head_dim, dtype, keys, k->nb[1], (size_t) (n_cells*n_stream),
                                                  all, (size_t) ggml_nelements(idxs), (float *) centers->data + h*centers->ne[0]),
                              "key centre");
            }
        }
        ggml_barrier(params->threadpool);
    }

    // the written cells of stream s, as cells of the stream
    auto stream_cells = [&](int64_t s, std::vector<int64_t> & out) {
        out.clear();
        for (int64_t i = 0; i < ggml_nelements(idxs); ++i) {
            if (all[i]/n_cells == s) {
                out.push_back(all[i] % n_cells);
            }
        }
    };
    // the kept histogram: the cells about to be rewritten leave it (one thread), and come
    // back with their new codes once every thread has encoded
    auto tally = [&](uint32_t add) {
        if (params->ith == 0) {
            std::vector<int64_t> written;
            for (int64_t s = 0; s < n_stream; ++s) {
                stream_cells(s, written);
                for (int64_t h = 0; h < n_head_kv && !written.empty(); ++h) {
                    const pariskv_codes c = ggml_pariskv_codes_of(codes, nibbles, weights, kept, s, h);
                    pariskv_check(pariskv_codes_tally((uint32_t) head_dim, &c, written.data(), written.size(), add), "histogram");
                }
            }
        }
        ggml_barrier(params->threadpool);
    };
    if (kept) {
        tally(0);
    }

    // this thread's share of the written cells
    const int64_t n  = ggml_nelements(idxs);
    const int64_t dr = (n + params->nth - 1)/params->nth;
    const int64_t i0 = std::min(n, dr*params->ith);
    const int64_t i1 = std::min(n, i0 + dr);

    thread_local std::vector<int64_t> cells;

    for (int64_t s = 0; s < n_stream; ++s) {
        cells.clear();
        for (int64_t i = i0; i < i1; ++i) {
            GGML_ASSERT(all[i] >= 0 && all[i] < n_cells*n_stream);
            if (all[i]/n_cells == s) {
                cells.push_back(all[i] % n_cells);
            }
        }
        if (cells.empty()) {
            continue;
        }
        for (int64_t h = 0; h < n_head_kv; ++h) {
            const pariskv_codes c = ggml_pariskv_codes_of(codes, nibbles, weights, nullptr, s, h);
            const char * keys = (const char *) k->data + (s*n_cells)*k->nb[1] + ggml_row_size(k->type, h*head_dim);
            const float * center = centers ? (const float *) centers->data + h*centers->ne[0] : nullptr;
            pariskv_check(pariskv_encode_cells((uint32_t) head_dim, PARISKV_DEFAULT_SEED, dtype,
                                               keys, k->nb[1], cells.data(), cells.size(), center, &c),
                          "encode");
        }
    }
    if (kept) {
        ggml_barrier(params->threadpool);
        tally(1);
    }
}

static void pariskv_barrier(void * threadpool) {
    ggml_barrier((ggml_threadpool *) threadpool);
}

static void ggml_compute_forward_pariskv_attn(const ggml_compute_params * params, ggml_tensor * dst) {
    const ggml_pariskv_attn_args a = ggml_pariskv_attn_args_of(dst);
    const int64_t n_head_kv = a.n_head_kv, n_tps = a.n_tps, group = a.group;
    const int64_t n_units = a.n_tokens*n_head_kv;

    static const bool log_stats = ggml_pariskv_log_steps();

    // units of work: (token, KV head). With at least as many units as threads each thread
    // takes whole units, dealt round-robin; with fewer (one decoding sequence over one or
    // two KV heads) all threads work on each unit in turn, sharing its loops.
    const bool teams = n_units < params->nth;
    pariskv_team team;
    team.ith         = (uint32_t) params->ith;
    team.nth         = (uint32_t) params->nth;
    team.barrier     = pariskv_barrier;
    team.barrier_ctx = params->threadpool;
    team.slot        = params->wdata;
    GGML_ASSERT(!teams || params->wsize >= PARISKV_TEAM_SLOT_BYTES);

    for (int64_t u = teams ? 0 : params->ith; u < n_units; u += teams ? 1 : params->nth) {
        const int64_t t  = u/n_head_kv;
        const int64_t h  = u % n_head_kv;
        const int64_t s  = t/n_tps;
        const int64_t tr = t % n_tps;

        pariskv_kv kv;
        kv.k_dtype  = pariskv_dtype_of(a.k->type);
        kv.k        = (const char *) a.k->data + s*a.k->nb[3] + h*a.k->nb[1];
        kv.k_stride = a.k->nb[2];
        kv.v_dtype  = pariskv_dtype_of(a.v->type);
        kv.v        = (const char *) a.v->data + s*a.v->nb[3] + h*a.v->nb[1];
        kv.v_stride = a.v->nb[2];
        kv.n_cells  = (size_t) a.n_kv;

        pariskv_visibility vis;
        vis.mask_dtype = pariskv_dtype_of(a.mask->type);
        vis.mask       = (const char *) a.mask->data + s*a.mask->nb[3] + tr*a.mask->nb[1];
        vis.pos        = (const int32_t *) ((const char *) a.pos->data + s*a.pos->nb[1]);

        const pariskv_codes c = ggml_pariskv_codes_of(a.codes, a.nibbles, a.weights, a.kept, s, h);

        const float * qh = (const float *) ((const char *) a.q->data + t*a.q->nb[2] + h*group*a.q->nb[1]);
        float * out = (float *) ((char *) dst->data + t*dst->nb[2] + h*group*dst->nb[1]);

        pariskv_step_stats st = {};
        if (teams) {
            pariskv_check(pariskv_attend_cache_team(&team, &a.step, qh, a.q->nb[1], &kv, &c, &vis, out, dst->nb[1], &st), "attention");
        } else {
            pariskv_check(pariskv_attend_cache(&a.step, qh, a.q->nb[1], &kv, &c, &vis, out, dst->nb[1], &st), "attention");
        }
        if (log_stats && (!teams || params->ith == 0)) {
            // the zone's code histogram counted by the step (not taken from the kept one) is said
            GGML_LOG_INFO("pariskv_attn: token %lld, KV head %lld: %zu cells visible, %zu in the zone, %zu candidates, %zu attended%s\n",
                          (long long) t, (long long) h, st.n_visible, st.n_zone, st.n_candidates, st.n_attended,
                          st.zone_counted ? ", zone histogram counted" : "");
        }
    }
}

size_t ggml_compute_forward_pariskv_work_size(const ggml_tensor * dst) {
    GGML_ASSERT(dst->op == GGML_OP_PARISKV_ATTN);
    return PARISKV_TEAM_SLOT_BYTES;
}

void ggml_compute_forward_pariskv(const ggml_compute_params * params, ggml_tensor * dst) {
    switch (dst->op) {
        case GGML_OP_PARISKV_ENCODE: ggml_compute_forward_pariskv_encode(params, dst); break;
        case GGML_OP_PARISKV_ATTN:   ggml_compute_forward_pariskv_attn(params, dst);   break;
        default: GGML_ABORT("%s: not a ParisKV op: %s", __func__, ggml_op_name(dst->op));
    }
}
