//! The stateful index handles, for engines that do not manage their own KV cache: a handle
//! owns the K/V rows of one layer (one sequence), encodes every key as it is appended, and
//! answers search and attend for one decode query. The contract is `handle::KvIndex`;
//! `cpu::Index` and `cuda::GpuIndex` (feature `cuda`) implement it; [`open`] picks one.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod handle;

pub use cpu::Index;
pub use handle::{IndexStats, KvIndex, Retrieved};

use crate::config::{Config, Device};
#[cfg(not(feature = "cuda"))]
use crate::error::Error;
use crate::error::Result;

/// An index on the device `cfg.device` names.
pub fn open(cfg: Config) -> Result<Box<dyn KvIndex>> {
    match cfg.device {
        Device::Cpu => Ok(Box::new(cpu::Index::new(cfg)?)),
        #[cfg(feature = "cuda")]
        Device::Cuda { .. } => Ok(Box::new(cuda::GpuIndex::new(cfg)?)),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda { ordinal, .. } => Err(Error::unsupported(format!(
            "CUDA device {ordinal} asked for, but this build of pariskv has no CUDA support (feature `cuda`)"
        ))),
    }
}
