//! Weight tuning for `cobuy eval`: coordinate ascent over a grid, on validation users only.

use crate::rank::Blend;

/// Values tried for each weight.
const GRID: [f32; 9] = [0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 4.0];
/// Passes over the weights; the second one rarely changes more than one weight.
const PASSES: usize = 2;
/// A change is kept only when its mean per-user gain on the validation users exceeds this many
/// standard errors of that paired gain. Validation sets are a few hundred users: without the
/// test, tuning chases their noise (a blend tuned that way scored below its starting weights on
/// test users of completejourney). Two standard errors (a Bonferroni bound for the grid) was
/// measured as well: it stops most tuning, which costs online_retail its second-purchase margin
/// over TIFU-KNN (README "Quality").
const MIN_GAIN_IN_STANDARD_ERRORS: f64 = 1.0;

/// Improves `start` one named weight at a time: for each weight, every grid value is scored and
/// the best one kept if its gain over the current weights is significant (see
/// [`MIN_GAIN_IN_STANDARD_ERRORS`]). `objective` returns one score per validation user (higher
/// is better), always for the same users in the same order. Returns the weights and their mean
/// score. Deterministic: ties keep the earlier value.
pub fn coordinate_ascent(
    start: Blend,
    names: &[&str],
    objective: impl Fn(&Blend) -> Vec<f64>,
) -> (Blend, f64) {
    let mut best = start;
    let mut best_scores = objective(&best);
    for _ in 0..PASSES {
        let mut changed = false;
        for &name in names {
            let mut candidate: Option<(Blend, Vec<f64>, f64)> = None;
            for value in GRID {
                let mut trial = best;
                let Some((_, w)) = trial.weights_mut().into_iter().find(|(n, _)| *n == name) else {
                    continue;
                };
                if *w == value {
                    continue;
                }
                *w = value;
                let scores = objective(&trial);
                let gain = mean(&scores) - mean(&best_scores);
                if candidate.as_ref().is_none_or(|c| gain > c.2 + 1e-12) {
                    candidate = Some((trial, scores, gain));
                }
            }
            if let Some((trial, scores, _)) = candidate
                && significant_gain(&best_scores, &scores)
            {
                best = trial;
                best_scores = scores;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let score = mean(&best_scores);
    (best, score)
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// The paired per-user gain of `after` over `before` is positive by more than
/// [`MIN_GAIN_IN_STANDARD_ERRORS`] standard errors.
fn significant_gain(before: &[f64], after: &[f64]) -> bool {
    let gains: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let n = gains.len();
    if n < 2 {
        return false;
    }
    let m = mean(&gains);
    let var = gains.iter().map(|g| (g - m).powi(2)).sum::<f64>() / (n - 1) as f64;
    let standard_error = (var / n as f64).sqrt();
    m > 0.0 && m > MIN_GAIN_IN_STANDARD_ERRORS * standard_error
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rank::request::Surface;

    #[test]
    fn finds_the_grid_optimum_of_a_separable_objective() {
        let start = Blend::for_surface(Surface::Home);
        // Best at repeat = 2, popular = 0.1; other weights are not named, so they stay. Each of
        // three "users" scores the same, up to a small per-user offset.
        let objective = |b: &Blend| -> Vec<f64> {
            let s = -((b.repeat - 2.0).powi(2) + (b.popular - 0.1).powi(2)) as f64;
            vec![s, s + 0.01, s - 0.02]
        };
        let (best, score) = coordinate_ascent(start, &["repeat", "popular"], objective);
        assert_eq!((best.repeat, best.popular), (2.0, 0.1));
        assert!((score - (-0.01 / 3.0)).abs() < 1e-9);
        assert_eq!(best.buy_again, start.buy_again);
    }

    #[test]
    fn a_gain_within_the_noise_of_the_users_is_not_taken() {
        let start = Blend::for_surface(Surface::Home);
        // Raising `popular` helps one user a lot and hurts two: the mean rises a little, but
        // not by a standard error of the per-user gains.
        let objective = |b: &Blend| -> Vec<f64> {
            let p = b.popular as f64;
            vec![1.0 + 3.0 * p, 1.0 - p, 1.0 - p]
        };
        let (best, _) = coordinate_ascent(start, &["popular"], objective);
        assert_eq!(best.popular, start.popular);
        // The same gain on every user is taken.
        let consistent = |b: &Blend| -> Vec<f64> { vec![b.popular as f64; 3] };
        let (best, _) = coordinate_ascent(start, &["popular"], consistent);
        assert_eq!(best.popular, 4.0);
    }
}
