//! Which epoch's model is the best so far, and when to stop for lack of progress: both judged
//! on the holdout top-1.

use crate::run_dir::meta::Best;

#[derive(Debug, Clone, Copy)]
pub struct EarlyStop {
    /// Epochs without an improvement before stopping; `None` never stops early.
    pub patience: Option<u32>,
    /// Smallest top-1 gain that counts as an improvement.
    pub min_delta: f64,
}

impl EarlyStop {
    /// Whether `top1` improves on `best` by more than `min_delta` (the first epoch always does).
    pub fn improves(&self, best: Option<Best>, top1: f64) -> bool {
        best.is_none_or(|b| top1 > b.top1 + self.min_delta)
    }

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
    fn improvement_needs_more_than_min_delta() {
        let stop = EarlyStop {
            patience: Some(2),
            min_delta: 0.01,
        };
        let best = Some(Best {
            epoch: 1,
            top1: 0.5,
        });
        assert!(stop.improves(None, 0.0));
        assert!(!stop.improves(best, 0.51));
        assert!(stop.improves(best, 0.5101));
        assert!(
            !stop.improves(best, f64::NAN),
            "a NaN score is no improvement"
        );
    }

    #[test]
    fn stops_after_patience_epochs_without_a_new_best() {
        let best = Best {
            epoch: 3,
            top1: 0.5,
        };
        let stop = EarlyStop {
            patience: Some(2),
            min_delta: 0.0,
        };
        assert!(!stop.should_stop(3, best));
        assert!(!stop.should_stop(4, best));
        assert!(stop.should_stop(5, best));
        let never = EarlyStop {
            patience: None,
            min_delta: 0.0,
        };
        assert!(!never.should_stop(50, best));
    }
}
