# library: GPU tests of main (staged as build/gpu-builds/main by stage-gpu-lib.sh main=HEAD,
# packed in build/libs/libs.tar.xz), gpu_bench at the Qwen2.5-7B-1M shape, ncu per kernel
set -u
r=/tmp/n1; mkdir -p $r; pk() { tar czf $OUT/n1.tgz -C /tmp n1; }
mkdir -p build/gpu-builds && tar xJf build/libs/libs.tar.xz -C build/gpu-builds
SHAPE=qwen7b SIZES="131072 1048576" PROFILE=1 TEST_TIMEOUT=90 BENCH_TIMEOUT=150 timeout 560 \
    scripts/run-gpu-lib.sh $r/lib main > $r/lib.log 2>&1; echo "lib rc $?" >> $r/rc; pk
