#pragma once

// ParisKV on the CUDA backend (GGML_PARISKV=ON with a pariskv library built with feature
// `cuda`): the two ops, whose kernels live in the library and run on the backend's stream,
// and the pinned host buffer type that --pariskv-offload puts K/V in.

#include "common.cuh"

// whether `op` (GGML_OP_PARISKV_ENCODE or GGML_OP_PARISKV_ATTN) can run on this device
bool ggml_cuda_pariskv_supported(int device, const ggml_tensor * op);

// runs a ParisKV op on ctx's stream
void ggml_cuda_op_pariskv(ggml_backend_cuda_context & ctx, ggml_tensor * dst);

// pinned, device-mapped host memory of device `device` that the CUDA backend of that device
// reads in place through UVA (the K/V cache under --pariskv-offload); allocation fails
// rather than fall back to pageable memory. Reached through the backend registry's proc
// address "ggml_backend_pariskv_host_buffer_type".
ggml_backend_buffer_type_t ggml_backend_cuda_pariskv_host_buffer_type(int device);

// whether buft is one of those: only its own device accepts it (supports_buft), although
// every device could read it through UVA, so that the scheduler runs every op on a layer's
// offloaded K/V on that layer's GPU, in order on its stream
bool ggml_backend_buft_is_cuda_pariskv_host(ggml_backend_buffer_type_t buft);

// whether tensor t lives in such a buffer
bool ggml_cuda_pariskv_host_tensor(const ggml_tensor * t);

// Copies `height` rows of `width` bytes (pitches in bytes) on `stream` with a kernel. For
// copies where either side lives in a pinned offload buffer: its memory is pinned in 1 GiB
// chunks (pariskv_host_alloc_progress), and one copy-engine copy (cudaMemcpy*) must not
// span two of them, while kernels read and write across them freely.
void ggml_cuda_pariskv_copy_2d(char * dst, size_t dpitch, const char * src, size_t spitch,
                               size_t width, size_t height, cudaStream_t stream);
