//! The fixed random rotation R = (1/sqrt(d)) H D: a seeded diagonal of random signs D
//! followed by the Walsh-Hadamard matrix H, applied in O(d log d). It spreads outlier
//! channels over all coordinates so that every block looks like a point on the sphere.

use crate::shape::Shape;

/// One step of SplitMix64, the generator behind the sign diagonal. Fixed here so that
/// every implementation (and every future version) derives the same signs from a seed.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The sign diagonal D for `n` coordinates: +1 or -1 from the top bit of each draw.
pub fn sign_diagonal(seed: u64, n: usize) -> Vec<f32> {
    let mut state = seed;
    (0..n).map(|_| if splitmix64(&mut state) >> 63 == 0 { 1.0 } else { -1.0 }).collect()
}

/// In-place unnormalised fast Walsh-Hadamard transform (Sylvester order). The butterfly
/// order is part of the contract: the GPU kernels run the same stages, so they round the
/// same way and the codes come out bitwise equal.
pub fn fwht(x: &mut [f32]) {
    let n = x.len();
    debug_assert!(n.is_power_of_two());
    let mut h = 1;
    while h < n {
        for pair in x.chunks_exact_mut(2 * h) {
            let (lo, hi) = pair.split_at_mut(h);
            for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
                let (s, d) = (*a + *b, *a - *b);
                *a = s;
                *b = d;
            }
        }
        h *= 2;
    }
}

/// The rotation for one head dimension and seed.
#[derive(Clone, Debug)]
pub struct Rotation {
    shape: Shape,
    seed: u64,
    signs: Vec<f32>,
    scale: f32,
}

impl Rotation {
    pub fn new(shape: Shape, seed: u64) -> Rotation {
        Rotation {
            shape,
            seed,
            signs: sign_diagonal(seed, shape.padded_dim),
            // 1/sqrt(d) with IEEE sqrt and division: the GPU computes the same bits.
            scale: 1.0 / (shape.padded_dim as f32).sqrt(),
        }
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The sign diagonal, for kernels that need it as a table.
    pub fn signs(&self) -> &[f32] {
        &self.signs
    }

    /// `out = R x`: `x` has `head_dim` values (zero-padded here), `out` `padded_dim`.
    pub fn apply(&self, x: &[f32], out: &mut [f32]) {
        let s = self.shape;
        assert_eq!(x.len(), s.head_dim, "rotation input length");
        assert_eq!(out.len(), s.padded_dim, "rotation output length");
        for ((o, &v), &sign) in out.iter_mut().zip(x).zip(&self.signs) {
            *o = v * sign;
        }
        out[s.head_dim..].fill(0.0);
        fwht(out);
        for o in out.iter_mut() {
            *o *= self.scale;
        }
    }

    /// `out = R^T y` (R is orthonormal, H symmetric): the first `head_dim` coordinates.
    pub fn invert(&self, y: &[f32], out: &mut [f32]) {
        let s = self.shape;
        assert_eq!(y.len(), s.padded_dim, "inverse rotation input length");
        assert_eq!(out.len(), s.head_dim, "inverse rotation output length");
        let mut tmp = y.to_vec();
        fwht(&mut tmp);
        for ((o, &t), &sign) in out.iter_mut().zip(&tmp).zip(&self.signs) {
            *o = t * self.scale * sign;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::synth::Rng;

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    #[test]
    fn orthonormal_and_invertible() {
        let mut rng = Rng::new(7);
        for d in [8, 64, 96, 128, 256, 512] {
            let shape = Shape::new(d).unwrap();
            let rot = Rotation::new(shape, 42);
            let x: Vec<f32> = (0..d).map(|_| rng.normal()).collect();
            let z: Vec<f32> = (0..d).map(|_| rng.normal()).collect();
            let (mut rx, mut rz) = (vec![0.0; shape.padded_dim], vec![0.0; shape.padded_dim]);
            rot.apply(&x, &mut rx);
            rot.apply(&z, &mut rz);
            // Inner products and norms are preserved.
            let (before, after) = (dot(&x, &z), dot(&rx, &rz));
            assert!((before - after).abs() < 1e-4 * (1.0 + before.abs()), "d={d}");
            assert!((dot(&x, &x) - dot(&rx, &rx)).abs() < 1e-4 * dot(&x, &x), "d={d}");
            // And it inverts.
            let mut back = vec![0.0; d];
            rot.invert(&rx, &mut back);
            for (a, b) in x.iter().zip(&back) {
                assert!((a - b).abs() < 1e-5, "d={d}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn matches_the_dense_matrix() {
        // R = H D / sqrt(n), H[i][j] = (-1)^popcount(i & j).
        let shape = Shape::new(16).unwrap();
        let rot = Rotation::new(shape, 3);
        let mut rng = Rng::new(1);
        let x: Vec<f32> = (0..16).map(|_| rng.normal()).collect();
        let mut fast = vec![0.0; 16];
        rot.apply(&x, &mut fast);
        for (i, &f) in fast.iter().enumerate() {
            let slow: f32 = (0..16)
                .map(|j| {
                    let h = if (i & j).count_ones() % 2 == 0 { 1.0 } else { -1.0 };
                    h * rot.signs()[j] * x[j]
                })
                .sum::<f32>()
                / 4.0;
            assert!((f - slow).abs() < 1e-5);
        }
    }

    #[test]
    fn seed_determines_the_signs() {
        assert_eq!(sign_diagonal(5, 64), sign_diagonal(5, 64));
        assert_ne!(sign_diagonal(5, 64), sign_diagonal(6, 64));
        let plus = sign_diagonal(9, 4096).iter().filter(|&&s| s > 0.0).count();
        assert!((1900..2200).contains(&plus), "signs are balanced: {plus} of 4096");
    }

    #[test]
    fn spreads_an_outlier_channel() {
        let shape = Shape::new(128).unwrap();
        let rot = Rotation::new(shape, 11);
        let mut x = vec![0.0f32; 128];
        x[17] = 50.0;
        let mut y = vec![0.0; 128];
        rot.apply(&x, &mut y);
        assert!(y.iter().all(|v| (v.abs() - 50.0 / 128f32.sqrt()).abs() < 1e-4));
    }
}
