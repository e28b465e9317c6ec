//! Accuracy per class and the class pairs a model confuses most, from its predictions.

use crate::data::scan::{own_name, shown_class};

/// Counts of (true class, predicted class).
pub struct Confusion {
    counts: Vec<Vec<usize>>,
}

/// One class's line of the table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassScore {
    pub class: usize,
    pub correct: usize,
    pub total: usize,
}

impl ClassScore {
    /// The fraction right; none for a class without images among those scored.
    pub fn accuracy(&self) -> Option<f64> {
        (self.total > 0).then(|| self.correct as f64 / self.total as f64)
    }
}

impl Confusion {
    /// The confusion of `classes` classes over `(truth, guess)` pairs.
    pub fn new(classes: usize, pairs: impl IntoIterator<Item = (usize, usize)>) -> Confusion {
        let mut counts = vec![vec![0; classes]; classes];
        for (truth, guess) in pairs {
            counts[truth][guess] += 1;
        }
        Confusion { counts }
    }

    /// Every class, best accuracy first (ties in class order), classes without images last.
    pub fn by_accuracy(&self) -> Vec<ClassScore> {
        let mut rows: Vec<ClassScore> = (0..self.counts.len())
            .map(|c| ClassScore {
                class: c,
                correct: self.counts[c][c],
                total: self.counts[c].iter().sum(),
            })
            .collect();
        // -1 ranks a class without images below any accuracy
        let key = |r: &ClassScore| r.accuracy().unwrap_or(-1.0);
        rows.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.class.cmp(&b.class)));
        rows
    }

    /// The `k` most frequent mistakes as (true class, predicted class, count), most first.
    pub fn most_confused(&self, k: usize) -> Vec<(usize, usize, usize)> {
        let n = self.counts.len();
        let mut pairs: Vec<(usize, usize, usize)> = (0..n)
            .flat_map(|t| (0..n).map(move |p| (t, p)))
            .filter(|(t, p)| t != p && self.counts[*t][*p] > 0)
            .map(|(t, p)| (t, p, self.counts[t][p]))
            .collect();
        pairs.sort_by(|a, b| b.2.cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1))));
        pairs.truncate(k);
        pairs
    }

    /// Images of class `c`.
    pub fn total(&self, c: usize) -> usize {
        self.counts[c].iter().sum()
    }
}

/// Prints the per-class table (wnid, name, correct/total, accuracy) and the most confused
/// pairs.
pub fn print(confusion: &Confusion, classes: &[String], names: &[String]) {
    println!(
        "{:>4}  {:<10} {:<32} {:>9}  {:>7}",
        "#", "class", "name", "correct", "top-1"
    );
    let rows = confusion.by_accuracy();
    for (rank, row) in rows.iter().enumerate() {
        let name: String = own_name(&classes[row.class], &names[row.class])
            .chars()
            .take(32)
            .collect();
        let top1 = row
            .accuracy()
            .map_or("n/a".to_string(), |a| format!("{:.1}%", 100.0 * a));
        println!(
            "{:>4}  {:<10} {:<32} {:>4}/{:<4}  {top1:>7}",
            rank + 1,
            classes[row.class],
            name,
            row.correct,
            row.total,
        );
    }
    let unseen = rows.iter().filter(|r| r.total == 0).count();
    if unseen > 0 {
        let classes = if unseen == 1 {
            "class has"
        } else {
            "classes have"
        };
        println!("({unseen} {classes} no images among those scored: n/a)");
    }
    println!("\nMost confused (true class -> predicted as):");
    let pairs = confusion.most_confused(10);
    for &(t, p, count) in &pairs {
        println!(
            "  {:>4} ({:>5.1}% of its images)  {}  ->  {}",
            count,
            100.0 * count as f64 / confusion.total(t).max(1) as f64,
            shown_class(&classes[t], &names[t]),
            shown_class(&classes[p], &names[p])
        );
    }
    if pairs.is_empty() {
        println!("  none: every image was classified correctly");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_rank_by_accuracy_and_mistakes_by_count() {
        // class 0: 2 of 2 right; class 1: 1 of 3 (twice taken for 2); class 2: 0 of 1 (for 0)
        let pairs = [(0, 0), (0, 0), (1, 1), (1, 2), (1, 2), (2, 0)];
        let c = Confusion::new(3, pairs);
        let order: Vec<usize> = c.by_accuracy().iter().map(|r| r.class).collect();
        assert_eq!(order, vec![0, 1, 2]);
        assert_eq!(c.by_accuracy()[1].correct, 1);
        assert_eq!(c.by_accuracy()[1].total, 3);
        assert_eq!(c.most_confused(10), vec![(1, 2, 2), (2, 0, 1)]);
        assert_eq!(c.most_confused(1).len(), 1);
    }

    #[test]
    fn a_class_without_images_has_no_accuracy_and_ranks_last() {
        // class 0 has no images; class 2 none right
        let c = Confusion::new(3, [(1, 1), (2, 1)]);
        let rows = c.by_accuracy();
        let order: Vec<usize> = rows.iter().map(|r| r.class).collect();
        assert_eq!(order, vec![1, 2, 0]);
        assert_eq!(rows[1].accuracy(), Some(0.0));
        assert_eq!(rows[2].accuracy(), None);
    }
}
