//! Keys of a run's random draws. Every draw comes from a generator keyed by (seed, stage,
//! epoch, stream, batch), so that a run resumed from any checkpoint draws exactly what the
//! uninterrupted run would have, and no stream shifts another.

use crate::data::draw_key::key_of;
use crate::model::Stage;

/// The separate streams of random draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Init = 1,
    Shuffle = 2,
    Augment = 3,
    Dropout = 4,
}

/// The keys of one run's draws.
#[derive(Debug, Clone, Copy)]
pub struct Keys {
    seed: i64,
    stage: Stage,
}

impl Keys {
    pub fn new(seed: i64, stage: Stage) -> Keys {
        Keys { seed, stage }
    }

    fn key(&self, parts: &[u64]) -> u64 {
        key_of(&[&[self.seed as u64, self.stage as u64][..], parts].concat())
    }

    /// The seed of the model's initialisation.
    pub fn init(&self) -> i64 {
        self.key(&[Stream::Init as u64]) as i64
    }

    /// The key of draw `index` (a batch, or 0) of `stream` in `epoch`.
    pub fn epoch(&self, epoch: u32, stream: Stream, index: u64) -> u64 {
        self.key(&[u64::from(epoch), stream as u64, index])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_separate() {
        let keys = Keys::new(42, Stage::Base);
        assert_eq!(
            keys.epoch(1, Stream::Augment, 3),
            keys.epoch(1, Stream::Augment, 3)
        );
        let all = [
            keys.epoch(1, Stream::Augment, 3),
            keys.epoch(1, Stream::Dropout, 3),
            keys.epoch(2, Stream::Augment, 3),
            keys.epoch(1, Stream::Augment, 4),
            Keys::new(43, Stage::Base).epoch(1, Stream::Augment, 3),
            Keys::new(42, Stage::Finetune).epoch(1, Stream::Augment, 3),
            keys.init() as u64,
            Keys::new(43, Stage::Base).init() as u64,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
