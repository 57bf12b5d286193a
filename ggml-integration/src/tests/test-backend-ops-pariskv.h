// test-backend-ops cases of the ParisKV ops (GGML_PARISKV=ON): test-backend-ops.cpp includes
// this file after its own cases and calls pariskv_add_eval_cases from make_test_cases_eval.

#include "ggml-pariskv.h"

// GGML_OP_PARISKV_ENCODE + GGML_OP_PARISKV_ATTN: the index encoded from K, then one decode
// step over sink + top-k + window; the codes must match bitwise, the output to rounding.
// With a kept code histogram (ggml_pariskv_keep_histogram) the encode keeps it and the step
// starts from it: kept 1 encodes only the cells in the step's view (the step takes the
// histogram from the kept one), kept 2 every cell of the cache (counted cells beyond the
// view: the step must count the zone itself). With a row cache (rows > 0 slots per KV head,
// ggml_pariskv_use_row_cache; a device's, the CPU ignores it) the step copies its rows
// into the empty cache and reads them there, and the encode forgets the cells it writes.
struct test_pariskv : public test_case {
    const int64_t hs;       // K head size
    const int64_t hsv;      // V head size
    const int64_t nh_kv;    // KV heads
    const int64_t group;    // query heads per KV head
    const int64_t n_kv;     // cells attended (the view of the cache)
    const int64_t ns;       // streams
    const int64_t n_tps;    // tokens per stream (several: unified multi-sequence masks)
    const ggml_type type_K;
    const ggml_type type_V;
    const int top_k;
    const int gqa;          // a pariskv_gqa: 0 per query head, 1 the group-mean query, 2 k rows for the group
    const int kept;         // 0 no kept histogram; 1 kept, the view's cells encoded; 2 kept, every cell
    const int rows;         // slots of a row cache per KV head and stream, 0: none

    std::string vars() override {
        return VARS_TO_STR13(hs, hsv, nh_kv, group, n_kv, ns, n_tps, type_K, type_V, top_k, gqa, kept, rows);
    }

    test_pariskv(int64_t hs, int64_t hsv, int64_t nh_kv, int64_t group, int64_t n_kv, int64_t ns, int64_t n_tps,
                 ggml_type type_K, ggml_type type_V, int top_k, int gqa, int kept = 0, int rows = 0)
        : hs(hs), hsv(hsv), nh_kv(nh_kv), group(group), n_kv(n_kv), ns(ns), n_tps(n_tps),
          type_K(type_K), type_V(type_V), top_k(top_k), gqa(gqa), kept(kept), rows(rows) {}

    // the cache holds more cells than the step looks at
    int64_t n_cells() const { return n_kv + 100; }
    // cells encoded per stream
    int64_t n_encoded() const { return kept == 1 ? n_kv : n_cells(); }

    ggml_tensor * build_graph(ggml_context * ctx) override {
        int64_t dims[3];
        GGML_ASSERT(ggml_pariskv_index_dims(hs, dims));

        ggml_tensor * kc = ggml_new_tensor_3d(ctx, type_K, hs*nh_kv, n_cells(), ns);
        ggml_set_name(kc, "k_cache");
        ggml_tensor * vc = ggml_new_tensor_3d(ctx, type_V, hsv*nh_kv, n_cells(), ns);
        ggml_set_name(vc, "v_cache");
        ggml_tensor * idxs = ggml_new_tensor_1d(ctx, GGML_TYPE_I64, n_encoded()*ns);
        ggml_set_name(idxs, "idxs");

        ggml_tensor * codes   = ggml_new_tensor_4d(ctx, GGML_TYPE_I8,  dims[0], n_cells(), nh_kv, ns);
        ggml_tensor * nibbles = ggml_new_tensor_4d(ctx, GGML_TYPE_I8,  dims[1], n_cells(), nh_kv, ns);
        ggml_tensor * weights = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, dims[2], n_cells(), nh_kv, ns);
        ggml_set_name(codes, "codes");
        ggml_set_name(nibbles, "nibbles");
        ggml_set_name(weights, "weights");
        ggml_tensor * centers = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hs + 1, nh_kv);
        ggml_set_name(centers, "centers");

        ggml_tensor * encoded = ggml_pariskv_encode(ctx, kc, idxs, codes, nibbles, weights, centers);
        ggml_set_name(encoded, "encoded");
        ggml_tensor * hist = nullptr;
        if (kept) {
            hist = ggml_new_tensor_3d(ctx, GGML_TYPE_I32, ggml_pariskv_kept_ne0(dims[0], n_cells()), nh_kv, ns);
            ggml_set_name(hist, "kept");
            ggml_pariskv_keep_histogram(encoded, hist);
        }
        ggml_tensor * cache = nullptr;
        const size_t k_row = ggml_row_size(type_K, hs), v_row = ggml_row_size(type_V, hsv);
        if (rows) {
            const size_t bytes = ggml_pariskv_row_cache_bytes(ns, nh_kv, rows, k_row, v_row);
            GGML_ASSERT(bytes > 0);
            cache = ggml_new_tensor_1d(ctx, GGML_TYPE_I8, (int64_t) bytes);
            ggml_set_name(cache, "row_cache");
            ggml_pariskv_use_row_cache(encoded, cache, rows, (int32_t) ns, 0, (int32_t) v_row);
        }

        ggml_tensor * q = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, hs, nh_kv*group, ns*n_tps);
        ggml_set_name(q, "q");
        ggml_tensor * k = ggml_view_4d(ctx, kc, hs, nh_kv, n_kv, ns,
                                       ggml_row_size(type_K, hs), kc->nb[1], kc->nb[2], 0);
        ggml_tensor * v = ggml_view_4d(ctx, vc, hsv, nh_kv, n_kv, ns,
                                       ggml_row_size(type_V, hsv), vc->nb[1], vc->nb[2], 0);
        ggml_tensor * m = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, n_kv, n_tps, 1, ns);
        ggml_set_name(m, "mask");
        ggml_tensor * pos = ggml_new_tensor_2d(ctx, GGML_TYPE_I32, n_kv, ns);
        ggml_set_name(pos, "pos");

        pariskv_settings settings;
        pariskv_settings_init(&settings);
        settings.top_k    = (uint32_t) top_k;
        settings.n_sink   = 4;
        settings.n_window = 64;
        settings.gqa      = (pariskv_gqa) gqa;
        ggml_tensor * out = ggml_pariskv_attn(ctx, q, k, v, m, pos, encoded, nibbles, weights, &settings,
                                              1.0f/sqrtf((float) hs), 0.0f);
        if (kept) {
            ggml_pariskv_keep_histogram(out, hist);
        }
        if (rows) {
            ggml_pariskv_use_row_cache(out, cache, rows, (int32_t) ns, 0, (int32_t) v_row);
        }
        ggml_set_name(out, "out");
        return out;
    }

    void initialize_tensors(ggml_context * ctx) override {
        for (ggml_tensor * t = ggml_get_first_tensor(ctx); t != NULL; t = ggml_get_next_tensor(ctx, t)) {
            if (ggml_is_view_op(t->op) || t->op != GGML_OP_NONE) {
                continue;
            }
            if (strcmp(t->name, "idxs") == 0) {
                std::vector<int64_t> data(ggml_nelements(t));
                for (size_t i = 0; i < data.size(); ++i) {
                    data[i] = (int64_t) (i / n_encoded() * n_cells() + i % n_encoded());
                }
                ggml_backend_tensor_set(t, data.data(), 0, ggml_nbytes(t));
            } else if (strcmp(t->name, "pos") == 0) {
                // sequences of a unified cache interleave their cells
                std::vector<int32_t> data(ggml_nelements(t));
                for (size_t i = 0; i < data.size(); ++i) {
                    data[i] = (int32_t) ((i % n_kv)/n_tps);
                }
                ggml_backend_tensor_set(t, data.data(), 0, ggml_nbytes(t));
            } else if (strcmp(t->name, "mask") == 0) {
                // token tr of a stream sees its own sequence's cells, minus some holes
                std::vector<ggml_fp16_t> data(ggml_nelements(t));
                for (int64_t s = 0; s < ns; ++s) {
                    for (int64_t tr = 0; tr < n_tps; ++tr) {
                        for (int64_t c = 0; c < n_kv; ++c) {
                            const bool visible = c % n_tps == tr && c % 97 != 13;
                            data[(s*n_tps + tr)*n_kv + c] = ggml_fp32_to_fp16(visible ? 0.0f : -INFINITY);
                        }
                    }
                }
                ggml_backend_tensor_set(t, data.data(), 0, ggml_nbytes(t));
            } else if (t->type == GGML_TYPE_I8 || strcmp(t->name, "centers") == 0 || strcmp(t->name, "kept") == 0) {
                // the index: the graph encodes the cells, sets the key centres, keeps the histogram
                std::vector<uint8_t> zeros(ggml_nbytes(t), 0);
                ggml_backend_tensor_set(t, zeros.data(), 0, zeros.size());
            } else {
                init_tensor_uniform(t);
            }
        }
    }
};

// head sizes, GQA 1/4/8, several streams, unified multi-sequence masks, f16/bf16/f32/q8_0 K/V,
// n_kv not a multiple of 256, top-k >= n_kv; per query head, the group-mean query and k rows
// for the group (the default)
static void pariskv_add_eval_cases(std::vector<std::unique_ptr<test_case>> & test_cases) {
    for (int64_t hs : { 64, 128, 256 }) {
        for (int64_t group : { 1, 4, 8 }) {
            test_cases.emplace_back(new test_pariskv(hs, hs, 2, group, 5037, 1, 1, GGML_TYPE_F16, GGML_TYPE_F16, 256, 0));
        }
    }
    // q8_0 (-ctk q8_0 -ctv q8_0): rows read as ggml dequantizes them, per head and for the group
    for (ggml_type type : { GGML_TYPE_F32, GGML_TYPE_BF16, GGML_TYPE_Q8_0 }) {
        test_cases.emplace_back(new test_pariskv(128, 128, 2, 4, 3001, 1, 1, type, type, 256, 0));
    }
    test_cases.emplace_back(new test_pariskv(128, 128, 2, 4, 4000, 2, 2, GGML_TYPE_Q8_0, GGML_TYPE_Q8_0, 256, 2));
    test_cases.emplace_back(new test_pariskv(128, 128, 2, 4, 4000, 2, 1, GGML_TYPE_F16, GGML_TYPE_F16, 256, 0)); // streams
    test_cases.emplace_back(new test_pariskv(128, 128, 2, 4, 4000, 1, 2, GGML_TYPE_F16, GGML_TYPE_F16, 256, 0)); // unified
    test_cases.emplace_back(new test_pariskv(128, 128, 2, 4, 4000, 2, 2, GGML_TYPE_F16, GGML_TYPE_F16, 256, 1)); // mean
    test_cases.emplace_back(new test_pariskv(256, 256, 1, 4, 1000, 1, 1, GGML_TYPE_F16, GGML_TYPE_F16, 4096, 0)); // dense
    test_cases.emplace_back(new test_pariskv(128, 128, 8, 4, 70001, 1, 1, GGML_TYPE_F16, GGML_TYPE_F16, 2048, 0));
    for (int64_t hs : { 64, 128, 256 }) {
        test_cases.emplace_back(new test_pariskv(hs, hs, 2, 4, 5037, 1, 1, GGML_TYPE_F16, GGML_TYPE_F16, 256, 2)); // group
    }
    test_cases.emplace_back(new test_pariskv(128, 128, 2, 6, 4000, 2, 2, GGML_TYPE_BF16, GGML_TYPE_BF16, 256, 2));
    test_cases.emplace_back(new test_pariskv(128, 128, 8, 4, 70001, 1, 1, GGML_TYPE_F16, GGML_TYPE_F16, 2048, 2));
    // the kept histogram: taken (the view's cells encoded; holes, other sequences' and fixed
    // cells taken out of it) or recounted (counted cells beyond the view)
    for (int kept : { 1, 2 }) {
        test_cases.emplace_back(new test_pariskv(128, 128, 2, 4, 4000, 2, 2, GGML_TYPE_F16, GGML_TYPE_F16, 256, 2, kept));
        test_cases.emplace_back(new test_pariskv(128, 128, 2, 4, 4000, 1, 2, GGML_TYPE_Q8_0, GGML_TYPE_Q8_0, 256, 0, kept));
        test_cases.emplace_back(new test_pariskv(64, 64, 8, 4, 70001, 1, 1, GGML_TYPE_F16, GGML_TYPE_F16, 2048, 2, kept));
    }
    // a row cache (a library built with CUDA only): filled by the step, q8_0 rows of 34-byte
    // blocks, several streams and tokens sharing their stream's tables
    if (ggml_pariskv_row_cache_bytes(1, 1, 4, 16, 16) > 0) {
        test_cases.emplace_back(new test_pariskv(128, 128, 8, 4, 70001, 1, 1, GGML_TYPE_F16, GGML_TYPE_F16, 2048, 2, 1, 4096));
        test_cases.emplace_back(new test_pariskv(128, 128, 2, 4, 4000, 2, 2, GGML_TYPE_Q8_0, GGML_TYPE_Q8_0, 256, 0, 2, 512));
        test_cases.emplace_back(new test_pariskv(256, 256, 1, 4, 5037, 1, 1, GGML_TYPE_BF16, GGML_TYPE_BF16, 256, 2, 0, 1024));
    }
}
