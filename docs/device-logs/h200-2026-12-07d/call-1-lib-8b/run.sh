# main, union (wip-union-lean), caps (wip-estimate-caps), att (attention in one wave), att2
# (att + two blocks an SM), nexp (the score reuses the norm's exps): GPU tests of each,
# gpu_bench 8B shape (32K, 128K) interleaved twice. carry ["build/libs", "build/next-session"]
set -u
mkdir -p build/gpu-builds && tar xJf build/libs/libs.tar.xz -C build/gpu-builds
r=$OUT/c; mkdir -p $r
B="main union caps att att2 nexp"
SIZES="32768 131072" BENCH_TIMEOUT=60 TEST_TIMEOUT=80 timeout 560 scripts/run-gpu-lib.sh $r/llama8b $B > $r/llama8b.log 2>&1
cat $r/llama8b.log
