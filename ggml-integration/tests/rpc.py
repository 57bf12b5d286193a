#!/usr/bin/env python3
"""ParisKV over llama.cpp's RPC backend, on localhost (CPU build): llama-server with
`--rpc` and `-ngl 99` puts every layer, its KV cache and its ParisKV index on the rpc-server,
whose CPU backend runs the ParisKV ops. Checked against the same runs without RPC:

- top-k >= context and the op at full coverage: identical to dense, and the ops ran on the
  server (its GGML_PARISKV_STATS lines);
- a small top-k: identical to the same ParisKV run without RPC;
- a context shift and a slot save / erase / restore through RPC;
- two rpc-servers, the layers split between them;
- an rpc-server built without -DGGML_PARISKV: the client refuses it at connection time with
  one line naming the problem, and never sends it a ParisKV op;
- --pariskv-offload: one line saying it does not apply, answers unchanged;
- llama-bench's fill=local: the remote device's compute buffer no larger than the exact
  fill's (a per-layer cut of the CPU-side KQ mask once cost a mask-sized copy per layer).

  rpc.py --bin build/build-cpu/bin --plain-rpc-server BUILD/bin/ggml-rpc-server --tiny build/models/tiny.gguf

Servers are started and stopped here, each bounded in time; exits non-zero on any failure.
"""

import argparse
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import e2e  # noqa: E402
from e2e import FULL_COVERAGE, PROMPTS, STATS, check, early, generations, op_calls  # noqa: E402
from server import LOG_DIR, Process, Server, free_port  # noqa: E402


class RpcServer(Process):
    """An rpc-server on 127.0.0.1 (CPU backend, 2 threads); its log is kept for checks."""

    def __init__(self, exe, env=None, name="rpc"):
        super().__init__(name, lambda port: [exe, "-H", "127.0.0.1", "-p", str(port), "-t", "2"], env)
        self.endpoint = f"127.0.0.1:{self.port}"
        # ready once it accepts a connection (it prints its banner to a buffered stdout);
        # the probe closes at once, which the server takes as a client that left
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"rpc-server did not start; log: {self.log_path}")
                time.sleep(0.1)


def on(*servers):
    """llama-server arguments that put every layer on the given rpc-servers."""
    return ["--rpc", ",".join(s.endpoint for s in servers), "-ngl", "99"]


SMALL = ["--pariskv-topk", "16", "--pariskv-window", "16", *early(16, window=16)]


def test_answers(a):
    print("over RPC: dense-equal where every visible cell is attended, equal to the local run with a small top-k")
    base = ["-c", "4096"]
    with Server(a.bin, a.tiny, base, name="dense-local") as s:
        dense = generations(s, 90)
    with Server(a.bin, a.tiny, [*base, *SMALL], name="small-local") as s:
        small_local = generations(s, 90)
    for name, args in [("top-k >= context", ["--pariskv-topk", "8192"]), ("op with full coverage", FULL_COVERAGE),
                       ("small top-k", SMALL)]:
        with RpcServer(a.rpc_server, env=STATS) as r:
            with Server(a.bin, a.tiny, [*base, *on(r), *args], name="pk-rpc") as s:
                got = generations(s, 90)
                log = s.log_text()
            calls = op_calls(r.log_text())
        check("ParisKV: top-k" in log, f"{name}: the client logged its ParisKV settings")
        if args == SMALL:
            check(any(c["zone"] > 16 for c in calls), f"{name}: the ops ran on the rpc-server ({len(calls)} calls), retrieving")
            check(got == small_local, f"{name}: 3 greedy generations of 90 tokens identical to the same run without RPC")
        else:
            if args == FULL_COVERAGE:
                check(calls and all(c["attended"] == c["visible"] for c in calls),
                      f"{name}: the ops ran on the rpc-server ({len(calls)} calls) over every visible cell")
            check(got == dense, f"{name}: 3 greedy generations of 90 tokens identical to dense")


def test_two_servers(a):
    print("two rpc-servers, the layers split between them")
    base = ["-c", "4096", *SMALL]
    with Server(a.bin, a.tiny, base, name="small-local2") as s:
        local = generations(s, 60)
    with RpcServer(a.rpc_server, env=STATS, name="rpc-a") as r1, RpcServer(a.rpc_server, env=STATS, name="rpc-b") as r2:
        # 3 parts (2 layers, the output): one layer on each server
        with Server(a.bin, a.tiny, [*base, *on(r1, r2), "-ts", "1,2"], name="pk-rpc2") as s:
            got = generations(s, 60)
        calls = [len(op_calls(r.log_text())) for r in (r1, r2)]
    check(all(n > 0 for n in calls), f"both servers ran ParisKV ops ({calls[0]} and {calls[1]} calls)")
    check(got == local, "small top-k over two rpc-servers: identical to the run without RPC")


def test_shift_and_restore(a):
    print("context shift and slot save / erase / restore through RPC")
    shift = ["-c", "256", "-np", "1", "--context-shift"]
    with Server(a.bin, a.tiny, shift, name="dense-shift") as s:
        dense = s.complete(PROMPTS[1], 600)[0]
    with RpcServer(a.rpc_server) as r:
        with Server(a.bin, a.tiny, [*shift, *on(r), "--pariskv-topk", "8192"], name="pk-rpc-shift") as s:
            got = s.complete(PROMPTS[1], 600)[0]
            log = s.log_text()
    check(len(dense) == 600 and got == dense and "slot context shift" in log,
          "context shift (600 tokens in 256 cells) over RPC, top-k >= context: identical to dense")

    args = ["-c", "4096", "-np", "1", *SMALL, "--slot-save-path", LOG_DIR + "/"]
    prompt = PROMPTS[0] * 3
    with RpcServer(a.rpc_server, env=STATS) as r:
        with Server(a.bin, a.tiny, [*args, *on(r)], name="pk-rpc-restore") as s:
            fresh = s.complete(prompt, 80, cache_prompt=True)[0]
            s.post("/slots/0?action=save", {"filename": "pariskv-rpc-slot.bin"})
            s.post("/slots/0?action=erase", {})
            s.complete(PROMPTS[1] * 6, 1)  # other keys into the same cells
            s.post("/slots/0?action=erase", {})
            s.post("/slots/0?action=restore", {"filename": "pariskv-rpc-slot.bin"})
            restored = s.completion(prompt, 80, cache_prompt=True)
    check(restored.get("tokens_cached", 0) > 0 and restored["tokens"] == fresh,
          f"restored through RPC ({restored.get('tokens_cached', 0)} cached tokens): 80 tokens equal the run before the save")


def test_refusals(a):
    print("what cannot work is refused or said: a server without ParisKV ops, --pariskv-offload")
    with RpcServer(a.plain_rpc_server, name="rpc-plain") as r:
        port = free_port()
        log_path = os.path.join(LOG_DIR, f"client-plain-{port}.log")
        with open(log_path, "w") as log:
            proc = subprocess.run([os.path.join(a.bin, "llama-server"), "-m", a.tiny, "--host", "127.0.0.1", "--port",
                                   str(port), "-t", "2", "-c", "4096", *on(r), "--pariskv-topk", "16"],
                                  stdout=log, stderr=subprocess.STDOUT, timeout=120)
        text = open(log_path).read()
        alive = r.proc.poll() is None
    lines = [l for l in text.splitlines() if "cannot run the ParisKV ops" in l]
    check(proc.returncode != 0 and len(lines) == 1, f"a server without ParisKV ops is refused at connection ({lines[:1]})")
    check(alive, "the refused server is still up (it never got an op it does not know)")

    with Server(a.bin, a.tiny, ["-c", "4096"], name="dense-local3") as s:
        dense = generations(s, 60)
    with RpcServer(a.rpc_server) as r:
        with Server(a.bin, a.tiny, ["-c", "4096", *on(r), "--pariskv-topk", "8192", "--pariskv-offload"],
                    name="pk-rpc-offload") as s:
            got = generations(s, 60)
            log = s.log_text()
    lines = [l for l in log.splitlines() if "ParisKV offload not used" in l]
    check(len(lines) == 1, f"--pariskv-offload over RPC: one line saying it does not apply ({lines[:1]})")
    check(got == dense, "--pariskv-offload over RPC, top-k >= context: identical to dense")


def remote_compute_buffer(stderr):
    """The RPC device's compute buffer (MiB) that llama-bench -v reports at its first reserve."""
    for line in stderr.splitlines():
        if "RPC0" in line and "compute buffer size =" in line:
            return float(line.split("=")[1].split()[0])
    return None


def test_fill_buffer(a):
    print("llama-bench --pariskv-fill local over RPC: no per-layer copy of the KQ mask")
    sizes = {}
    with RpcServer(a.rpc_server) as r:
        for fill in ("exact", "local"):
            out = subprocess.run([os.path.join(a.bin, "llama-bench"), "-m", a.tiny, "--rpc", r.endpoint, "-ngl", "99",
                                  "-fa", "1", "-p", "0", "-n", "4", "-d", "4096", "-ub", "512", "-pkt", "32",
                                  "--pariskv-fill", fill, "-r", "1", "-t", "2", "-v"],
                                 capture_output=True, text=True, timeout=600)
            sizes[fill] = remote_compute_buffer(out.stderr) if out.returncode == 0 else None
    check(None not in sizes.values() and sizes["local"] <= sizes["exact"],
          f"the rpc device's compute buffer (MiB) with fill=local no larger than with fill=exact ({sizes})")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", required=True, help="the patched build's bin directory (llama-server, ggml-rpc-server)")
    p.add_argument("--plain-rpc-server", required=True, help="an rpc-server built without -DGGML_PARISKV")
    p.add_argument("--tiny", required=True, help="the tiny test model")
    a = p.parse_args()
    a.rpc_server = os.path.join(a.bin, "ggml-rpc-server")
    e2e.run_tests([test_answers, test_two_servers, test_shift_and_restore, test_refusals, test_fill_buffer], a)


if __name__ == "__main__":
    main()
