//! The CUDA path (feature `cuda`): kernels from `kernels/`, compiled by `build.rs` into an
//! embedded fatbin and loaded through the driver API (found at run time: a build with this
//! feature runs on machines without CUDA, where `driver::available()` is false). Stages
//! mirror the CPU modules one for one: `encode` here is `crate::algorithm::encode` there,
//! `step` is `crate::step`; the GPU index handle is `crate::index::cuda`.

pub mod args;
pub mod driver;
pub mod encode;
pub mod kernels;
pub mod pinned;
pub mod row_cache;
pub mod step;
