#!/usr/bin/env python3
"""End-to-end tests of llama.cpp patched with ParisKV, against dense attention (CPU build; a
CUDA build with --server-args "-ngl 99", with or without --pariskv-offload).

Runs the patched tools from BUILD/bin on a tiny random-weights model written with the gguf
package (and, with --gemma and --qwen, on Gemma 3 270M and Qwen2.5-Coder-1.5B): greedy generations with ParisKV must equal
the dense ones wherever the design says they must, and run wherever they may differ.

  e2e.py --bin build/build-cpu/bin --tiny build/models/tiny.gguf [--tiny-hd20 M] [--gemma M] [--qwen M]

Each test prints what it compared; the script exits non-zero if any failed.
"""

import argparse
import concurrent.futures
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import passkey  # noqa: E402
import server  # noqa: E402
from server import LOG_DIR, Server  # noqa: E402

FAILURES = []


def check(ok, what):
    print(("  ok    " if ok else "  FAIL  ") + what, flush=True)
    if not ok:
        FAILURES.append(what)


PROMPTS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "In a hole in the ground there lived a hobbit, not a nasty, dirty, wet hole.",
    "Once upon a time",
]

def early(k, sink=4, window=512):
    """ParisKV from sink + window + 2 top-k cells, so that the op runs on these short
    contexts (the CPU's automatic threshold keeps caches below 12K cells dense:
    test_cpu_threshold)."""
    return ["--pariskv-dense-threshold", str(sink + window + 2 * k)]


# ParisKV settings where the op runs (n_kv >= 256 > dense threshold 220 = sink 4 + window 16
# + top-k 200) but every visible cell is attended while a sequence holds at most 220 tokens
# (the tests keep prompt + generation below that): its output must then equal dense
# attention's.
FULL_COVERAGE = ["--pariskv-topk", "200", "--pariskv-window", "16", "--pariskv-sink", "4",
                 "--pariskv-dense-threshold", "220"]


STATS = {"GGML_PARISKV_STATS": "1"}


def op_calls(log):
    """The attention op's calls, from its GGML_PARISKV_STATS lines."""
    pat = re.compile(r"pariskv_attn: token \d+, KV head \d+: (\d+) cells visible, (\d+) in the zone, "
                     r"(\d+) candidates, (\d+) attended")
    return [dict(zip(["visible", "zone", "candidates", "attended"], map(int, m.groups())))
            for m in pat.finditer(log)]


def check_full_coverage(name, log):
    calls = op_calls(log)
    check(len(calls) > 0 and all(c["attended"] == c["visible"] for c in calls),
          f"{name}: the op ran ({len(calls)} calls) and attended every visible cell each time")


def generations(server, n_predict, prompts=PROMPTS):
    return [server.complete(p, n_predict)[0] for p in prompts]


def test_identity(a):
    print("tiny model: ParisKV with full coverage generates exactly what dense attention does")
    with Server(a.bin, a.tiny, ["-c", "4096"], name="dense") as s:
        dense = generations(s, 90)
    for name, args in [("top-k >= context", ["--pariskv-topk", "8192"]), ("op with full coverage", FULL_COVERAGE)]:
        # -lv 4 shows llama.cpp's info lines: the ParisKV settings and, with GGML_PARISKV_STATS,
        # one line per call of the attention op
        with Server(a.bin, a.tiny, ["-c", "4096", "-lv", "4", *args], env=STATS, name="pariskv") as s:
            got = generations(s, 90)
            log = s.log_text()
        check("ParisKV: top-k" in log, f"{name}: the server logged its ParisKV settings")
        if args == FULL_COVERAGE:
            check_full_coverage(name, log)
            check(log.count("ParisKV takes over") == 1, f"{name}: one line when decoding first crosses the threshold")
        else:
            check(not op_calls(log), f"{name}: the op never ran (the graph stays dense)")
        check(got == dense, f"{name}: {len(dense)} greedy generations of 90 tokens identical to dense")


def test_small_topk_prefix(a):
    print("tiny model: with a small top-k, tokens before retrieval begins equal dense")
    sink, window, k = 4, 16, 16
    args = ["--pariskv-topk", str(k), "--pariskv-window", str(window), "--pariskv-sink", str(sink), *early(k, sink, window)]
    with Server(a.bin, a.tiny, ["-c", "4096"], name="dense") as s:
        dense = generations(s, 300)
        n_prompt = [len(s.tokenize(p)) for p in PROMPTS]
    with Server(a.bin, a.tiny, ["-c", "4096", "-lv", "4", *args], env=STATS, name="small") as s:
        got = generations(s, 300)
        calls = op_calls(s.log_text())
    retrieving = [c for c in calls if c["zone"] > k]
    check(len(retrieving) > 0 and all(sink + window < c["attended"] <= sink + window + k for c in retrieving),
          f"retrieval ran ({len(retrieving)} calls attended at most sink + window + top-k = {sink + window + k} cells)")
    for g, d, n in zip(got, dense, n_prompt):
        # generated token i is computed over n + i cells; all are attended while
        # n + i - sink - window <= k
        exact_until = max(0, sink + window + k - n + 1)
        same = next((i for i, (x, y) in enumerate(zip(g, d)) if x != y), len(d))
        check(len(g) == 300, f"prompt of {n} tokens: all 300 tokens generated")
        check(same >= exact_until,
              f"prompt of {n} tokens: identical for the first {same} tokens (required: {exact_until})")


def test_two_slots(a):
    print("llama-server, 2 parallel slots: concurrent answers equal the dense server's")

    def both(server):
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            futs = [ex.submit(server.complete, p, 90) for p in PROMPTS[:2]]
            return [f.result()[0] for f in futs]

    for cache, kv in [("unified KV cache", "-kvu"), ("one KV stream per slot", "-no-kvu")]:
        base = ["-c", "4096", "-np", "2", kv]
        with Server(a.bin, a.tiny, base, name="dense2") as s:
            dense = both(s)
        for name, args in [("top-k >= context", ["--pariskv-topk", "8192"]), ("op with full coverage", FULL_COVERAGE)]:
            with Server(a.bin, a.tiny, [*base, "-lv", "4", *args], env=STATS, name="pariskv2") as s:
                got = both(s)
                log = s.log_text()
            if args == FULL_COVERAGE:
                check_full_coverage(f"{cache}, {name}", log)
            check(got == dense, f"{cache}, {name}: both concurrent answers identical to dense")


def test_context_shift_and_cache_reuse(a):
    print("cells rewritten in place (context shift, prompt-cache reuse) keep answers equal to dense")
    shift = ["-c", "256", "-np", "1", "--context-shift"]
    with Server(a.bin, a.tiny, shift, name="dense-shift") as s:
        dense = s.complete(PROMPTS[1], 600)[0]
    with Server(a.bin, a.tiny, [*shift, "-lv", "4", "--pariskv-topk", "8192"], name="pk-shift") as s:
        got = s.complete(PROMPTS[1], 600)[0]
        log = s.log_text()
    check(len(dense) == 600 and got == dense, "context shift (600 tokens in 256 cells), top-k >= context: identical")
    check("ParisKV: top-k" in log and "slot context shift" in log, "the server shifted the context with ParisKV on")
    small = [*shift, "--pariskv-topk", "32", "--pariskv-window", "32", *early(32, window=32)]
    with Server(a.bin, a.tiny, small, name="pk-shift-small") as s:
        got = s.complete(PROMPTS[1], 600)[0]
    check(len(got) == 600, "context shift with a small top-k (the index re-encoded after each shift): completes")

    reuse = ["-c", "4096", "-np", "1"]
    first, second = PROMPTS[0] + " and then", PROMPTS[0] + " but later"

    def pair(server):
        server.complete(first, 40, cache_prompt=True)
        res = server.completion(second, 60, cache_prompt=True)
        return res["tokens"], res.get("tokens_cached", 0)

    with Server(a.bin, a.tiny, reuse, name="dense-reuse") as s:
        dense, _ = pair(s)
    for name, args in [("top-k >= context", ["--pariskv-topk", "8192"]), ("op with full coverage", FULL_COVERAGE)]:
        with Server(a.bin, a.tiny, [*reuse, "-lv", "4", *args], env=STATS, name="pk-reuse") as s:
            got, cached = pair(s)
            log = s.log_text()
        if args == FULL_COVERAGE:
            check_full_coverage(f"prompt-cache reuse, {name}", log)
        check(cached > 0 and got == dense, f"prompt-cache reuse ({cached} cells reused), {name}: identical")


def test_kept_after_erase(a):
    print("cells a new prompt drops from a slot leave the kept code histogram: later steps still take it")
    if "-ngl" in a.server_args:
        # a device index keeps emptied cells; its steps count the zone while one lies beyond the view
        print("  (a CPU index's behaviour: not run with --server-args)")
        return
    args = ["-c", "4096", "-np", "1", "-lv", "4", "--pariskv-topk", "16", "--pariskv-window", "16",
            *early(16, window=16)]
    with Server(a.bin, a.tiny, args, env=STATS, name="pk-erase") as s:
        s.complete(PROMPTS[0] * 8, 40, cache_prompt=True)
        first = s.log_text()
        # a prompt sharing no prefix: the slot's cells past the first few are removed, most of
        # them beyond the next steps' view
        s.complete(PROMPTS[2], 40, cache_prompt=True)
        second = s.log_text()[len(first):]
    retrieving = [c for c in op_calls(second) if c["zone"] > 16]
    counted = second.count("zone histogram counted")
    check(len(op_calls(first)) > 0 and first.count("zone histogram counted") == 0,
          f"the long prompt's steps took their zone's histogram from the kept one ({len(op_calls(first))} calls)")
    check(len(retrieving) > 0 and counted == 0,
          f"after the slot's cells were cut, every step still took it ({len(retrieving)} retrieving calls, "
          f"{counted} counted)")


def test_state_restore(a):
    print("slot save / erase / restore (a state load): the index is rebuilt, generation equals an uninterrupted run")
    args = ["-c", "4096", "-np", "1", "--pariskv-topk", "16", "--pariskv-window", "16", *early(16, window=16),
            "--slot-save-path", LOG_DIR + "/"]
    prompt = PROMPTS[0] * 3  # long enough that retrieval, not full coverage, decides
    with Server(a.bin, a.tiny, args, name="pk-fresh") as s:
        fresh = s.complete(prompt, 80, cache_prompt=True)[0]
    with Server(a.bin, a.tiny, [*args, "-lv", "4"], env=STATS, name="pk-restore") as s:
        s.complete(prompt, 1, cache_prompt=True)
        s.post("/slots/0?action=save", {"filename": "pariskv-slot.bin"})
        s.post("/slots/0?action=erase", {})
        # other keys into the same cells, so that only a re-encode makes the index right again
        s.complete(PROMPTS[1] * 6, 1)
        s.post("/slots/0?action=erase", {})
        s.post("/slots/0?action=restore", {"filename": "pariskv-slot.bin"})
        restored = s.completion(prompt, 80, cache_prompt=True)
        calls = op_calls(s.log_text())
    reused = restored.get("tokens_cached", 0)
    check(reused > 0, f"the restored cells were reused ({reused} cached tokens)")
    check(any(c["zone"] > 16 for c in calls), "retrieval (not full coverage) decided after the restore")
    check(restored["tokens"] == fresh, "80 tokens after the restore equal the uninterrupted run's (small top-k)")
    # The same file restored by a new process: its key centres are unset, so the re-encode
    # (of the occupied cells) sets them from the restored keys. The first run took its
    # centre from its first ubatch, which held one key more (the last prompt token, which
    # the server evaluates again after a restore), so the codes differ slightly and a
    # tiny random model at top-k 16 drifts after a while (35 of 80 tokens agree with the
    # group policy; a centre from the cache's first 4096 cells, empty ones included, made it
    # diverge early). Without centring the codes are the same and so are all 80 tokens.
    def restored_by_new_process(extra):
        with Server(a.bin, a.tiny, [*args, *extra], name="pk-restore-new") as s:
            s.post("/slots/0?action=restore", {"filename": "pariskv-slot.bin" if not extra else "pariskv-slot-nc.bin"})
            return s.completion(prompt, 80, cache_prompt=True)

    def agree(x, y):
        return next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))

    restored = restored_by_new_process([])
    same = agree(restored["tokens"], fresh)
    check(restored.get("tokens_cached", 0) > 0 and same >= 16,
          f"restored by a new process (centres from the restored keys): {same} of 80 tokens equal the "
          "uninterrupted run's (required: 16)")
    no_centre = ["--pariskv-center", "off"]
    with Server(a.bin, a.tiny, [*args, *no_centre], name="pk-fresh-nc") as s:
        fresh_nc = s.complete(prompt, 80, cache_prompt=True)[0]
        s.post("/slots/0?action=save", {"filename": "pariskv-slot-nc.bin"})
    restored = restored_by_new_process(no_centre)
    check(restored.get("tokens_cached", 0) > 0 and restored["tokens"] == fresh_nc,
          "restored by a new process, keys not centred: 80 tokens equal the uninterrupted run's")


def test_fallbacks(a):
    print("unsupported configurations fall back to dense attention with one log line")
    with Server(a.bin, a.tiny, ["-c", "4096", "-fa", "off"], name="dense-nofa") as s:
        dense = generations(s, 60)
    with Server(a.bin, a.tiny, ["-c", "4096", "-fa", "off", "--pariskv-topk", "16", *early(16)], name="pk-nofa") as s:
        got = generations(s, 60)
        log = s.log_text()
    lines = [l for l in log.splitlines() if "ParisKV not used" in l]
    check(len(lines) == 1 and "transposed" in lines[0], f"-fa off: one log line ({lines[:1]})")
    check(got == dense, "-fa off: output identical to dense")
    if a.tiny_hd20:
        with Server(a.bin, a.tiny_hd20, ["-c", "4096", "--pariskv-topk", "16", *early(16)], name="pk-hd20") as s:
            tokens = s.complete(PROMPTS[2], 40)[0]
            log = s.log_text()
        lines = [l for l in log.splitlines() if "ParisKV not used" in l]
        check(len(lines) == 1 and "head size" in lines[0], f"head_dim 20: one log line ({lines[:1]})")
        check(len(tokens) == 40, "head_dim 20: generates")


def test_q8_0_cache(a):
    print("q8_0 K/V caches (-ctk q8_0 -ctv q8_0): ParisKV over the quantized rows; other quantized caches stay dense")
    q8 = ["-ctk", "q8_0", "-ctv", "q8_0"]
    with Server(a.bin, a.tiny, ["-c", "4096", *q8], name="dense-q8") as s:
        dense = generations(s, 90)
    with Server(a.bin, a.tiny, ["-c", "4096", "-lv", "4", *q8, *FULL_COVERAGE], env=STATS, name="pk-q8") as s:
        got = generations(s, 90)
        log = s.log_text()
    check(got == dense, f"q8_0, op with full coverage: {len(dense)} greedy generations identical to dense q8_0")
    check("K/V q8_0/q8_0" in log, "the start-up line names the q8_0 cache")
    check_full_coverage("q8_0", log)
    sink, window, k = 4, 16, 16
    args = ["--pariskv-topk", str(k), "--pariskv-window", str(window), "--pariskv-sink", str(sink), *early(k, sink, window)]
    with Server(a.bin, a.tiny, ["-c", "4096", "-lv", "4", *q8, *args], env=STATS, name="pk-q8-small") as s:
        got = generations(s, 300)
        calls = [c for c in op_calls(s.log_text()) if c["zone"] > k]
    check(len(calls) > 0 and all(c["attended"] <= sink + window + k for c in calls) and all(len(g) == 300 for g in got),
          f"q8_0, top-k {k}: retrieval ran ({len(calls)} calls, at most sink + window + top-k rows each)")
    q4 = ["-ctk", "q4_0", "-ctv", "q4_0"]
    with Server(a.bin, a.tiny, ["-c", "4096", *q4], name="dense-q4") as s:
        dense = generations(s, 40)
    with Server(a.bin, a.tiny, ["-c", "4096", *q4, "--pariskv-topk", "16", *early(16)], name="pk-q4") as s:
        got = generations(s, 40)
        log = s.log_text()
    lines = [l for l in log.splitlines() if "ParisKV not used" in l]
    check(len(lines) == 1 and "not f32, f16, bf16 or q8_0" in lines[0], f"q4_0 cache: one log line ({lines[:1]})")
    check(got == dense, "q4_0 cache: output identical to dense")


def test_cpu_threshold(a):
    print("automatic dense threshold: on the CPU, caches below 12288 cells stay dense (ParisKV is slower there); "
          "on CUDA with K/V in GPU memory, every cache")
    with Server(a.bin, a.tiny, ["-c", "4096", "-lv", "4", "--pariskv-topk", "16"], env=STATS, name="pk-auto") as s:
        generations(s, 40)
        log = s.log_text()
    on_gpu = "-ngl" in server.EXTRA_ARGS
    if on_gpu and "--pariskv-offload" in server.EXTRA_ARGS:
        want = 4 + 512 + 2 * 16
        check(f"dense below {want} cells" in log, f"offload: the start-up line gives the CUDA threshold {want}")
    elif on_gpu:
        lines = [l for l in log.splitlines() if "stays dense at every depth here" in l]
        check(len(lines) == 1 and "no index allocated" in lines[0],
              f"K/V in GPU memory: one warning that the CUDA step is not yet faster, no index ({lines[:1]})")
        check(not op_calls(log), "K/V in GPU memory: the op never ran")
    else:
        lines = [l for l in log.splitlines() if "never takes over in this cache of 4096 cells (dense below 12288)" in l]
        check(len(lines) == 1 and "no index allocated" in lines[0],
              f"a context below the CPU threshold 12288: one warning, no index ({lines[:1]})")
        check(not op_calls(log), "short contexts on the CPU: the op never ran")


def test_visible_state(a):
    print("what a user sees: the start-up line at the default verbosity, GGML_PARISKV_STATS=0 is off, "
          "the server's /props and /slots, the summary at exit")
    with Server(a.bin, a.tiny, ["-c", "4096", "--pariskv-topk", "16", *early(16)], env={"GGML_PARISKV_STATS": "0"},
                name="pk-default-verbosity") as s:
        generations(s, 40)
        log = s.log_text()
    lines = [l for l in log.splitlines() if "ParisKV: top-k 16" in l]
    check(len(lines) == 1 and "dense below 548 cells" in lines[0] and "index" in lines[0],
          f"without -lv the tool prints one start-up line with the threshold and the index memory ({lines[:1]})")
    with Server(a.bin, a.tiny, ["-c", "4096", "-lv", "4", "--pariskv-topk", "16", *early(16)],
                env={"GGML_PARISKV_STATS": "0"}, name="pk-stats-0") as s:
        generations(s, 40)
        log = s.log_text()
    check(not op_calls(log), "GGML_PARISKV_STATS=0 logs no step")
    # the settings in /props, a slot's counters in /slots, the summary at exit
    sink, window, k = 4, 512, 16
    with Server(a.bin, a.tiny, ["-c", "4096", "-np", "1", "--pariskv-topk", str(k), *early(k)], name="pk-state") as s:
        long_prompt = PROMPTS[1] * 40
        n_long = len(s.tokenize(long_prompt))
        generations(s, 20, [long_prompt])  # over the threshold: 19 decode steps with ParisKV
        generations(s, 10, [PROMPTS[2]])   # a new short prompt: 9 steps below it
        props = s.get("/props").get("pariskv")
        slot = s.get("/slots")[0].get("pariskv")
    log = s.log_text()
    offload = "--pariskv-offload" in server.EXTRA_ARGS  # the CUDA check adds it to every server
    check(props is not None and props["topk"] == k and props["gqa"] == "group" and props["offload"] is offload,
          f"/props shows the settings ({props})")
    check(n_long > sink + window + k and slot is not None and slot["steps"] == 19
          and slot["mean_rows"] == sink + window + k and slot["dense"]["shallow"] == 9
          and slot["dense"]["prompt"] >= 2 and slot["dense"]["mixed"] == 0 and slot["dense"]["unsupported"] == 0,
          f"/slots counts the slot's steps: 19 with ParisKV over {sink + window + k} rows, 9 below the threshold ({slot})")
    check(f"ParisKV: 19 steps with ParisKV ({sink + window + k} rows per KV head and token)" in log
          and "0 batched with prompts, 9 below the dense threshold" in log,
          "the server prints the steps' summary at exit")
    out = subprocess.run([os.path.join(a.bin, "llama-perplexity"), "-m", a.tiny, "--pariskv-topk", "16"],
                         capture_output=True, text=True, timeout=60)
    check(out.returncode != 0 and "invalid argument: --pariskv-topk" in out.stderr,
          "llama-perplexity refuses the flags it could not use (its prompt batches stay dense)")


def test_flags(a):
    print("flags: registered for every tool, environment variables, llama-bench column")
    for tool in ["llama-cli", "llama-server", "llama-completion", "llama-batched-bench"]:
        out = subprocess.run([os.path.join(a.bin, tool), "--help"], capture_output=True, text=True).stdout
        names = ["--pariskv-topk", "--pariskv-sink", "--pariskv-window", "--pariskv-dense-threshold", "--pariskv-gqa",
                 "--pariskv-offload"]
        check(all(n in out for n in names) and "LLAMA_ARG_PARISKV_TOPK" in out, f"{tool} --help lists the ParisKV flags")
        group = out[out.find("----- ParisKV params -----"):]
        check(out.count("--pariskv-") == group.count("--pariskv-") > 0 and "0 = off; long-context" in " ".join(group.split()),
              f"{tool} --help: every ParisKV flag in its own group, the help wrapped by llama.cpp")
    with Server(a.bin, a.tiny, ["-c", "4096", "-lv", "4"], env={"LLAMA_ARG_PARISKV_TOPK": "48", "LLAMA_ARG_PARISKV_WINDOW": "64", "LLAMA_ARG_PARISKV_GQA": "mean"},
                name="env") as s:
        log = s.log_text()
    check("ParisKV: top-k 48 (group-mean query), sink 4, window 64" in log,
          "LLAMA_ARG_PARISKV_TOPK / _WINDOW / _GQA reach the context")
    out = subprocess.run([os.path.join(a.bin, "llama-bench"), "-m", a.tiny, "-p", "0", "-n", "16", "-d", "300",
                          "-pkt", "0,32", "-r", "1", "-t", "2", "-o", "json"], capture_output=True, text=True)
    try:
        rows = json.loads(out.stdout)
    except json.JSONDecodeError:
        rows = []
    check([r.get("pariskv_topk") for r in rows] == [0, 32], f"llama-bench -pkt 0,32 sweeps it ({len(rows)} rows)")
    out = subprocess.run([os.path.join(a.bin, "llama-bench"), "-m", a.tiny, "-p", "0", "-n", "4", "-pkt", "0,32",
                          "-r", "1", "-t", "2"], capture_output=True, text=True).stdout
    check("pkt" in out, "llama-bench prints the pkt column")
    # the depth fill: llama-bench only, marked in its rows and said on stderr
    out = subprocess.run([os.path.join(a.bin, "llama-bench"), "-m", a.tiny, "-p", "0", "-n", "8", "-d", "1000",
                          "-pkt", "0,32", "--pariskv-fill", "exact,local", "-r", "1", "-t", "2", "-o", "json"],
                         capture_output=True, text=True)
    try:
        rows = json.loads(out.stdout)
    except json.JSONDecodeError:
        rows = []
    check([(r.get("pariskv_topk"), r.get("pariskv_fill")) for r in rows] ==
          [(0, "exact"), (0, "local"), (32, "exact"), (32, "local")] and all(r.get("avg_ts", 0) > 0 for r in rows),
          f"llama-bench --pariskv-fill exact,local: a row each, marked ({len(rows)} rows)")
    check("speed only" in out.stderr, "llama-bench says that fill=local is speed only")
    helps = subprocess.run([os.path.join(a.bin, "llama-server"), "--help"], capture_output=True, text=True).stdout
    check("--pariskv-fill" not in helps, "the depth fill is llama-bench's only (not a llama-server flag)")


def test_bench_depth_state(a):
    print("llama-bench: the context state after a depth fill kept only where a later run restores it")
    bench = [os.path.join(a.bin, "llama-bench"), "-m", a.tiny, "-p", "0", "-n", "4", "-d", "256", "-t", "2", "--progress"]
    err = subprocess.run(bench + ["-r", "2"], capture_output=True, text=True).stderr
    check("depth run 2/2 (cached)" in err, "llama-bench -r 2: the second repetition restores the first's depth")
    # where the state exceeds the host's MemAvailable (here a /proc/meminfo that says 1 kB, in
    # a mount namespace of this process alone) it is not copied, and later runs fill again
    fake = os.path.join(LOG_DIR, "meminfo-1k")
    with open("/proc/meminfo") as f, open(fake, "w") as g:
        g.write("".join("MemAvailable:          1 kB\n" if l.startswith("MemAvailable:") else l for l in f))
    script = 'mount --bind "$0" /proc/meminfo && exec "$@"'
    probe = subprocess.run(["unshare", "-m", "sh", "-c", script, fake, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        print(f"  SKIPPED (not a failure): the low-memory case needs unshare -m and mount (root): {probe.stderr.strip()}")
        return
    for reps, told in (("2", True), ("1", False)):
        err = subprocess.run(["unshare", "-m", "sh", "-c", script, fake] + bench + ["-r", reps],
                             capture_output=True, text=True).stderr
        said = "exceeds the host memory available" in err
        check(said == told and "(cached)" not in err and f"depth run {reps}/{reps}" in err,
              f"llama-bench -r {reps} with 1 kB available: {'no copy, the second fill again' if told else 'no copy needed, none tried'}")


def test_offload(a):
    print("--pariskv-offload: K/V (or V alone) in pinned host memory read in place by the GPU, answers equal dense")
    with Server(a.bin, a.tiny, ["-c", "4096"], name="dense") as s:
        dense = generations(s, 90)
    # GGML_SCHED_DEBUG=2 logs every graph split with its inputs (what the scheduler copies
    # between backends) and the backend of every node
    env = {**STATS, "GGML_SCHED_DEBUG": "2"}
    # K with V in host memory (the default), then K in GPU memory and only V in host memory
    for what, args in [("K/V", []), ("V", ["--pariskv-offload-keys", "device"])]:
        with Server(a.bin, a.tiny, ["-c", "4096", "-lv", "5", "--pariskv-offload", *args, *FULL_COVERAGE], env=env,
                    name=f"offload-{what.replace('/', '')}") as s:
            got = generations(s, 90)
            slots = (s.get("/props").get("pariskv") or {}).get("row-cache")
            log = s.log_text()
        check_full_coverage(f"offload {what}", log)
        check(got == dense, f"offload {what}, op with full coverage: {len(dense)} greedy generations identical to dense")
        if "_PKV_Host" not in log:  # a CPU build: the cache is in host memory already
            lines = [l for l in log.splitlines() if "ParisKV offload not used" in l]
            check(len(lines) > 0 and all("host memory already" in l for l in lines), f"CPU build: logged ({lines[:1]})")
            continue
        check(re.search(rf"ParisKV offload: {what} of 2 layer\(s\) in pinned host memory", log) is not None,
              f"both layers' {what} in the pinned host buffer type (CUDA0_PKV_Host)")
        splits, on = sched_debug(log)
        copied = [i for _, inputs in splits for i in inputs if i.startswith("cache_")]
        check(len(splits) > 0 and not copied,
              f"GGML_SCHED_DEBUG: {len(splits)} graph splits, no K/V cache view among their inputs ({copied[:3]})")
        check(on.get("PARISKV_AT") == {"CUDA0"} and on.get("PARISKV_EN") == {"CUDA0"},
              f"both ParisKV ops run on the GPU ({on.get('PARISKV_AT')}, {on.get('PARISKV_EN')})")
        # the row cache (its default size, as /props reports it): announced, and read from by
        # the later steps
        check(isinstance(slots, int) and slots > 0 and
              re.search(rf"ParisKV row cache: {slots} slots per KV head and stream, [0-9.]+ MiB", log) is not None,
              f"offload {what}: the row cache of /props' {slots} slots in the start-up lines")
        counts = [(int(h), int(m)) for h, m in
                  re.findall(r"row cache: (\d+) rows read from GPU memory, (\d+) from host memory", log)]
        check(len(counts) > 0 and counts[-1][0] > 0,
              f"offload {what}: steps read rows from the row cache (last count {counts[-1:]})")


def sched_debug(log):
    """From a GGML_SCHED_DEBUG=2 log at -lv 5: the graph splits as (backend, input names), and
    for each op (its name cut to 10 characters, as printed) the backends its nodes ran on."""
    text = re.sub(r"\d+\.\d+\.\d+\.\d+ [A-Z] ", "", log)  # one timestamp per debug print
    splits = [(b, re.findall(r"\[(\S+) \(", inputs or ""))
              for b, inputs in re.findall(r"## SPLIT #\d+: (\S+) # \d+ inputs(?:: ([^\n]*))?", text)]
    on = {}
    for op, backend in re.findall(r"node #\s*\d+ \(\s*([^)]+)\): .{20} \( *[^)]*\) \[ *(\w+)", text):
        on.setdefault(op, set()).add(backend)
    return splits, on


def test_gemma_passkey(a):
    """The answer, the pass key, must be the same; the words after it may differ: on this prompt
    the query and key bits of the decode step depend on llama.cpp's thread count, and at 2
    threads ParisKV's continuation after the key differs from dense's (checked: the step's
    selection on those inputs is the one the previous implementation made, bit for bit)."""
    print("Gemma 3 270M: passkey at ~8K tokens, dense vs ParisKV top-k 256, f16 and q8_0 K/V caches")
    prompt, key = passkey.make_prompt(8000, 0.5, seed=7)
    for cache in ["f16", "q8_0"]:
        answers = {}
        for name, args in [("dense", []), ("pariskv", ["--pariskv-topk", "256", *early(256)])]:
            with Server(a.bin, a.gemma, ["-c", "9216", "-b", "2048", "-ub", "512", "-ctk", cache, "-ctv", cache, *args],
                        name=f"gemma-{name}-{cache}") as s:
                t0 = time.time()
                _, text = s.complete(prompt, 12)
                answers[name] = text
                print(f"  {name}, {cache} cache: {text.strip()!r} ({time.time() - t0:.0f} s)")
        check(passkey.answers(answers["dense"], key), f"dense ({cache} cache) answers the pass key {key}")
        check(passkey.answers(answers["pariskv"], key), f"ParisKV (top-k 256, {cache} cache) gives the same answer as dense")


def test_qwen_passkey(a):
    print("Qwen2.5-Coder-1.5B (d 128, 12 query heads on 2 KV heads, ParisKV in all 28 layers): passkey at ~4K "
          "tokens, dense vs ParisKV top-k 256")
    prompt, key = passkey.make_prompt(4000, 0.5, seed=5)
    answers = {}
    for name, args in [("dense", []), ("pariskv", ["--pariskv-topk", "256", *early(256)])]:
        with Server(a.bin, a.qwen, ["-c", "5120", "-b", "2048", "-ub", "512", "-lv", "4", *args],
                    env=STATS, name=f"qwen-{name}") as s:
            t0 = time.time()
            _, text = s.complete(prompt, 12)
            calls = op_calls(s.log_text())
            answers[name] = text
            print(f"  {name}: {text.strip()!r} ({time.time() - t0:.0f} s)")
    check(passkey.answers(answers["dense"], key), f"dense answers the pass key {key}")
    check(len(calls) > 0 and all(c["attended"] < c["visible"] for c in calls),
          f"ParisKV retrieved ({len(calls)} steps, each over fewer cells than visible)")
    check(passkey.answers(answers["pariskv"], key), "ParisKV (top-k 256) gives the same answer as dense")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="directory of the patched llama.cpp binaries")
    ap.add_argument("--tiny", required=True, help="tiny model (make_tiny_model.py)")
    ap.add_argument("--tiny-hd20", help="tiny model with head_dim 20 (unsupported by ParisKV)")
    ap.add_argument("--gemma", help="Gemma 3 270M GGUF: adds the passkey test")
    ap.add_argument("--qwen", help="Qwen2.5-Coder-1.5B GGUF: adds its passkey test")
    ap.add_argument("--only", help="comma-separated test names to run")
    ap.add_argument("--server-args", default="", help="arguments added to every llama-server, e.g. '-ngl 99' "
                    "to run the tests on a GPU build (the KV cache, index and ops on the GPU)")
    ap.add_argument("--record", help="append every completion (server, arguments, prompt, tokens) to this "
                    "JSON Lines file, to compare two builds' outputs")
    a = ap.parse_args()
    server.EXTRA_ARGS = shlex.split(a.server_args)
    server.RECORD = a.record
    tests = [test_identity, test_small_topk_prefix, test_two_slots, test_context_shift_and_cache_reuse,
             test_kept_after_erase, test_state_restore, test_fallbacks, test_q8_0_cache, test_cpu_threshold, test_visible_state, test_flags,
             test_bench_depth_state, test_offload]
    tests += ([test_gemma_passkey] if a.gemma else []) + ([test_qwen_passkey] if a.qwen else [])
    run_tests(tests, a, set(a.only.split(",")) if a.only else None)


def run_tests(tests, a, only=None):
    """Runs each test (those named in `only`, if given) with the arguments `a`, timing it;
    prints the failures and exits non-zero if there were any."""
    for t in tests:
        if only and t.__name__ not in only:
            continue
        t0 = time.time()
        try:
            t(a)
        except Exception as e:  # a crash of a tool is a failure of its test, not of the harness
            check(False, f"{t.__name__} raised {e!r}")
        print(f"  ({time.time() - t0:.0f} s; logs in {LOG_DIR})", flush=True)
    print(f"{'FAILED' if FAILURES else 'OK'}: {len(FAILURES)} failure(s)")
    for f in FAILURES:
        print("  - " + f)
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
