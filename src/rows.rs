//! Element types and strided views of K, V and Q rows in caller memory, plus owned row
//! storage for the index handle. Every row is read into f32 before any arithmetic.
//!
//! Q8_0 is ggml's block format (32 elements: an f16 scale, then 32 signed bytes; element
//! = byte * scale): its rows, offsets and strides are whole blocks.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::algorithm::prefetch::prefetch;
use crate::error::{try_reserve, Error, Result};

/// Element type of keys, values and queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
    Q8_0,
}

/// Elements of a Q8_0 block.
pub const Q8_0_BLOCK: usize = 32;

/// ggml's `block_q8_0`: 34 bytes, 2-aligned.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_0 {
    pub scale: f16,
    pub quants: [i8; Q8_0_BLOCK],
}

impl DType {
    /// Elements per block and bytes per block: rows, offsets and strides are whole blocks.
    pub fn block(self) -> (usize, usize) {
        match self {
            DType::F32 => (1, 4),
            DType::F16 | DType::BF16 => (1, 2),
            DType::Q8_0 => (Q8_0_BLOCK, std::mem::size_of::<BlockQ8_0>()),
        }
    }

    /// Bytes of `n` elements, `n` a whole number of blocks.
    pub fn bytes(self, n: usize) -> usize {
        let (per, bytes) = self.block();
        n / per * bytes
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::Q8_0 => "q8_0",
        }
    }
}

/// Borrowed elements of one dtype.
#[derive(Clone, Copy, Debug)]
pub enum RowData<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
    Q8_0(&'a [BlockQ8_0]),
}

impl RowData<'_> {
    pub fn dtype(&self) -> DType {
        match self {
            RowData::F32(_) => DType::F32,
            RowData::F16(_) => DType::F16,
            RowData::BF16(_) => DType::BF16,
            RowData::Q8_0(_) => DType::Q8_0,
        }
    }

    /// Elements (not blocks).
    pub fn len(&self) -> usize {
        match self {
            RowData::F32(s) => s.len(),
            RowData::F16(s) => s.len(),
            RowData::BF16(s) => s.len(),
            RowData::Q8_0(s) => s.len() * Q8_0_BLOCK,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as raw bytes (native endianness), for copies to the device.
    pub fn as_bytes(&self) -> &[u8] {
        let (ptr, bytes) = match self {
            RowData::F32(s) => (s.as_ptr() as *const u8, std::mem::size_of_val(*s)),
            RowData::F16(s) => (s.as_ptr() as *const u8, std::mem::size_of_val(*s)),
            RowData::BF16(s) => (s.as_ptr() as *const u8, std::mem::size_of_val(*s)),
            RowData::Q8_0(s) => (s.as_ptr() as *const u8, std::mem::size_of_val(*s)),
        };
        // SAFETY: f32, f16, bf16 and BlockQ8_0 (34 bytes of fields) are plain data without
        // padding; the slice covers
        // exactly the borrowed elements for the borrow's lifetime.
        unsafe { std::slice::from_raw_parts(ptr, bytes) }
    }
}

/// `n` rows of `dim` elements, row `i` starting at element `offset + i * stride`.
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    data: RowData<'a>,
    offset: usize,
    dim: usize,
    stride: usize,
    n: usize,
}

impl<'a> Rows<'a> {
    /// Checks that every row lies inside `data` (and, for a block type, that rows, offset
    /// and stride are whole blocks).
    pub fn new(data: RowData<'a>, offset: usize, dim: usize, stride: usize, n: usize) -> Result<Self> {
        let (per, _) = data.dtype().block();
        if !(dim.is_multiple_of(per) && offset.is_multiple_of(per) && stride.is_multiple_of(per)) {
            return Err(Error::invalid(format!(
                "{} rows of {dim} elements at offset {offset}, stride {stride}: not whole blocks of {per}",
                data.dtype().name()
            )));
        }
        let end = match n {
            0 => Some(0),
            _ => (n - 1).checked_mul(stride).and_then(|x| x.checked_add(offset + dim)),
        };
        match end {
            Some(end) if end <= data.len() && (n <= 1 || stride >= dim) => {
                Ok(Rows { data, offset, dim, stride, n })
            }
            _ => Err(Error::invalid(format!(
                "{n} rows of {dim} elements at offset {offset}, stride {stride} do not fit in \
                 {} elements (or the rows overlap)",
                data.len()
            ))),
        }
    }

    /// Packed rows: row `i` at `i * dim`.
    pub fn packed(data: RowData<'a>, dim: usize) -> Result<Self> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(Error::invalid(format!(
                "{} elements are not a whole number of rows of {dim}",
                data.len()
            )));
        }
        Rows::new(data, 0, dim, dim, data.len() / dim)
    }

    /// Rows of head `h` in a `[n][n_heads][dim]` layout.
    pub fn head_of(data: RowData<'a>, n_heads: usize, dim: usize, h: usize, n: usize) -> Result<Self> {
        if h >= n_heads {
            return Err(Error::invalid(format!("head {h} out of range for {n_heads} heads")));
        }
        Rows::new(data, h * dim, dim, n_heads * dim, n)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// Hints that row `i` will be read soon (no-op past the end).
    #[inline]
    pub fn prefetch(&self, i: usize) {
        if i >= self.n {
            return;
        }
        let range = self.offset + i * self.stride..self.offset + i * self.stride + self.dim;
        match self.data {
            RowData::F32(s) => prefetch(&s[range]),
            RowData::F16(s) => prefetch(&s[range]),
            RowData::BF16(s) => prefetch(&s[range]),
            RowData::Q8_0(s) => prefetch(&s[range.start / Q8_0_BLOCK..range.end / Q8_0_BLOCK]),
        }
    }

    /// Row `i` converted to f32 into `out` (`dim` values).
    #[inline]
    pub fn load(&self, i: usize, out: &mut [f32]) {
        assert!(i < self.n, "row {i} of {}", self.n);
        let start = self.offset + i * self.stride;
        let range = start..start + self.dim;
        match self.data {
            RowData::F32(s) => out.copy_from_slice(&s[range]),
            RowData::F16(s) => f16_to_f32(&s[range], out),
            RowData::BF16(s) => {
                // bf16 is the top half of an f32
                for (o, &x) in out.iter_mut().zip(&s[range]) {
                    *o = f32::from_bits((x.to_bits() as u32) << 16);
                }
            }
            RowData::Q8_0(s) => {
                // as ggml's dequantize_row_q8_0: each byte times the block's scale
                let blocks = &s[range.start / Q8_0_BLOCK..range.end / Q8_0_BLOCK];
                for (b, o) in blocks.iter().zip(out.chunks_exact_mut(Q8_0_BLOCK)) {
                    let d = b.scale.to_f32();
                    for (o, &q) in o.iter_mut().zip(&b.quants) {
                        *o = q as f32 * d;
                    }
                }
            }
        }
    }
}

/// f16 to f32 (exact), eight at a time by the F16C instruction where the CPU has it: the
/// `half` crate's slice conversion calls out per eight values, a third of a decode step's
/// time in the rows it loads.
fn f16_to_f32(src: &[f16], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: F16C (and the AVX it implies) was detected just above.
        unsafe { f16_to_f32_f16c(src, out) };
        return;
    }
    src.convert_to_f32_slice(out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn f16_to_f32_f16c(src: &[f16], out: &mut [f32]) {
    use std::arch::x86_64::{__m128i, _mm256_cvtph_ps, _mm256_storeu_ps, _mm_loadu_si128};
    assert_eq!(src.len(), out.len());
    let (chunks, rest) = src.as_chunks::<8>();
    let (outs, out_rest) = out.as_chunks_mut::<8>();
    for (c, o) in chunks.iter().zip(outs) {
        // SAFETY: each chunk holds 8 f16 (16 bytes) and each output 8 f32; unaligned
        // loads and stores are allowed.
        unsafe {
            _mm256_storeu_ps(o.as_mut_ptr(), _mm256_cvtph_ps(_mm_loadu_si128(c.as_ptr() as *const __m128i)))
        };
    }
    rest.convert_to_f32_slice(out_rest);
}

/// Owned rows of one dtype, appended in f32 and stored in that dtype (round to nearest).
#[derive(Clone, Debug)]
pub enum RowBuf {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    Q8_0(Vec<BlockQ8_0>),
}

impl RowBuf {
    pub fn new(dtype: DType) -> RowBuf {
        match dtype {
            DType::F32 => RowBuf::F32(Vec::new()),
            DType::F16 => RowBuf::F16(Vec::new()),
            DType::BF16 => RowBuf::BF16(Vec::new()),
            DType::Q8_0 => RowBuf::Q8_0(Vec::new()),
        }
    }

    pub fn len(&self) -> usize {
        self.data().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> usize {
        self.data().dtype().bytes(self.len())
    }

    pub fn reserve(&mut self, additional: usize) -> Result<()> {
        match self {
            RowBuf::F32(v) => try_reserve(v, additional, "f32 rows"),
            RowBuf::F16(v) => try_reserve(v, additional, "f16 rows"),
            RowBuf::BF16(v) => try_reserve(v, additional, "bf16 rows"),
            RowBuf::Q8_0(v) => try_reserve(v, additional.div_ceil(Q8_0_BLOCK), "q8_0 rows"),
        }
    }

    /// Appends f32 values, converting to the stored dtype (Q8_0: whole blocks, quantized
    /// as ggml's `quantize_row_q8_0_ref`).
    pub fn extend_from_f32(&mut self, values: &[f32]) {
        match self {
            RowBuf::F32(v) => v.extend_from_slice(values),
            RowBuf::F16(v) => v.extend(values.iter().map(|&x| f16::from_f32(x))),
            RowBuf::BF16(v) => v.extend(values.iter().map(|&x| bf16::from_f32(x))),
            RowBuf::Q8_0(v) => {
                assert!(values.len().is_multiple_of(Q8_0_BLOCK), "q8_0 rows are whole blocks");
                v.extend(values.chunks_exact(Q8_0_BLOCK).map(quantize_q8_0));
            }
        }
    }

    pub fn data(&self) -> RowData<'_> {
        match self {
            RowBuf::F32(v) => RowData::F32(v),
            RowBuf::F16(v) => RowData::F16(v),
            RowBuf::BF16(v) => RowData::BF16(v),
            RowBuf::Q8_0(v) => RowData::Q8_0(v),
        }
    }
}

/// One block as ggml's `quantize_row_q8_0_ref`: scale = max |x| / 127, bytes rounded to
/// nearest (ties away from zero).
fn quantize_q8_0(x: &[f32]) -> BlockQ8_0 {
    let amax = x.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut quants = [0i8; Q8_0_BLOCK];
    for (q, &v) in quants.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    BlockQ8_0 { scale: f16::from_f32(d), quants }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_heads_and_conversion() {
        // [n=2][heads=2][dim=3]
        let v: Vec<f16> = (0..12).map(|i| f16::from_f32(i as f32)).collect();
        let rows = Rows::head_of(RowData::F16(&v), 2, 3, 1, 2).unwrap();
        let mut out = [0.0; 3];
        rows.load(1, &mut out);
        assert_eq!(out, [9.0, 10.0, 11.0]);
        assert!(Rows::head_of(RowData::F16(&v), 2, 3, 1, 3).is_err());
        assert!(Rows::head_of(RowData::F16(&v), 2, 3, 2, 1).is_err());
        assert!(Rows::new(RowData::F16(&v), 0, 3, 2, 2).is_err(), "overlapping rows");
        assert!(Rows::packed(RowData::F16(&v[..11]), 3).is_err());
    }

    /// Every f16 and bf16 bit pattern loads as `half` converts it (NaNs as NaNs), in rows
    /// long enough for the vector path and its tail.
    #[test]
    fn loads_convert_every_bit_pattern_exactly() {
        let bits: Vec<u16> = (0..=u16::MAX).collect();
        let h: Vec<f16> = bits.iter().map(|&b| f16::from_bits(b)).collect();
        let b: Vec<bf16> = bits.iter().map(|&b| bf16::from_bits(b)).collect();
        let dim = 67; // 8 chunks of 8 and a tail of 3
        let n = bits.len() / dim;
        let same = |x: f32, y: f32| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
        let mut out = vec![0.0; dim];
        for i in 0..n {
            Rows::packed(RowData::F16(&h[..n * dim]), dim).unwrap().load(i, &mut out);
            assert!(out.iter().zip(&h[i * dim..]).all(|(&o, x)| same(o, x.to_f32())), "f16 row {i}");
            Rows::packed(RowData::BF16(&b[..n * dim]), dim).unwrap().load(i, &mut out);
            assert!(out.iter().zip(&b[i * dim..]).all(|(&o, x)| same(o, x.to_f32())), "bf16 row {i}");
        }
    }

    /// Q8_0 rows load as ggml dequantizes them, round-trip within half a step of their
    /// block's scale, and refuse rows that are not whole blocks.
    #[test]
    fn q8_0_rows_are_blocks_dequantized_as_ggml_does() {
        let x: Vec<f32> = (0..128).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let mut b = RowBuf::new(DType::Q8_0);
        b.extend_from_f32(&x);
        assert_eq!(b.bytes(), 4 * 34);
        let RowBuf::Q8_0(blocks) = &b else { unreachable!() };
        // [n=2][heads=2][dim=32]: head 1 of row 1 is block 3
        let rows = Rows::head_of(b.data(), 2, 32, 1, 2).unwrap();
        let mut out = [0.0; 32];
        rows.load(1, &mut out);
        let d = blocks[3].scale.to_f32();
        assert!(out.iter().zip(&blocks[3].quants).all(|(&o, &q)| o == q as f32 * d));
        assert!(out.iter().zip(&x[96..]).all(|(&o, &v)| (o - v).abs() <= d * 0.5 + 1e-6));
        assert!(blocks[3].quants.iter().any(|&q| q == 127 || q == -127), "the largest maps to +-127");
        assert!(Rows::new(b.data(), 0, 16, 32, 2).is_err(), "half a block");
        assert!(Rows::new(b.data(), 16, 32, 32, 2).is_err(), "offset inside a block");
        let zeros = quantize_q8_0(&[0.0; 32]);
        assert_eq!((zeros.scale.to_f32(), zeros.quants), (0.0, [0; 32]));
    }

    #[test]
    fn rowbuf_rounds_to_its_dtype() {
        let mut b = RowBuf::new(DType::BF16);
        b.extend_from_f32(&[1.0 + 1.0 / 256.0, 3.0]);
        let rows = Rows::packed(b.data(), 2).unwrap();
        let mut out = [0.0; 2];
        rows.load(0, &mut out);
        assert_eq!(out, [1.0, 3.0], "bf16 keeps 8 bits of mantissa");
        assert_eq!(b.bytes(), 4);
    }
}
