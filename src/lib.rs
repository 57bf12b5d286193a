//! ParisKV top-k KV-cache retrieval (Qi et al., arXiv 2602.07721) on the CPU, behind a C
//! ABI (`include/pariskv.h`). This implementation is the oracle every GPU kernel is
//! tested against.
//!
//! Two layers over the same code:
//! - stateless primitives over caller-owned buffers: [`encode::encode_rows`],
//!   [`search::select_top_k`], [`attention::attend`], and [`cache_step::attend_cache`],
//!   one decode step over an engine's own KV cache (what the ggml op calls);
//! - the stateful [`index::Index`] handle (what an embedding C/C++ program calls).

pub mod attention;
pub mod cache_step;
pub mod center;
pub mod codebook;
pub mod config;
/// The algorithm's numeric constants, shared with the CUDA kernels through `build.rs`.
pub mod constants;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod encode;
pub mod error;
pub mod eval;
pub mod ffi;
pub mod gqa;
pub mod index;
pub mod npy;
pub mod prefetch;
pub mod rank;
pub mod rotation;
pub mod rows;
pub mod search;
pub mod settings;
pub mod shape;
pub mod synth;

pub use config::Config;
pub use error::{Error, ErrorKind, Result};
pub use index::{Index, IndexStats, Retrieved};
pub use rows::{DType, RowData, Rows};
