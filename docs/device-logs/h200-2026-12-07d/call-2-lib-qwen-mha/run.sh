# Qwen shape at 1M (groups of 7: the attention's 8-head batch, the union of 7 heads) and
# mha7b (groups of one), every staged build interleaved twice. carry ["build/libs", "build/next-session"]
set -u
mkdir -p build/gpu-builds && tar xJf build/libs/libs.tar.xz -C build/gpu-builds
r=$OUT/d; mkdir -p $r
B="main union caps att att2 nexp"
for i in 1 2; do for b in $B; do echo "== $b ($(cat build/gpu-builds/$b/REV)) run $i"; timeout 60 build/gpu-builds/$b/gpu_bench --defaults-only --shape qwen7b 1048576; done; done > $r/qwen.log 2>&1
grep -E '^==|^N =|ParisKV' $r/qwen.log | sed -E 's/ per decode step.*, ([0-9.]+ ms as a CUDA graph).*/: \1/'
for i in 1 2; do for b in main caps; do echo "== $b ($(cat build/gpu-builds/$b/REV)) run $i"; timeout 30 build/gpu-builds/$b/gpu_bench --defaults-only --shape mha7b 32768 131072; done; done > $r/mha.log 2>&1
grep -E '^==|^N =|ParisKV' $r/mha.log | sed -E 's/ per decode step.*, ([0-9.]+ ms as a CUDA graph).*/: \1/'
