// ParisKV flags and llama-bench parameters: see common-pariskv.h.

#include "common-pariskv.h"

#include "log.h"
#include "pariskv.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <deque>
#include <stdexcept>
#include <utility>

// the library's message without the name of the function that set it
static std::string pariskv_error() {
    std::string e = pariskv_last_error();
    const size_t colon = e.find(": ");
    return e.rfind("pariskv_", 0) == 0 && colon != std::string::npos ? e.substr(colon + 2) : e;
}

static std::vector<pariskv_setting_info> pariskv_settings_table() {
    uint32_t n = 0;
    pariskv_setting_count(&n);
    std::vector<pariskv_setting_info> table(n);
    for (uint32_t i = 0; i < n; ++i) {
        pariskv_setting_describe(i, &table[i]);
    }
    return table;
}

static const std::vector<pariskv_setting_info> & pariskv_table() {
    static const std::vector<pariskv_setting_info> table = pariskv_settings_table();
    return table;
}

static pariskv_settings pariskv_parse(const std::string & text) {
    pariskv_settings s;
    if (pariskv_settings_parse(text.c_str(), &s) != PARISKV_OK) {
        throw std::invalid_argument("ParisKV settings '" + text + "': " + pariskv_error());
    }
    return s;
}

static std::string pariskv_format(const pariskv_settings & s) {
    char buf[512];
    size_t len = 0;
    if (pariskv_settings_format(&s, buf, sizeof(buf), &len) != PARISKV_OK) {
        throw std::runtime_error("ParisKV settings: " + pariskv_error());
    }
    return buf;
}

// text with setting i set to value; throws std::invalid_argument naming the flag
static std::string pariskv_with(const std::string & text, uint32_t i, const std::string & value) {
    pariskv_settings s = pariskv_parse(text);
    const pariskv_setting_info & info = pariskv_table().at(i);
    if (pariskv_settings_set(&s, info.key, value.c_str()) != PARISKV_OK) {
        throw std::invalid_argument(std::string("--pariskv-") + info.key + ": " + pariskv_error());
    }
    return pariskv_format(s);
}

static std::string pariskv_value(const std::string & text, const char * key) {
    const pariskv_settings s = pariskv_parse(text);
    char buf[64];
    size_t len = 0;
    if (pariskv_settings_value(&s, key, buf, sizeof(buf), &len) != PARISKV_OK) {
        throw std::runtime_error("ParisKV settings: " + pariskv_error());
    }
    return buf;
}

//
// flags
//

// the setting only llama-bench takes: its depth fill, whose answers are not the model's
static const char * const PARISKV_BENCH_ONLY = "fill";

// common_arg takes plain function pointers: one handler per setting index
static constexpr size_t PARISKV_MAX_SETTINGS = 32;

template <size_t I> static void pariskv_set_value(common_params & params, const std::string & value) {
    params.pariskv = pariskv_with(params.pariskv, I, value);
}

template <size_t I> static void pariskv_set_switch(common_params & params, bool on) {
    params.pariskv = pariskv_with(params.pariskv, I, on ? "on" : "off");
}

template <size_t... I> static constexpr auto pariskv_value_handlers(std::index_sequence<I...>) {
    return std::array<void (*)(common_params &, const std::string &), sizeof...(I)>{ &pariskv_set_value<I>... };
}

template <size_t... I> static constexpr auto pariskv_switch_handlers(std::index_sequence<I...>) {
    return std::array<void (*)(common_params &, bool), sizeof...(I)>{ &pariskv_set_switch<I>... };
}

// strings that common_arg keeps pointers to, for the life of the process
static const char * pariskv_keep(std::string s) {
    static std::deque<std::string> kept;
    kept.push_back(std::move(s));
    return kept.back().c_str();
}

// the library's help as one paragraph, which llama.cpp's help wraps to its own width
static std::string pariskv_one_paragraph(std::string text) {
    std::replace(text.begin(), text.end(), '\n', ' ');
    return text;
}

struct pariskv_flag {
    const char * name;     // --pariskv-<key>
    const char * negation; // --no-pariskv-<key> (switches)
    const char * hint;     // N, F, {a,b}
    const char * env;      // LLAMA_ARG_PARISKV_<KEY>
    std::string  help;
};

static const std::vector<pariskv_flag> & pariskv_flags() {
    static const std::vector<pariskv_flag> flags = [] {
        pariskv_settings defaults;
        pariskv_settings_init(&defaults);
        std::vector<pariskv_flag> out;
        for (const auto & info : pariskv_table()) {
            std::string key = info.key, env = "LLAMA_ARG_PARISKV_", hint = info.values;
            for (char c : key) {
                env += c == '-' ? '_' : (char) toupper((unsigned char) c);
            }
            if (info.kind == PARISKV_SETTING_CHOICE) {
                for (char & c : hint) {
                    c = c == '|' ? ',' : c;
                }
                hint = "{" + hint + "}";
            }
            char value[64];
            size_t len = 0;
            pariskv_settings_value(&defaults, info.key, value, sizeof(value), &len);
            out.push_back({
                pariskv_keep("--pariskv-" + key),
                pariskv_keep("--no-pariskv-" + key),
                pariskv_keep(hint),
                pariskv_keep(env),
                pariskv_one_paragraph(info.help) + " (default: " + value + ")",
            });
        }
        return out;
    }();
    return flags;
}

void common_pariskv_add_args(const std::function<void(common_arg)> & add_opt) {
    // the tools that decode long contexts (not llama-perplexity: it evaluates prompt batches,
    // which attend densely, so the flags would change nothing there)
    const std::initializer_list<enum llama_example> examples = {
        LLAMA_EXAMPLE_CLI, LLAMA_EXAMPLE_SERVER, LLAMA_EXAMPLE_COMPLETION, LLAMA_EXAMPLE_BENCH,
    };
    static const auto on_value  = pariskv_value_handlers(std::make_index_sequence<PARISKV_MAX_SETTINGS>());
    static const auto on_switch = pariskv_switch_handlers(std::make_index_sequence<PARISKV_MAX_SETTINGS>());

    const auto & flags = pariskv_flags();
    GGML_ASSERT(flags.size() <= PARISKV_MAX_SETTINGS);
    for (size_t i = 0; i < flags.size(); ++i) {
        const pariskv_flag & f = flags[i];
        if (strcmp(pariskv_table()[i].key, PARISKV_BENCH_ONLY) == 0) {
            continue;
        }
        if (pariskv_table()[i].kind == PARISKV_SETTING_SWITCH) {
            add_opt(common_arg({f.name}, {f.negation}, f.help, on_switch[i]).set_env(f.env).set_examples(examples));
        } else {
            add_opt(common_arg({f.name}, f.hint, f.help, on_value[i]).set_env(f.env).set_examples(examples));
        }
    }
}

void common_pariskv_report(const llama_context * ctx) {
    const std::string summary = llama_pariskv_summary(ctx);
    size_t start = 0;
    while (start < summary.size()) {
        const size_t end = std::min(summary.find('\n', start), summary.size());
        LOG_INF("%s\n", summary.substr(start, end - start).c_str());
        start = end + 1;
    }
}

void common_pariskv_report_exit(const llama_context * ctx) {
    llama_pariskv_seq_stats st;
    if (!llama_pariskv_get_seq_stats(ctx, -1, &st)) {
        return;
    }
    const uint64_t n_dense = st.n_prompt + st.n_mixed + st.n_shallow + st.n_unsupported;
    if (st.n_pariskv + n_dense == 0) {
        return;
    }
    LOG_INF("ParisKV: %llu steps with ParisKV (%.0f rows per KV head and token), %llu dense: %llu prompt, "
            "%llu batched with prompts, %llu below the dense threshold, %llu unsupported\n",
            (unsigned long long) st.n_pariskv, st.n_pariskv ? (double) st.n_rows / st.n_pariskv : 0.0,
            (unsigned long long) n_dense, (unsigned long long) st.n_prompt, (unsigned long long) st.n_mixed,
            (unsigned long long) st.n_shallow, (unsigned long long) st.n_unsupported);
    // the tool's last line: written now rather than left to the log's worker thread, which
    // loses what it still holds if the process ends abnormally after this (seen, rarely, in
    // the older tree's server e2e test)
    common_log_flush(common_log_main());
}

std::string common_pariskv_slot_json(const llama_context * ctx, int32_t seq_id) {
    llama_pariskv_seq_stats st;
    if (!llama_pariskv_get_seq_stats(ctx, seq_id, &st)) {
        return "";
    }
    char text[320];
    snprintf(text, sizeof(text),
            "{\"steps\": %llu, \"mean_rows\": %.1f, \"dense\": {\"prompt\": %llu, \"mixed\": %llu, "
            "\"shallow\": %llu, \"unsupported\": %llu}}",
            (unsigned long long) st.n_pariskv, st.n_pariskv ? (double) st.n_rows / st.n_pariskv : 0.0,
            (unsigned long long) st.n_prompt, (unsigned long long) st.n_mixed, (unsigned long long) st.n_shallow,
            (unsigned long long) st.n_unsupported);
    return text;
}

std::string common_pariskv_props_json(const std::string & settings) {
    const pariskv_settings s = pariskv_parse(settings);
    if (s.top_k == 0) {
        return "null";
    }
    std::string text;
    for (const auto & info : pariskv_table()) {
        char value[64];
        size_t len = 0;
        pariskv_settings_value(&s, info.key, value, sizeof(value), &len);
        std::string v = value;
        if (info.kind == PARISKV_SETTING_SWITCH) {
            v = v == "on" ? "true" : "false";
        } else if (info.kind == PARISKV_SETTING_CHOICE) {
            v = "\"" + v + "\""; // the choices are plain words
        }
        text += (text.empty() ? "{" : ", ") + std::string("\"") + info.key + "\": " + v;
    }
    return text + "}";
}

//
// llama-bench
//

// llama-bench's short names of the two parameters it had first
static const char * pariskv_short_name(const std::string & key) {
    return key == "topk" ? "-pkt" : key == "offload" ? "-pko" : nullptr;
}

// comma-separated values; a count also as a range first-last+step (as llama-bench's -p)
static std::vector<std::string> pariskv_bench_values(const std::string & arg, pariskv_setting_kind kind) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= arg.size()) {
        const size_t end = std::min(arg.find(',', start), arg.size());
        const std::string item = arg.substr(start, end - start);
        long long first, last, step;
        char sep;
        if (kind == PARISKV_SETTING_COUNT && sscanf(item.c_str(), "%lld-%lld%c%lld", &first, &last, &sep, &step) == 4 &&
                sep == '+' && step > 0 && first <= last) {
            for (long long v = first; v <= last; v += step) {
                out.push_back(std::to_string(v));
            }
        } else {
            out.push_back(item);
        }
        start = end + 1;
    }
    return out;
}

bool llama_bench_pariskv::parse(int argc, char ** argv, int & i, bool & invalid) {
    const std::string arg = argv[i];
    const auto & table = pariskv_table();
    values.resize(table.size());
    for (size_t s = 0; s < table.size(); ++s) {
        const char * shorter = pariskv_short_name(table[s].key);
        if (arg != std::string("--pariskv-") + table[s].key && !(shorter && arg == shorter)) {
            continue;
        }
        if (++i >= argc) {
            invalid = true;
            return true;
        }
        for (const auto & v : pariskv_bench_values(argv[i], table[s].kind)) {
            try {
                pariskv_with("", (uint32_t) s, v); // checks it
            } catch (const std::exception & e) {
                fprintf(stderr, "error: %s\n", e.what());
                invalid = true;
                return true;
            }
            values[s].push_back(v);
            if (strcmp(table[s].key, PARISKV_BENCH_ONLY) == 0 && v != "exact") {
                fprintf(stderr, "llama-bench: --pariskv-fill %s: speed only: the depth fill (and any -p test) "
                        "attends only within each ubatch; the column pariskv_fill marks those rows\n", v.c_str());
            }
        }
        return true;
    }
    return false;
}

std::vector<std::string> llama_bench_pariskv::settings() const {
    std::vector<std::string> out = { "" };
    for (size_t s = 0; s < values.size(); ++s) {
        if (values[s].empty()) {
            continue;
        }
        std::vector<std::string> next;
        for (const auto & text : out) {
            for (const auto & v : values[s]) {
                next.push_back(pariskv_with(text, (uint32_t) s, v));
            }
        }
        out = std::move(next);
    }
    return out;
}

std::vector<std::string> llama_bench_pariskv::given_fields() const {
    std::vector<std::string> out;
    for (size_t s = 0; s < values.size(); ++s) {
        if (!values[s].empty()) {
            out.push_back(fields()[s]);
        }
    }
    return out;
}

void llama_bench_pariskv::print_usage() {
    pariskv_settings defaults;
    pariskv_settings_init(&defaults);
    for (const auto & info : pariskv_table()) {
        const char * shorter = pariskv_short_name(info.key);
        std::string flag = (shorter ? std::string(shorter) + ", " : std::string()) + "--pariskv-" + info.key + " <" + info.values + ">";
        char value[64];
        size_t len = 0;
        pariskv_settings_value(&defaults, info.key, value, sizeof(value), &len);
        const std::string help = info.help;
        printf("  %-49s (default: %s) %s\n", flag.c_str(), value, help.substr(0, help.find('\n')).c_str());
    }
}

const std::vector<std::string> & llama_bench_pariskv::fields() {
    static const std::vector<std::string> names = [] {
        std::vector<std::string> out;
        for (const auto & info : pariskv_table()) {
            std::string name = std::string("pariskv_") + info.key;
            for (char & c : name) {
                c = c == '-' ? '_' : c;
            }
            out.push_back(name);
        }
        return out;
    }();
    return names;
}

bool llama_bench_pariskv::is_field(const std::string & field) {
    for (const auto & f : fields()) {
        if (f == field) {
            return true;
        }
    }
    return false;
}

pariskv_setting_kind llama_bench_pariskv::kind(const std::string & field) {
    for (size_t s = 0; s < fields().size(); ++s) {
        if (fields()[s] == field) {
            return pariskv_table()[s].kind;
        }
    }
    return PARISKV_SETTING_CHOICE;
}

std::string llama_bench_pariskv::value(const std::string & settings, const std::string & field) {
    for (size_t s = 0; s < fields().size(); ++s) {
        if (fields()[s] == field) {
            const std::string v = pariskv_value(settings, pariskv_table()[s].key);
            return pariskv_table()[s].kind == PARISKV_SETTING_SWITCH ? (v == "on" ? "1" : "0") : v;
        }
    }
    return "";
}

std::string llama_bench_pariskv::display_name(const std::string & field) {
    for (size_t s = 0; s < fields().size(); ++s) {
        if (fields()[s] == field) {
            const char * shorter = pariskv_short_name(pariskv_table()[s].key);
            return shorter ? shorter + 1 : field;
        }
    }
    return field;
}
