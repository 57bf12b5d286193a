// Next-token KL divergence of ParisKV against dense attention under teacher-forced decoding:
// two contexts on one model read the same text; after a dense prefill of the first
// --prefill tokens, every further token is decoded alone (a decode ubatch, so ParisKV's
// path runs once the cache passes its dense threshold), and the two next-token
// distributions are compared at each position: KL(dense || ParisKV) in nats, and whether
// their greedy tokens agree. Unlike llama-perplexity, whose 512-token batches never take the
// decode path, this measures what generation sees.
//
//   kl-vs-dense -m MODEL.gguf -f TEXT [-n MAX_TOKENS] [--prefill 2048] [--topk 256,1024]
//               [--gqa per-head|mean|group] [--ratios tuned|reference] [--candidates F] [--refine N]
//               [--center on|off] [--sink 4] [--window 512] [--kv-type f16|bf16|q8_0] [-t THREADS]
//               [--json OUT]
//
// --kv-type sets both contexts' K and V cache type (default f16): KL of ParisKV over a q8_0
// cache against dense attention over the same q8_0 cache.
//
// Prints, per top-k, the mean and max KL, the 99th percentile, the greedy agreement, and
// the mean KL over each quarter of the decoded span.

#include "llama.h"
#include "pariskv.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

struct options {
    std::string model, text, json;
    int max_tokens = 8192, prefill = 2048, threads = 4;
    std::string settings; // ParisKV settings other than top-k, "key=value,..."
    pariskv_settings parsed;
    std::vector<int> topk = { 256, 1024 };
    ggml_type kv_type = GGML_TYPE_F16;
};

static void usage() {
    fprintf(stderr, "usage: kl-vs-dense -m MODEL.gguf -f TEXT [-n MAX_TOKENS] [--prefill 2048] [--topk 256,1024] "
                    "[--gqa per-head|mean|group] [--ratios tuned|reference] [--candidates F] [--refine N] [--center on|off] "
                    "[--sink 4] [--window 512] [--kv-type f16|bf16|q8_0] [-t THREADS] [--json OUT]\n");
    exit(2);
}

static options parse(int argc, char ** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc) usage();
        const std::string v = argv[++i];
        if (a == "-m") o.model = v;
        else if (a == "-f") o.text = v;
        else if (a == "-n") o.max_tokens = atoi(v.c_str());
        else if (a == "--prefill") o.prefill = atoi(v.c_str());
        else if (a == "-t") o.threads = atoi(v.c_str());
        else if (a == "--json") o.json = v;
        else if (a == "--kv-type") {
            o.kv_type = v == "f16" ? GGML_TYPE_F16 : v == "bf16" ? GGML_TYPE_BF16 : v == "q8_0" ? GGML_TYPE_Q8_0 : GGML_TYPE_COUNT;
            if (o.kv_type == GGML_TYPE_COUNT) usage();
        }
        else if (a == "--sink" || a == "--window" || a == "--gqa" || a == "--ratios" || a == "--candidates" ||
                 a == "--center" || a == "--refine") {
            o.settings += (o.settings.empty() ? "" : ",") + a.substr(2) + "=" + v;
        } else if (a == "--topk") {
            o.topk.clear();
            std::stringstream ss(v);
            for (std::string x; std::getline(ss, x, ',');) o.topk.push_back(atoi(x.c_str()));
        } else usage();
    }
    if (o.model.empty() || o.text.empty() || o.prefill < 1 || o.max_tokens <= o.prefill || o.topk.empty()) usage();
    for (int k : o.topk) {
        if (k < 1) usage();
    }
    if (pariskv_settings_parse(o.settings.c_str(), &o.parsed) != PARISKV_OK) {
        fprintf(stderr, "kl-vs-dense: %s\n", pariskv_last_error());
        exit(2);
    }
    return o;
}

// log-softmax of n logits into out (double)
static void log_softmax(const float * logits, int n, std::vector<double> & out) {
    out.resize(n);
    double mx = -INFINITY;
    for (int i = 0; i < n; ++i) mx = std::max(mx, (double) logits[i]);
    double sum = 0.0;
    for (int i = 0; i < n; ++i) sum += std::exp(logits[i] - mx);
    const double lse = mx + std::log(sum);
    for (int i = 0; i < n; ++i) out[i] = logits[i] - lse;
}

static int argmax(const float * logits, int n) {
    return (int) (std::max_element(logits, logits + n) - logits);
}

static llama_context * make_context(llama_model * model, const options & o, int n_ctx, int topk) {
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) n_ctx;
    cp.n_batch = cp.n_ubatch = 512;
    cp.n_threads = cp.n_threads_batch = o.threads;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    cp.type_k = cp.type_v = o.kv_type;
    std::string settings = "topk=" + std::to_string(topk) + (o.settings.empty() ? "" : "," + o.settings);
    // ParisKV from sink + window + 2 top-k cells unless the settings say otherwise, so that KL
    // is measured from the same depth on every backend (the CPU's automatic threshold would
    // keep these contexts dense)
    pariskv_settings ps;
    if (topk > 0 && pariskv_settings_parse(settings.c_str(), &ps) == PARISKV_OK && ps.dense_threshold == 0) {
        settings += ",dense-threshold=" + std::to_string((uint64_t) ps.n_sink + ps.n_window + 2*(uint64_t) ps.top_k);
    }
    cp.pariskv = settings.c_str();
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "kl-vs-dense: cannot create a context (ParisKV settings '%s')\n", settings.c_str());
        exit(1);
    }
    return ctx;
}

// dense prefill of tokens[0, n) in ubatch-sized pieces; the logits of the last token stay
static void prefill(llama_context * ctx, std::vector<llama_token> & tokens, int n) {
    for (int i = 0; i < n; i += 512) {
        const int nb = std::min(512, n - i);
        if (llama_decode(ctx, llama_batch_get_one(tokens.data() + i, nb)) != 0) {
            fprintf(stderr, "kl-vs-dense: prefill failed at %d\n", i);
            exit(1);
        }
    }
}

int main(int argc, char ** argv) {
    const options o = parse(argc, argv);
    std::ifstream tf(o.text);
    std::stringstream ss;
    ss << tf.rdbuf();
    const std::string text = ss.str();
    if (text.empty()) {
        fprintf(stderr, "kl-vs-dense: cannot read %s\n", o.text.c_str());
        return 1;
    }

    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(o.model.c_str(), mp);
    if (!model) {
        fprintf(stderr, "kl-vs-dense: cannot load %s\n", o.model.c_str());
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    std::vector<llama_token> tokens(text.size() + 16);
    const int nt = llama_tokenize(vocab, text.c_str(), (int) text.size(), tokens.data(), (int) tokens.size(), true, false);
    if (nt < 0) {
        fprintf(stderr, "kl-vs-dense: tokenization failed\n");
        return 1;
    }
    const int n = std::min(nt, o.max_tokens);
    if (n <= o.prefill + 1) {
        fprintf(stderr, "kl-vs-dense: the text has %d tokens, not more than --prefill %d\n", n, o.prefill);
        return 1;
    }
    tokens.resize(n);
    const int n_dec = n - o.prefill; // positions decoded one by one (the last one has no next token)

    // the dense context and one per top-k read the text in lockstep (the dense distribution
    // at a position is compared at once and never stored: vocabularies are large)
    fprintf(stderr, "kl-vs-dense: %d tokens, prefill %d, %d decode steps\n", n, o.prefill, n_dec - 1);
    std::vector<llama_context *> ctxs = { make_context(model, o, n, 0) };
    for (int k : o.topk) ctxs.push_back(make_context(model, o, n, k));
    for (llama_context * ctx : ctxs) prefill(ctx, tokens, o.prefill);
    const size_t nk = o.topk.size();
    std::vector<std::vector<double>> kl(nk, std::vector<double>(n_dec - 1));
    std::vector<int> agree(nk, 0);
    std::vector<double> dense_lp, lp;
    for (int i = 0; i + 1 < n_dec; ++i) {
        for (llama_context * ctx : ctxs) {
            if (llama_decode(ctx, llama_batch_get_one(tokens.data() + o.prefill + i, 1)) != 0) {
                fprintf(stderr, "kl-vs-dense: decode failed at position %d\n", o.prefill + i);
                return 1;
            }
        }
        const float * dense_logits = llama_get_logits_ith(ctxs[0], -1);
        log_softmax(dense_logits, n_vocab, dense_lp);
        const int dense_top = argmax(dense_logits, n_vocab);
        for (size_t ki = 0; ki < nk; ++ki) {
            const float * logits = llama_get_logits_ith(ctxs[ki + 1], -1);
            log_softmax(logits, n_vocab, lp);
            double d = 0.0;
            for (int j = 0; j < n_vocab; ++j) d += std::exp(dense_lp[j]) * (dense_lp[j] - lp[j]);
            kl[ki][i] = std::max(d, 0.0);
            agree[ki] += argmax(logits, n_vocab) == dense_top;
        }
        if (i % 64 == 0) fprintf(stderr, "\r  position %d / %d", o.prefill + i, n - 1);
    }
    fprintf(stderr, "\n");
    for (llama_context * ctx : ctxs) llama_free(ctx);

    std::ostringstream json;
    json << "[";
    printf("%-6s %-9s %10s %10s %10s %9s | mean KL by quarter of the decoded span\n", "top-k", "gqa", "mean KL",
           "p99 KL", "max KL", "greedy=");
    for (size_t ki = 0; ki < nk; ++ki) {
        const std::vector<double> & x = kl[ki];
        std::vector<double> sorted = x;
        std::sort(sorted.begin(), sorted.end());
        double mean = 0.0;
        for (double v : x) mean += v;
        mean /= x.size();
        const double p99 = sorted[std::min(sorted.size() - 1, (size_t) (0.99*sorted.size()))];
        const double agreement = (double) agree[ki]/x.size();
        const pariskv_settings & p = o.parsed;
        const char * gqa = p.gqa == PARISKV_GQA_MEAN ? "mean" : p.gqa == PARISKV_GQA_GROUP ? "group" : "per-head";
        printf("%-6d %-9s %10.3e %10.3e %10.3e %8.2f%% |", o.topk[ki], gqa, mean, p99, sorted.back(), 100.0*agreement);
        json << (ki ? ",\n " : "\n ") << "{\"topk\": " << o.topk[ki] << ", \"gqa\": \"" << gqa << "\", \"tokens\": " << n
             << ", \"ratios\": \"" << (p.ratios == PARISKV_RATIOS_REFERENCE ? "reference" : "tuned") << "\", \"refine\": "
             << p.refine << ", \"center\": " << (p.center ? "true" : "false") << ", \"candidates\": " << p.candidates
             << ", \"prefill\": " << o.prefill << ", \"kv_type\": \"" << ggml_type_name(o.kv_type) << "\", \"mean_kl\": " << mean << ", \"p99_kl\": " << p99
             << ", \"max_kl\": " << sorted.back() << ", \"greedy_agreement\": " << agreement << ", \"quarters\": [";
        for (int q = 0; q < 4; ++q) {
            const size_t a = x.size()*q/4, b = x.size()*(q + 1)/4;
            double m = 0.0;
            for (size_t j = a; j < b; ++j) m += x[j];
            m /= std::max<size_t>(1, b - a);
            printf(" %9.3e", m);
            json << (q ? ", " : "") << m;
        }
        printf("\n");
        json << "]}";
    }
    json << "\n]\n";
    if (!o.json.empty()) {
        std::ofstream(o.json) << json.str();
    }

    llama_model_free(model);
    llama_backend_free();
    return 0;
}
