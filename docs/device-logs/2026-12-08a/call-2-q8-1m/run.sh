# Call 2 of 2026-12-08 (the same warm H100 as call 1): issue 23's Llama-3.1-8B q8_0 offload
# run at 1M. carry ["build/device-carry"] (PARISKV_STAGE_PREBUILT=1 stage-device.sh of main
# 7ff2bef's library, the same kernels as main b5bef9a). llama-bench was SIGKILLed after about
# 7 minutes, its stderr empty past the fill's first line: call 3 looked at why.
set -u; r=/tmp/q8; mkdir -p $r; d=ggml-integration/device-run.sh; $d build $r/llama > $r/build.log 2>&1; echo "build rc $?"; PARISKV_BENCH_MODES=offload PARISKV_BENCH_REPS=1 PARISKV_BENCH_KV=q8_0 PARISKV_BENCH_FILL=local PARISKV_BENCH_UBATCH=512 timeout 520 $d bench $r/b 1048576 > $r/bench.log 2>&1; echo "bench rc $?"; free -g | head -2; tail -25 $r/bench.log; mkdir -p $OUT/q8; cp $r/*.log $OUT/q8/; tar czf $OUT/q8/b.tgz -C $r b 2>/dev/null; ls -la $r/b
