# ParisKV in llama.cpp's build (GGML_PARISKV=ON). ggml/src/CMakeLists.txt includes this file
# once ggml-base exists: it builds the pariskv Rust library with cargo (or imports a prebuilt
# one, GGML_PARISKV_LIB) and links it once, into ggml-base, which exports its C entry points
# to the backends. Each other target that carries ParisKV code calls one function below from
# its own CMakeLists.txt (docs/INTEGRATION.md lists the call sites).

set(GGML_PARISKV_LIB "" CACHE FILEPATH "ggml: a prebuilt libpariskv.a instead of building it with cargo")

if (NOT EXISTS "${GGML_PARISKV_DIR}/Cargo.toml")
    message(FATAL_ERROR "GGML_PARISKV=ON needs GGML_PARISKV_DIR (or the PARISKV_DIR environment variable) "
                        "set to the pariskv crate; got '${GGML_PARISKV_DIR}'")
endif()

# for the functions below, which other directories call (hence cache variables)
set(GGML_PARISKV_SRC "${GGML_PARISKV_DIR}/ggml-integration/src" CACHE INTERNAL "")
# ggml/src, where this file is included from: the backends' own headers are below it
set(GGML_PARISKV_GGML_SRC "${CMAKE_CURRENT_SOURCE_DIR}" CACHE INTERNAL "")

if (GGML_PARISKV_LIB)
    # a library built elsewhere (machines without Rust): it must match the crate's header
    # and, for GGML_CUDA, be built with `--features cuda`
    if (NOT EXISTS "${GGML_PARISKV_LIB}")
        message(FATAL_ERROR "GGML_PARISKV_LIB='${GGML_PARISKV_LIB}' does not exist")
    endif()
    set(GGML_PARISKV_STATIC "${GGML_PARISKV_LIB}")
else()
    find_program(GGML_PARISKV_CARGO cargo HINTS "$ENV{CARGO_HOME}/bin" "$ENV{HOME}/.cargo/bin")
    if (NOT GGML_PARISKV_CARGO)
        message(FATAL_ERROR "GGML_PARISKV=ON needs cargo (Rust); install it from https://rustup.rs, "
                            "or set GGML_PARISKV_LIB to a prebuilt libpariskv.a")
    endif()

    set(GGML_PARISKV_TARGET_DIR "${CMAKE_BINARY_DIR}/pariskv-cargo")
    set(GGML_PARISKV_STATIC "${GGML_PARISKV_TARGET_DIR}/release/${CMAKE_STATIC_LIBRARY_PREFIX}pariskv${CMAKE_STATIC_LIBRARY_SUFFIX}")

    # with the CUDA backend the library carries its kernels (feature `cuda`); its build
    # finds nvcc through NVCC, CUDA_PATH or PATH
    set(GGML_PARISKV_FEATURES "")
    set(GGML_PARISKV_ENV "")
    if (GGML_CUDA)
        set(GGML_PARISKV_FEATURES --features cuda)
        find_program(GGML_PARISKV_NVCC nvcc HINTS "$ENV{CUDA_PATH}/bin" /usr/local/cuda/bin)
        if (GGML_PARISKV_NVCC)
            set(GGML_PARISKV_ENV "NVCC=${GGML_PARISKV_NVCC}")
        endif()
    endif()

    # cargo decides itself whether anything changed, so it runs on every build.
    add_custom_target(ggml-pariskv-cargo
        COMMAND ${CMAKE_COMMAND} -E env ${GGML_PARISKV_ENV}
                "${GGML_PARISKV_CARGO}" build --release --lib --quiet --no-default-features ${GGML_PARISKV_FEATURES}
                --manifest-path "${GGML_PARISKV_DIR}/Cargo.toml" --target-dir "${GGML_PARISKV_TARGET_DIR}"
        BYPRODUCTS "${GGML_PARISKV_STATIC}"
        COMMENT "Building the pariskv Rust library"
        USES_TERMINAL
        VERBATIM)
endif()

add_library(ggml-pariskv-rs STATIC IMPORTED GLOBAL)
set_target_properties(ggml-pariskv-rs PROPERTIES IMPORTED_LOCATION "${GGML_PARISKV_STATIC}")
if (TARGET ggml-pariskv-cargo)
    add_dependencies(ggml-base ggml-pariskv-cargo)
endif()

# ggml-base: the ops' constructors and the library; everything that includes ggml-pariskv.h
# (the backends, libllama, the tools) gets both headers from it
target_sources(ggml-base PRIVATE "${GGML_PARISKV_SRC}/ggml/ggml-pariskv.c")
target_include_directories(ggml-base PUBLIC "${GGML_PARISKV_DIR}/include" "${GGML_PARISKV_SRC}/ggml")
target_compile_definitions(ggml-base PUBLIC GGML_USE_PARISKV)
# The native libraries a Rust staticlib needs (cargo rustc -- --print native-static-libs).
target_link_libraries(ggml-base PRIVATE ggml-pariskv-rs ${CMAKE_DL_LIBS} m)

message(STATUS "ParisKV: pariskv crate at ${GGML_PARISKV_DIR}")

# the CPU backend (each variant): the ops over the thread pool
function(pariskv_attach_ggml_cpu target)
    target_sources(${target} PRIVATE "${GGML_PARISKV_SRC}/ggml-cpu/ggml-cpu-pariskv.cpp")
endfunction()

# the CUDA backend: the ops on its stream and the pinned host buffer type of offload
function(pariskv_attach_ggml_cuda target)
    target_sources(${target} PRIVATE "${GGML_PARISKV_SRC}/ggml-cuda/ggml-cuda-pariskv.cu")
    target_include_directories(${target} PRIVATE "${GGML_PARISKV_SRC}/ggml-cuda" "${GGML_PARISKV_GGML_SRC}/ggml-cuda")
endfunction()

# libllama: the index beside the KV cache and the graph hooks
function(pariskv_attach_llama target)
    target_sources(${target} PRIVATE "${GGML_PARISKV_SRC}/llama/llama-pariskv.cpp")
    # a translation unit of its own, not batched with the model sources (unity builds)
    set_source_files_properties("${GGML_PARISKV_SRC}/llama/llama-pariskv.cpp" PROPERTIES SKIP_UNITY_BUILD_INCLUSION ON)
    target_include_directories(${target} PRIVATE "${GGML_PARISKV_SRC}/llama")
endfunction()

# the common library: the flags, and llama-bench's parameters
function(pariskv_attach_common target)
    target_sources(${target} PRIVATE "${GGML_PARISKV_SRC}/common/common-pariskv.cpp")
    target_include_directories(${target} PUBLIC "${GGML_PARISKV_SRC}/common")
endfunction()

# test-backend-ops: the ops' cases
function(pariskv_attach_test target)
    target_include_directories(${target} PRIVATE "${GGML_PARISKV_SRC}/tests")
endfunction()
