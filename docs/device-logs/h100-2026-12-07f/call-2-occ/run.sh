# call 2 (same warm H100 as call 1), carry ["build/libs"] (libs.tar.xz: main 8a3ea47, occtopk
# 054ac6b, occtopk4 1fa5b18, occall 7aa91ba, ai 5031c91, staged by scripts/stage-gpu-lib.sh);
# one run each (device time nearly spent), gpu_bench.log is $OUT/b.log
mkdir -p build/gpu-builds && tar xJf build/libs/libs.tar.xz -C build/gpu-builds; nvidia-smi --query-gpu=name --format=csv,noheader; for b in occtopk occtopk4 ai occall main; do echo "== $b ($(cat build/gpu-builds/$b/REV))"; timeout 25 build/gpu-builds/$b/gpu_bench --defaults-only 32768 131072; done > $OUT/b.log 2>&1; grep -E '^==|HBM   ' $OUT/b.log | sed -E 's/ per decode step.*, ([0-9.]+ ms as a CUDA graph).*/: \1/'
