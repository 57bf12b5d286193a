"""A llama-server process on loopback for tests and demos: start, wait until healthy,
greedy /completion requests, log kept on disk for checks."""

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request

LOG_DIR = tempfile.mkdtemp(prefix="pariskv-")

# Arguments added to every server (e.g. ["-ngl", "99"] to run the tests on a GPU build).
EXTRA_ARGS = []

# A JSON Lines file that every /completion request and its tokens are appended to, or None:
# two runs' records compare whole outputs (e2e.py --record).
RECORD = None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A child process on a free loopback port, its output logged to LOG_DIR for checks;
    stopped (terminated, killed after 30 s) when the `with` block ends."""

    def __init__(self, name, cmd_for_port, env=None):
        self.port = free_port()
        self.log_path = os.path.join(LOG_DIR, f"{name}-{self.port}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd_for_port(self.port), stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    def log_text(self):
        """The output so far (all of it once the process was stopped)."""
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Server(Process):
    """A llama-server process on loopback; its log is kept for checks."""

    def __init__(self, bin_dir, model, args, env=None, name="server"):
        self.name, self.args = name, [os.path.basename(model), *args]
        super().__init__(name, lambda port: [
            os.path.join(bin_dir, "llama-server"), "-m", model, "--host", "127.0.0.1", "--port", str(port),
            "-t", "2", "--no-webui", *EXTRA_ARGS, *args], env)
        deadline = time.time() + 300
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited ({self.proc.returncode}); log: {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except Exception:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"llama-server did not come up; log: {self.log_path}")
            time.sleep(0.2)

    def post(self, path, body):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=3600) as r:
            return json.loads(r.read())

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=60) as r:
            return json.loads(r.read())

    def completion(self, prompt, n_predict, **extra):
        """The whole greedy /completion response (tokens, content, timings, ...)."""
        body = {"prompt": prompt, "n_predict": n_predict, "temperature": 0.0, "top_k": 1,
                "seed": 1, "return_tokens": True, "cache_prompt": False, **extra}
        res = self.post("/completion", body)
        if RECORD:
            with open(RECORD, "a") as f:
                f.write(json.dumps({"server": self.name, "args": self.args, "prompt": prompt,
                                    "n_predict": n_predict, "tokens": res["tokens"]}) + "\n")
        return res

    def complete(self, prompt, n_predict, **extra):
        """Greedy completion: (token ids, text)."""
        res = self.completion(prompt, n_predict, **extra)
        return res["tokens"], res["content"]

    def tokenize(self, text):
        return self.post("/tokenize", {"content": text, "add_special": True})["tokens"]



