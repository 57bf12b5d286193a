# Call 3 of 2026-12-08: issue 23's Llama-3.1-8B q8_0 offload run at 1M, again, after call 2's
# (the same command through device-run.sh bench) was SIGKILLed after about 7 minutes with
# nothing logged: llama-bench run directly with -v, its stderr kept, and the host memory
# (free, and the VmRSS / VmPin / VmLck of $pid, which is timeout's process, not llama-bench's:
# only free's columns say anything) every 5 s. carry ["build/device-carry"] (main 7ff2bef's
# library; a fresh H100: a first try without LD_LIBRARY_PATH failed at once, this ran next in
# the same warm machine)
set -u
W=/tmp/pariskv-work; r=$OUT/q8; mkdir -p $r
ggml-integration/device-run.sh build /tmp/q8-llama > $r/build.log 2>&1; echo "build rc $?"
PYTHONPATH=$W/llama.cpp/gguf-py python3 ggml-integration/tools/make_bench_model.py $W/bench-8b-q4_0.gguf > $r/model.log 2>&1
LD_LIBRARY_PATH=$W/build-cuda/bin timeout 440 $W/build-cuda/bin/llama-bench -m $W/bench-8b-q4_0.gguf -ngl 99 -fa 1 -p 0 -n 128 -d 1048576 \
  -b 512 -ub 512 -r 1 -o json -ctk q8_0 -ctv q8_0 --pariskv-fill local -pkt 2048 -pko 1 -v \
  > $r/bench-offload.json 2> $r/bench-offload.err &
pid=$!
while kill -0 $pid 2>/dev/null; do
  echo "$(date +%T) $(free -m | awk 'NR==2{print "used",$3,"free",$4,"avail",$7}') $(grep -E 'VmRSS|VmPin|VmLck' /proc/$pid/status 2>/dev/null | tr -s ' \n' ' ')"
  sleep 5
done > $r/mem.log
wait $pid; echo "llama-bench rc $?"
tail -4 $r/mem.log; grep -iE "pinn|error|fail|cannot|KV|fill" $r/bench-offload.err | head -20; tail -5 $r/bench-offload.err; cat $r/bench-offload.json | head -c 600
xz -k $r/bench-offload.err 2>/dev/null && rm -f $r/bench-offload.err
