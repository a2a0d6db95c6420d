//! The stabilization window of [`LittlePolicy`](super::LittlePolicy), counted in seconds
//! of observations, not in messages: each observation covers the time since the one
//! before it (at most its own interval), so duplicated, overlapping or extra messages
//! add no time, and the splitter may measure in intervals of any length
//! (`autoscaler-agent` measures a quarter of a second).
//!
//! **What an observation shows** is judged on its need averaged over the last
//! [`SMOOTH_SECONDS`] (time-weighted, itself included): a quarter of a second is too
//! short to judge alone (measured: with 0.45 s responses, the requests that end in one
//! quarter are a slice of the queue, and its L = λ·W swings from a third to three times
//! the load), a second is not.
//!
//! **How long a run proves the load lasted.** A run is the newest observations that all
//! show it. Each average covers [`SMOOTH_SECONDS`]; by Little's law its L is the load's
//! level times the share of that second the load was on, so the share is read from the
//! run's first and last averages against the run's highest (less the level before the
//! run): the load lasted `span − w + w·(share_first + share_last)`, `span` the time
//! between the run's first and last observation ends and `w` the averaging width. A
//! scale-out needs that to reach `stabilization`. For one-second observations this acts
//! a second earlier than 7 of them in a row would, and still never for a change under
//! `stabilization` at a steady level; with quarter seconds a lasting change is acted on
//! 5 to 5.5 s after it shows.

use std::collections::VecDeque;

/// How much less than the seconds asked for a run may cover and still count: the jitter
/// of the splitter's timer at the run's two ends (measured: intervals of 0.2493-0.2513 s
/// for 0.25 s; the interior's length telescopes to the time between two interval ends).
/// Without it, 20 quarters of 0.2499 s would miss 5 s and wait a quarter more.
pub(super) const JITTER_SECONDS: f64 = 0.02;

/// The width of the average an observation is judged on, seconds.
pub(super) const SMOOTH_SECONDS: f64 = 1.0;

/// A run may hold at most this many observations (a hostile splitter sending thousands a
/// second gains nothing and costs bounded memory).
const MAX_SAMPLES: usize = 4096;

/// One observation's verdict on the size: the VMs it needs, and the time it covers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sample {
    /// VMs needed, real-valued.
    pub(super) need: f64,
    /// Requests in flight (L = λ·W).
    pub(super) in_flight: f64,
    /// Seconds this observation adds to the window: its interval, but no more than the
    /// time since the observation before it ended.
    pub(super) seconds: f64,
    /// The need averaged over the last [`SMOOTH_SECONDS`] (set by [`Window::push`]).
    pub(super) smooth: f64,
    /// The requests in flight averaged the same way (set by [`Window::push`]): what a
    /// run's shares are read from, being linear in the share of the second the load was
    /// on (the need is not: its capacity is read from the same second's throughput).
    pub(super) smooth_in_flight: f64,
}

impl Sample {
    /// Whole VMs of the averaged need (a need of 3.0000001 is 4 VMs; 3.0 is 3).
    pub(super) fn vms(self) -> u32 {
        whole_vms(self.smooth)
    }
}

/// Whole VMs for a real-valued need (a need of 3.0000001 is 4 VMs; 3.0 is 3).
pub(super) fn whole_vms(need: f64) -> u32 {
    let whole = (need - 1e-9).ceil();
    if whole <= 0.0 {
        0
    } else if whole >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        whole as u32
    }
}

/// Consecutive observations, oldest first, trimmed to what the longest rule looks at.
#[derive(Debug, Clone, Default)]
pub(super) struct Window {
    samples: VecDeque<Sample>,
    /// Seconds covered by every sample but the oldest (what trimming keeps above the
    /// horizon).
    after_oldest: f64,
}

impl Window {
    pub(super) fn clear(&mut self) {
        self.samples.clear();
        self.after_oldest = 0.0;
    }

    /// Adds the newest sample; keeps the samples whose time reaches back `horizon`
    /// seconds (and at least one more, which may be partial).
    pub(super) fn push(&mut self, mut sample: Sample, horizon: f64) {
        let (mut need, mut in_flight) = (
            sample.need * sample.seconds,
            sample.in_flight * sample.seconds,
        );
        let mut covered = sample.seconds;
        for older in self.samples.iter().rev() {
            if covered >= SMOOTH_SECONDS - JITTER_SECONDS {
                break;
            }
            let part = older.seconds.min(SMOOTH_SECONDS - covered);
            need += older.need * part;
            in_flight += older.in_flight * part;
            covered += part;
        }
        (sample.smooth, sample.smooth_in_flight) = if covered > 0.0 {
            (need / covered, in_flight / covered)
        } else {
            (sample.need, sample.in_flight)
        };
        if !self.samples.is_empty() {
            self.after_oldest += sample.seconds;
        }
        self.samples.push_back(sample);
        while self.samples.len() > 2
            && (self.samples.len() > MAX_SAMPLES
                || self.after_oldest - self.samples[1].seconds >= horizon)
        {
            self.samples.pop_front();
            self.after_oldest -= self.samples[0].seconds;
        }
    }

    /// The newest samples that all satisfy `shows` (at least two), when they prove that
    /// a rise of the load lasted `seconds` (to within [`JITTER_SECONDS`]; see the module
    /// doc). For rises only: the shares are read against the run's highest average.
    pub(super) fn lasting(&self, seconds: f64, shows: impl Fn(&Sample) -> bool) -> Option<Run<'_>> {
        let n = self.samples.len();
        let mut first = n;
        while first > 0 && shows(&self.samples[first - 1]) {
            first -= 1;
        }
        if n < 2 || first + 1 >= n {
            return None;
        }
        let run = self.samples.range(first..);
        let span: f64 = run.clone().skip(1).map(|s| s.seconds).sum();
        let top = run
            .clone()
            .map(|s| s.smooth_in_flight)
            .fold(f64::MIN, f64::max);
        // The share of its average's width the load was on, against the level before the
        // run: the average of the sample whose second ended as the run's first began (the
        // samples in between already saw part of the rise). When the window does not
        // reach back that far the level is unknown: the first average counts as no share
        // at all, the last against zero.
        let mut back = 0.0;
        let mut before = first;
        while before > 0 && back < SMOOTH_SECONDS.max(self.samples[first].seconds) - JITTER_SECONDS
        {
            back += self.samples[before].seconds;
            before -= 1;
        }
        let reached = back >= SMOOTH_SECONDS.max(self.samples[first].seconds) - JITTER_SECONDS;
        let base = reached.then(|| self.samples[before].smooth_in_flight);
        let share = |s: &Sample, base: f64| {
            if top > base {
                ((s.smooth_in_flight - base) / (top - base)).clamp(0.0, 1.0)
            } else {
                1.0
            }
        };
        let (head, tail) = (&self.samples[first], &self.samples[n - 1]);
        let head_share = base.map_or(0.0, |b| share(head, b));
        let tail_share = share(tail, base.unwrap_or(0.0));
        let width = SMOOTH_SECONDS.max(head.seconds);
        let lasted = span - width + width * (head_share + tail_share);
        (lasted >= seconds - JITTER_SECONDS).then_some(Run {
            window: self,
            first,
        })
    }

    /// The newest samples covering at least `seconds` (all of them if fewer).
    pub(super) fn newest(&self, seconds: f64) -> Run<'_> {
        let mut covered = 0.0;
        let mut first = self.samples.len();
        while first > 0 && covered < seconds - JITTER_SECONDS {
            first -= 1;
            covered += self.samples[first].seconds;
        }
        Run {
            window: self,
            first,
        }
    }

    /// Seconds covered by the newest samples that all satisfy `shows` (the first of
    /// them wholly counted).
    pub(super) fn seconds_showing(&self, shows: impl Fn(&Sample) -> bool) -> f64 {
        self.samples
            .iter()
            .rev()
            .take_while(|s| shows(s))
            .map(|s| s.seconds)
            .sum()
    }
}

/// The newest samples of a window, from `first` on.
#[derive(Debug, Clone, Copy)]
pub(super) struct Run<'a> {
    window: &'a Window,
    first: usize,
}

impl Run<'_> {
    fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.window.samples.iter().skip(self.first)
    }

    /// Seconds the run covers, its first sample wholly counted.
    pub(super) fn seconds(&self) -> f64 {
        self.samples().map(|s| s.seconds).sum()
    }

    /// The mean need over the run's time (each sample weighted by the seconds it covers).
    pub(super) fn mean_need(&self) -> f64 {
        weighted(self.samples(), |s| s.need)
    }

    /// The mean requests in flight over the run's time.
    pub(super) fn mean_in_flight(&self) -> f64 {
        weighted(self.samples(), |s| s.in_flight)
    }

    /// The largest whole need of the run.
    pub(super) fn most_vms(&self) -> u32 {
        self.samples().map(|s| s.vms()).max().unwrap_or(0)
    }
}

fn weighted<'a>(samples: impl Iterator<Item = &'a Sample>, f: impl Fn(&Sample) -> f64) -> f64 {
    let (mut sum, mut seconds, mut plain, mut n) = (0.0, 0.0, 0.0, 0.0);
    for s in samples {
        sum += f(s) * s.seconds;
        seconds += s.seconds;
        plain += f(s);
        n += 1.0;
    }
    if seconds > 0.0 {
        sum / seconds
    } else if n > 0.0 {
        plain / n
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(need: f64, seconds: f64) -> Sample {
        Sample {
            need,
            in_flight: need,
            seconds,
            smooth: need,
            smooth_in_flight: need,
        }
    }

    /// Pushes `needs` of `seconds` each; returns after how many a rise above 1 VM lasting
    /// 5 s is proven.
    fn proven_after(needs: &[f64], seconds: f64) -> Option<usize> {
        let mut w = Window::default();
        for (i, &need) in needs.iter().enumerate() {
            w.push(sample(need, seconds), 30.0);
            if w.lasting(5.0, |s| s.vms() > 1).is_some() {
                return Some(i + 1);
            }
        }
        None
    }

    #[test]
    fn a_step_at_the_start_of_a_second_is_proven_five_seconds_on() {
        // 1 s observations: the level before is 0.3; from the 3rd on 2.5.
        let mut needs = vec![0.3, 0.3];
        needs.extend([2.5; 10]);
        assert_eq!(proven_after(&needs, 1.0), Some(2 + 5));
        // Quarters: 5 s after the step, 20 quarters.
        let mut needs = vec![0.3; 8];
        needs.extend([2.5; 40]);
        assert_eq!(proven_after(&needs, 0.25), Some(8 + 20));
    }

    #[test]
    fn a_step_within_a_second_counts_its_share() {
        // The step comes 0.4 s before the 3rd second ends: that second averages
        // 0.3 + 0.4 * 2.2 = 1.18 (more than 1 VM): 4.6 s later it has lasted 5 s, the end
        // of the 8th second (a second is not split).
        let mut needs = vec![0.3, 0.3, 0.3 + 0.4 * 2.2];
        needs.extend([2.5; 10]);
        assert_eq!(proven_after(&needs, 1.0), Some(8));
    }

    #[test]
    fn bursts_under_five_seconds_prove_nothing() {
        for quarters in 1..20 {
            // A burst of `quarters` quarter seconds at a steady level, between calm.
            let mut needs = vec![0.3; 8];
            needs.extend(std::iter::repeat_n(2.5, quarters));
            needs.extend([0.3; 20]);
            assert_eq!(proven_after(&needs, 0.25), None, "{quarters} quarters");
        }
        // 4.9 s in one-second observations: partial at both ends.
        let needs = [
            0.3,
            0.3 + 0.45 * 2.2,
            2.5,
            2.5,
            2.5,
            2.5,
            0.3 + 0.45 * 2.2,
            0.3,
            0.3,
        ];
        assert_eq!(proven_after(&needs, 1.0), None);
    }

    #[test]
    fn one_noisy_quarter_does_not_break_the_run() {
        // Quarters of a steady 2.5 with one at a third of it: the second's average
        // still needs more than 1 VM.
        let mut needs = vec![0.3; 8];
        needs.extend([2.5; 40]);
        needs[14] = 0.8;
        assert!(proven_after(&needs, 0.25).is_some_and(|n| n <= 8 + 21));
    }

    #[test]
    fn a_second_not_showing_breaks_the_run() {
        let mut w = Window::default();
        for i in 0..20 {
            w.push(sample(if i == 15 { 0.5 } else { 3.0 }, 1.0), 30.0);
        }
        assert!(w.lasting(5.0, |s| s.vms() > 1).is_none());
        assert_eq!(w.seconds_showing(|s| s.vms() > 1), 4.0);
    }

    #[test]
    fn trimming_keeps_the_horizon_and_bounds_the_samples() {
        let mut w = Window::default();
        for _ in 0..100 {
            w.push(sample(1.0, 1.0), 15.0);
        }
        assert_eq!(w.samples.len(), 16);
        assert_eq!(w.seconds_showing(|_| true), 16.0);
        for _ in 0..10_000 {
            w.push(sample(1.0, 0.0), 15.0);
        }
        assert!(w.samples.len() <= MAX_SAMPLES);
    }

    #[test]
    fn means_weigh_samples_by_their_seconds() {
        let mut w = Window::default();
        w.push(sample(1.0, 0.5), 20.0);
        w.push(sample(4.0, 1.5), 20.0);
        w.push(sample(4.0, 1.0), 20.0);
        let all = w.newest(3.0);
        assert_eq!(all.seconds(), 3.0);
        assert!((all.mean_need() - (0.5 + 6.0 + 4.0) / 3.0).abs() < 1e-9);
        assert_eq!(all.most_vms(), 4);
        assert_eq!(w.newest(2.0).seconds(), 2.5);
    }
}
