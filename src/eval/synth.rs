//! Synthetic KV caches with the structure real ones have, for tests, the demo and the
//! benchmarks (never for quality claims about real models): clustered keys, a few outlier
//! channels 10-50x larger with a shared offset, topics that change and centroids that drift
//! along the sequence, and queries aimed at planted keys.

/// A small deterministic generator (SplitMix64 stream, Box-Muller normals).
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
    spare: Option<f32>,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed ^ 0x6A09_E667_F3BC_C908, spare: None }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform integer in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as usize % n.max(1)
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f32 {
        if let Some(x) = self.spare.take() {
            return x;
        }
        let u1 = ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        self.spare = Some((r * t.sin()) as f32);
        (r * t.cos()) as f32
    }
}

/// Pearson correlation.
pub fn correlation(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len() as f64;
    let (ma, mb) =
        (a.iter().map(|&x| x as f64).sum::<f64>() / n, b.iter().map(|&x| x as f64).sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    (sab / (saa * sbb).sqrt()) as f32
}

/// What a synthetic cache looks like.
#[derive(Clone, Debug)]
pub struct SynthSpec {
    pub n_tokens: usize,
    pub head_dim: usize,
    /// Cluster centres keys are drawn around.
    pub n_clusters: usize,
    /// Tokens per topic: each topic draws from a few clusters only.
    pub topic_len: usize,
    /// Channels 10-50x larger than the rest.
    pub n_outlier_channels: usize,
    /// Offset shared by every key in an outlier channel, in units of that channel's scale
    /// (the "massive activation" keys of real models; 0 = zero-mean outliers).
    pub outlier_offset: f32,
    /// How far each centre moves from the start to the end of the sequence (in units of
    /// its own norm).
    pub drift: f32,
    pub seed: u64,
}

impl SynthSpec {
    pub fn new(n_tokens: usize, head_dim: usize, seed: u64) -> SynthSpec {
        SynthSpec {
            n_tokens,
            head_dim,
            n_clusters: 64,
            topic_len: 2048,
            n_outlier_channels: 4,
            outlier_offset: 2.0,
            drift: 1.0,
            seed,
        }
    }
}

/// Keys and values `[n_tokens][head_dim]` in f32.
#[derive(Clone, Debug)]
pub struct SynthCache {
    pub spec: SynthSpec,
    pub keys: Vec<f32>,
    pub values: Vec<f32>,
    /// Per-channel multiplier and offset of the outlier channels (1 and 0 elsewhere).
    pub channel_scale: Vec<f32>,
    pub channel_offset: Vec<f32>,
}

impl SynthCache {
    pub fn generate(spec: &SynthSpec) -> SynthCache {
        let (n, d) = (spec.n_tokens, spec.head_dim);
        let mut rng = Rng::new(spec.seed);
        let normal_vec = |rng: &mut Rng, s: f32| (0..d).map(|_| s * rng.normal()).collect::<Vec<f32>>();
        let base: Vec<Vec<f32>> = (0..spec.n_clusters).map(|_| normal_vec(&mut rng, 1.0)).collect();
        let drift: Vec<Vec<f32>> = (0..spec.n_clusters).map(|_| normal_vec(&mut rng, spec.drift)).collect();
        let mut channel_scale = vec![1.0f32; d];
        let mut channel_offset = vec![0.0f32; d];
        for _ in 0..spec.n_outlier_channels {
            let ch = rng.below(d);
            channel_scale[ch] = 10.0 + 40.0 * rng.uniform();
            let sign = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
            channel_offset[ch] = sign * spec.outlier_offset * channel_scale[ch] * (rng.normal().abs() + 1.0);
        }
        let mut keys = Vec::with_capacity(n * d);
        let mut values = Vec::with_capacity(n * d);
        let mut topic = [0usize; 4];
        for t in 0..n {
            if t % spec.topic_len.max(1) == 0 {
                topic = std::array::from_fn(|_| rng.below(spec.n_clusters));
            }
            let c = topic[rng.below(topic.len())];
            let progress = t as f32 / n.max(1) as f32;
            for j in 0..d {
                let centre = base[c][j] + progress * drift[c][j];
                let k = centre + 0.6 * rng.normal();
                keys.push(channel_offset[j] + channel_scale[j] * k);
                values.push(rng.normal());
            }
        }
        SynthCache { spec: spec.clone(), keys, values, channel_scale, channel_offset }
    }

    pub fn key(&self, t: usize) -> &[f32] {
        &self.keys[t * self.spec.head_dim..][..self.spec.head_dim]
    }

    /// A query aimed at the keys at `targets`: their directions (outlier channels brought
    /// back to unit scale, so the query does not simply point at the shared offset), scaled
    /// by `gain`, plus unit noise.
    pub fn planted_query(&self, targets: &[usize], gain: f32, rng: &mut Rng) -> Vec<f32> {
        let d = self.spec.head_dim;
        let mut q: Vec<f32> = (0..d).map(|_| rng.normal()).collect();
        for &t in targets {
            let k = self.key(t);
            let dir: Vec<f32> = (0..d)
                .map(|j| (k[j] - self.channel_offset[j]) / (self.channel_scale[j] * self.channel_scale[j]))
                .collect();
            let norm = dir.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            for (qj, x) in q.iter_mut().zip(&dir) {
                *qj += gain * x / norm;
            }
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_normal() {
        let (mut a, mut b) = (Rng::new(1), Rng::new(1));
        let xs: Vec<f32> = (0..20_000).map(|_| a.normal()).collect();
        assert!(xs.iter().zip((0..20_000).map(|_| b.normal())).all(|(x, y)| *x == y));
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / xs.len() as f32;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
    }

    #[test]
    fn cache_has_outlier_channels() {
        let c = SynthCache::generate(&SynthSpec::new(1000, 64, 3));
        let big = c.channel_scale.iter().filter(|&&s| s >= 10.0).count();
        assert!((1..=4).contains(&big));
        assert_eq!(c.keys.len(), 64_000);
    }
}
