//! The simulator's seeded random numbers: xoshiro256++ (Blackman and Vigna, "Scrambled
//! linear pseudorandom number generators", 2021, public domain reference code), seeded
//! through SplitMix64 as its authors recommend.
//!
//! Written out here rather than taken from a crate on purpose: the simulator promises the
//! same CSV, byte for byte, for the same seed, and that promise must survive dependency
//! upgrades (`rand`'s `StdRng` and `rand_distr`'s algorithms may change between versions).
//! Each purpose (arrivals, service times, boot delays) draws from its own stream, so a
//! policy that boots more VMs does not change the load the others see.

/// A xoshiro256++ generator.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

/// SplitMix64: spreads a seed over the generator's state.
fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Which stream a draw comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Arrivals = 1,
    Service = 2,
    Boot = 3,
}

impl Rng {
    /// The generator for `stream` of `seed`.
    pub fn new(seed: u64, stream: Stream) -> Rng {
        let mut x = seed ^ (stream as u64).wrapping_mul(0xd1b5_4a32_d192_ed03);
        Rng {
            s: [
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
            ],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in (0, 1): never 0, so its logarithm is finite.
    pub fn open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Exponential with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.open01().ln()
    }

    /// Standard normal (Box–Muller; one of the pair is used, so every draw takes the
    /// same two numbers from the stream).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.open01(), self.open01());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_other_streams_differ() {
        let mut a = Rng::new(7, Stream::Service);
        let mut b = Rng::new(7, Stream::Service);
        let mut c = Rng::new(7, Stream::Boot);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..5).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn the_stream_is_pinned() {
        // Guards the byte-identical CSV promise across refactors: these are the first
        // numbers of seed 1's service stream.
        let mut r = Rng::new(1, Stream::Service);
        let first = r.next_u64();
        let mut again = Rng::new(1, Stream::Service);
        assert_eq!(first, again.next_u64());
        assert_eq!(PINNED, [first, r.next_u64()], "the generator changed");
    }

    const PINNED: [u64; 2] = [9_487_852_349_182_411_058, 7_661_188_988_452_060_567];

    #[test]
    fn xoshiro256_plus_plus_reference_output() {
        // From state [1, 2, 3, 4]: rotl(1 + 4, 23) + 1.
        let mut r = Rng { s: [1, 2, 3, 4] };
        assert_eq!(r.next_u64(), 41_943_041);
    }

    #[test]
    fn moments_are_right() {
        let mut r = Rng::new(3, Stream::Arrivals);
        let n = 200_000;
        let mean = (0..n).map(|_| r.exponential(2.0)).sum::<f64>() / n as f64;
        assert!((mean - 2.0).abs() < 0.03, "{mean}");
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let m = xs.iter().sum::<f64>() / n as f64;
        let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n as f64;
        assert!(m.abs() < 0.01 && (v - 1.0).abs() < 0.02, "{m} {v}");
        assert!((0..1000).all(|_| {
            let u = r.open01();
            u > 0.0 && u < 1.0
        }));
    }
}
