#pragma once

// What differs between the llama.cpp trees this integration builds on (the pinned one and an
// older one; docs/INTEGRATION.md), detected from the declarations themselves rather than from
// version numbers, so that a tree in between or after builds too. C++ only.

#include "ggml.h"

#include <type_traits>
#include <utility>

// llama_cparams::training (newer trees: llama_opt_init sets it; a training graph attends over
// the current K, not the cache): false where the field does not exist
template <typename C, typename = void> struct pariskv_has_training : std::false_type {};
template <typename C> struct pariskv_has_training<C, std::void_t<decltype(std::declval<const C &>().training)>> : std::true_type {};

template <typename C> static inline bool pariskv_training(const C & cparams) {
    if constexpr (pariskv_has_training<C>::value) {
        return cparams.training;
    } else {
        return false;
    }
}

// f32 accumulation of a flash attention node: ggml_prec_set_acc in newer trees (which deprecate
// ggml_flash_attn_ext_set_prec), ggml_flash_attn_ext_set_prec in older ones
template <typename T> static inline auto pariskv_set_f32_acc(T * node, int) -> decltype(ggml_prec_set_acc(node, GGML_PREC_F32), void()) {
    ggml_prec_set_acc(node, GGML_PREC_F32);
}
template <typename T> static inline void pariskv_set_f32_acc(T * node, long) {
    ggml_flash_attn_ext_set_prec(node, GGML_PREC_F32);
}
static inline void pariskv_set_f32_acc(ggml_tensor * node) {
    pariskv_set_f32_acc(node, 0);
}
