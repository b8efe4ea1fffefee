//! Priority lanes: the order in which a node's queue is delivered.
//!
//! Each node's queue is four FIFO lanes. Every item keeps the per-node
//! sequence number it was queued with (one counter for all lanes, so a
//! node acknowledges by `seq` alone, whatever lane the item is in); within
//! a lane, items go out in that order. Between lanes:
//!
//! - **Immediate** envelopes go first: up to [`IMMEDIATE_RUN`] in a row
//!   while other lanes wait, then one turn of the round below, then the
//!   immediate lane again. An immediate alert is rare and small and must
//!   not wait behind a backlog of any size; a node that marks everything
//!   immediate (a hostile or broken one) still cannot stop the other lanes,
//!   which keep one delivery in every `IMMEDIATE_RUN + 1`.
//! - **Receipts** relayed back to a sender, **urgent** envelopes and
//!   **routine** envelopes share what is left in a weighted round of
//!   [`ROUND`]: four receipts, three urgent, one routine, skipping a lane
//!   that has nothing waiting. So, however large the other lanes, routine
//!   traffic gets at least one delivery in eight and urgent at least three.
//!   Receipts get the largest share because a receipt is a few hundred
//!   bytes that the node files without decrypting anything, and the sender
//!   waits on it to see its record delivered; there is at most one per
//!   recipient node of what the node itself sent, so they cannot grow
//!   without the node's own traffic growing.
//!
//! [`Cursor`] is where one delivery stream has got to: per lane, the last
//! seq it sent, and where it is in the round. A cursor may leave lanes out
//! (a node's immediate stream carries only the immediate lane, and its main
//! stream leaves that lane to it while it is open); a lane left out is read
//! by no look and takes no turn. Nothing is delivered twice on
//! one stream (each lane is read only past its cursor), and nothing is
//! skipped (an item reaches a lane only with a seq above every seq already
//! shown in that lane, because only durable items are shown and sequence
//! numbers are handed out in commit order).

use crate::protocol::proto::v1;

/// One lane of a node's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    Immediate,
    Receipt,
    Urgent,
    Routine,
}

/// How many immediate envelopes go out in a row while other lanes wait.
pub const IMMEDIATE_RUN: usize = 16;

/// The weighted round between the lanes after [`Lane::Immediate`].
pub const ROUND: [Lane; 8] = [
    Lane::Receipt,
    Lane::Urgent,
    Lane::Receipt,
    Lane::Urgent,
    Lane::Receipt,
    Lane::Urgent,
    Lane::Receipt,
    Lane::Routine,
];

impl Lane {
    pub const ALL: [Lane; 4] = [Lane::Immediate, Lane::Receipt, Lane::Urgent, Lane::Routine];

    /// The lane of an envelope with this header priority. An unspecified
    /// priority (or one this version does not know) is routine.
    pub fn of_priority(priority: i32) -> Lane {
        match v1::Priority::try_from(priority) {
            Ok(v1::Priority::Immediate) => Lane::Immediate,
            Ok(v1::Priority::Urgent) => Lane::Urgent,
            Ok(v1::Priority::Routine | v1::Priority::Unspecified) | Err(_) => Lane::Routine,
        }
    }

    /// The lane's number, as a backend may store it (also its index in
    /// [`Lane::ALL`]).
    pub fn number(self) -> u8 {
        self as u8
    }

    pub fn from_number(n: u8) -> Option<Lane> {
        Lane::ALL.get(usize::from(n)).copied()
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where one delivery stream has got to in a node's lanes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Per lane (by [`Lane::number`]), the last seq sent.
    after: [Option<u64>; 4],
    /// The next position in [`ROUND`].
    turn: usize,
    /// Immediate envelopes sent since the last turn of the round.
    immediate_run: usize,
    /// Per lane, whether this stream leaves it out.
    left_out: [bool; 4],
}

impl Cursor {
    /// A cursor that carries `lane` alone.
    pub fn only(lane: Lane) -> Cursor {
        let mut c = Cursor::default();
        for l in Lane::ALL {
            c.left_out[l.index()] = l != lane;
        }
        c
    }

    /// The last seq sent from `lane`; a backend reads the lane past it.
    pub fn after(&self, lane: Lane) -> Option<u64> {
        self.after[lane.index()]
    }

    /// Whether this stream carries `lane`; a backend reads no other lane.
    pub fn carries(&self, lane: Lane) -> bool {
        !self.left_out[lane.index()]
    }

    /// Leaves `lane` out of this stream from now on, or takes it back. A
    /// lane taken back is read again from its oldest item: what another
    /// stream had of it and did not get acknowledged is this stream's to
    /// send now.
    pub fn carry(&mut self, lane: Lane, carry: bool) {
        if carry && self.left_out[lane.index()] {
            self.after[lane.index()] = None;
        }
        self.left_out[lane.index()] = !carry;
    }

    /// Records that the item `seq` of `lane` was sent. Items must be
    /// recorded in the order [`Cursor::schedule`] gave them.
    pub fn sent(&mut self, lane: Lane, seq: u64) {
        let last = &mut self.after[lane.index()];
        *last = Some(last.map_or(seq, |l| l.max(seq)));
        if lane == Lane::Immediate {
            self.immediate_run += 1;
        } else {
            self.immediate_run = 0;
            if let Some(i) = (0..ROUND.len())
                .map(|k| (self.turn + k) % ROUND.len())
                .find(|&i| ROUND[i] == lane)
            {
                self.turn = (i + 1) % ROUND.len();
            }
        }
    }

    /// The delivery order of up to `limit` items, given what waits in each
    /// lane past this cursor (`waiting[lane.number()]` items, oldest
    /// first). Returns (lane, position in that lane's waiting items), as
    /// [`Cursor::sent`] is to be told them. Does not move the cursor.
    pub fn schedule(&self, mut waiting: [usize; 4], limit: usize) -> Vec<(Lane, usize)> {
        for l in Lane::ALL {
            if !self.carries(l) {
                waiting[l.index()] = 0;
            }
        }
        let mut taken = [0usize; 4];
        let mut turn = self.turn;
        let mut run = self.immediate_run;
        let mut out = Vec::new();
        let left = |taken: &[usize; 4], l: Lane| taken[l.index()] < waiting[l.index()];
        while out.len() < limit {
            let next_in_round = (0..ROUND.len())
                .map(|k| (turn + k) % ROUND.len())
                .find(|&i| left(&taken, ROUND[i]));
            let lane = match next_in_round {
                _ if left(&taken, Lane::Immediate)
                    && (run < IMMEDIATE_RUN || next_in_round.is_none()) =>
                {
                    run += 1;
                    Lane::Immediate
                }
                Some(i) => {
                    turn = (i + 1) % ROUND.len();
                    run = 0;
                    ROUND[i]
                }
                None => break,
            };
            out.push((lane, taken[lane.index()]));
            taken[lane.index()] += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lanes(order: &[(Lane, usize)]) -> Vec<Lane> {
        order.iter().map(|(l, _)| *l).collect()
    }

    #[test]
    fn immediate_goes_first_then_the_weighted_round() {
        let c = Cursor::default();
        let order = c.schedule([2, 10, 10, 10], 12);
        use Lane::*;
        assert_eq!(
            lanes(&order),
            [
                Immediate, Immediate, Receipt, Urgent, Receipt, Urgent, Receipt, Urgent, Receipt,
                Routine, Receipt, Urgent
            ]
        );
        // Positions within each lane count up from the oldest.
        assert_eq!(order[0], (Immediate, 0));
        assert_eq!(order[1], (Immediate, 1));
        assert_eq!(order[4], (Receipt, 1));
    }

    #[test]
    fn an_empty_lane_gives_its_turns_away() {
        let c = Cursor::default();
        use Lane::*;
        assert_eq!(lanes(&c.schedule([0, 0, 0, 3], 10)), [Routine; 3]);
        assert_eq!(
            lanes(&c.schedule([0, 0, 2, 5], 7)),
            [Urgent, Urgent, Routine, Routine, Routine, Routine, Routine]
        );
        assert!(c.schedule([0; 4], 10).is_empty());
    }

    #[test]
    fn routine_is_never_starved() {
        let mut c = Cursor::default();
        let mut routine = 0;
        let mut seq = 0;
        // Batches of every size, with receipts and urgent always waiting.
        for batch in 1..40 {
            for (lane, _) in c.schedule([0, 1000, 1000, 1000], batch) {
                if lane == Lane::Routine {
                    routine += 1;
                }
                c.sent(lane, seq);
                seq += 1;
            }
        }
        assert!((routine + 1) * 8 >= seq, "{routine} of {seq}");
    }

    #[test]
    fn a_flood_of_immediates_does_not_stop_the_other_lanes() {
        let mut c = Cursor::default();
        let (mut immediate, mut others, mut seq) = (0usize, 0usize, 0u64);
        for batch in 1..40 {
            for (lane, _) in c.schedule([1000, 1000, 1000, 1000], batch) {
                if lane == Lane::Immediate {
                    immediate += 1;
                } else {
                    others += 1;
                }
                c.sent(lane, seq);
                seq += 1;
            }
        }
        let total = immediate + others;
        assert!(
            (others + 1) * (IMMEDIATE_RUN + 1) >= total,
            "{others} of {total}"
        );
        assert!(
            immediate >= others * IMMEDIATE_RUN,
            "{immediate} of {total}"
        );
        // Alone, the immediate lane takes every delivery.
        assert_eq!(
            lanes(&Cursor::default().schedule([40, 0, 0, 0], 40)),
            [Lane::Immediate; 40]
        );
    }

    #[test]
    fn a_lane_left_out_is_never_scheduled_and_is_read_again_when_taken_back() {
        use Lane::*;
        let only = Cursor::only(Immediate);
        assert!(only.carries(Immediate) && !only.carries(Routine));
        assert_eq!(lanes(&only.schedule([2, 5, 5, 5], 10)), [Immediate; 2]);
        assert!(only.schedule([0, 5, 5, 5], 10).is_empty());

        let mut main = Cursor::default();
        main.sent(Immediate, 3);
        main.carry(Immediate, false);
        assert_eq!(
            lanes(&main.schedule([4, 0, 0, 2], 10)),
            [Routine, Routine],
            "the other lanes go on without the immediate one"
        );
        main.carry(Immediate, true);
        assert_eq!(main.after(Immediate), None, "read again from its oldest");
        assert_eq!(lanes(&main.schedule([1, 0, 0, 0], 10)), [Immediate]);
        // Taking back a lane it carries already loses nothing.
        main.sent(Immediate, 7);
        main.carry(Immediate, true);
        assert_eq!(main.after(Immediate), Some(7));
    }

    #[test]
    fn the_round_resumes_where_the_last_batch_ended() {
        let mut c = Cursor::default();
        for (lane, i) in c.schedule([0, 5, 5, 5], 3) {
            c.sent(lane, i as u64);
        }
        assert_eq!(c.after(Lane::Receipt), Some(1));
        assert_eq!(c.after(Lane::Urgent), Some(0));
        assert_eq!(c.after(Lane::Routine), None);
        use Lane::*;
        assert_eq!(
            lanes(&c.schedule([0, 5, 5, 5], 6)),
            [Urgent, Receipt, Urgent, Receipt, Routine, Receipt]
        );
    }

    #[test]
    fn lanes_of_priorities() {
        use v1::Priority as P;
        assert_eq!(Lane::of_priority(P::Immediate as i32), Lane::Immediate);
        assert_eq!(Lane::of_priority(P::Urgent as i32), Lane::Urgent);
        assert_eq!(Lane::of_priority(P::Routine as i32), Lane::Routine);
        assert_eq!(Lane::of_priority(P::Unspecified as i32), Lane::Routine);
        assert_eq!(Lane::of_priority(99), Lane::Routine);
        for l in Lane::ALL {
            assert_eq!(Lane::from_number(l.number()), Some(l));
        }
        assert_eq!(Lane::from_number(4), None);
    }
}
