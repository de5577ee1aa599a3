//! Key choice: the key-space samplers (uniform, Zipfian) and the key text.
//!
//! Pure and deterministic given the caller's RNG: no I/O, no clock. Each connection owns
//! its RNG (seeded from the run seed and its index), so a run is reproducible in which
//! keys it asks for.

use rand::Rng;

/// Width of the zero-padded key index, so every key has the same length
/// (`key:000000000042`, as redis-benchmark's `key:__rand_int__` does).
pub const INDEX_DIGITS: usize = 12;

/// Appends `prefix` + the zero-padded `index` to `out`.
pub fn push_key(out: &mut Vec<u8>, prefix: &[u8], index: u64) {
    out.extend_from_slice(prefix);
    let mut digits = [b'0'; INDEX_DIGITS];
    let mut n = index;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits);
}

/// Draws key indexes in `0..n`.
#[derive(Debug, Clone)]
pub enum KeySampler {
    Uniform { n: u64 },
    Zipf(Zipf),
}

impl KeySampler {
    pub fn uniform(n: u64) -> Self {
        KeySampler::Uniform { n }
    }

    pub fn zipf(n: u64, s: f64) -> Self {
        KeySampler::Zipf(Zipf::new(n, s))
    }

    /// The next key index. Under Zipf, index 0 is the most popular key.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        match self {
            KeySampler::Uniform { n } => rng.random_range(0..*n),
            KeySampler::Zipf(z) => z.sample(rng) - 1,
        }
    }
}

/// Zipf distribution over ranks `1..=n`: P(k) ∝ k^(-s), for any s > 0.
///
/// Sampled by rejection-inversion (W. Hörmann, G. Derflinger, "Rejection-inversion to
/// generate variates from monotone discrete distributions", 1996): invert the integral
/// of the continuous hat function x^(-s), round to the nearest rank, and accept unless
/// the point falls in the sliver where the hat exceeds the discrete mass. Constant time
/// and memory per sample whatever `n` is, and on average well under two draws.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: f64,
    s: f64,
    /// H(1.5) - h(1): the upper end of the inverted range.
    h_x1: f64,
    /// H(n + 0.5): the lower end.
    h_n: f64,
    /// Ranks within this distance of the inverted point are accepted at once.
    squeeze: f64,
}

impl Zipf {
    /// A Zipf distribution over `1..=n`. Panics unless `n >= 1` and `s > 0`.
    pub fn new(n: u64, s: f64) -> Self {
        assert!(n >= 1, "Zipf needs at least one rank");
        assert!(s > 0.0 && s.is_finite(), "Zipf exponent must be positive");
        let mut z = Zipf {
            n: n as f64,
            s,
            h_x1: 0.0,
            h_n: 0.0,
            squeeze: 0.0,
        };
        z.h_x1 = z.big_h(1.5) - 1.0;
        z.h_n = z.big_h(z.n + 0.5);
        z.squeeze = 2.0 - z.big_h_inv(z.big_h(2.5) - z.h(2.0));
        z
    }

    /// The hat function h(x) = x^(-s).
    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }

    /// H(x) = (x^(1-s) - 1) / (1-s), and ln(x) in the limit s = 1; an antiderivative of h.
    fn big_h(&self, x: f64) -> f64 {
        let ln_x = x.ln();
        ln_x * expm1_over_x((1.0 - self.s) * ln_x)
    }

    /// The inverse of [`Self::big_h`].
    fn big_h_inv(&self, y: f64) -> f64 {
        let t = (1.0 - self.s) * y;
        // Guard against rounding taking log1p below its domain near the range end.
        let t = t.max(-1.0 + f64::EPSILON);
        (y * log1p_over_x(t)).exp()
    }

    /// Draws a rank in `1..=n`.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        loop {
            let u = self.h_n + rng.random::<f64>() * (self.h_x1 - self.h_n);
            let x = self.big_h_inv(u);
            let k = x.round().clamp(1.0, self.n);
            if k - x <= self.squeeze || u >= self.big_h(k + 0.5) - self.h(k) {
                return k as u64;
            }
        }
    }
}

/// (e^x - 1) / x, continuous at 0.
fn expm1_over_x(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x / 2.0 * (1.0 + x / 3.0)
    }
}

/// ln(1 + x) / x, continuous at 0.
fn log1p_over_x(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x / 2.0 * (1.0 - 2.0 * x / 3.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn key(prefix: &str, i: u64) -> String {
        let mut out = Vec::new();
        push_key(&mut out, prefix.as_bytes(), i);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn keys_are_fixed_width() {
        assert_eq!(key("key:", 0), "key:000000000000");
        assert_eq!(key("key:", 42), "key:000000000042");
        assert_eq!(key("", 999_999_999_999), "999999999999");
    }

    /// Draws `draws` ranks and returns the count of each rank `1..=n` (index 0 unused).
    fn histogram(n: u64, s: f64, draws: usize) -> Vec<u64> {
        let z = Zipf::new(n, s);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = vec![0u64; n as usize + 1];
        for _ in 0..draws {
            let k = z.sample(&mut rng);
            assert!((1..=n).contains(&k), "rank {k} outside 1..={n}");
            counts[k as usize] += 1;
        }
        counts
    }

    /// Exact probability of each rank.
    fn expected(n: u64, s: f64) -> Vec<f64> {
        let w: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-s)).collect();
        let total: f64 = w.iter().sum();
        std::iter::once(0.0)
            .chain(w.iter().map(|x| x / total))
            .collect()
    }

    #[track_caller]
    fn assert_matches(n: u64, s: f64) {
        let draws = 400_000;
        let counts = histogram(n, s, draws);
        let p = expected(n, s);
        // The ten most popular ranks, each within 3% relative (or 5 sigma for rare ones).
        for k in 1..=10.min(n as usize) {
            let want = p[k] * draws as f64;
            let got = counts[k] as f64;
            let tol = (0.03 * want).max(5.0 * want.sqrt());
            assert!(
                (got - want).abs() <= tol,
                "s={s} rank {k}: got {got}, want {want:.0}"
            );
        }
    }

    #[test]
    fn zipf_matches_exact_probabilities() {
        assert_matches(1_000, 0.99);
        assert_matches(1_000, 1.0);
        assert_matches(100, 0.5);
        assert_matches(50, 2.0);
        assert_matches(1, 1.0);
    }

    #[test]
    fn zipf_rank_one_over_rank_two_is_two_to_the_s() {
        let counts = histogram(10_000, 1.0, 400_000);
        let ratio = counts[1] as f64 / counts[2] as f64;
        assert!((ratio - 2.0).abs() < 0.1, "{ratio}");
    }

    #[test]
    fn zipf_covers_the_tail_of_a_large_space() {
        // With n = 10^7 and s = 0.99 a fair share of draws lands past rank 10^5.
        let z = Zipf::new(10_000_000, 0.99);
        let mut rng = SmallRng::seed_from_u64(3);
        let tail = (0..100_000)
            .filter(|_| z.sample(&mut rng) > 100_000)
            .count();
        assert!((20_000..50_000).contains(&tail), "{tail}");
    }

    #[test]
    fn samplers_stay_in_range_and_are_reproducible() {
        for sampler in [KeySampler::uniform(17), KeySampler::zipf(17, 0.99)] {
            let mut a = SmallRng::seed_from_u64(11);
            let mut b = SmallRng::seed_from_u64(11);
            for _ in 0..10_000 {
                let x = sampler.sample(&mut a);
                assert!(x < 17);
                assert_eq!(x, sampler.sample(&mut b));
            }
        }
    }

    #[test]
    fn uniform_is_flat() {
        let s = KeySampler::uniform(10);
        let mut rng = SmallRng::seed_from_u64(5);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[s.sample(&mut rng) as usize] += 1;
        }
        assert!(
            counts.iter().all(|c| (9_500..10_500).contains(c)),
            "{counts:?}"
        );
    }
}
