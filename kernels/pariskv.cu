// All ParisKV kernels, one translation unit, compiled by build.rs into one fatbin. One
// header per family of kernels; their extern "C" names are listed in src/cuda/kernels.rs.
#include "attention.cuh"
#include "encode.cuh"
#include "gather.cuh"
#include "group.cuh"
#include "search.cuh"
