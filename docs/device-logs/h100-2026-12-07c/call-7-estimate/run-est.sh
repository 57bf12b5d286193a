# the group estimate variants (est: padded batches, wide loads; lb3: the same, 3 blocks an SM) against main
set -u
mkdir -p build/gpu-builds && tar xJf build/libs/libs.tar.xz -C build/gpu-builds
r=$OUT/est; mkdir -p $r
SIZES="32768 131072" BENCH_TIMEOUT=200 TEST_TIMEOUT=90 timeout 300 scripts/run-gpu-lib.sh $r/llama8b main est lb3 > $r/llama8b.log 2>&1
cat $r/llama8b.log
for i in 1 2; do for b in main est lb3; do echo "== $b ($(cat build/gpu-builds/$b/REV)) run $i"; timeout 100 build/gpu-builds/$b/gpu_bench --defaults-only --shape qwen7b 131072 1048576; done; done > $r/qwen.log 2>&1
grep -E '^==|^N =|ParisKV' $r/qwen.log | sed -E 's/ per decode step.*, ([0-9.]+ ms as a CUDA graph).*/: \1/'
for b in main est lb3; do
  timeout 60 ncu --clock-control none -k 'regex:pk_group_estimate' --launch-skip 4 --launch-count 2 --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats --page details --csv build/gpu-builds/$b/gpu_bench --defaults-only --shape qwen7b 1048576 > $r/ncu-$b.csv 2>> $r/ncu.err; echo "ncu $b rc $?"
done
