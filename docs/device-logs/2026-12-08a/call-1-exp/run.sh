# Call 1 of 2026-12-08: the experiments of the 2026-12-07 source profile (branches exp-*,
# staged builds: rd = exp-refdot, lb = exp-lastblock, tq = exp-tiersq, combo = the three
# together, att / att1k = the attention over 512 / 1024 blocks; main = main's kernels).
# GPU tests of combo, att and att1k (combo holds rd, lb and tq), then gpu_bench 8B 32K/128K
# of all builds interleaved, twice. carry ["build/gpu-builds.tar.xz"] (stage-gpu-lib.sh --pack).
set -u
c=build/gpu-builds; mkdir -p $c && tar -xJf build/gpu-builds.tar.xz -C $c
r=$OUT/k; mkdir -p $r
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $r/gpu.txt
for b in combo att att1k; do
  timeout 75 $c/$b/gpu --test-threads 1 > $r/tests-$b.log 2>&1
  echo "$b ($(cat $c/$b/REV)): GPU tests rc $? $(grep -h 'test result' $r/tests-$b.log)"
done
for i in 1 2; do for b in main rd lb tq combo att att1k; do echo "== $b ($(cat $c/$b/REV)) run $i"
  timeout 30 $c/$b/gpu_bench --defaults-only 32768 131072; done; done > $r/gpu_bench.log 2>&1
grep -E '^==|ParisKV' $r/gpu_bench.log | sed -E 's/ per decode step.*, ([0-9.]+ ms as a CUDA graph).*/: \1/'
