# issue 23: decode after --pariskv-fill local against a real prefill at 128K (8B shape), dense and ParisKV
set -u
r=/tmp/n2; mkdir -p $r; d=ggml-integration/device-run.sh
$d build $r/llama > $r/build.log 2>&1
PARISKV_BENCH_FILL=exact,local PARISKV_BENCH_MODES="dense pariskv" PARISKV_BENCH_REPS=1 timeout 540 \
    $d bench $r/bench 131072 > $r/bench.log 2>&1; echo "bench rc $?" >> $r/rc
tar czf $OUT/n2.tgz -C /tmp n2
