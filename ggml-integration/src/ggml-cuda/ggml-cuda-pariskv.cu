// ParisKV ops on CUDA: thin glue from the ops' tensors to the pariskv library's CUDA entry
// points, launched on the backend's stream. The library's step is graph-safe (no
// allocation, synchronisation or read-back); its scratch is allocated here once per stream
// and head size, on the first call (which ggml never captures: a CUDA graph is captured only
// after a call with the same shapes ran directly), sized for the whole KV cache.

#include "ggml-cuda-pariskv.cuh"

#include "ggml-backend-impl.h"
#include "ggml-cuda.h"
#include "ggml-pariskv.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

static pariskv_dtype pariskv_dtype_must(ggml_type type) {
    pariskv_dtype d;
    if (!ggml_pariskv_dtype(type, &d)) {
        GGML_ABORT("pariskv: unsupported type %s", ggml_type_name(type));
    }
    return d;
}

static void pariskv_check(pariskv_status status, const char * what) {
    if (status != PARISKV_OK) {
        GGML_ABORT("pariskv: %s failed on CUDA: %s", what, pariskv_last_error());
    }
}

// the library was built with CUDA and sees the driver and a GPU
static bool pariskv_cuda_ready() {
    static const bool ready = [] {
        uint32_t yes = 0;
        return pariskv_cuda_available(&yes) == PARISKV_OK && yes != 0;
    }();
    return ready;
}

// the K/V element types the kernels read (q8_0 rows are whole blocks in ggml)
static bool pariskv_cuda_kv_type(ggml_type type) {
    return type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16 || type == GGML_TYPE_Q8_0;
}

bool ggml_cuda_pariskv_supported(int device, const ggml_tensor * op) {
    GGML_UNUSED(device);
    if (!pariskv_cuda_ready()) {
        return false;
    }
    switch (op->op) {
        case GGML_OP_PARISKV_ENCODE:
            return pariskv_cuda_kv_type(op->src[0]->type);
        case GGML_OP_PARISKV_ATTN: {
            const ggml_tensor * q = op->src[0];
            const ggml_tensor * k = op->src[1];
            const ggml_tensor * v = op->src[2];
            const ggml_tensor * mask = op->src[3];
            pariskv_step step;
            return pariskv_cuda_kv_type(k->type) && pariskv_cuda_kv_type(v->type) &&
                (mask->type == GGML_TYPE_F16 || mask->type == GGML_TYPE_F32) &&
                v->ne[0] <= 512 && q->ne[1]/k->ne[1] <= 16 && // the step's limits: dv, group size
                pariskv_op_params_step(op->op_params, (uint32_t) k->ne[0], (uint32_t) v->ne[0],
                                       (uint32_t) (q->ne[1]/k->ne[1]), &step) == PARISKV_OK;
        }
        default:
            return false;
    }
}

static void ggml_cuda_op_pariskv_encode(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    const ggml_tensor * k       = dst->src[0];
    const ggml_tensor * idxs    = dst->src[1];
    const ggml_tensor * codes   = dst->src[2];
    const ggml_tensor * nibbles = dst->src[3];
    const ggml_tensor * weights = dst->src[4];
    const ggml_tensor * centers = dst->src[5];
    const ggml_tensor * kept    = dst->src[GGML_PARISKV_ENCODE_KEPT]; // the kept histogram and its flags, or null

    const int64_t n = ggml_nelements(idxs);
    if (n == 0) {
        return;
    }
    const int64_t n_head_kv = codes->ne[2];
    const int64_t head_dim  = k->ne[0]/n_head_kv;

    pariskv_cuda_encode_target t;
    t.keys            = (uint64_t) (uintptr_t) k->data;
    t.key_dtype       = pariskv_dtype_must(k->type);
    t.key_row_stride  = k->nb[1];
    t.key_head_stride = ggml_row_size(k->type, head_dim);
    t.codes           = (uint64_t) (uintptr_t) codes->data;
    t.nibbles         = (uint64_t) (uintptr_t) nibbles->data;
    t.weights         = (uint64_t) (uintptr_t) weights->data;
    t.kv_size         = (size_t) codes->ne[1];
    t.n_heads         = (uint32_t) n_head_kv;
    // each (stream, head)'s histogram, then its flags, in one row of kept
    t.hist            = kept ? (uint64_t) (uintptr_t) kept->data : 0;
    t.counted         = kept ? t.hist + ggml_pariskv_kept_flags_offset(codes) : 0;
    t.kept_stride     = kept ? kept->nb[1] : 0;
    // the row cache forgets the cells rewritten
    pariskv_cuda_row_cache rows;
    uint32_t first_stream = 0;
    t.row_cache = ggml_pariskv_row_cache_of(dst, t.key_head_stride, &rows, &first_stream) ? &rows : NULL;

    // count 0: exactly n cells (the count is part of the graph's shape)
    const uint64_t center = centers ? (uint64_t) (uintptr_t) centers->data : 0;
    pariskv_check(pariskv_cuda_encode((uint32_t) head_dim, PARISKV_DEFAULT_SEED, &t, center, (uint64_t) (uintptr_t) idxs->data,
                                      0, (size_t) n, ctx.stream()),
                  "encode");
}

// the scratch of the library's step, per stream (so that contexts running at once on one
// device never share it) and head sizes, grown when a call needs more
struct pariskv_cuda_scratch {
    pariskv_cuda_step * step = nullptr;
    size_t   max_cells = 0;
    uint32_t max_heads = 0;
    uint32_t max_units = 0;
};

static pariskv_cuda_step * pariskv_scratch_for(ggml_backend_cuda_context & ctx, uint32_t head_dim, uint32_t v_dim,
                                               size_t cells, uint32_t heads, uint32_t units) {
    static std::mutex lock;
    static std::map<std::tuple<cudaStream_t, uint32_t, uint32_t>, pariskv_cuda_scratch> scratch;

    std::lock_guard<std::mutex> guard(lock);
    pariskv_cuda_scratch & s = scratch[{ctx.stream(), head_dim, v_dim}];
    if (s.step && cells <= s.max_cells && heads <= s.max_heads && units <= s.max_units) {
        return s.step;
    }
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    CUDA_CHECK(cudaStreamIsCapturing(ctx.stream(), &capturing));
    if (capturing != cudaStreamCaptureStatusNone) {
        GGML_ABORT("pariskv: step scratch must grow (%zu cells, %u heads, %u units) during CUDA graph capture", cells,
                   heads, units);
    }
    if (s.step) {
        // earlier launches on this stream may still use it
        CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
        pariskv_cuda_step_free(s.step);
        s.step = nullptr;
    }
    s.max_cells = std::max(cells, s.max_cells);
    s.max_heads = std::max(heads, s.max_heads);
    s.max_units = std::max(units, s.max_units);
    pariskv_check(pariskv_cuda_step_create(head_dim, v_dim, PARISKV_DEFAULT_SEED, s.max_cells, s.max_heads, s.max_units,
                                           &s.step),
                  "step scratch allocation");
    GGML_LOG_DEBUG("%s: device %d: ParisKV step scratch for %zu cells, %u heads per KV head, %u units\n", __func__,
                   ctx.device, s.max_cells, s.max_heads, s.max_units);
    return s.step;
}

// GGML_PARISKV_STATS=1 and a stream that is not being captured: then the device is waited
// for, so that counts can be read (nothing is logged while a CUDA graph is being captured or
// replayed)
static bool pariskv_log_now(ggml_backend_cuda_context & ctx) {
    static const bool log_stats = ggml_pariskv_log_steps();
    if (!log_stats) {
        return false;
    }
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    CUDA_CHECK(cudaStreamIsCapturing(ctx.stream(), &capturing));
    if (capturing != cudaStreamCaptureStatusNone) {
        return false;
    }
    CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
    return true;
}

// GGML_PARISKV_STATS=1: what each (token, KV head) did, in the CPU op's format
static void pariskv_log_stats(ggml_backend_cuda_context & ctx, const pariskv_cuda_step * scratch, int64_t s,
                              int64_t n_tps, int64_t n_head_kv) {
    if (!pariskv_log_now(ctx)) {
        return;
    }
    std::vector<pariskv_step_stats> st(n_tps*n_head_kv);
    size_t n = 0;
    pariskv_check(pariskv_cuda_step_stats(scratch, st.data(), st.size(), &n), "step stats");
    for (size_t u = 0; u < n; ++u) {
        GGML_LOG_INFO("pariskv_attn: token %lld, KV head %lld: %zu cells visible, %zu in the zone, %zu candidates, %zu attended%s\n",
                      (long long) (s*n_tps + (int64_t) u/n_head_kv), (long long) ((int64_t) u % n_head_kv),
                      st[u].n_visible, st[u].n_zone, st[u].n_candidates, st[u].n_attended,
                      st[u].zone_counted ? ", zone histogram counted" : "");
    }
}

// GGML_PARISKV_STATS=1: the rows a layer's steps read from its row cache and from host
// memory since the cache was cleared
static void pariskv_log_row_cache(ggml_backend_cuda_context & ctx, const ggml_tensor * dst,
                                  const pariskv_cuda_row_cache & rows) {
    if (!pariskv_log_now(ctx)) {
        return;
    }
    uint64_t hits = 0, misses = 0;
    pariskv_check(pariskv_cuda_row_cache_stats(&rows, &hits, &misses), "row cache stats");
    GGML_LOG_INFO("pariskv_attn: %s: row cache: %llu rows read from GPU memory, %llu from host memory (%.1f%% hits)\n",
                  dst->name, (unsigned long long) hits, (unsigned long long) misses,
                  hits + misses ? 100.0*hits/(hits + misses) : 0.0);
}

static void ggml_cuda_op_pariskv_attn(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    const ggml_pariskv_attn_args a = ggml_pariskv_attn_args_of(dst);
    const ggml_tensor * q = a.q, * k = a.k, * v = a.v, * mask = a.mask, * pos = a.pos;
    const ggml_tensor * codes = a.codes, * nibbles = a.nibbles, * weights = a.weights;
    const int64_t n_head_kv = a.n_head_kv, n_tps = a.n_tps, group = a.group;
    const pariskv_step & step = a.step;

    // sized for every cell of the cache (codes->ne[1]), so that a growing context never
    // reallocates; units are the tokens of one stream times the KV heads
    pariskv_cuda_step * scratch = pariskv_scratch_for(ctx, step.head_dim, step.v_dim, (size_t) codes->ne[1],
                                                      (uint32_t) group, (uint32_t) (n_tps*n_head_kv));

    pariskv_cuda_row_cache rows;
    uint32_t first_stream = 0;
    const bool has_rows = ggml_pariskv_row_cache_of(dst, ggml_row_size(k->type, k->ne[0]), &rows, &first_stream) != nullptr;

    // one launch sequence per stream: unit u = token-in-stream * n_head_kv + KV head
    for (int64_t s = 0; s < a.n_stream; ++s) {
        pariskv_cuda_layer l = {};
        l.n_units    = (uint32_t) (n_tps*n_head_kv);
        l.n_kv_heads = (uint32_t) n_head_kv;
        l.n_heads    = (uint32_t) group;
        l.n_cells    = (size_t) a.n_kv;

        l.k             = (uint64_t) (uintptr_t) ((const char *) k->data + s*k->nb[3]);
        l.k_dtype       = pariskv_dtype_must(k->type);
        l.k_row_stride  = k->nb[2];
        l.k_head_stride = (int64_t) k->nb[1];
        l.v             = (uint64_t) (uintptr_t) ((const char *) v->data + s*v->nb[3]);
        l.v_dtype       = pariskv_dtype_must(v->type);
        l.v_row_stride  = v->nb[2];
        l.v_head_stride = (int64_t) v->nb[1];

        l.codes   = (uint64_t) (uintptr_t) ((const char *) codes->data   + s*codes->nb[3]);
        l.nibbles = (uint64_t) (uintptr_t) ((const char *) nibbles->data + s*nibbles->nb[3]);
        l.weights = (uint64_t) (uintptr_t) ((const char *) weights->data + s*weights->nb[3]);
        l.index_head_stride_codes   = (int64_t) codes->nb[2];
        l.index_head_stride_nibbles = (int64_t) nibbles->nb[2];
        l.index_head_stride_weights = (int64_t) weights->nb[2];

        l.mask              = (uint64_t) (uintptr_t) ((const char *) mask->data + s*mask->nb[3]);
        l.mask_dtype        = mask->type == GGML_TYPE_F16 ? PARISKV_F16 : PARISKV_F32;
        l.mask_token_stride = (int64_t) mask->nb[1];
        l.pos               = (uint64_t) (uintptr_t) ((const char *) pos->data + s*pos->nb[1]);

        l.q                = (uint64_t) (uintptr_t) ((const char *) q->data + s*n_tps*q->nb[2]);
        l.q_row_stride     = q->nb[1];
        l.q_token_stride   = (int64_t) q->nb[2];
        l.q_head_stride    = (int64_t) (group*q->nb[1]);
        l.out              = (uint64_t) (uintptr_t) ((char *) dst->data + s*n_tps*dst->nb[2]);
        l.out_row_stride   = dst->nb[1];
        l.out_token_stride = (int64_t) dst->nb[2];
        l.out_head_stride  = (int64_t) (group*dst->nb[1]);

        // the histogram the encodes keep, shared by the stream's tokens, then its flags
        if (a.kept) {
            l.hist                 = (uint64_t) (uintptr_t) ((const char *) a.kept->data + s*a.kept->nb[2]);
            l.hist_head_stride     = (int64_t) a.kept->nb[1];
            l.counted              = l.hist + ggml_pariskv_kept_flags_offset(codes);
            l.counted_head_stride  = (int64_t) a.kept->nb[1];
        }
        // the rows earlier steps of this stream read, kept on the device
        if (has_rows) {
            l.row_cache        = &rows;
            l.row_cache_stream = first_stream + (uint32_t) s;
        }

        pariskv_check(pariskv_cuda_step_run(scratch, &step, &l, ctx.stream()), "attention step");
        pariskv_log_stats(ctx, scratch, s, n_tps, n_head_kv);
    }
    if (has_rows) {
        pariskv_log_row_cache(ctx, dst, rows);
    }
}

void ggml_cuda_op_pariskv(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    switch (dst->op) {
        case GGML_OP_PARISKV_ENCODE: ggml_cuda_op_pariskv_encode(ctx, dst); break;
        case GGML_OP_PARISKV_ATTN:   ggml_cuda_op_pariskv_attn(ctx, dst);   break;
        default: GGML_ABORT("%s: not a ParisKV op: %s", __func__, ggml_op_name(dst->op));
    }
}

// The pinned host buffer type of --pariskv-offload. Unlike CUDA_Host, the CUDA backend of
// its device accepts it (supports_buft), so the scheduler leaves K/V where they are and
// kernels read the rows they need through UVA. An allocation that cannot be pinned fails:
// a silent pageable fallback would not be readable by the GPU at all.

struct ggml_backend_cuda_pariskv_host_buft_context {
    int device;
    std::string name;
};

static const char * ggml_backend_cuda_pariskv_host_buffer_type_name(ggml_backend_buffer_type_t buft) {
    return ((const ggml_backend_cuda_pariskv_host_buft_context *) buft->context)->name.c_str();
}

bool ggml_backend_buft_is_cuda_pariskv_host(ggml_backend_buffer_type_t buft) {
    return buft->iface.get_name == ggml_backend_cuda_pariskv_host_buffer_type_name;
}

static void ggml_backend_cuda_pariskv_host_buffer_free(ggml_backend_buffer_t buffer) {
    if (pariskv_host_free(buffer->context) != PARISKV_OK) {
        GGML_LOG_ERROR("%s: %s\n", __func__, pariskv_last_error());
    }
}

// Pinning a large cache takes seconds (tens at a million tokens): a line when it starts,
// a dot per 5% as the library's threads finish chunks, the time at the end.
struct ggml_cuda_pariskv_pin_progress {
    int64_t t_start_us;
    int dots;
};

static void ggml_cuda_pariskv_pin_report(size_t done, size_t total, void * user) {
    auto * p = (ggml_cuda_pariskv_pin_progress *) user;
    const int dots = total ? (int) (20 * (double) done / (double) total) : 20;
    for (; p->dots < dots; p->dots++) {
        GGML_LOG_CONT(".");
    }
    if (done == total) {
        GGML_LOG_CONT(" done in %.1f s\n", (ggml_time_us() - p->t_start_us) / 1e6);
    }
}

// buffers from this size on log their pinning
static const size_t GGML_CUDA_PARISKV_PIN_LOG_BYTES = (size_t) 1 << 30;

static ggml_backend_buffer_t ggml_backend_cuda_pariskv_host_buffer_type_alloc_buffer(ggml_backend_buffer_type_t buft, size_t size) {
    const auto * bctx = (const ggml_backend_cuda_pariskv_host_buft_context *) buft->context;
    ggml_cuda_set_device(bctx->device);

    void * ptr = nullptr;
    uint64_t dev_ptr = 0;
    ggml_cuda_pariskv_pin_progress progress = { ggml_time_us(), 0 };
    const bool logged = size >= GGML_CUDA_PARISKV_PIN_LOG_BYTES;
    if (logged) {
        GGML_LOG_INFO("%s: pinning %.2f GiB of host memory for the KV cache (%s) ",
                __func__, size/1024.0/1024.0/1024.0, bctx->name.c_str());
    }
    const pariskv_status status = pariskv_host_alloc_progress(size, &ptr, &dev_ptr,
            logged ? ggml_cuda_pariskv_pin_report : nullptr, &progress);
    if (status != PARISKV_OK) {
        if (logged) {
            GGML_LOG_CONT(" failed\n");
        }
        GGML_LOG_ERROR("%s: cannot pin %.2f MiB of host memory for the KV cache: %s "
                "(no pageable fallback: reduce the context or raise the locked-memory limit, ulimit -l)\n",
                __func__, size/1024.0/1024.0, pariskv_last_error());
        return nullptr;
    }
    // the kernels use the host address as is: that needs unified addressing
    if (dev_ptr != (uint64_t) (uintptr_t) ptr) {
        pariskv_host_free(ptr);
        GGML_LOG_ERROR("%s: pinned host memory is not mapped at its host address on device %d "
                "(no unified addressing)\n", __func__, bctx->device);
        return nullptr;
    }

    ggml_backend_buffer_t buffer = ggml_backend_cpu_buffer_from_ptr(ptr, size);
    buffer->buft = buft;
    buffer->iface.free_buffer = ggml_backend_cuda_pariskv_host_buffer_free;

    return buffer;
}

bool ggml_cuda_pariskv_host_tensor(const ggml_tensor * t) {
    const ggml_backend_buffer_t buf = t->view_src ? t->view_src->buffer : t->buffer;
    return buf && buf->buft && ggml_backend_buft_is_cuda_pariskv_host(buf->buft);
}

// one word of W bytes per thread and step, the grid striding over rows x words
template <typename W>
static __global__ void ggml_cuda_pariskv_copy_words(char * dst, size_t dpitch, const char * src, size_t spitch,
                                                    size_t words, size_t height) {
    const size_t total = words * height;
    for (size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t) gridDim.x * blockDim.x) {
        const size_t row = i / words, w = i % words;
        ((W *) (dst + row * dpitch))[w] = ((const W *) (src + row * spitch))[w];
    }
}

void ggml_cuda_pariskv_copy_2d(char * dst, size_t dpitch, const char * src, size_t spitch,
                               size_t width, size_t height, cudaStream_t stream) {
    if (width == 0 || height == 0) {
        return;
    }
    if (height == 1) {
        dpitch = spitch = width;
    }
    const uintptr_t all = (uintptr_t) dst | (uintptr_t) src | dpitch | spitch | width;
    const int threads = 256;
    const int max_blocks = 4096;
    auto run = [&](auto word) {
        using W = decltype(word);
        const size_t words = width / sizeof(W);
        const size_t blocks = std::min<size_t>((words * height + threads - 1) / threads, max_blocks);
        ggml_cuda_pariskv_copy_words<W><<<(unsigned) blocks, threads, 0, stream>>>(dst, dpitch, src, spitch, words, height);
    };
    if (all % 16 == 0) {
        run(uint4{});
    } else if (all % 4 == 0) {
        run(uint32_t{});
    } else {
        run(uint8_t{});
    }
    CUDA_CHECK(cudaGetLastError());
}

ggml_backend_buffer_type_t ggml_backend_cuda_pariskv_host_buffer_type(int device) {
    static std::mutex mutex;
    std::lock_guard<std::mutex> lock(mutex);

    if (device < 0 || device >= ggml_backend_cuda_get_device_count()) {
        return nullptr;
    }

    static ggml_backend_buffer_type bufts[GGML_CUDA_MAX_DEVICES];
    static bool initialized = false;
    if (!initialized) {
        for (int i = 0; i < ggml_backend_cuda_get_device_count(); i++) {
            bufts[i] = {
                /* .iface    = */ {
                    /* .get_name         = */ ggml_backend_cuda_pariskv_host_buffer_type_name,
                    /* .alloc_buffer     = */ ggml_backend_cuda_pariskv_host_buffer_type_alloc_buffer,
                    /* .get_alignment    = */ ggml_backend_cpu_buffer_type()->iface.get_alignment,
                    /* .get_max_size     = */ NULL, // defaults to SIZE_MAX
                    /* .get_alloc_size   = */ ggml_backend_cpu_buffer_type()->iface.get_alloc_size,
                    /* .is_host          = */ ggml_backend_cpu_buffer_type()->iface.is_host,
                },
                /* .device   = */ ggml_backend_reg_dev_get(ggml_backend_cuda_reg(), i),
                /* .context  = */ new ggml_backend_cuda_pariskv_host_buft_context{i, GGML_CUDA_NAME + std::to_string(i) + "_PKV_Host"},
            };
        }
        initialized = true;
    }

    return &bufts[device];
}
