# main 8a3ea47 (fwht-shift and cells-hoist merged on the previous session's four merges):
# library GPU tests, llama.cpp build, 8B 32K dense vs ParisKV (reps 1), then the llama.cpp
# check. carry ["build/device-carry", "build/libs", "build/next-session"]
set -u
mkdir -p build/gpu-builds && tar xJf build/libs/libs.tar.xz -C build/gpu-builds
r=/tmp/nh; mkdir -p $r; d=ggml-integration/device-run.sh; pk() { rm -rf $OUT/nh; cp -r $r $OUT/; }
timeout 60 build/gpu-builds/main/gpu --test-threads 1 > $r/tests-main.log 2>&1; echo "lib tests rc $?: $(grep 'test result' $r/tests-main.log)" >> $r/rc; pk
$d build $r/llama > $r/build.log 2>&1; echo "build rc $?" >> $r/rc; pk
PARISKV_BENCH_MODES="dense pariskv" PARISKV_BENCH_REPS=1 timeout 120 $d bench $r/b8 32768 > $r/b8.log 2>&1; echo "b8 rc $?" >> $r/rc; pk
timeout 150 $d check $r/llama > $r/check.log 2>&1; echo "check rc $?" >> $r/rc; pk
cat $r/rc; tail -5 $r/check.log; grep -h tg128 $r/*.log
