//! GPU stages against the CPU oracle (feature `cuda`). Without a CUDA driver and GPU every
//! test prints why it skipped and passes; scripts/gpu-tests.sh runs them on a GPU machine.
#![cfg(feature = "cuda")]

use half::{bf16, f16};
use pariskv::cuda::driver::{self, DeviceBuffer, Stream};
use pariskv::cuda::encode::{encode, EncodeTarget, GpuRotation};
use pariskv::encode::{encode_rows, CodeStore, EncodeScratch};
use pariskv::rotation::Rotation;
use pariskv::rows::{DType, RowData, Rows};
use pariskv::shape::Shape;
use pariskv::synth::{SynthCache, SynthSpec};

/// The current context of device 0, or None (after saying why) when there is no GPU.
fn gpu() -> Option<()> {
    match driver::use_primary_context(0) {
        Ok(_) => Some(()),
        Err(e) => {
            eprintln!("SKIPPED (no GPU): {e}");
            None
        }
    }
}

/// Keys as raw bytes of `dtype` plus the same values in f32.
fn keys_in(dtype: DType, f: &[f32]) -> (Vec<u8>, Vec<f32>) {
    match dtype {
        DType::F32 => (f.iter().flat_map(|x| x.to_le_bytes()).collect(), f.to_vec()),
        DType::F16 => {
            let h: Vec<f16> = f.iter().map(|&x| f16::from_f32(x)).collect();
            (h.iter().flat_map(|x| x.to_le_bytes()).collect(), h.iter().map(|x| x.to_f32()).collect())
        }
        DType::BF16 => {
            let h: Vec<bf16> = f.iter().map(|&x| bf16::from_f32(x)).collect();
            (h.iter().flat_map(|x| x.to_le_bytes()).collect(), h.iter().map(|x| x.to_f32()).collect())
        }
    }
}

#[test]
fn encode_is_bitwise_equal_to_the_cpu() {
    if gpu().is_none() {
        return;
    }
    let module = driver::module_for(&Stream::null()).unwrap();
    let mut checked = 0;
    for (d, n_heads, n) in
        [(128, 2, 4099), (64, 1, 1), (256, 1, 1000), (96, 3, 77), (8, 1, 33), (512, 1, 257)]
    {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let shape = Shape::new(d).unwrap();
            let rot = Rotation::new(shape, 0x5EED + d as u64);
            // [n][n_heads][d], structured keys plus a few degenerate ones
            let mut spec = SynthSpec::new(n * n_heads, d, d as u64 + n as u64);
            spec.topic_len = 97;
            let mut f = SynthCache::generate(&spec).keys;
            f[..d].fill(0.0);
            if n > 2 {
                f[d * n_heads..][..d].fill(f32::NAN);
            }
            let (bytes, exact) = keys_in(dtype, &f);
            let gpu_keys = DeviceBuffer::from_slice(&bytes).unwrap();
            // encode every cell but the first, in reverse order
            let cells: Vec<i64> = (1..n as i64).rev().collect();
            let gpu_cells = DeviceBuffer::from_slice(&cells).unwrap();
            let gpu_n = DeviceBuffer::from_slice(&[cells.len() as i32]).unwrap();
            let (cb, nb, wb) = (shape.code_bytes(), shape.nibble_bytes(), shape.n_weights() * 2);
            let codes = DeviceBuffer::from_slice(&vec![0u8; n * n_heads * cb]).unwrap();
            let nibbles = DeviceBuffer::from_slice(&vec![0u8; n * n_heads * nb]).unwrap();
            let weights = DeviceBuffer::from_slice(&vec![0u8; n * n_heads * wb]).unwrap();
            let target = EncodeTarget {
                keys: gpu_keys.ptr,
                key_dtype: dtype,
                key_row_stride: n_heads * d * dtype.size(),
                key_head_stride: d * dtype.size(),
                codes: codes.ptr,
                nibbles: nibbles.ptr,
                weights: weights.ptr,
                kv_size: n,
                n_heads,
            };
            let grot = GpuRotation::new(&rot).unwrap();
            encode(module, &grot, &target, gpu_cells.ptr, gpu_n.ptr, cells.len() + 5, &Stream::null())
                .unwrap();
            driver::synchronize().unwrap();
            let got_codes: Vec<u8> = codes.read(n * n_heads * cb).unwrap();
            let got_nibbles: Vec<u8> = nibbles.read(n * n_heads * nb).unwrap();
            let got_weights: Vec<u16> = weights.read(n * n_heads * shape.n_weights()).unwrap();
            for h in 0..n_heads {
                // CPU: every cell of this head, then cell 0 cleared (the GPU was not asked for it)
                let rows = Rows::head_of(RowData::F32(&exact), n_heads, d, h, n).unwrap();
                let mut store = CodeStore::default();
                store.grow(&shape, n).unwrap();
                let all: Vec<usize> = (0..n).collect();
                encode_rows(&rot, &rows, &all, &mut store.as_mut(), &mut EncodeScratch::default()).unwrap();
                store.codes[..cb].fill(0);
                store.nibbles[..nb].fill(0);
                store.weights[..shape.n_weights()].fill(f16::ZERO);
                let g = |v: &[u8], per: usize| v[h * n * per..][..n * per].to_vec();
                assert_eq!(g(&got_codes, cb), store.codes, "codes d={d} {dtype:?} head {h}");
                assert_eq!(g(&got_nibbles, nb), store.nibbles, "4-bit codes d={d} {dtype:?} head {h}");
                let w: Vec<u16> = got_weights[h * n * shape.n_weights()..][..n * shape.n_weights()].to_vec();
                let cpu_w: Vec<u16> = store.weights.iter().map(|x| x.to_bits()).collect();
                assert_eq!(w, cpu_w, "weights d={d} {dtype:?} head {h}");
                checked += n - 1;
            }
        }
    }
    println!("encode: {checked} keys bitwise equal to the CPU");
}
