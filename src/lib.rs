//! ParisKV top-k KV-cache retrieval (Qi et al., arXiv 2602.07721) on the CPU and CUDA GPUs,
//! behind a C ABI (`include/pariskv.h`). The CPU implementation is the oracle every GPU
//! kernel is tested against. docs/DESIGN.md describes the layers:
//! - foundation: [`error`], [`constants`], [`shape`], [`rows`], [`config`] (an index's
//!   configuration) and [`settings`] (an engine's settings: text form, op parameters);
//! - [`algorithm`]: the method itself as stateless primitives over caller-owned buffers
//!   (rotation, codebook, encode, center, search, rank, gqa, attention);
//! - [`step`]: one decode step over an engine's own KV cache (what the ggml ops call);
//! - [`index`]: the stateful handles for programs without a KV cache of their own, on the
//!   CPU and, with feature `cuda`, on a GPU;
//! - [`cuda`] (feature `cuda`): the kernels' host side, the GPU twin of `algorithm` and `step`;
//! - [`ffi`]: the C ABI over all of it;
//! - [`eval`] (feature `eval`, and in this crate's tests): recall and attention-mass metrics,
//!   synthetic caches, `.npy` reading, for the tests, examples and `pariskv-fidelity`. The
//!   library linked into llama.cpp is built without it.

pub mod algorithm;
pub mod config;
/// The algorithm's numeric constants, shared with the CUDA kernels through `build.rs`.
pub mod constants;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod error;
#[cfg(any(test, feature = "eval"))]
pub mod eval;
pub mod ffi;
pub mod index;
pub mod rows;
pub mod settings;
pub mod shape;
pub mod step;

pub use config::Config;
pub use error::{Error, ErrorKind, Result};
pub use index::{Index, IndexStats, Retrieved};
pub use rows::{DType, RowData, Rows};
