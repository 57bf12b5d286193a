# GPU tests + gpu_bench (8B 32K/128K interleaved twice; Qwen shape 1M once) of main 2a32869,
# stack (group-pick, fwht-shift, cells-hoist on main 1d2ab10), cc (stack + the cells cluster up to 32
# chunks), cc16 (up to 128), gpick alone on 2a32869, ar128/ar256
# (attention blocks of at least 128/256 rows). carry ["build/libs", "build/next-session"]
set -u
mkdir -p build/gpu-builds && tar xJf build/libs/libs.tar.xz -C build/gpu-builds
r=$OUT/g; mkdir -p $r
B="main stack cc cc16 gpick ar128 ar256"
SIZES="32768 131072" BENCH_TIMEOUT=60 TEST_TIMEOUT=80 timeout 420 scripts/run-gpu-lib.sh $r/llama8b $B > $r/llama8b.log 2>&1
cat $r/llama8b.log
for b in $B; do echo "== $b ($(cat build/gpu-builds/$b/REV))"; timeout 40 build/gpu-builds/$b/gpu_bench --defaults-only --shape qwen7b 1048576; done > $r/qwen.log 2>&1
grep -E '^==|^N =|ParisKV' $r/qwen.log | sed -E 's/ per decode step.*, ([0-9.]+ ms as a CUDA graph).*/: \1/'
