#!/usr/bin/env python3
"""Write a random-weights LLaMA GGUF at Q4_0 with a real model's shapes, for speed benchmarks.

Defaults are Llama-3.1-8B's shapes: 32 layers, n_embd 4096, 32 query heads and 8 KV heads of
128, n_ff 14336, vocabulary 128256, rope base 500000, context 1M. Every matrix is Q4_0 with
uniformly random zero-mean 4-bit values and one scale per tensor chosen so the activations
keep unit size; norms are ones. Decoding costs what the real model's does (same shapes,
same types, same KV cache), but the model knows nothing: never use it to judge output quality.

  usage: make_bench_model.py OUT.gguf [--layers 32] [--embd 4096] [--heads 32] [--kv-heads 8]
                             [--ff 14336] [--vocab 128256] [--ctx 1048576] [--seed 0]

Layers share their random blocks (generated once per shape), which keeps writing the ~4.5 GB
file to seconds. Dense decoding's speed does not depend on the values; ParisKV's selection
passes do (a list of nearly tied scores takes more radix passes), hence zero-mean weights.
"""

import argparse
import os
import time

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, TokenType

QK4_0, Q4_0_BYTES = 32, 18  # values per block; bytes per block: an f16 scale and 16 bytes of nibbles


def vocab(n_vocab):
    """SentencePiece-style vocabulary: control tokens, the 256 byte tokens, filler pieces."""
    toks = [("<unk>", TokenType.UNKNOWN), ("<s>", TokenType.CONTROL), ("</s>", TokenType.CONTROL)]
    toks += [(f"<0x{b:02X}>", TokenType.BYTE) for b in range(256)]
    toks += [(f"▁t{i}", TokenType.NORMAL) for i in range(n_vocab - len(toks))]
    return [t for t, _ in toks], [int(k) for _, k in toks]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output .gguf path")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--embd", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--ff", type=int, default=14336)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--ctx", type=int, default=1 << 20, help="context_length (default 1M)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    head_dim = a.embd // a.heads
    if a.embd % a.heads or a.embd % QK4_0 or a.ff % QK4_0:
        ap.error("n_embd must be a multiple of the head count and of 32, n_ff a multiple of 32")

    rng = np.random.default_rng(a.seed)
    blocks = {}

    def q4_0(rows, cols, std):
        """A (rows, cols) Q4_0 matrix of the given standard deviation, as its raw bytes."""
        key = (rows, cols, std)
        if key not in blocks:
            # nibbles uniform in 1..15: values (q - 8) * d with mean 0 and standard deviation
            # sqrt(56/3) d ~ 4.32 d. (Nibbles in 0..15 have mean -0.5 d: every matrix then
            # adds the same offset to all tokens; with it ParisKV's exact-score pick took 2.6x
            # longer in every layer but the first, most likely on nearly tied scores.
            # Trained weights are centred.)
            nib = rng.integers(1, 16, size=(rows * cols // QK4_0, 2, Q4_0_BYTES - 2), dtype=np.uint8)
            raw = np.empty((rows * cols // QK4_0, Q4_0_BYTES), dtype=np.uint8)
            raw[:, 2:] = nib[:, 0] | (nib[:, 1] << 4)
            raw[:, :2] = np.frombuffer(np.float16(std / 4.32).tobytes(), dtype=np.uint8)
            blocks[key] = raw.reshape(rows, cols // QK4_0 * Q4_0_BYTES)
        return blocks[key]

    t0 = time.time()
    tokens, types = vocab(a.vocab)
    gw = GGUFWriter(a.out, "llama")
    gw.add_name("pariskv-bench-llama")
    gw.add_file_type(2)  # LLAMA_FTYPE_MOSTLY_Q4_0
    gw.add_context_length(a.ctx)
    gw.add_embedding_length(a.embd)
    gw.add_block_count(a.layers)
    gw.add_feed_forward_length(a.ff)
    gw.add_head_count(a.heads)
    gw.add_head_count_kv(a.kv_heads)
    gw.add_rope_dimension_count(head_dim)
    gw.add_rope_freq_base(500000.0)
    gw.add_layer_norm_rms_eps(1e-5)
    gw.add_vocab_size(a.vocab)
    gw.add_tokenizer_model("llama")
    gw.add_token_list(tokens)
    gw.add_token_scores([0.0] * len(tokens))
    gw.add_token_types(types)
    gw.add_unk_token_id(0)
    gw.add_bos_token_id(1)
    gw.add_eos_token_id(2)

    ones = lambda n: np.ones(n, dtype=np.float32)
    Q4 = GGMLQuantizationType.Q4_0
    e, kv = a.embd, a.kv_heads * head_dim
    gw.add_tensor("token_embd.weight", q4_0(a.vocab, e, 1.0), raw_dtype=Q4)
    for i in range(a.layers):
        p = f"blk.{i}."
        gw.add_tensor(p + "attn_norm.weight", ones(e))
        gw.add_tensor(p + "attn_q.weight", q4_0(e, e, e ** -0.5), raw_dtype=Q4)
        gw.add_tensor(p + "attn_k.weight", q4_0(kv, e, e ** -0.5), raw_dtype=Q4)
        gw.add_tensor(p + "attn_v.weight", q4_0(kv, e, e ** -0.5), raw_dtype=Q4)
        gw.add_tensor(p + "attn_output.weight", q4_0(e, e, 0.5 * e ** -0.5), raw_dtype=Q4)
        gw.add_tensor(p + "ffn_norm.weight", ones(e))
        gw.add_tensor(p + "ffn_gate.weight", q4_0(a.ff, e, e ** -0.5), raw_dtype=Q4)
        gw.add_tensor(p + "ffn_up.weight", q4_0(a.ff, e, e ** -0.5), raw_dtype=Q4)
        gw.add_tensor(p + "ffn_down.weight", q4_0(e, a.ff, 0.5 * a.ff ** -0.5), raw_dtype=Q4)
    gw.add_tensor("output_norm.weight", ones(e))
    gw.add_tensor("output.weight", q4_0(a.vocab, e, e ** -0.5), raw_dtype=Q4)

    gw.write_header_to_file()
    gw.write_kv_data_to_file()
    gw.write_tensors_to_file()
    gw.close()
    print(f"{a.out}: {os.path.getsize(a.out) / 2**30:.2f} GiB in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
