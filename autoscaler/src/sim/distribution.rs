//! Distributions of service times and boot delays: deterministic, exponential,
//! lognormal, written as `det:MEAN`, `exp:MEAN`, `lognormal:MEAN,CV` (seconds; CV the
//! coefficient of variation, standard deviation over mean).

use std::{fmt, str::FromStr};

use super::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    Deterministic(f64),
    Exponential {
        mean: f64,
    },
    /// Parameterised by its mean and coefficient of variation.
    Lognormal {
        mean: f64,
        cv: f64,
    },
}

impl Distribution {
    pub fn sample(&self, rng: &mut Rng) -> f64 {
        match *self {
            Distribution::Deterministic(v) => v,
            Distribution::Exponential { mean } => rng.exponential(mean),
            Distribution::Lognormal { mean, cv } => {
                let (mu, sigma) = lognormal_parameters(mean, cv);
                (mu + sigma * rng.normal()).exp()
            }
        }
    }

    pub fn mean(&self) -> f64 {
        match *self {
            Distribution::Deterministic(v) => v,
            Distribution::Exponential { mean } | Distribution::Lognormal { mean, .. } => mean,
        }
    }

    /// Squared coefficient of variation (0 deterministic, 1 exponential).
    pub fn scv(&self) -> f64 {
        match *self {
            Distribution::Deterministic(_) => 0.0,
            Distribution::Exponential { .. } => 1.0,
            Distribution::Lognormal { cv, .. } => cv * cv,
        }
    }

    /// The 95th percentile.
    pub fn p95(&self) -> f64 {
        const Z95: f64 = 1.644_853_626_951_472_2;
        match *self {
            Distribution::Deterministic(v) => v,
            Distribution::Exponential { mean } => -mean * 0.05f64.ln(),
            Distribution::Lognormal { mean, cv } => {
                let (mu, sigma) = lognormal_parameters(mean, cv);
                (mu + Z95 * sigma).exp()
            }
        }
    }
}

/// μ and σ of the underlying normal for a lognormal of this mean and CV.
fn lognormal_parameters(mean: f64, cv: f64) -> (f64, f64) {
    let sigma2 = (1.0 + cv * cv).ln();
    (mean.ln() - sigma2 / 2.0, sigma2.sqrt())
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distribution::Deterministic(v) => write!(f, "det:{v}"),
            Distribution::Exponential { mean } => write!(f, "exp:{mean}"),
            Distribution::Lognormal { mean, cv } => write!(f, "lognormal:{mean},{cv}"),
        }
    }
}

impl FromStr for Distribution {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let expected =
            "expected det:SECONDS, exp:MEAN or lognormal:MEAN,CV (seconds > 0, 0 <= CV <= 10)";
        let number = |s: &str, min: f64| {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= min && *v <= 86_400.0)
        };
        let (kind, args) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?}: {expected}"))?;
        let bad = || format!("{text:?}: {expected}");
        let positive = |s: &str| number(s, 0.0).filter(|v| *v > 0.0).ok_or_else(bad);
        match kind {
            "det" => Ok(Distribution::Deterministic(
                number(args, 0.0).ok_or_else(bad)?,
            )),
            "exp" => Ok(Distribution::Exponential {
                mean: positive(args)?,
            }),
            "lognormal" => {
                let (mean, cv) = args.split_once(',').ok_or_else(bad)?;
                let cv = number(cv, 0.0).filter(|v| *v <= 10.0).ok_or_else(bad)?;
                Ok(Distribution::Lognormal {
                    mean: positive(mean)?,
                    cv,
                })
            }
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::rng::Stream;

    #[test]
    fn parse_and_print_round_trip() {
        for text in ["det:0.05", "exp:0.05", "lognormal:30,0.2"] {
            let d: Distribution = text.parse().unwrap();
            assert_eq!(d.to_string(), text);
        }
        for bad in [
            "",
            "det",
            "det:x",
            "exp:0",
            "exp:-1",
            "lognormal:1",
            "gamma:1",
            "det:NaN",
            "lognormal:1,11",
        ] {
            let e = bad.parse::<Distribution>().unwrap_err();
            assert!(e.contains("expected det:"), "{bad}: {e}");
        }
    }

    #[test]
    fn lognormal_has_its_mean_and_cv() {
        let d = Distribution::Lognormal {
            mean: 0.05,
            cv: 0.5,
        };
        let mut rng = Rng::new(5, Stream::Service);
        let xs: Vec<f64> = (0..200_000).map(|_| d.sample(&mut rng)).collect();
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        let sd = (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64).sqrt();
        assert!((m - 0.05).abs() < 0.0005, "{m}");
        assert!((sd / m - 0.5).abs() < 0.02, "{}", sd / m);
        assert!(d.p95() > d.mean());
        assert_eq!(Distribution::Deterministic(3.0).p95(), 3.0);
    }
}
