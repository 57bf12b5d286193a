//! Arithmetic the CPU and the GPU compute to the same bit, for selections that rank by
//! softmax probabilities (the group policy): both must pick the same rows, and libm's exp
//! and CUDA's expf differ in the last bits. `exp` and `tanh` use f32 multiplies, adds and
//! one divide only (Rust does not fuse them; kernels/common.cuh spells the same operations
//! with round-to-nearest intrinsics), and sums are taken in fixed point, which every order
//! of addition (a GPU's atomics included) gives alike.

use crate::constants::{EXP_FLOOR, EXP_LN2_HI, EXP_LN2_LO, EXP_LOG2E, EXP_POLY, FIXED_FRACTION_BITS};

/// e^min(x, 0): 0 below `EXP_FLOOR`, NaN for NaN. Within 2 ulp of the true value.
#[inline]
pub fn exp_nonpositive(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let x = x.min(0.0);
    if x < EXP_FLOOR {
        return 0.0;
    }
    let n = (x * EXP_LOG2E).round_ties_even();
    let r = (x - n * EXP_LN2_HI) - n * EXP_LN2_LO;
    let mut p = EXP_POLY[0];
    for &c in &EXP_POLY[1..] {
        p = p * r + c;
    }
    let y = (p * (r * r) + r) + 1.0;
    // 2^n, n in [-116, 0]: a normal float, so the product is exact
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// tanh from `exp_nonpositive`: (1 - e) / (1 + e) with e = e^(-2|y|), signed as y.
#[inline]
pub fn tanh(y: f32) -> f32 {
    if y.is_nan() {
        return y;
    }
    let a = y.abs();
    let e = exp_nonpositive(-(a + a));
    ((1.0 - e) / (1.0 + e)).copysign(y)
}

/// A value in [0, 1] in fixed point (truncated), for `from_fixed` of a sum.
#[inline]
pub fn to_fixed(x: f32) -> u64 {
    (x * (1u64 << FIXED_FRACTION_BITS) as f32) as u64
}

/// A sum of `to_fixed` values as an f32 (rounded to nearest).
#[inline]
pub fn from_fixed(s: u64) -> f32 {
    (s as f64 / (1u64 << FIXED_FRACTION_BITS) as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0.0f64;
        for i in 0..=800_000 {
            let x = -(i as f32) * 1e-4; // 0 .. -80
            let (got, want) = (exp_nonpositive(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 2.5 * f32::EPSILON as f64, "worst relative error {worst:e}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-0.0), 1.0);
        assert_eq!(exp_nonpositive(3.0), 1.0, "taken as e^0");
        assert_eq!(exp_nonpositive(-80.5), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert!(exp_nonpositive(f32::NAN).is_nan());
    }

    #[test]
    fn tanh_is_close_odd_and_saturates() {
        for i in -3000..=3000 {
            let y = i as f32 * 0.01;
            let (got, want) = (tanh(y), (y as f64).tanh());
            assert!((got as f64 - want).abs() < 4.0 * f32::EPSILON as f64, "tanh({y}) = {got}, not {want}");
            assert_eq!(tanh(-y), -got);
        }
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert!(tanh(f32::NAN).is_nan());
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn fixed_point_sums_do_not_depend_on_order() {
        let xs: Vec<f32> = (0..1000).map(|i| exp_nonpositive(-(i as f32) * 0.37)).collect();
        let forward: u64 = xs.iter().map(|&x| to_fixed(x)).sum();
        let backward: u64 = xs.iter().rev().map(|&x| to_fixed(x)).sum();
        assert_eq!(forward, backward);
        let want: f64 = xs.iter().map(|&x| x as f64).sum();
        assert!((from_fixed(forward) as f64 - want).abs() < 1e-6 * want, "{} vs {want}", from_fixed(forward));
        assert_eq!(to_fixed(1.0), 1 << FIXED_FRACTION_BITS);
        assert_eq!(from_fixed(to_fixed(1.0)), 1.0);
    }
}
