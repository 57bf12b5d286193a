#!/usr/bin/env python3
"""Write a tiny LLaMA-architecture GGUF with deterministic random weights.

The model is for end-to-end tests of the patched llama.cpp on a couple of CPU
cores: it loads, tokenizes and detokenizes any UTF-8 text and generates
(gibberish) text quickly, with a KV cache shaped like a real model's
(grouped-query attention, head_dim 64). It knows nothing; never use it to judge
output quality.

  architecture  llama, 2 layers, n_embd 256, 4 query heads and 2 KV heads of 64,
                n_ff 512, rope base 10000, rms eps 1e-5, all tensors F32
  vocabulary    SentencePiece ("llama"): <unk> <s> </s>, the 256 byte tokens
                <0x00>..<0xFF>, "▁" (space), the printable ASCII characters and
                a few English merges; any text falls back to byte tokens.
                Only NORMAL tokens can win greedy decoding (see output.weight)

Same seed and arguments give a byte-identical file.

  usage: make_tiny_model.py OUT.gguf [--seed S] [--n-ctx 8192] [--head-dim 64]

--head-dim changes the attention heads' size (e.g. 20, which ParisKV does not
support, to test its fallback to dense attention).
"""

import argparse
import os

import numpy as np
from gguf import GGUFWriter, TokenType

N_EMBD, N_LAYER, N_HEAD, N_HEAD_KV, N_FF = 256, 2, 4, 2, 512

# A few SentencePiece merges (each one's parts are tokens too), so that the
# tokenizer's merge path is used; listed from the highest score down.
MERGES = ["▁t", "he", "▁the", "in", "er", "an", "▁a", "re", "on", "▁s",
          "at", "en", "nd", "▁w", "or", "▁o", "is", "ed", "▁i", "es"]


def vocab():
    """Tokens, scores and token types of the SPM vocabulary."""
    toks = [("<unk>", 0.0, TokenType.UNKNOWN),
            ("<s>", 0.0, TokenType.CONTROL),
            ("</s>", 0.0, TokenType.CONTROL)]
    toks += [(f"<0x{b:02X}>", 0.0, TokenType.BYTE) for b in range(256)]
    toks += [(c, -1000.0, TokenType.NORMAL) for c in ["▁"] + [chr(c) for c in range(0x21, 0x7F)]]
    toks += [(m, -float(i), TokenType.NORMAL) for i, m in enumerate(MERGES)]
    return [t for t, _, _ in toks], [s for _, s, _ in toks], [int(k) for _, _, k in toks]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output .gguf path")
    ap.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    ap.add_argument("--n-ctx", type=int, default=8192, help="context_length (default 8192)")
    ap.add_argument("--head-dim", type=int, default=64, help="attention head size (default 64)")
    args = ap.parse_args()
    HEAD_DIM = args.head_dim

    tokens, scores, types = vocab()
    n_vocab = len(tokens)
    rng = np.random.default_rng(args.seed)

    def w(rows, cols, scale):  # a (rows, cols) numpy array is ggml ne = {cols, rows}
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    gw = GGUFWriter(args.out, "llama")
    gw.add_name("pariskv-tiny-llama")
    gw.add_file_type(0)  # LLAMA_FTYPE_ALL_F32
    gw.add_context_length(args.n_ctx)
    gw.add_embedding_length(N_EMBD)
    gw.add_block_count(N_LAYER)
    gw.add_feed_forward_length(N_FF)
    gw.add_head_count(N_HEAD)
    gw.add_head_count_kv(N_HEAD_KV)
    gw.add_key_length(HEAD_DIM)
    gw.add_value_length(HEAD_DIM)
    gw.add_rope_dimension_count(HEAD_DIM)
    gw.add_rope_freq_base(10000.0)
    gw.add_layer_norm_rms_eps(1e-5)
    gw.add_vocab_size(n_vocab)

    gw.add_tokenizer_model("llama")
    gw.add_token_list(tokens)
    gw.add_token_scores(scores)
    gw.add_token_types(types)
    gw.add_unk_token_id(0)
    gw.add_bos_token_id(1)
    gw.add_eos_token_id(2)
    gw.add_add_bos_token(True)
    gw.add_add_eos_token(False)

    # Scales keep the residual stream ~unit size; the final RMS norm makes the
    # logits' std about sqrt(N_EMBD) * 0.2 = 3.2, enough for varied greedy output.
    # The output rows of control and byte tokens are zero (logit 0, far below
    # the best NORMAL token's), so greedy output is printable ASCII and never
    # ends early on </s>.
    ones = lambda n: np.ones(n, dtype=np.float32)
    gw.add_tensor("token_embd.weight", w(n_vocab, N_EMBD, 1.0))
    for i in range(N_LAYER):
        p = f"blk.{i}."
        gw.add_tensor(p + "attn_norm.weight", ones(N_EMBD))
        gw.add_tensor(p + "attn_q.weight", w(N_HEAD * HEAD_DIM, N_EMBD, N_EMBD ** -0.5))
        gw.add_tensor(p + "attn_k.weight", w(N_HEAD_KV * HEAD_DIM, N_EMBD, N_EMBD ** -0.5))
        gw.add_tensor(p + "attn_v.weight", w(N_HEAD_KV * HEAD_DIM, N_EMBD, N_EMBD ** -0.5))
        gw.add_tensor(p + "attn_output.weight", w(N_EMBD, N_HEAD * HEAD_DIM, 0.5 * (N_HEAD * HEAD_DIM) ** -0.5))
        gw.add_tensor(p + "ffn_norm.weight", ones(N_EMBD))
        gw.add_tensor(p + "ffn_gate.weight", w(N_FF, N_EMBD, N_EMBD ** -0.5))
        gw.add_tensor(p + "ffn_up.weight", w(N_FF, N_EMBD, N_EMBD ** -0.5))
        gw.add_tensor(p + "ffn_down.weight", w(N_EMBD, N_FF, 0.5 * N_FF ** -0.5))
    gw.add_tensor("output_norm.weight", ones(N_EMBD))
    output = w(n_vocab, N_EMBD, 0.2)
    output[np.array(types) != TokenType.NORMAL] = 0.0
    gw.add_tensor("output.weight", output)

    gw.write_header_to_file()
    gw.write_kv_data_to_file()
    gw.write_tensors_to_file()
    gw.close()
    print(f"{args.out}: {os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
