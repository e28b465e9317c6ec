//! The key of a generator for random draws, mixed from the numbers that name the draw: a
//! training run's draws (`train::keys`: seed, stage, stream, epoch, batch) and each synthetic
//! image's (seed, class, index) are keyed by it, so the same numbers always draw the same.

/// A 64-bit key from several, with splitmix64 finalisation: stable across platforms and releases.
pub fn key_of(parts: &[u64]) -> u64 {
    parts.iter().fold(0x9E37_79B9_7F4A_7C15, |acc, &p| {
        let mut z = (acc ^ p).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_spread() {
        assert_eq!(key_of(&[1, 2]), key_of(&[1, 2]));
        assert_ne!(key_of(&[1, 2]), key_of(&[2, 1]));
        assert_ne!(key_of(&[0]), key_of(&[1]));
    }
}
