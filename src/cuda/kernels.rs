//! Every kernel of the fatbin, by its extern "C" name, with the dynamic shared memory it
//! may ask for (those above 48 KiB must be allowed per function at load time).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub name: &'static str,
    pub dynamic_smem: usize,
}

/// Warps per block of `pk_encode` (PK_ENCODE_WARPS in kernels/encode.cuh).
pub const ENCODE_WARPS: u32 = 4;

pub const ENCODE: Kernel =
    Kernel { name: "pk_encode", dynamic_smem: ENCODE_WARPS as usize * crate::constants::MAX_HEAD_DIM * 4 };

pub const ALL_KERNELS: &[Kernel] = &[ENCODE];
