//! The C ABI with arbitrary arguments: configs (any field value), null pointers, sizes, k,
//! dtypes and enum values out of range, cells out of range, masks and positions of any bit
//! pattern, settings texts and op parameters of any bytes. Every call must return a status (never crash), leave a readable message when it
//! fails, and keep its documented bounds when it succeeds. Buffers are always as large as
//! the arguments say: a C caller that lies about a buffer's size is beyond any library.
#![no_main]

use std::ffi::{c_void, CStr};
use std::ptr::{null, null_mut};

use half::f16;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use pariskv::ffi::cache::*;
use pariskv::ffi::*;

const DTYPES: [u32; 5] = [0, 1, 2, 3, 0xffff_ffff]; // f32, f16, bf16, then two invalid values

fn elem_size(dtype: u32) -> usize {
    match dtype {
        0 => 4,
        1 | 2 => 2,
        _ => 4, // an invalid dtype is refused before any read
    }
}

/// Element bytes of n values of a dtype: mostly small numbers, sometimes any bits.
fn data(u: &mut Unstructured, dtype: u32, n: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(n * elem_size(dtype));
    for _ in 0..n {
        let x = if u.ratio(1, 8)? {
            f32::from_bits(u.arbitrary()?)
        } else {
            u.int_in_range(-64i32..=64)? as f32 / 8.0
        };
        match dtype {
            1 => out.extend_from_slice(&f16::from_f32(x).to_le_bytes()),
            2 => out.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes()),
            _ => out.extend_from_slice(&x.to_le_bytes()),
        }
    }
    Ok(out)
}

/// A status is one of the enum's values; a failure leaves a non-empty message.
fn checked(s: pariskv_status) -> bool {
    let msg = unsafe { CStr::from_ptr(pariskv_last_error()) };
    // a failure says why; a success leaves no message of an earlier call
    assert_eq!(msg.to_bytes().is_empty(), s == pariskv_status::PARISKV_OK, "{s:?} with message {msg:?}");
    s == pariskv_status::PARISKV_OK
}

fn ptr_or_null<T>(u: &mut Unstructured, p: *const T) -> Result<*const T> {
    Ok(if u.ratio(1, 16)? { null() } else { p })
}

fn index_calls(u: &mut Unstructured) -> Result<()> {
    let head_dim = *u.choose(&[0u32, 7, 8, 64, 128, 520])?;
    let (nq, nkv) = (u.int_in_range(0..=8)?, u.int_in_range(0..=4)?);
    let mut cfg: pariskv_config = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<pariskv_config>() as u32;
    cfg.struct_size = *u.choose(&[size, size, size, 0, size - 8, size + 8])?;
    if !checked(pariskv_config_init(&mut cfg, head_dim, nq, nkv)) {
        return Ok(());
    }
    if u.arbitrary()? {
        cfg.n_sink = u.int_in_range(0..=8)?;
        cfg.n_local = u.int_in_range(0..=40)?;
        cfg.top_k = u.int_in_range(0..=80)?;
        cfg.dense_threshold = u.int_in_range(0..=80)?;
        cfg.ratio_table = u.int_in_range(0..=3)?;
        cfg.rho_cand = f64::from_bits(u.arbitrary()?);
        cfg.rho_coll = *u.choose(&[0.05, 0.5, 1.0, -1.0, f64::NAN])?;
        cfg.scale = *u.choose(&[cfg.scale, 0.0, -1.0, f32::INFINITY, f32::NAN])?;
        cfg.softcap = *u.choose(&[0.0, 30.0, -1.0, f32::NAN])?;
        cfg.kv_dtype = *u.choose(&DTYPES)?;
        cfg.gqa_policy = u.int_in_range(0..=2)?;
        cfg.device = *u.choose(&[-1, -1, -1, -2, 0])?;
        cfg.kv_in_host = u.int_in_range(0..=1)?;
    }
    let mut index = null_mut();
    let cfg_ptr = ptr_or_null(u, &cfg)?;
    if !checked(pariskv_index_create(cfg_ptr, &mut index)) {
        assert!(index.is_null(), "a failed create left a handle");
        return Ok(());
    }
    let (d, nq, nkv) = (cfg.head_dim as usize, cfg.n_q_heads as usize, cfg.n_kv_heads as usize);
    for _ in 0..u.int_in_range(1..=8)? {
        let mut len = 0usize;
        assert!(checked(pariskv_index_len(index, &mut len)));
        match u.int_in_range(0..=4)? {
            0 => {
                let dtype = *u.choose(&DTYPES)?;
                let n = u.int_in_range(0..=200)?;
                let (k, v) = (data(u, dtype, n * nkv * d)?, data(u, dtype, n * nkv * d)?);
                let kp = ptr_or_null(u, k.as_ptr() as *const c_void)?;
                let vp = ptr_or_null(u, v.as_ptr() as *const c_void)?;
                let ok = checked(pariskv_index_append(index, dtype, kp, vp, n));
                let mut after = 0usize;
                assert!(checked(pariskv_index_len(index, &mut after)));
                assert_eq!(after, if ok { len + n } else { len }, "append is all or nothing");
            }
            1 => {
                let dtype = *u.choose(&DTYPES)?;
                let q = data(u, dtype, nq * d)?;
                let k = *u.choose(&[0u32, 1, 5, 64, 300])?;
                let mut pos = vec![0i64; nkv * k as usize];
                let mut count = vec![0u32; nkv];
                let out_pos = if u.ratio(1, 16)? { null_mut() } else { pos.as_mut_ptr() };
                if checked(pariskv_index_search(
                    index,
                    dtype,
                    q.as_ptr() as *const c_void,
                    k,
                    out_pos,
                    count.as_mut_ptr(),
                )) {
                    for h in 0..nkv {
                        let c = count[h] as usize;
                        assert!(c <= k as usize);
                        let list = &pos[h * k as usize..][..k as usize];
                        assert!(
                            list[..c].iter().all(|&p| p >= 0 && (p as usize) < len),
                            "a position out of range"
                        );
                        assert!(list[c..].iter().all(|&p| p == -1), "slots past the count are not -1");
                    }
                }
            }
            2 => {
                let dtype = *u.choose(&DTYPES)?;
                let q = data(u, dtype, nq * d)?;
                let mut out = vec![0.0f32; nq * d];
                let qp = ptr_or_null(u, q.as_ptr() as *const c_void)?;
                checked(pariskv_index_attend(index, dtype, qp, out.as_mut_ptr()));
            }
            3 => {
                let mut st: pariskv_stats = unsafe { std::mem::zeroed() };
                let p = if u.ratio(1, 8)? { null_mut() } else { &mut st as *mut _ };
                checked(pariskv_index_stats(index, p));
            }
            _ => {
                checked(pariskv_index_len(index, null_mut()));
            }
        }
    }
    pariskv_index_free(index);
    pariskv_index_free(null_mut());
    Ok(())
}

fn cache_calls(u: &mut Unstructured) -> Result<()> {
    let head_dim = *u.choose(&[0u32, 8, 24, 64, 128, 520])?;
    let mut layout = pariskv_layout::default();
    if !checked(pariskv_layout_for(head_dim, &mut layout)) {
        return Ok(());
    }
    let n_cells = u.int_in_range(0..=300usize)?;
    let d = head_dim as usize;
    let mut codes = vec![0u8; n_cells * layout.code_bytes as usize];
    let mut nibbles = vec![0u8; n_cells * layout.nibble_bytes as usize];
    let mut weights = vec![0u16; n_cells * layout.n_weights as usize];
    let dst = pariskv_codes {
        codes: codes.as_mut_ptr(),
        nibbles: nibbles.as_mut_ptr(),
        weights: weights.as_mut_ptr(),
        n_cells,
        hist: std::ptr::null_mut(),
        counted: std::ptr::null_mut(),
    };
    let dtype = *u.choose(&DTYPES)?;
    let keys = data(u, dtype, n_cells.max(1) * d)?;
    // cells: mostly in range, sometimes not (refused), possibly repeated
    let n = u.int_in_range(0..=n_cells + 2)?;
    let cells: Vec<i64> = (0..n)
        .map(|_| {
            Ok(if u.ratio(1, 16)? { u.arbitrary()? } else { u.int_in_range(0..=n_cells.max(1) as i64 - 1)? })
        })
        .collect::<Result<_>>()?;
    let stride = d * elem_size(dtype);
    // a key centre: absent, unset (set from these cells), or arbitrary values and count
    let mut center = vec![0.0f32; layout.center_len as usize];
    if u.ratio(1, 4)? {
        for c in center.iter_mut() {
            *c = u.arbitrary()?;
        }
    }
    let center_ptr = if u.ratio(1, 4)? { null_mut() } else { center.as_mut_ptr() };
    checked(pariskv_center_init(
        head_dim,
        dtype,
        keys.as_ptr() as *const c_void,
        stride,
        n_cells,
        cells.as_ptr(),
        cells.len(),
        center_ptr,
    ));
    checked(pariskv_encode_cells(
        head_dim,
        u.arbitrary()?,
        dtype,
        keys.as_ptr() as *const c_void,
        stride,
        cells.as_ptr(),
        cells.len(),
        center_ptr,
        &dst,
    ));

    let n_heads = u.int_in_range(0..=4u32)?;
    let step = pariskv_step {
        head_dim,
        v_dim: *u.choose(&[head_dim, 0, 8, 600])?,
        n_heads,
        top_k: u.int_in_range(0..=64)?,
        n_sink: u.int_in_range(0..=8)?,
        n_local: u.int_in_range(0..=32)?,
        ratio_table: u.int_in_range(0..=3)?,
        gqa_policy: u.int_in_range(0..=2)?,
        rho_cand: *u.choose(&[0.3, 1.0, 0.0, f64::NAN])?,
        rho_coll: *u.choose(&[0.3, 1.0, 2.0])?,
        scale: *u.choose(&[0.125, 0.0, f32::NAN])?,
        softcap: *u.choose(&[0.0, 20.0])?,
        seed: u.arbitrary()?,
        refine: *u.choose(&[0, 1, 3, 65, u32::MAX])?,
    };
    let v_dim = (step.v_dim as usize).min(600);
    let vals = data(u, dtype, n_cells.max(1) * v_dim)?;
    let kv = pariskv_kv {
        k_dtype: dtype,
        k: keys.as_ptr() as *const c_void,
        k_stride: stride,
        v_dtype: dtype,
        v: vals.as_ptr() as *const c_void,
        v_stride: v_dim * elem_size(dtype),
        n_cells,
    };
    let mask_dtype = *u.choose(&[0u32, 1, 2])?;
    let mask: Vec<u8> = match mask_dtype {
        1 => (0..n_cells)
            .map(|_| Ok(f16::from_bits(u.arbitrary()?).to_le_bytes()))
            .collect::<Result<Vec<_>>>()?
            .concat(),
        _ => (0..n_cells)
            .map(|_| Ok(*u.choose(&[0.0f32, f32::NEG_INFINITY, f32::NAN, -1.0])?))
            .collect::<Result<Vec<f32>>>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
    };
    let pos: Vec<i32> = (0..n_cells)
        .map(|c| Ok(if u.ratio(1, 16)? { u.arbitrary()? } else { c as i32 }))
        .collect::<Result<_>>()?;
    let vis = pariskv_visibility { mask_dtype, mask: mask.as_ptr() as *const c_void, pos: pos.as_ptr() };
    let q = data(u, 0, n_heads as usize * d)?;
    let mut out = vec![0.0f32; n_heads as usize * v_dim];
    let mut stats = pariskv_step_stats::default();
    if checked(pariskv_attend_cache(
        &step,
        q.as_ptr() as *const f32,
        d * 4,
        &kv,
        &dst,
        &vis,
        out.as_mut_ptr(),
        v_dim * 4,
        &mut stats,
    )) {
        assert!(stats.n_attended <= stats.n_visible && stats.n_visible <= n_cells, "{stats:?}");
    }
    Ok(())
}

/// Settings text of any bytes, set one key at a time, formatted and parsed back, packed into
/// op params and unpacked, and op params of any bits.
fn settings_calls(u: &mut Unstructured) -> Result<()> {
    use pariskv::ffi::settings::*;
    let key = *u.choose(&["topk", "sink", "window", "dense-threshold", "gqa", "ratios", "refine", "candidates",
        "center", "offload", "nope", ""])?;
    let text: String = u.arbitrary()?;
    let value: String = u.arbitrary()?;
    let (Ok(text), Ok(key), Ok(value)) =
        (std::ffi::CString::new(text), std::ffi::CString::new(key), std::ffi::CString::new(value))
    else {
        return Ok(());
    };
    let mut s = unsafe { std::mem::zeroed::<pariskv_settings>() };
    if !checked(pariskv_settings_parse(text.as_ptr(), &mut s)) {
        checked(pariskv_settings_init(&mut s));
    }
    checked(pariskv_settings_set(&mut s, key.as_ptr(), value.as_ptr()));
    let mut buf = [0 as std::ffi::c_char; 512];
    let mut len = 0usize;
    if checked(pariskv_settings_format(&s, buf.as_mut_ptr(), buf.len(), &mut len)) {
        let mut back = unsafe { std::mem::zeroed::<pariskv_settings>() };
        assert!(checked(pariskv_settings_parse(buf.as_ptr(), &mut back)), "formatted settings parse");
        assert_eq!(back, s, "format then parse gives the settings back");
    }
    for backend in [0u32, 1] {
        let mut threshold = 0u64;
        if checked(pariskv_settings_dense_threshold(&s, backend, &mut threshold)) {
            assert!(threshold >= s.n_sink as u64 + s.n_window as u64 + s.top_k as u64);
        }
    }
    let mut params = [0i32; PARISKV_OP_PARAMS];
    let mut step = unsafe { std::mem::zeroed::<pariskv_step>() };
    if checked(pariskv_op_params_pack(&s, u.arbitrary()?, u.arbitrary()?, params.as_mut_ptr())) {
        assert!(checked(pariskv_op_params_step(params.as_ptr(), 128, 128, 4, &mut step)), "packed params unpack");
        assert_eq!(step.top_k, s.top_k);
    }
    for p in params.iter_mut() {
        if u.ratio(1, 4)? {
            *p = u.arbitrary()?;
        }
    }
    checked(pariskv_op_params_step(params.as_ptr(), u.arbitrary()?, u.arbitrary()?, u.arbitrary()?, &mut step));
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = match u.int_in_range(0u8..=2).unwrap_or(0) {
        0 => index_calls(&mut u),
        1 => cache_calls(&mut u),
        _ => settings_calls(&mut u),
    };
});
