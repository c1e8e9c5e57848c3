//! Geometry of the wheel: which level and slot a deadline belongs to, and where a slot starts.
//!
//! These are pure functions of two ticks, kept apart from the wheel so that they can be tested
//! exhaustively around every level boundary (tokio's `test_level_for` is the model).
//!
//! A tick splits into groups of `LEVEL_BITS` bits. Level `L` looks at group `L`:
//!
//! ```text
//!   bit 63                                                                      bit 0
//!   | 4 bits |  6   |  6   |  6   |  6   |  6   |  6   |  6   |  6   |  6   |  6   |
//!   |  L10   |  L9  |  L8  |  L7  |  L6  |  L5  |  L4  |  L3  |  L2  |  L1  |  L0  |
//! ```
//!
//! A deadline goes to the highest group in which it differs from the wheel's current tick, and
//! to the slot that group's bits name. Above that group the two ticks agree; at that group the
//! deadline's slot is strictly after the current tick's slot. So every slot of a level lies
//! ahead of the current position and a level never wraps around.

/// Bits of a tick that one level resolves. 6 bits give 64 slots, one `u64` occupancy bitmap.
pub(crate) const LEVEL_BITS: usize = 6;

/// Slots in one level.
pub(crate) const SLOTS_PER_LEVEL: usize = 1 << LEVEL_BITS;

/// Mask of the bits inside one group.
pub(crate) const SLOT_MASK: u64 = SLOTS_PER_LEVEL as u64 - 1;

/// Levels needed so that every `u64` deadline has a level: ceil(64 / 6) = 11. The top level
/// uses only the 4 bits that are left (16 of its 64 slots).
pub(crate) const LEVELS: usize = (u64::BITS as usize).div_ceil(LEVEL_BITS);

// One `u64` bitmap per level marks the slots that hold entries.
const _: () = assert!(SLOTS_PER_LEVEL == u64::BITS as usize);
// The levels cover all 64 bits of a tick, and no level is wholly above bit 63.
const _: () = assert!(LEVELS * LEVEL_BITS >= u64::BITS as usize);
const _: () = assert!((LEVELS - 1) * LEVEL_BITS < u64::BITS as usize);
// One `u16` bitmap marks the levels that hold entries.
const _: () = assert!(LEVELS <= u16::BITS as usize);

/// The level for an entry due at `deadline_tick` when the wheel stands at `elapsed_tick`.
///
/// The caller must only ask for deadlines strictly in the future: entries already due live in
/// the wheel's due list, not in a level.
#[inline]
pub(crate) fn level_for(elapsed_tick: u64, deadline_tick: u64) -> usize {
    assert!(deadline_tick > elapsed_tick);
    // OR in the slot mask so that two ticks differing only in group 0 still give level 0 (and
    // so that leading_zeros never sees zero).
    let masked = (elapsed_tick ^ deadline_tick) | SLOT_MASK;
    let significant_bit = (u64::BITS - 1 - masked.leading_zeros()) as usize;
    let level = significant_bit / LEVEL_BITS;
    assert!(level < LEVELS);
    level
}

/// The slot of `deadline_tick` at `level`.
#[inline]
pub(crate) fn slot_for(deadline_tick: u64, level: usize) -> usize {
    assert!(level < LEVELS);
    ((deadline_tick >> (level * LEVEL_BITS)) & SLOT_MASK) as usize
}

/// The first tick that `slot` at `level` covers, given that the wheel stands at `elapsed_tick`.
///
/// This is the earliest deadline any entry of that slot can have, so it is when the slot must be
/// processed: entries due at that tick expire and the rest move down a level.
pub(crate) fn slot_start(elapsed_tick: u64, level: usize, slot: usize) -> u64 {
    assert!(level < LEVELS);
    assert!(slot < SLOTS_PER_LEVEL);
    let slot_shift = level * LEVEL_BITS;
    let level_shift = slot_shift + LEVEL_BITS;
    // The top level spans all of u64, so its start is tick 0 (a shift by 66 would overflow).
    let level_start_tick = if level_shift >= u64::BITS as usize {
        0
    } else {
        (elapsed_tick >> level_shift) << level_shift
    };
    // The top level has only 4 meaningful bits: its slots 16..63 can never be occupied.
    assert!(slot as u64 <= u64::MAX >> slot_shift);
    let slot_offset_ticks = (slot as u64) << slot_shift;
    assert!(level_start_tick & slot_offset_ticks == 0);
    level_start_tick | slot_offset_ticks
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The obvious definition: the lowest level above which the two ticks agree.
    fn level_for_model(elapsed_tick: u64, deadline_tick: u64) -> usize {
        (0..LEVELS)
            .find(|&level| {
                let shift = ((level + 1) * LEVEL_BITS) as u32;
                elapsed_tick.checked_shr(shift).unwrap_or(0)
                    == deadline_tick.checked_shr(shift).unwrap_or(0)
            })
            .expect("every pair of ticks agrees above the top level")
    }

    /// Ticks on both sides of every group boundary, plus the ends of the range.
    fn boundary_ticks() -> Vec<u64> {
        let mut ticks = vec![0, 1, 2, u64::MAX - 1, u64::MAX];
        for level in 0..LEVELS {
            let shift = (level * LEVEL_BITS) as u32;
            for slot in [1_u64, 2, 31, 32, 63] {
                let Some(base) = slot.checked_shl(shift).filter(|b| b >> shift == slot) else {
                    continue;
                };
                for delta in [-2_i64, -1, 0, 1, 2] {
                    ticks.push(base.wrapping_add_signed(delta));
                }
            }
        }
        ticks.sort_unstable();
        ticks.dedup();
        ticks
    }

    #[test]
    fn level_for_from_zero_at_every_boundary() {
        for deadline_tick in 1..SLOTS_PER_LEVEL as u64 {
            assert_eq!(level_for(0, deadline_tick), 0, "deadline {deadline_tick}");
        }
        for level in 1..LEVELS {
            let shift = (level * LEVEL_BITS) as u32;
            for slot in 1..SLOTS_PER_LEVEL as u64 {
                let Some(first) = slot.checked_shl(shift).filter(|f| f >> shift == slot) else {
                    continue; // Slots 16..63 of the top level lie beyond u64.
                };
                assert_eq!(level_for(0, first), level, "first tick of slot {slot}");
                assert_eq!(level_for(0, first + 1), level, "second tick of slot {slot}");
                let level_below = if slot == 1 { level - 1 } else { level };
                assert_eq!(level_for(0, first - 1), level_below, "tick before slot {slot}");
            }
        }
        assert_eq!(level_for(0, u64::MAX), LEVELS - 1);
    }

    #[test]
    fn level_for_exhaustive_over_two_levels() {
        // Every pair of ticks over the first two levels and the start of the third.
        let span = (SLOTS_PER_LEVEL * SLOTS_PER_LEVEL + SLOTS_PER_LEVEL) as u64;
        for elapsed_tick in 0..span {
            for deadline_tick in elapsed_tick + 1..=span {
                assert_eq!(
                    level_for(elapsed_tick, deadline_tick),
                    level_for_model(elapsed_tick, deadline_tick),
                    "elapsed {elapsed_tick} deadline {deadline_tick}"
                );
            }
        }
    }

    #[test]
    fn level_for_matches_model_at_all_boundary_pairs() {
        let ticks = boundary_ticks();
        for &elapsed_tick in &ticks {
            for &deadline_tick in ticks.iter().filter(|&&d| d > elapsed_tick) {
                let level = level_for(elapsed_tick, deadline_tick);
                assert_eq!(level, level_for_model(elapsed_tick, deadline_tick));
                // The deadline's slot lies strictly after the current slot: levels never wrap.
                assert!(slot_for(deadline_tick, level) > slot_for(elapsed_tick, level));
                // The slot starts after the current tick and no later than the deadline.
                let start_tick = slot_start(elapsed_tick, level, slot_for(deadline_tick, level));
                assert!(start_tick > elapsed_tick);
                assert!(start_tick <= deadline_tick);
                // At level 0 a slot is one tick wide, so the start is the deadline itself.
                if level == 0 {
                    assert_eq!(start_tick, deadline_tick);
                }
                // The deadline lies inside the slot it was given.
                let slot_width_ticks = 1_u128 << (level * LEVEL_BITS);
                assert!((deadline_tick as u128) < start_tick as u128 + slot_width_ticks);
            }
        }
    }

    #[test]
    fn slot_for_and_slot_start_at_the_top_level() {
        let top = LEVELS - 1;
        assert_eq!(slot_for(u64::MAX, top), 15);
        assert_eq!(slot_for(1 << 60, top), 1);
        assert_eq!(slot_start(0, top, 15), 15 << 60);
        assert_eq!(slot_start(u64::MAX, top, 15), 15 << 60);
        assert_eq!(slot_start(5 << 60, top, 7), 7 << 60);
    }

    #[test]
    fn slot_start_keeps_the_higher_groups_of_elapsed() {
        let elapsed_tick = 0xABCD_EF01_2345_6789_u64;
        for level in 0..LEVELS - 1 {
            let shift = ((level + 1) * LEVEL_BITS) as u32;
            for slot in 0..SLOTS_PER_LEVEL {
                let start_tick = slot_start(elapsed_tick, level, slot);
                assert_eq!(start_tick >> shift, elapsed_tick >> shift);
                assert_eq!(slot_for(start_tick, level), slot);
                let below_mask = (1_u64 << (level * LEVEL_BITS)) - 1;
                assert_eq!(start_tick & below_mask, 0);
            }
        }
    }
}
