// Captures the post-RoPE queries and keys (and the values) that attention actually uses, for
// chosen layers of any GGUF model run by llama.cpp over a text, through the eval callback:
// the graph's "Qcur-<il>", "Kcur-<il>" and "Vcur-<il>" tensors (llama.cpp's names after
// RoPE). Tokens are processed in order with causal attention, so position t's query is the
// one a decode step at t would use.
//
//   capture-qkv -m MODEL.gguf -f TEXT [-n MAX_TOKENS] [-l 5,11,17] [-o DIR] [-b BATCH] [-t THREADS]
//
// Writes into DIR, per captured layer L:
//   q_lL.npy   float32 [n_tokens, n_head,    head_dim]
//   k_lL.npy   float32 [n_tokens, n_head_kv, head_dim]
//   v_lL.npy   float32 [n_tokens, n_head_kv, head_dim_v]
// and meta.json: the model, its architecture, the layers, head counts and sizes, n_tokens.
// Queries are captured before any scale the model applies after RoPE (Gemma 3 multiplies by
// query_pre_attn_scalar^-1/2, which is 1/sqrt(head_dim) for the 270M); the fidelity tool's
// --scale covers other cases. Default layers: all of them, for models without sliding-window
// attention; name the global layers with -l otherwise (Gemma 3 270M: -l 5,11,17).

#include "llama.h"
#include "ggml.h"
#include "ggml-backend.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

// the last tensor of one name seen in the current ubatch (a name can label several nodes in
// turn, e.g. the projection, its reshape and the RoPE output: the last is the one attended)
struct observed {
    std::string what;           // empty when usable, else why not
    int64_t dim = 0, heads = 0, tokens = 0;
    std::vector<float> data;
};

struct capture {
    std::map<int, std::vector<float>> q, k, v;      // layer -> [token][head][dim]
    std::map<int, std::array<int64_t, 2>> shape_q, shape_k, shape_v; // heads, dim
    std::map<std::pair<char, int>, observed> pending;
    std::vector<int> layers;
};

static bool wanted(const capture & c, const char * name, char * which, int * layer) {
    const char * dash = strrchr(name, '-');
    if (!dash || dash - name != 4 || strncmp(name + 1, "cur", 3) != 0 || !strchr("QKV", name[0])) {
        return false;
    }
    // exactly "Xcur-<il>": views and permutations of it carry suffixes
    if (!dash[1] || strspn(dash + 1, "0123456789") != strlen(dash + 1)) {
        return false;
    }
    const int il = atoi(dash + 1);
    for (int l : c.layers) {
        if (l == il) {
            *which = name[0];
            *layer = il;
            return true;
        }
    }
    return false;
}

static bool on_tensor(ggml_tensor * t, bool ask, void * user_data) {
    capture & c = *(capture *) user_data;
    char which;
    int il;
    if (!wanted(c, t->name, &which, &il)) {
        return ask ? false : true;
    }
    if (ask) {
        return true;
    }
    observed & o = c.pending[{which, il}];
    o.dim = t->ne[0];
    o.heads = t->ne[1];
    o.tokens = t->ne[2];
    o.what.clear();
    if (t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t) || t->ne[3] != 1) {
        o.what = std::string(ggml_type_name(t->type)) + (ggml_is_contiguous(t) ? "" : ", not contiguous") +
                 ", shape [" + std::to_string(t->ne[0]) + ", " + std::to_string(t->ne[1]) + ", " +
                 std::to_string(t->ne[2]) + ", " + std::to_string(t->ne[3]) + "]";
        return true;
    }
    o.data.resize(ggml_nelements(t));
    ggml_backend_tensor_get(t, o.data.data(), 0, ggml_nbytes(t));
    return true;
}

// appends what the ubatch of n_tokens produced: [dim, heads, tokens] tensors, f32
static void commit(capture & c, int64_t n_tokens) {
    for (auto & [key, o] : c.pending) {
        const auto [which, il] = key;
        if (!o.what.empty() || o.tokens != n_tokens) {
            fprintf(stderr, "capture-qkv: %ccur-%d is %s; expected f32 [dim, heads, %lld tokens]\n", which, il,
                    o.what.empty() ? "of another shape" : o.what.c_str(), (long long) n_tokens);
            exit(1);
        }
        auto & store = which == 'Q' ? c.q : which == 'K' ? c.k : c.v;
        auto & shape = which == 'Q' ? c.shape_q : which == 'K' ? c.shape_k : c.shape_v;
        shape[il] = {o.heads, o.dim};
        store[il].insert(store[il].end(), o.data.begin(), o.data.end());
    }
    c.pending.clear();
}

static void write_npy(const std::string & path, const std::vector<float> & data, int64_t n, int64_t heads, int64_t dim) {
    std::ostringstream dict;
    dict << "{'descr': '<f4', 'fortran_order': False, 'shape': (" << n << ", " << heads << ", " << dim << "), }";
    std::string header = dict.str();
    // magic (6) + version (2) + header length (2) + header, padded with spaces to 64 bytes, '\n'
    const size_t total = 10 + header.size() + 1;
    header += std::string((64 - total % 64) % 64, ' ') + "\n";
    std::ofstream f(path, std::ios::binary);
    const unsigned char magic[8] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0 };
    f.write((const char *) magic, 8);
    const uint16_t len = (uint16_t) header.size();
    f.write((const char *) &len, 2);
    f.write(header.data(), header.size());
    f.write((const char *) data.data(), (std::streamsize) (data.size() * sizeof(float)));
    if (!f) {
        fprintf(stderr, "capture-qkv: cannot write %s\n", path.c_str());
        exit(1);
    }
}

static void usage() {
    fprintf(stderr, "usage: capture-qkv -m MODEL.gguf -f TEXT [-n MAX_TOKENS] [-l 5,11,17] [-o DIR] [-b BATCH] [-t THREADS]\n");
    exit(2);
}

int main(int argc, char ** argv) {
    std::string model_path, text_path, out_dir = ".", layers_arg;
    int max_tokens = 8192, n_batch = 512, n_threads = 4;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc) usage();
        if (a == "-m") model_path = argv[++i];
        else if (a == "-f") text_path = argv[++i];
        else if (a == "-n") max_tokens = atoi(argv[++i]);
        else if (a == "-l") layers_arg = argv[++i];
        else if (a == "-o") out_dir = argv[++i];
        else if (a == "-b") n_batch = atoi(argv[++i]);
        else if (a == "-t") n_threads = atoi(argv[++i]);
        else usage();
    }
    if (model_path.empty() || text_path.empty() || max_tokens < 1 || n_batch < 1) usage();

    std::ifstream tf(text_path);
    if (!tf) {
        fprintf(stderr, "capture-qkv: cannot read %s\n", text_path.c_str());
        return 1;
    }
    std::stringstream ss;
    ss << tf.rdbuf();
    const std::string text = ss.str();

    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(model_path.c_str(), mp);
    if (!model) {
        fprintf(stderr, "capture-qkv: cannot load %s\n", model_path.c_str());
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);

    std::vector<llama_token> tokens(text.size() + 16);
    int n = llama_tokenize(vocab, text.c_str(), (int) text.size(), tokens.data(), (int) tokens.size(), true, false);
    if (n < 0) {
        fprintf(stderr, "capture-qkv: tokenization failed\n");
        return 1;
    }
    tokens.resize(std::min(n, max_tokens));
    n = (int) tokens.size();

    capture c;
    const int n_layer = llama_model_n_layer(model);
    if (layers_arg.empty()) {
        if (llama_model_n_swa(model) > 0) {
            fprintf(stderr, "capture-qkv: the model uses sliding-window attention; name its global layers with -l\n");
            return 1;
        }
        for (int il = 0; il < n_layer; ++il) c.layers.push_back(il);
    } else {
        std::stringstream ls(layers_arg);
        for (std::string item; std::getline(ls, item, ',');) {
            const int il = atoi(item.c_str());
            if (il < 0 || il >= n_layer) {
                fprintf(stderr, "capture-qkv: layer %d out of range (the model has %d)\n", il, n_layer);
                return 1;
            }
            c.layers.push_back(il);
        }
    }
    if (c.layers.empty()) {
        fprintf(stderr, "capture-qkv: no layer to capture\n");
        return 1;
    }

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) n;
    cp.n_batch = cp.n_ubatch = (uint32_t) n_batch;
    cp.n_threads = cp.n_threads_batch = n_threads;
    cp.cb_eval = on_tensor;
    cp.cb_eval_user_data = &c;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "capture-qkv: cannot create a context of %d tokens\n", n);
        return 1;
    }

    for (int i = 0; i < n; i += n_batch) {
        const int nb = std::min(n_batch, n - i);
        if (llama_decode(ctx, llama_batch_get_one(tokens.data() + i, nb)) != 0) {
            fprintf(stderr, "capture-qkv: decode failed at token %d\n", i);
            return 1;
        }
        commit(c, nb);
        fprintf(stderr, "\rcapture-qkv: %d / %d tokens", i + nb, n);
    }
    fprintf(stderr, "\n");

    std::error_code ec;
    std::filesystem::create_directories(out_dir, ec);
    if (ec) {
        fprintf(stderr, "capture-qkv: cannot create %s: %s\n", out_dir.c_str(), ec.message().c_str());
        return 1;
    }
    std::ostringstream layers_json;
    for (size_t i = 0; i < c.layers.size(); ++i) {
        const int il = c.layers[i];
        for (char which : { 'q', 'k', 'v' }) {
            auto & store = which == 'q' ? c.q : which == 'k' ? c.k : c.v;
            auto & shape = which == 'q' ? c.shape_q : which == 'k' ? c.shape_k : c.shape_v;
            if (!store.count(il)) {
                fprintf(stderr, "capture-qkv: layer %d produced no %ccur tensor (this architecture names it otherwise)\n", il,
                        toupper(which));
                return 1;
            }
            const int64_t heads = shape[il][0], dim = shape[il][1];
            if ((int64_t) store[il].size() != (int64_t) n*heads*dim) {
                fprintf(stderr, "capture-qkv: layer %d %ccur: %zu values for %d tokens of %lld x %lld\n", il, toupper(which),
                        store[il].size(), n, (long long) heads, (long long) dim);
                return 1;
            }
            write_npy(out_dir + "/" + which + "_l" + std::to_string(il) + ".npy", store[il], n, heads, dim);
        }
        layers_json << (i ? ", " : "") << il;
    }

    char arch[128] = "unknown";
    llama_model_meta_val_str(model, "general.architecture", arch, sizeof(arch));
    std::ofstream meta(out_dir + "/meta.json");
    meta << "{\n  \"model\": \"" << model_path << "\",\n  \"arch\": \"" << arch
         << "\",\n  \"n_tokens\": " << n << ",\n  \"layers\": [" << layers_json.str()
         << "],\n  \"n_head\": " << c.shape_q[c.layers[0]][0] << ",\n  \"n_head_kv\": " << c.shape_k[c.layers[0]][0]
         << ",\n  \"head_dim\": " << c.shape_q[c.layers[0]][1] << ",\n  \"head_dim_v\": " << c.shape_v[c.layers[0]][1]
         << "\n}\n";
    fprintf(stderr, "capture-qkv: %d tokens, layers %s -> %s\n", n, layers_json.str().c_str(), out_dir.c_str());

    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
