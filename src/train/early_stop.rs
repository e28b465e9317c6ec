//! When to stop for lack of progress: the holdout top-1 has not reached a new best (by the
//! checkpoint saver's rule) for `patience` epochs.

use crate::run_dir::meta::Best;

#[derive(Debug, Clone, Copy)]
pub struct EarlyStop {
    /// Epochs without an improvement before stopping; `None` never stops early.
    pub patience: Option<u32>,
}

impl EarlyStop {
    /// Whether to stop after `epoch`, the best having been reached at `best.epoch`.
    pub fn should_stop(&self, epoch: u32, best: Best) -> bool {
        self.patience
            .is_some_and(|patience| epoch - best.epoch >= patience)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_patience_epochs_without_a_new_best() {
        let best = Best {
            epoch: 3,
            top1: 0.5,
        };
        let stop = EarlyStop { patience: Some(2) };
        assert!(!stop.should_stop(3, best));
        assert!(!stop.should_stop(4, best));
        assert!(stop.should_stop(5, best));
        let never = EarlyStop { patience: None };
        assert!(!never.should_stop(50, best));
    }
}
