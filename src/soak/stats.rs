//! The soak's figures from its samples: how a quantity moved over a stage (its slope per 1 000
//! steps after warm-up, the median of the slopes between every two samples), and the time per
//! step in a stage's first and last tenth.

use serde::Serialize;

/// Slope of `(step, value)` points per 1 000 steps: the median of the slopes between every two
/// points of distinct steps (the Theil-Sen estimator); `None` without two such points.
///
/// The median, not least squares, since growth that repeats (a leak, at each step or each
/// epoch) moves most pairs, while the allocator taking one more block once moves fewer than
/// half of them: least squares over a few hundred steps turned one such 9 MiB step into
/// 80 MiB per 1 000 steps. Written here, as it is a sort and a median; no crate offers it.
pub fn slope_per_1000(points: &[(u64, f64)]) -> Option<f64> {
    let slopes: Vec<f64> = points
        .iter()
        .enumerate()
        .flat_map(|(i, &(x0, y0))| {
            points[i + 1..]
                .iter()
                .filter(move |&&(x1, _)| x1 != x0)
                .map(move |&(x1, y1)| 1000.0 * (y1 - y0) / (x1 as f64 - x0 as f64))
        })
        .collect();
    (!slopes.is_empty()).then(|| median(&slopes))
}

/// One quantity over a stage (MiB).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Series {
    /// At the first sample (after the stage's first step).
    pub start: f64,
    /// At the first sample after warm-up.
    pub after_warmup: f64,
    pub end: f64,
    pub peak: f64,
    /// Per 1 000 steps after warm-up; null with fewer than two samples there.
    pub slope_per_1k: Option<f64>,
}

impl Series {
    /// The series of `points` (in step order), warm-up being the steps up to `warmup`; `None`
    /// without points.
    pub fn of(points: &[(u64, f64)], warmup: u64) -> Option<Series> {
        let (first, last) = (points.first()?, points.last()?);
        let after: Vec<(u64, f64)> = points.iter().copied().filter(|p| p.0 > warmup).collect();
        Some(Series {
            start: first.1,
            after_warmup: after.first().unwrap_or(last).1,
            end: last.1,
            peak: points.iter().map(|p| p.1).fold(f64::MIN, f64::max),
            slope_per_1k: slope_per_1000(&after),
        })
    }
}

/// A count (open files, threads) after warm-up: the most seen in the first and in the second
/// half of the samples there. Maxima, since a count moves within an epoch (the thread that
/// assembles batches ends before the epoch does); a leak makes the second larger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub first_half: u64,
    pub second_half: u64,
}

impl Counts {
    /// The counts of `points` (in step order), warm-up being the steps up to `warmup`; `None`
    /// without points after it.
    pub fn of(points: &[(u64, u64)], warmup: u64) -> Option<Counts> {
        let after: Vec<u64> = points
            .iter()
            .filter(|p| p.0 > warmup)
            .map(|p| p.1)
            .collect();
        let (first, second) = after.split_at(after.len() / 2);
        Some(Counts {
            first_half: first.iter().copied().max().or(second.first().copied())?,
            second_half: second.iter().copied().max()?,
        })
    }
}

/// Median time per step in the first and the last tenth of a stage, milliseconds: the
/// median leaves out the few steps that carry an epoch's end (holdout eval, checkpoint), which
/// a tenth may hold one more or fewer of.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tenths {
    pub first_tenth: f64,
    pub last_tenth: f64,
}

impl Tenths {
    /// From the seconds each step took, in order; `None` without any.
    pub fn of(seconds: &[f64]) -> Option<Tenths> {
        let tenth = (seconds.len() / 10).max(1);
        (!seconds.is_empty()).then(|| Tenths {
            first_tenth: 1e3 * median(&seconds[..tenth]),
            last_tenth: 1e3 * median(&seconds[seconds.len() - tenth..]),
        })
    }
}

/// The median of a non-empty list (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_is_per_thousand_steps() {
        let line: Vec<(u64, f64)> = (0..10)
            .map(|i| (100 * i, 500.0 + 0.25 * i as f64))
            .collect();
        let slope = slope_per_1000(&line).unwrap();
        assert!((slope - 2.5).abs() < 1e-9, "{slope}");
        let flat: Vec<(u64, f64)> = (0..10).map(|i| (i, 7.0)).collect();
        assert_eq!(slope_per_1000(&flat), Some(0.0));
        assert_eq!(slope_per_1000(&[(5, 1.0)]), None);
        assert_eq!(slope_per_1000(&[(5, 1.0), (5, 2.0)]), None);
        assert_eq!(slope_per_1000(&[]), None);
    }

    #[test]
    fn one_jump_is_not_growth_but_a_staircase_is() {
        // the CI run's stage 2: flat, then 9 MiB more for its last fifth
        let jump: Vec<(u64, f64)> = (0..50)
            .map(|i| (2 * i, if i < 40 { 1557.0 } else { 1566.0 }))
            .collect();
        assert_eq!(slope_per_1000(&jump), Some(0.0));
        // 1 MiB more at each epoch's end (every 40 steps), sampled every 5 steps: 25/1k
        let stairs: Vec<(u64, f64)> = (0..80)
            .map(|i| (5 * i, 100.0 + (5 * i / 40) as f64))
            .collect();
        let slope = slope_per_1000(&stairs).unwrap();
        assert!((20.0..=30.0).contains(&slope), "{slope}");
    }

    #[test]
    fn a_series_leaves_the_warmup_out_of_its_slope() {
        // a jump during warm-up, flat after it
        let points = [
            (1, 100.0),
            (50, 400.0),
            (100, 410.0),
            (200, 410.0),
            (300, 410.0),
        ];
        let s = Series::of(&points, 100).unwrap();
        assert_eq!(
            (s.start, s.after_warmup, s.end, s.peak),
            (100.0, 410.0, 410.0, 410.0)
        );
        assert_eq!(s.slope_per_1k, Some(0.0));
        // growing after warm-up: 1 MiB every 100 steps
        let growing = [(1, 100.0), (200, 300.0), (300, 301.0), (400, 302.0)];
        let slope = Series::of(&growing, 100).unwrap().slope_per_1k.unwrap();
        assert!((slope - 10.0).abs() < 1e-9, "{slope}");
        // nothing after warm-up: no slope, the last value stands for after warm-up
        let short = Series::of(&[(1, 5.0), (10, 6.0)], 100).unwrap();
        assert_eq!((short.after_warmup, short.slope_per_1k), (6.0, None));
        assert_eq!(Series::of(&[], 100), None);
    }

    #[test]
    fn counts_are_the_most_in_each_half_after_warmup() {
        let points = [
            (1, 9),
            (100, 30),
            (101, 11),
            (200, 12),
            (300, 11),
            (400, 14),
        ];
        let want = Counts {
            first_half: 12,
            second_half: 14,
        };
        assert_eq!(Counts::of(&points, 100), Some(want));
        let one = Counts::of(&[(1, 9), (150, 10)], 100).unwrap();
        assert_eq!((one.first_half, one.second_half), (10, 10));
        assert_eq!(Counts::of(&[(1, 9)], 100), None);
    }

    #[test]
    fn tenths_take_the_median_of_the_first_and_last_tenth() {
        let mut seconds = vec![0.010; 30];
        seconds[1] = 0.900; // an epoch's end in the first tenth: left out
        seconds[27] = 0.020;
        seconds[28] = 0.030; // the last tenth: 0.020, 0.030, 0.010
        let t = Tenths::of(&seconds).unwrap();
        assert!((t.first_tenth - 10.0).abs() < 1e-9, "{t:?}");
        assert!((t.last_tenth - 20.0).abs() < 1e-9, "{t:?}");
        // fewer than ten steps: a tenth is one step
        let t = Tenths::of(&[0.001, 0.002, 0.004]).unwrap();
        assert!((t.first_tenth - 1.0).abs() < 1e-9 && (t.last_tenth - 4.0).abs() < 1e-9);
        assert_eq!(Tenths::of(&[]), None);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
