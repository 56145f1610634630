//! splitmix64's mixing function, for the seeded choices that need a hash of a few integers
//! rather than a generator (a per-user stream, a per-candidate draw): one copy of the
//! constants for every crate.

/// splitmix64's increment (2^64 / golden ratio): step a state by it, then [`mix64`] it.
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's output function: a bijective mix of `z` whose bits all depend on every input
/// bit.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference splitmix64 stream from state 0 (Vigna's splitmix64.c).
    #[test]
    fn stepping_and_mixing_is_splitmix64() {
        let mut state = 0u64;
        let mut next = || {
            state = state.wrapping_add(GOLDEN_GAMMA);
            mix64(state)
        };
        assert_eq!(next(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(next(), 0x6E78_9E6A_A1B9_65F4);
    }
}
