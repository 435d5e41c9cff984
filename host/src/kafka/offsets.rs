//! Per-partition progress of the Kafka source: the messages read but not yet decided, the offset that is
//! safe to commit (the oldest undecided message), and the read position reserved in the commit metadata,
//! from which the next owner of the partition counts the messages it re-reads as replays.
//!
//! Reservation: before this replica reads offset `o` at or past its reservation, it commits (synchronously)
//! the metadata `tailgate:reserved=<o + RESERVE>`, a promise that it reads nothing at or past that offset
//! before committing a larger one. Whatever it has decided therefore lies below the last committed
//! reservation, even when it is killed without a final commit; a new owner counts every message it reads
//! below that reservation as a possible duplicate. A graceful hand-off commits the exact read position.
//! Plain synchronous state, so every rule is unit-tested here.

use crate::otlp::TraceId;
use std::collections::BTreeMap;

/// Messages read past the committed reservation before a new one must be committed. Larger means fewer
/// synchronous commits; it also bounds how far the replay count can over-count after a crash.
pub const RESERVE: i64 = 1000;

const METADATA_PREFIX: &str = "tailgate:reserved=";

/// The reserved read position in commit metadata written by [`PartitionProgress::metadata`].
pub fn parse_metadata(metadata: &str) -> Option<i64> {
    metadata.strip_prefix(METADATA_PREFIX)?.parse().ok()
}

/// One assigned partition.
#[derive(Debug)]
pub struct PartitionProgress {
    /// Distinguishes this assignment from earlier ones of the same partition: acks of messages read under
    /// an earlier assignment are ignored.
    pub generation: u64,
    /// Offsets handed to the buffer whose spans are not all decided yet, with their trace ids (decided at
    /// once on a hand-off).
    pending: BTreeMap<i64, Vec<TraceId>>,
    /// One past the highest offset read.
    next: Option<i64>,
    /// This replica reads nothing at or past this offset before committing a larger reservation.
    reserved: i64,
    /// The previous owner's reservation: messages below it may have been decided before.
    replay_below: i64,
}

impl PartitionProgress {
    /// A freshly assigned partition whose previous owner reserved reads up to `replay_below` (0 when
    /// unknown).
    pub fn new(generation: u64, replay_below: i64) -> PartitionProgress {
        PartitionProgress {
            generation,
            pending: BTreeMap::new(),
            next: None,
            reserved: replay_below,
            replay_below,
        }
    }

    /// Sets the previous owner's reservation once the committed metadata has been fetched.
    pub fn set_replay_below(&mut self, replay_below: i64) {
        self.replay_below = replay_below;
        self.reserved = self.reserved.max(replay_below);
    }

    /// True when reading `offset` first needs a new reservation committed.
    pub fn needs_reservation(&self, offset: i64) -> bool {
        offset >= self.reserved
    }

    /// Moves the reservation past `offset`; returns the offset to commit with it (nothing past `offset` is
    /// read yet, so at most `offset`).
    pub fn reserve(&mut self, offset: i64) -> i64 {
        self.reserved = (offset + RESERVE).max(self.replay_below);
        self.commit_offset().unwrap_or(offset).min(offset)
    }

    /// True when `offset` lies below the previous owner's reservation (it may have been decided there).
    pub fn is_replay(&self, offset: i64) -> bool {
        offset < self.replay_below
    }

    /// Records a message handed to the buffer; it stays pending until [`PartitionProgress::done`].
    pub fn read(&mut self, offset: i64, traces: Vec<TraceId>) {
        self.pending.insert(offset, traces);
        self.advance(offset);
    }

    /// Records a message with nothing to decide (invalid or empty): done at once.
    pub fn skipped(&mut self, offset: i64) {
        self.advance(offset);
    }

    /// Keeps `offset` uncommitted for good (its spans could not be handed over: shutting down), so the
    /// next owner reads it again.
    pub fn hold(&mut self, offset: i64) {
        self.pending.insert(offset, Vec::new());
        self.advance(offset);
    }

    fn advance(&mut self, offset: i64) {
        self.next = Some(self.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// Every span of the message at `offset` is decided and handed to the exporter.
    pub fn done(&mut self, offset: i64) {
        self.pending.remove(&offset);
    }

    /// The offset to commit: the oldest undecided message, else one past the last read (`None` before the
    /// first read).
    pub fn commit_offset(&self) -> Option<i64> {
        self.pending.keys().next().copied().or(self.next)
    }

    /// Commit metadata carrying the reservation.
    pub fn metadata(&self) -> String {
        format!("{METADATA_PREFIX}{}", self.reserved)
    }

    /// Metadata for the last commit of a graceful hand-off: the exact read position, so the next owner
    /// counts as replays only what was read but not decided.
    pub fn final_metadata(&self) -> String {
        let read = self
            .next
            .unwrap_or(self.replay_below)
            .max(self.replay_below);
        format!("{METADATA_PREFIX}{read}")
    }

    /// Trace ids of undecided messages (to decide at once on a hand-off).
    pub fn pending_traces(&self) -> Vec<TraceId> {
        let mut ids: Vec<TraceId> = self.pending.values().flatten().copied().collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Undecided messages.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_up_to_the_oldest_undecided_message() {
        let mut p = PartitionProgress::new(1, 0);
        assert_eq!(p.commit_offset(), None);
        p.read(10, vec![1]);
        p.read(11, vec![2]);
        p.skipped(12);
        p.read(13, vec![1, 3]);
        assert_eq!(p.commit_offset(), Some(10));
        p.done(11);
        assert_eq!(p.commit_offset(), Some(10), "11 is decided but 10 is not");
        p.done(10);
        assert_eq!(p.commit_offset(), Some(13));
        assert_eq!(p.pending_traces(), vec![1, 3]);
        p.done(13);
        assert_eq!(
            p.commit_offset(),
            Some(14),
            "everything decided: one past the last read"
        );
        assert_eq!(p.pending_count(), 0);
    }

    #[test]
    fn held_offsets_are_never_committed_past() {
        let mut p = PartitionProgress::new(1, 0);
        p.read(5, vec![1]);
        p.hold(6);
        p.done(5);
        assert_eq!(p.commit_offset(), Some(6));
        p.read(7, vec![2]);
        p.done(7);
        assert_eq!(p.commit_offset(), Some(6), "6 stays for the next owner");
    }

    #[test]
    fn reservations_bound_what_was_read_and_replays_are_below_the_previous_one() {
        let mut p = PartitionProgress::new(1, 0);
        assert!(p.needs_reservation(0));
        assert_eq!(p.reserve(0), 0);
        assert_eq!(parse_metadata(&p.metadata()), Some(RESERVE));
        for o in 0..RESERVE {
            assert!(!p.needs_reservation(o));
            p.read(o, vec![o as u128]);
        }
        assert!(p.needs_reservation(RESERVE));
        p.done(0);
        assert_eq!(p.reserve(RESERVE), 1, "commits the oldest undecided offset");
        assert_eq!(parse_metadata(&p.metadata()), Some(2 * RESERVE));
        assert_eq!(parse_metadata(&p.final_metadata()), Some(RESERVE));

        // The next owner: committed offset 1, reservation 2000 from the metadata.
        let mut q = PartitionProgress::new(2, 0);
        q.set_replay_below(2 * RESERVE);
        assert!(q.is_replay(1) && q.is_replay(2 * RESERVE - 1) && !q.is_replay(2 * RESERVE));
        assert!(
            !q.needs_reservation(1),
            "the previous reservation still covers it"
        );
        assert!(q.needs_reservation(2 * RESERVE));
        q.reserve(2 * RESERVE);
        assert_eq!(parse_metadata(&q.metadata()), Some(3 * RESERVE));
    }

    #[test]
    fn metadata_from_elsewhere_is_ignored() {
        assert_eq!(parse_metadata(""), None);
        assert_eq!(parse_metadata("consumer-x"), None);
        assert_eq!(parse_metadata("tailgate:reserved=x"), None);
        assert_eq!(parse_metadata("tailgate:reserved=42"), Some(42));
    }
}
