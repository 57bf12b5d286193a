#!/usr/bin/env python3
"""Bounded load test of llama-server with ParisKV on a tiny random model: 4 parallel slots in
a unified KV cache, concurrent long-context requests, requests cancelled midway, prompt-cache
reuse, slot save/erase/restore between rounds and context shift, against four servers:
dense; ParisKV with top-k >= the slot context (attention stays dense, the index is
maintained through every shift, cancel and restore); ParisKV at full coverage (the op runs,
since the unified cache holds more cells than the dense threshold, and attends every cell a
sequence sees); ParisKV with a small top-k (real retrieval). Required, for every server: no
crash, every request that was not cancelled completes (n_predict tokens, stopped by the
limit), RSS flat from the second round on. Then, on the same server after the load, a fixed
set of requests sent one at a time: every top-k >= context response must equal the dense
server's. (Under the concurrent rounds, dense llama.cpp does not equal itself: which requests
share a batch changes the arithmetic, and 4 of 27 greedy responses of two dense servers
differed in a trial; one at a time, the batches are the same on both servers.) Reported, not
required: how many full-coverage responses equal dense (the op's exact attention sums in
another order than flash attention, so a long greedy generation can part at a near-tie).

  load.py --bin DIR [--rounds 3] [--clients 8] [--server-args ARGS]

The model (2 layers, context 2048) is written by make_tiny_model.py, which needs the gguf
package (run with the venv's python).
"""

import argparse
import concurrent.futures
import http.client
import json
import os
import random
import shlex
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import server  # noqa: E402
from e2e import STATS, op_calls  # noqa: E402
from server import LOG_DIR, Server  # noqa: E402

# 4 slots share a unified cache of 8192 cells; each may use up to the model's training
# context, 2048 cells, where its context shifts
SLOTS, CELLS, SLOT_CTX = 4, 8192, 2048
BASE = ["-c", str(CELLS), "-np", str(SLOTS), "-kvu", "--context-shift", "--slot-save-path", LOG_DIR + "/", "-lv", "4",
        "--cache-ram", "0"]  # no host-memory prompt cache: RSS then shows leaks, not a cache filling
SERVERS = [
    ("dense", []),
    # top-k beyond any sequence: below the dense threshold, attention stays dense
    ("pariskv-topk-ge-ctx", ["--pariskv-topk", str(2 * SLOT_CTX)]),
    # top-k = the slot context: a sequence's visible cells never exceed sink + window + top-k,
    # while the unified cache of busy slots exceeds the dense threshold (4116 cells)
    ("pariskv-full", ["--pariskv-topk", str(SLOT_CTX), "--pariskv-window", "16", "--pariskv-sink", "4",
                      "--pariskv-dense-threshold", str(4 + 16 + 2 * SLOT_CTX)]),
    # the op from sink + window + 2 top-k cells (the CPU's automatic threshold is 12288)
    ("pariskv-small", ["--pariskv-topk", "64", "--pariskv-window", "32", "--pariskv-sink", "4",
                       "--pariskv-dense-threshold", str(4 + 32 + 2 * 64)]),
]

WORDS = ("the river runs past the old stone bridge while birds sing in the early light and "
         "a farmer walks his dog along the fence near the quiet village").split()


def text(rng, n_words):
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def workload(seed):
    """The round's requests: (id, kind, prompt, n_predict). Same seed, same list."""
    rng = random.Random(seed)
    # about 4.5 tokens per word with the tiny model's vocabulary
    shared = text(rng, 250)  # a long prefix several requests share (prompt-cache reuse)
    jobs = []
    for i in range(5):
        jobs.append((f"long{i}", "complete", text(rng, rng.randint(150, 400)), 24))
    for i in range(3):
        jobs.append((f"reuse{i}", "complete", shared + " " + text(rng, 20), 24))
    for i in range(3):
        jobs.append((f"cancel{i}", "cancel", text(rng, rng.randint(100, 300)), 400))
    # prompt + generation beyond the slot's cells: the server shifts the context
    jobs.append(("shift", "complete", text(rng, 200), SLOT_CTX))
    rng.shuffle(jobs)
    return jobs


def cancel_midway(port, prompt, n_predict):
    """Streams a completion and hangs up after a few tokens."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = {"prompt": prompt, "n_predict": n_predict, "temperature": 0.0, "top_k": 1, "stream": True,
            "cache_prompt": True}
    conn.request("POST", "/completion", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    chunks = 0
    while chunks < 3:
        line = resp.readline()
        if not line:
            break
        chunks += line.startswith(b"data:")
    conn.close()
    return chunks


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def run(bin_dir, model, args, rounds, clients, name):
    """Runs the rounds against one server, then the comparison requests one at a time:
    {id: tokens} of those, RSS after each round, failures, the server's log."""
    out, rss, failures = {}, [], []
    # GGML_PARISKV_STATS=1: one log line per call of the attention op (what it attended)
    with Server(bin_dir, model, [*BASE, *args], env=STATS if args else None, name=name) as s:
        for r in range(rounds):
            def one(job):
                jid, kind, prompt, n = job
                if kind == "cancel":
                    return jid, None, cancel_midway(s.port, prompt, n)
                res = s.completion(prompt, n, cache_prompt=True)
                return jid, res, None

            with concurrent.futures.ThreadPoolExecutor(clients) as ex:
                for jid, res, _ in ex.map(one, workload(1000 + r)):
                    if res is None:
                        continue
                    complete = res.get("stop") and res.get("stop_type") == "limit" and len(res["tokens"]) == res["tokens_predicted"]
                    if not complete or res["tokens_predicted"] != next(n for j, _, _, n in workload(1000 + r) if j == jid):
                        failures.append(f"{name} round {r} {jid}: incomplete ({res.get('stop_type')}, "
                                        f"{res.get('tokens_predicted')} tokens)")
                    out[(r, jid)] = res["tokens"]
            # a quiet moment: save slot 0, erase it, restore it
            s.post("/slots/0?action=save", {"filename": f"load-{name}.bin"})
            s.post("/slots/0?action=erase", {})
            s.post("/slots/0?action=restore", {"filename": f"load-{name}.bin"})
            if s.proc.poll() is not None:
                failures.append(f"{name}: the server exited ({s.proc.returncode})")
                break
            rss.append(rss_kib(s.proc.pid))
            print(f"  {name} round {r}: {len(out)} responses so far, RSS {rss[-1] / 1024:.0f} MiB", flush=True)
        # after the load, the same requests one at a time: comparable across servers
        alone = {jid: s.completion(prompt, n, cache_prompt=True)["tokens"]
                 for jid, kind, prompt, n in workload(7) if kind == "complete"}
        log = s.log_text()
    return alone, rss, failures, log


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--server-args", default="")
    a = ap.parse_args()
    server.EXTRA_ARGS = shlex.split(a.server_args)
    t0 = time.time()
    model = os.path.join(LOG_DIR, "tiny-2k.gguf")
    subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "..", "tools", "make_tiny_model.py"),
                    model, "--n-ctx", str(SLOT_CTX)], check=True, stdout=subprocess.DEVNULL)
    failures = []
    results = {}
    for name, args in SERVERS:
        out, rss, fails, log = run(a.bin, model, args, a.rounds, a.clients, name)
        failures += fails
        results[name] = out
        if args and "ParisKV: top-k" not in log:
            failures.append(f"{name}: the server did not log its ParisKV settings")
        calls = op_calls(log)
        full = sum(c["attended"] == c["visible"] for c in calls)
        if args:
            print(f"  {name}: {len(calls)} calls of the attention op, {full} of them over every visible cell",
                  flush=True)
        if name == "pariskv-full" and not (calls and full == len(calls)):
            failures.append(f"{name}: the op did not run at full coverage ({full} of {len(calls)} calls)")
        if name == "pariskv-small" and full == len(calls):
            failures.append(f"{name}: retrieval never narrowed the attended cells ({len(calls)} calls)")
        if "slot context shift" not in log:
            failures.append(f"{name}: no context shift happened")
        # flat from the second round on (the first one warms the allocators up): growth under
        # 5% or 8 MiB
        growth = rss[-1] - rss[1] if len(rss) > 2 else 0
        ok = len(rss) > 2 and growth <= max(0.05 * rss[1], 8 * 1024)
        print(f"  {name}: RSS {' -> '.join(f'{r / 1024:.0f}' for r in rss)} MiB after rounds 1..{len(rss)} "
              f"({'flat from round 2' if ok else 'GROWING or too few rounds'})", flush=True)
        if not ok:
            failures.append(f"{name}: RSS not flat from round 2 ({growth / 1024:+.0f} MiB)")
    dense = results["dense"]
    for name, required in [("pariskv-topk-ge-ctx", True), ("pariskv-full", False)]:
        got = results[name]
        same = sum(got.get(k) == v for k, v in dense.items())
        differ = sorted(k for k in dense if got.get(k) != dense[k])
        print(f"  {name}: {same}/{len(dense)} responses after the load identical to dense"
              + ("" if required else f" (reported; differing: {differ[:4]})"))
        if required and (differ or len(got) != len(dense)):
            failures.append(f"{name}: {len(differ)} responses differ from dense, e.g. {differ[:3]}")
    print(f"{'FAILED' if failures else 'OK'}: {len(failures)} failure(s) in {time.time() - t0:.0f} s (logs in {LOG_DIR})")
    for f in failures:
        print("  - " + f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
