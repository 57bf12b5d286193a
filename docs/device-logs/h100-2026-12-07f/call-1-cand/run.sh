# the device time nearly spent: cand (bc83bda: main + the three launch-bound commits +
# att-index) tested, then gpu_bench 8B 32K/128K main vs cand interleaved twice.
# carry ["build/libs2", "build/next-session"] (libs2: main 8a3ea47 and cand, staged by
# scripts/stage-gpu-lib.sh; cand is branch cand). Call 1 of the session, on an H100.
set -u
mkdir -p build/gpu-builds && tar xJf build/libs2/libs.tar.xz -C build/gpu-builds
r=$OUT/k; mkdir -p $r
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $r/gpu.txt
timeout 45 build/gpu-builds/cand/gpu --test-threads 1 > $r/tests-cand.log 2>&1
echo "cand ($(cat build/gpu-builds/cand/REV)): GPU tests rc $? $(grep -h 'test result' $r/tests-cand.log)"
for b in main cand main cand; do echo "== $b ($(cat build/gpu-builds/$b/REV))"
  timeout 30 build/gpu-builds/$b/gpu_bench --defaults-only 32768 131072; done > $r/gpu_bench.log 2>&1
grep -E '^==|ParisKV' $r/gpu_bench.log | sed -E 's/ per decode step.*, ([0-9.]+ ms as a CUDA graph).*/: \1/'
