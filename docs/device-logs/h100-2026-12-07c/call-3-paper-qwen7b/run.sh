# issue 23: the paper's configuration (one retrieval a KV head) at the Qwen2.5-7B-1M shape, 128K and 1M
set -u
r=/tmp/n3; mkdir -p $r; d=ggml-integration/device-run.sh
[ -x /tmp/pariskv-work/build-cuda/bin/llama-bench ] || $d build $r/llama > $r/build.log 2>&1
PARISKV_BENCH_SHAPE=qwen7b PARISKV_BENCH_FILL=local PARISKV_BENCH_UBATCH=512 PARISKV_BENCH_MODES=paper \
    PARISKV_BENCH_REPS=1 timeout 560 $d bench $r/paper 131072,1048576 > $r/paper.log 2>&1; echo "paper rc $?" >> $r/rc
tar czf $OUT/n3.tgz -C /tmp n3
