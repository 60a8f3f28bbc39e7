//! A small, seedable random number generator for sampling (xoshiro256**,
//! Blackman & Vigna, 2018), so `--seed` reproduces a run exactly. It cannot
//! reproduce PyTorch's generator; sampling is tested by its properties.

/// xoshiro256** seeded through splitmix64.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole stream is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            // splitmix64
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        Self { s: [next(), next(), next(), next()] }
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Draws an index with probability proportional to `probs[i]`; an index
    /// with probability 0 is never drawn.
    pub fn categorical(&mut self, probs: &[f32]) -> usize {
        let total: f64 = probs.iter().map(|&p| p as f64).sum();
        let target = self.uniform() * total;
        let mut cumulative = 0.0f64;
        let mut last_positive = 0;
        for (i, &p) in probs.iter().enumerate() {
            if p > 0.0 {
                cumulative += p as f64;
                last_positive = i;
                if target < cumulative {
                    return i;
                }
            }
        }
        last_positive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_zero_probabilities_never_drawn() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let probs = [0.0, 0.5, 0.0, 0.5, 0.0];
        let mut counts = [0usize; 5];
        for _ in 0..2000 {
            counts[a.categorical(&probs)] += 1;
        }
        assert_eq!(counts[0] + counts[2] + counts[4], 0);
        assert!(counts[1] > 800 && counts[3] > 800, "{counts:?}");
    }
}
