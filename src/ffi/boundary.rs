//! The ABI edge: the one panic boundary every exported function runs inside, the
//! thread-local last-error message, and the checked conversions of C pointers into
//! Rust references. All `unsafe` of the library lives here.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use half::{bf16, f16};

use super::types::{pariskv_dtype, pariskv_gqa, pariskv_ratios, pariskv_status};
use crate::algorithm::gqa::GqaPolicy;
use crate::algorithm::search::{RatioPolicy, Ratios};
use crate::error::{Error, ErrorKind, Result};
use crate::rows::{BlockQ8_0, DType, RowData, Q8_0_BLOCK};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Pointer to this thread's last error message: the last call's if it failed, "" after one
/// that succeeded; valid until the next call on the same thread.
pub fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

impl From<ErrorKind> for pariskv_status {
    fn from(kind: ErrorKind) -> pariskv_status {
        match kind {
            ErrorKind::InvalidArgument => pariskv_status::PARISKV_ERR_INVALID_ARGUMENT,
            ErrorKind::Unsupported => pariskv_status::PARISKV_ERR_UNSUPPORTED,
            ErrorKind::OutOfMemory => pariskv_status::PARISKV_ERR_OUT_OF_MEMORY,
            ErrorKind::Internal => pariskv_status::PARISKV_ERR_INTERNAL,
            ErrorKind::Cuda => pariskv_status::PARISKV_ERR_CUDA,
        }
    }
}

/// Runs the body of an exported function: errors become a status and a message, and a
/// panic never unwinds into C. Each call starts with no error (a message never outlives
/// the next call on its thread).
pub fn boundary(function: &str, body: impl FnOnce() -> Result<()>) -> pariskv_status {
    LAST_ERROR.with(|e| {
        if !e.borrow().is_empty() {
            *e.borrow_mut() = CString::default();
        }
    });
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => pariskv_status::PARISKV_OK,
        Ok(Err(e)) => {
            set_last_error(&format!("{function}: {}", e.message));
            e.kind.into()
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("{function}: internal error: {what}"));
            pariskv_status::PARISKV_ERR_INTERNAL
        }
    }
}

/// The dtype a C caller named, or an error naming the value.
/// `raw` is the C caller's `pariskv_dtype`, read as the `u32` it is.
pub fn dtype(raw: u32, what: &str) -> Result<DType> {
    const F32: u32 = pariskv_dtype::PARISKV_F32 as u32;
    const F16: u32 = pariskv_dtype::PARISKV_F16 as u32;
    const BF16: u32 = pariskv_dtype::PARISKV_BF16 as u32;
    const Q8_0: u32 = pariskv_dtype::PARISKV_Q8_0 as u32;
    match raw {
        F32 => Ok(DType::F32),
        F16 => Ok(DType::F16),
        BF16 => Ok(DType::BF16),
        Q8_0 => Ok(DType::Q8_0),
        other => {
            Err(Error::unsupported(format!("{what}: dtype {other} is not one of PARISKV_F32/F16/BF16/Q8_0")))
        }
    }
}

pub fn raw_dtype(d: DType) -> u32 {
    let raw = match d {
        DType::F32 => pariskv_dtype::PARISKV_F32,
        DType::F16 => pariskv_dtype::PARISKV_F16,
        DType::BF16 => pariskv_dtype::PARISKV_BF16,
        DType::Q8_0 => pariskv_dtype::PARISKV_Q8_0,
    };
    raw as u32
}

/// `raw` is the C caller's `pariskv_gqa`, read as the `u32` it is.
pub fn gqa(raw: u32, what: &str) -> Result<GqaPolicy> {
    const PER_HEAD: u32 = pariskv_gqa::PARISKV_GQA_PER_HEAD as u32;
    const MEAN: u32 = pariskv_gqa::PARISKV_GQA_MEAN as u32;
    const GROUP: u32 = pariskv_gqa::PARISKV_GQA_GROUP as u32;
    match raw {
        PER_HEAD => Ok(GqaPolicy::PerHead),
        MEAN => Ok(GqaPolicy::Mean),
        GROUP => Ok(GqaPolicy::Group),
        other => Err(Error::unsupported(format!(
            "{what}: GQA policy {other} is not PARISKV_GQA_PER_HEAD, PARISKV_GQA_MEAN or PARISKV_GQA_GROUP"
        ))),
    }
}

/// The ratio policy of a `pariskv_ratios` value (`cand`, `coll` for PARISKV_RATIOS_FIXED).
pub fn ratio_policy(raw: u32, cand: f64, coll: f64, what: &str) -> Result<RatioPolicy> {
    const FIXED: u32 = pariskv_ratios::PARISKV_RATIOS_FIXED as u32;
    const REFERENCE: u32 = pariskv_ratios::PARISKV_RATIOS_REFERENCE as u32;
    const TUNED: u32 = pariskv_ratios::PARISKV_RATIOS_TUNED as u32;
    match raw {
        FIXED => {
            let r = Ratios { cand, coll };
            r.validate()?;
            Ok(RatioPolicy::Fixed(r))
        }
        REFERENCE => Ok(RatioPolicy::Adaptive),
        TUNED => Ok(RatioPolicy::Tuned),
        other => Err(Error::unsupported(format!(
            "{what}: ratio table {other} is not PARISKV_RATIOS_FIXED, _REFERENCE or _TUNED"
        ))),
    }
}

/// The `pariskv_ratios` value of a policy and the fixed ratios written beside it (for a
/// table, its last row).
pub fn raw_ratios(p: RatioPolicy) -> (u32, Ratios) {
    let (raw, r) = match p {
        RatioPolicy::Fixed(r) => (pariskv_ratios::PARISKV_RATIOS_FIXED, r),
        RatioPolicy::Adaptive => (pariskv_ratios::PARISKV_RATIOS_REFERENCE, Ratios::reference(usize::MAX)),
        RatioPolicy::Tuned => (pariskv_ratios::PARISKV_RATIOS_TUNED, Ratios::tuned(usize::MAX)),
    };
    (raw as u32, r)
}

pub fn raw_gqa(g: GqaPolicy) -> u32 {
    let raw = match g {
        GqaPolicy::PerHead => pariskv_gqa::PARISKV_GQA_PER_HEAD,
        GqaPolicy::Mean => pariskv_gqa::PARISKV_GQA_MEAN,
        GqaPolicy::Group => pariskv_gqa::PARISKV_GQA_GROUP,
    };
    raw as u32
}

fn check_ptr<T>(ptr: *const T, len: usize, name: &str) -> Result<()> {
    if len.checked_mul(std::mem::size_of::<T>()).is_none_or(|b| b > isize::MAX as usize) {
        return Err(Error::invalid(format!("{name}: {len} elements is too large")));
    }
    if ptr.is_null() {
        return Err(Error::invalid(format!("{name} is NULL")));
    }
    if !ptr.is_aligned() {
        return Err(Error::invalid(format!(
            "{name} ({ptr:p}) is not aligned to {} bytes",
            std::mem::align_of::<T>()
        )));
    }
    Ok(())
}

/// `len` elements the caller passed as input. NULL is accepted only for `len == 0`.
pub fn in_slice<'a, T>(ptr: *const T, len: usize, name: &str) -> Result<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    check_ptr(ptr, len, name)?;
    // SAFETY: non-null, aligned, size within isize::MAX (checked above); that `ptr` points
    // at `len` readable elements that nothing writes during the call is the documented
    // contract of every function taking it.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// `len` elements the caller passed for output.
pub fn out_slice<'a, T>(ptr: *mut T, len: usize, name: &str) -> Result<&'a mut [T]> {
    if len == 0 {
        return Ok(&mut []);
    }
    check_ptr(ptr, len, name)?;
    // SAFETY: as in `in_slice`, plus the contract that the caller's buffer is writable
    // and not aliased by any input of the same call.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// `len` elements of `dtype` at `ptr` (a block type: `len` rounded up to whole blocks).
pub fn in_rows<'a>(raw: u32, ptr: *const c_void, len: usize, name: &str) -> Result<RowData<'a>> {
    Ok(match dtype(raw, name)? {
        DType::F32 => RowData::F32(in_slice(ptr as *const f32, len, name)?),
        DType::F16 => RowData::F16(in_slice(ptr as *const f16, len, name)?),
        DType::BF16 => RowData::BF16(in_slice(ptr as *const bf16, len, name)?),
        DType::Q8_0 => RowData::Q8_0(in_slice(ptr as *const BlockQ8_0, len.div_ceil(Q8_0_BLOCK), name)?),
    })
}

/// A single object the caller passed by pointer.
pub fn in_ref<'a, T>(ptr: *const T, name: &str) -> Result<&'a T> {
    Ok(&in_slice(ptr, 1, name)?[0])
}

/// A single object the caller passed for output.
pub fn out_ref<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T> {
    Ok(&mut out_slice(ptr, 1, name)?[0])
}
