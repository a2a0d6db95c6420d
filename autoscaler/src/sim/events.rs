//! The virtual clock and the event heap: events ordered by (time, sequence), so two
//! events at the same instant run in the order they were scheduled, and a run is the
//! same every time (quinn-proto's test harness jumps virtual time the same way).

use std::{cmp::Ordering, collections::BinaryHeap};

struct Entry<E> {
    at: f64,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest event must come first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .at
            .total_cmp(&self.at)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// Pending events and the current virtual time, in seconds since the run began.
pub struct EventQueue<E> {
    heap: BinaryHeap<Entry<E>>,
    seq: u64,
    now: f64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            seq: 0,
            now: 0.0,
        }
    }
}

impl<E> EventQueue<E> {
    /// The time of the event taken last.
    pub fn now(&self) -> f64 {
        self.now
    }

    /// Schedules `event` at `at`; a time in the past runs now (time never goes back).
    pub fn schedule(&mut self, at: f64, event: E) {
        let at = if at.is_nan() {
            self.now
        } else {
            at.max(self.now)
        };
        self.seq += 1;
        self.heap.push(Entry {
            at,
            seq: self.seq,
            event,
        });
    }

    /// Takes the earliest event and moves the clock to it.
    pub fn pop(&mut self) -> Option<(f64, E)> {
        let entry = self.heap.pop()?;
        self.now = entry.at;
        Some((entry.at, entry.event))
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn events_come_out_by_time_then_by_scheduling_order(times in prop::collection::vec(0u8..20, 1..60)) {
            let mut q = EventQueue::default();
            for (i, t) in times.iter().enumerate() {
                q.schedule(f64::from(*t) / 4.0, i);
            }
            let mut last: Option<(f64, usize)> = None;
            while let Some((at, i)) = q.pop() {
                if let Some((t0, i0)) = last {
                    prop_assert!(at > t0 || (at == t0 && i > i0));
                }
                prop_assert_eq!(q.now(), at);
                last = Some((at, i));
            }
        }
    }

    #[test]
    fn the_past_is_now() {
        let mut q = EventQueue::default();
        q.schedule(5.0, "a");
        assert_eq!(q.pop(), Some((5.0, "a")));
        q.schedule(1.0, "b");
        q.schedule(f64::NAN, "c");
        assert_eq!(q.pop(), Some((5.0, "b")));
        assert_eq!(q.pop(), Some((5.0, "c")));
        assert!(q.is_empty());
    }
}
