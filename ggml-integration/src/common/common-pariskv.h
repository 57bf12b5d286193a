#pragma once

// ParisKV in llama.cpp's common library and tools (GGML_PARISKV=ON): the --pariskv-* flags
// and llama-bench's parameters, one per setting of the pariskv library (pariskv.h), which
// defines, checks and documents every setting. The flags write the settings text
// (common_params.pariskv, "topk=256,window=64") that becomes llama_context_params.pariskv.

#include "arg.h"
#include "llama.h"
#include "pariskv.h"

#include <functional>
#include <string>
#include <vector>

// registers --pariskv-<key> (env LLAMA_ARG_PARISKV_<KEY>) for every setting, for the tools
// that decode long contexts
void common_pariskv_add_args(const std::function<void(common_arg)> & add_opt);

// after a context is created: its ParisKV start-up line at the default verbosity (libllama
// logs it as info, which tools show only from -lv 4)
void common_pariskv_report(const llama_context * ctx);

// at exit (common_init_result): the steps that went with ParisKV and the dense ones, by reason
void common_pariskv_report_exit(const llama_context * ctx);

// llama-server: a slot's counters (llama_pariskv_get_seq_stats) as a JSON object, "" where the
// context has no ParisKV
std::string common_pariskv_slot_json(const llama_context * ctx, int32_t seq_id);

// llama-server /props: the settings as a JSON object ("null" where ParisKV is off); throws
// std::invalid_argument on a bad settings text
std::string common_pariskv_props_json(const std::string & settings);

// llama-bench: --pariskv-<key> v1,v2,... for every setting (-pkt and -pko for topk and
// offload), swept like llama-bench's own parameters; a column pariskv_<key> each
struct llama_bench_pariskv {
    // values given per setting, in the library's order; empty: the default
    std::vector<std::vector<std::string>> values;

    // parses argv[i] and its value if it is one of ours (then advances i); false otherwise.
    // A bad value sets invalid.
    bool parse(int argc, char ** argv, int & i, bool & invalid);

    // every combination of the given values, as settings texts
    std::vector<std::string> settings() const;

    // the fields given on the command line (a markdown table shows those)
    std::vector<std::string> given_fields() const;

    static void print_usage();

    // "pariskv_topk", ... in the library's order
    static const std::vector<std::string> & fields();

    // the value of a field in a settings text, as llama-bench prints it (switches as 0/1)
    static std::string value(const std::string & settings, const std::string & field);

    // the field's type among llama-bench's (count: integer, share: float, switch: bool)
    template <typename T> static T field_type(const std::string & field, T string, T boolean, T integer, T real) {
        switch (kind(field)) {
            case PARISKV_SETTING_COUNT:  return integer;
            case PARISKV_SETTING_SWITCH: return boolean;
            case PARISKV_SETTING_SHARE:  return real;
            default:                     return string;
        }
    }

    // the markdown column of a field: pkt, pko, or the field's name
    static std::string display_name(const std::string & field);

    static bool is_field(const std::string & field);

private:
    static pariskv_setting_kind kind(const std::string & field);
};
