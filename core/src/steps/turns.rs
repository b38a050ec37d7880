//! What the recorder of this process knows of each run, and whose turn it is.
//!
//! Reports of one run take turns (they wait for each other, never for other runs), so they do
//! not overtake each other's decisions. And the run as the last report of this process left it
//! (with the step times its rate limits look back on) is kept, so the next report of the run is
//! decided without reading the database. What is kept can be out of date — another process may
//! have written to the run — which costs nothing but a second decision: the write path checks
//! every decision against the run as stored and refuses one made on an older state.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};
use governance_entities::run;

/// The run as this process last saw it.
#[derive(Debug, Clone)]
pub(super) struct Known {
    pub(super) run: run::Model,
    pub(super) times: StepTimes,
}

impl Known {
    pub(super) fn new(run: run::Model) -> Self {
        Self {
            run,
            times: StepTimes::default(),
        }
    }

    /// A step of the run was written; `run` is the run after it.
    pub(super) fn stepped(&mut self, run: run::Model, at: DateTime<Utc>) {
        self.run = run;
        self.times.push(at);
    }
}

/// The times of a run's steps, as far back as its rate limits looked.
#[derive(Debug, Clone, Default)]
pub(super) struct StepTimes {
    /// Times of the run's steps after `complete_since` (all of them, whatever their order).
    times: Vec<DateTime<Utc>>,
    /// Since when `times` is complete; `None` until the history was read.
    complete_since: Option<DateTime<Utc>>,
}

impl StepTimes {
    /// The step times after `since`, if what is kept covers them.
    pub(super) fn after(&mut self, since: DateTime<Utc>) -> Option<Vec<DateTime<Utc>>> {
        let covered = self.complete_since.is_some_and(|from| from <= since);
        if !covered {
            return None;
        }
        // Older times will not be asked for again unless a step is stamped earlier, which
        // reads the history anew.
        self.times.retain(|t| *t > since);
        self.complete_since = Some(since);
        Some(self.times.clone())
    }

    /// The history as read from the database: every step time after `since`.
    pub(super) fn remember(&mut self, since: DateTime<Utc>, times: &[DateTime<Utc>]) {
        self.times = times.to_vec();
        self.complete_since = Some(since);
    }

    /// A step was written at `at`. Kept only while the times are tracked (since the history
    /// was first read for a rate limit): a run whose snapshot looks back on none keeps nothing,
    /// however many steps it takes.
    fn push(&mut self, at: DateTime<Utc>) {
        if self.complete_since.is_some() {
            self.times.push(at);
        }
    }
}

/// One run's turn, holding what is known of it.
pub(super) type Turn = Arc<tokio::sync::Mutex<Option<Known>>>;

/// The turns of the runs this process reported on lately.
#[derive(Clone, Default)]
pub(super) struct RunTurns(Arc<Mutex<Turns>>);

#[derive(Default)]
struct Turns {
    by_run: HashMap<String, (Turn, u64)>,
    clock: u64,
}

impl RunTurns {
    /// Runs remembered; past this the least recently used quarter is forgotten.
    const CAPACITY: usize = 4096;

    pub(super) fn of(&self, run_id: &str) -> Turn {
        // A poisoned map only means a panic elsewhere mid-update; the map is still usable.
        let mut turns = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        turns.clock += 1;
        let now = turns.clock;
        if let Some((turn, used)) = turns.by_run.get_mut(run_id) {
            *used = now;
            return turn.clone();
        }
        if turns.by_run.len() >= Self::CAPACITY {
            let mut ages: Vec<u64> = turns.by_run.values().map(|(_, used)| *used).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 4];
            // A forgotten turn still held by a report only means a second decision if a report
            // of the same run comes in meanwhile.
            turns.by_run.retain(|_, (_, used)| *used > cutoff);
        }
        let turn: Turn = Arc::new(tokio::sync::Mutex::new(None));
        turns.by_run.insert(run_id.to_string(), (turn.clone(), now));
        turn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_run_gets_the_same_turn_and_old_runs_are_forgotten() {
        let turns = RunTurns::default();
        let first = turns.of("run_a");
        assert!(Arc::ptr_eq(&first, &turns.of("run_a")));
        for i in 0..RunTurns::CAPACITY {
            turns.of(&format!("run_{i}"));
        }
        let held = turns.0.lock().map(|t| t.by_run.len()).unwrap_or_default();
        assert!(held <= RunTurns::CAPACITY, "{held}");
        // run_a was the least recently used: it is a new turn now.
        assert!(!Arc::ptr_eq(&first, &turns.of("run_a")));
    }

    #[test]
    fn kept_times_answer_only_windows_they_cover() {
        let start = DateTime::<Utc>::UNIX_EPOCH;
        let at = |s: i64| start + chrono::Duration::seconds(s);
        let mut times = StepTimes::default();
        assert_eq!(times.after(at(0)), None);
        // Not tracked yet (no rate limit has asked): nothing is kept.
        for s in 0..1_000 {
            times.push(at(s));
        }
        assert!(times.times.is_empty());
        times.remember(at(10), &[at(11), at(12)]);
        times.push(at(13));
        assert_eq!(times.after(at(11)), Some(vec![at(12), at(13)]));
        // Earlier than what is kept: read again.
        assert_eq!(times.after(at(5)), None);
    }
}
