#!/usr/bin/env bash
# The CUDA integration on a GPU machine without Rust or network (like the lent H200), from the
# repository root, with what stage-device.sh staged in build/device-carry/ (the pariskv library
# with its CUDA kernels, the patched llama.cpp tree, the tiny test models):
#
#   ggml-integration/device-run.sh build OUT         llama.cpp with -DGGML_CUDA=ON -DGGML_PARISKV=ON
#                                                    (or, staged with PARISKV_STAGE_PREBUILT=1, its
#                                                    binaries unpacked: seconds, not minutes)
#   ggml-integration/device-run.sh check OUT         test-backend-ops (CUDA vs CPU) and the end-to-end
#                                                    tests with every layer on the GPU, then again
#                                                    with --pariskv-offload on every server, and
#                                                    with a 4-slot row cache besides
#   ggml-integration/device-run.sh bench OUT [DEPTHS] llama-bench tg128 on a random-weights 8B-shaped
#                                                    Q4_0 model made here: dense flash attention vs
#                                                    ParisKV vs ParisKV offload (K/V, and V alone:
#                                                    offload-v), same run (llama-bench JSON per mode,
#                                                    a depth / tok/s table in bench.md)
#                                                    (PARISKV_BENCH_MODES: dense pariskv offload
#                                                    offload-v paper nkvo, and offload-nc
#                                                    offload-v-nc: without the row cache,
#                                                    offload-rc8k offload-v-rc8k: 8192 slots;
#                                                    PARISKV_BENCH_SHAPE: llama8b qwen7b;
#                                                    PARISKV_BENCH_KV: f16 q8_0; PARISKV_BENCH_REPS,
#                                                    PARISKV_BENCH_UBATCH, PARISKV_BENCH_FILL;
#                                                    PARISKV_BENCH_DRY=1 prints the commands only)
# PARISKV_BUILD_TARGETS replaces build's list of targets (e.g. llama-bench alone).
#   ggml-integration/device-run.sh profile OUT [DEPTH]  Nsight Compute's time of every kernel of a few
#                                                    llama-bench decode tokens at DEPTH (default 4096:
#                                                    one prompt ubatch), dense and ParisKV on the bench
#                                                    model; tools/ncu_tokens.py sums the last token by
#                                                    kernel and lists each layer's ParisKV kernels
#   ggml-integration/device-run.sh passkey OUT GGUF  Gemma 3 270M passkey at 8K/16K/32K tokens: dense
#                                                    vs ParisKV (GPU KV) vs ParisKV (offload), top-k
#                                                    256; at 32K also top-k 1024
#
# Builds and models go to PARISKV_WORK (default /tmp/pariskv-work) and are reused by later
# calls while the machine stays up; logs go to OUT.
set -uo pipefail
cmd=${1:?usage: device-run.sh build|check|bench|profile|passkey OUT [...]}
out=${2:?OUT directory}
mkdir -p "$out"
carry=build/device-carry
export PARISKV_WORK=${PARISKV_WORK:-/tmp/pariskv-work}
bin=$PARISKV_WORK/build-cuda/bin
export PYTHONPATH=$PARISKV_WORK/llama.cpp/gguf-py${PYTHONPATH:+:$PYTHONPATH}
# binaries built elsewhere find their libraries here and the toolkit's cuBLAS and runtime
[ ! -f "$carry/llama-bin.tar.xz" ] ||
    export LD_LIBRARY_PATH=$bin:/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

case $cmd in
build)
    rm -rf "$PARISKV_WORK/llama.cpp" && mkdir -p "$PARISKV_WORK/llama.cpp"
    if [ -f "$carry/llama-bin.tar.xz" ]; then
        rm -rf "$bin" && mkdir -p "$bin"
        tar -xJf "$carry/llama-bin.tar.xz" -C "$bin" && tar -xzf "$carry/gguf-py.tar.gz" -C "$PARISKV_WORK/llama.cpp" || exit 1
        missing=$(ldd "$bin"/llama-* "$bin"/test-backend-ops | grep "not found" | sort -u)
        [ -z "$missing" ] || { echo "the prebuilt binaries miss libraries: $missing"; exit 1; }
        echo "prebuilt binaries of $(cat "$carry/COMMIT" 2>/dev/null || echo '?') unpacked into $bin"
        exit 0
    fi
    tar -xzf "$carry/llama.tar.gz" -C "$PARISKV_WORK/llama.cpp"
    cp "$carry/libpariskv.a" "$PARISKV_WORK/libpariskv.a"  # the carried copy is replaced by later calls
    start=$(date +%s)
    PARISKV_DEV=1 PARISKV_CUDA=1 PARISKV_SYSTEM_TOOLS=1 PARISKV_CMAKE_ARGS="-DGGML_PARISKV_LIB=$PARISKV_WORK/libpariskv.a" \
        ggml-integration/build.sh ${PARISKV_BUILD_TARGETS:-test-backend-ops llama-server llama-cli llama-completion \
        llama-perplexity llama-batched-bench llama-bench} > "$out/build-cuda.log" 2>&1 || { tail -40 "$out/build-cuda.log"; exit 1; }
    echo "built in $(( $(date +%s) - start )) s"
    ;;
check)
    rc=0
    "$bin/test-backend-ops" -b CUDA0 -o PARISKV_ATTN > "$out/test-backend-ops.log" 2>&1 || rc=1
    grep -E "passed|FAIL" "$out/test-backend-ops.log" | tail -5
    # offload-rc4: a row cache of one set per KV head, every step evicting (its claims and
    # fills under pressure; the answers must not move)
    for mode in gpu offload offload-rc4; do
        case $mode in
            gpu) args="-ngl 99" ;;
            offload) args="-ngl 99 --pariskv-offload" ;;
            offload-rc4) args="-ngl 99 --pariskv-offload --pariskv-row-cache 4" ;;
        esac
        python3 ggml-integration/tests/e2e.py --bin "$bin" --tiny "$carry/tiny.gguf" --tiny-hd20 "$carry/tiny-hd20.gguf" \
            --server-args "$args" > "$out/e2e-cuda-$mode.log" 2>&1 || rc=1
        echo "e2e ($args): $(grep -E '^(OK|FAILED)' "$out/e2e-cuda-$mode.log")"
    done
    grep -E "FAIL|offload|GGML_SCHED_DEBUG|on the GPU" "$out/e2e-cuda-gpu.log"
    exit $rc
    ;;
bench)
    depths=${3:-32768,131072}
    # PARISKV_BENCH_SHAPE: llama8b (Llama-3.1-8B, the default) or qwen7b (Qwen2.5-7B-1M:
    # 28 layers, 28 query and 4 KV heads of 128)
    case ${PARISKV_BENCH_SHAPE:-llama8b} in
        llama8b) model=$PARISKV_WORK/bench-8b-q4_0.gguf; shape=() ;;
        qwen7b)  model=$PARISKV_WORK/bench-qwen7b-q4_0.gguf
                 shape=(--layers 28 --embd 3584 --heads 28 --kv-heads 4 --ff 18944 --vocab 152064) ;;
        *) echo "PARISKV_BENCH_SHAPE: llama8b or qwen7b" >&2; exit 2 ;;
    esac
    dry=${PARISKV_BENCH_DRY:-}
    [ -n "$dry" ] || [ -f "$model" ] || python3 ggml-integration/tools/make_bench_model.py "$model" "${shape[@]}" || exit 1
    [ -n "$dry" ] || nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
    # one llama-bench per mode, each at every depth; the same -b/-ub for every mode (they
    # matter only for the prefill to the depth, which is dense in every mode)
    ub=${PARISKV_BENCH_UBATCH:-2048}
    common=(-m "$model" -ngl 99 -fa 1 -p 0 -n 128 -d "$depths" -b "$ub" -ub "$ub" -r "${PARISKV_BENCH_REPS:-2}" -o json)
    # PARISKV_BENCH_KV: the K/V cache type (f16, or q8_0)
    kv=${PARISKV_BENCH_KV:-f16}
    common+=(-ctk "$kv" -ctv "$kv")
    # PARISKV_BENCH_FILL=local: the depth filled in linear time (speed only; exact,local both)
    [ -z "${PARISKV_BENCH_FILL:-}" ] || common+=(--pariskv-fill "$PARISKV_BENCH_FILL")
    rc=0
    # ParisKV over K/V in GPU memory is forced on (its automatic threshold keeps it dense there
    # until the GPU step beats flash attention), so that the rows measure its step; "paper" is
    # the paper's configuration; "nkvo" stock llama.cpp with the K/V in host memory
    # (attention on the CPU), what users whose cache does not fit have today
    forced="-pkt 2048 -pko 0 --pariskv-dense-threshold 1"
    # (offload modes keep their rows in a device row cache by default; "-nc": without one)
    for mode in "dense:-pkt 0" "pariskv:$forced" "offload:-pkt 2048 -pko 1" \
                "offload-v:-pkt 2048 -pko 1 --pariskv-offload-keys device" \
                "offload-nc:-pkt 2048 -pko 1 --pariskv-row-cache 0" \
                "offload-v-nc:-pkt 2048 -pko 1 --pariskv-offload-keys device --pariskv-row-cache 0" \
                "offload-rc8k:-pkt 2048 -pko 1 --pariskv-row-cache 8192" \
                "offload-v-rc8k:-pkt 2048 -pko 1 --pariskv-offload-keys device --pariskv-row-cache 8192" \
                "paper:$forced --pariskv-gqa mean --pariskv-ratios reference --pariskv-refine 1 --pariskv-center off" \
                "nkvo:-pkt 0 -nkvo 1"; do
        name=${mode%%:*}
        # PARISKV_BENCH_MODES picks some (deep contexts need one device call per mode)
        [[ " ${PARISKV_BENCH_MODES:-dense pariskv offload offload-v} " == *" $name "* ]] || continue
        echo "## $name: llama-bench ${common[*]} ${mode#*:}" | tee -a "$out/bench.md"
        [ -z "$dry" ] || continue
        "$bin/llama-bench" "${common[@]}" ${mode#*:} 2> "$out/bench-$name.err" > "$out/bench-$name.json" || rc=1
        python3 ggml-integration/tools/bench_json_table.py "$out/bench-$name.json" | tee -a "$out/bench.md"
    done
    [ -n "$dry" ] || grep -hE "ParisKV|PKV_Host|error" "$out"/bench-*.err | sort | uniq -c | head -20
    exit $rc
    ;;
profile)
    depth=${3:-4096}
    model=$PARISKV_WORK/bench-8b-q4_0.gguf
    [ -f "$model" ] || python3 ggml-integration/tools/make_bench_model.py "$model" || exit 1
    # the depth in one prompt ubatch, so that few kernels precede the decode tokens
    ub=$(( depth > 512 ? depth : 512 ))
    common=(-m "$model" -ngl 99 -fa 1 -p 0 -n 3 -d "$depth" -b "$ub" -ub "$ub" -r 1 -o json)
    rc=0
    for mode in "dense:-pkt 0" "pariskv:-pkt 2048 -pko 0 --pariskv-dense-threshold 1"; do
        name=${mode%%:*}
        ncu --clock-control none --metrics gpu__time_duration.sum --csv "$bin/llama-bench" "${common[@]}" ${mode#*:} \
            > "$out/ncu-$name-$depth.csv" 2> "$out/ncu-$name-$depth.err" || rc=1
        echo "## $name at depth $depth"
        python3 ggml-integration/tools/ncu_tokens.py "$out/ncu-$name-$depth.csv" --top 25 || rc=1
    done
    exit $rc
    ;;
passkey)
    gguf=${3:?the Gemma 3 270M GGUF}
    python3 ggml-integration/tools/passkey_sweep.py --bin "$bin" --model "$gguf" --lengths 8000,16000,32000 \
        --depths 0.25,0.5,0.75 --server-args "-ngl 99" --json "$out/passkey-cuda.json" \
        "" "--pariskv-topk 256" "--pariskv-topk 256 --pariskv-offload" 2>&1 | tee "$out/passkey-cuda.log"
    python3 ggml-integration/tools/passkey_sweep.py --bin "$bin" --model "$gguf" --lengths 32000 \
        --depths 0.25,0.5,0.75 --server-args "-ngl 99" --json "$out/passkey-cuda-k1024.json" \
        "--pariskv-topk 1024" "--pariskv-topk 1024 --pariskv-offload" 2>&1 | tee "$out/passkey-cuda-k1024.log"
    ;;
*)
    echo "unknown command $cmd" >&2; exit 2
    ;;
esac
