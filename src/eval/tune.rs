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

/// Bootstrap resamples of the validation users the ascent is repeated on (see
/// [`bagged_coordinate_ascent`]).
const BOOTSTRAP_RESAMPLES: usize = 16;
/// Seed of the resampling, fixed so a tuning run is repeatable.
const BOOTSTRAP_SEED: u64 = 0x0063_6f62_7579;

/// Bagged coordinate ascent (Breiman, "Bagging predictors", Machine Learning 1996): the ascent
/// runs on [`BOOTSTRAP_RESAMPLES`] bootstrap resamples of the validation users and the tuned
/// weights are the mean of the weights each run chose. The ranking score is linear in the
/// weights, so the mean weights score each item by the mean of the runs' scores. One ascent on
/// a hundred validation users picks whichever grid value their noise favours (a fold of
/// completejourney took `like_customers_repeat` 4.0 and lost 0.010 NDCG on its test users);
/// averaging over resamples keeps the direction the users agree on and shrinks the rest.
/// `objective` is called once per distinct blend: its per-user scores are cached and resampled.
pub fn bagged_coordinate_ascent(
    start: Blend,
    names: &[&str],
    objective: impl Fn(&Blend) -> Vec<f64>,
) -> (Blend, f64) {
    use rand::{Rng, SeedableRng};
    use std::cell::RefCell;
    use std::rc::Rc;

    let cache: RefCell<rustc_hash::FxHashMap<[u32; 12], Rc<Vec<f64>>>> = RefCell::default();
    let scores_of = |blend: &Blend| -> Rc<Vec<f64>> {
        let key = weight_bits(blend);
        if let Some(scores) = cache.borrow().get(&key) {
            return Rc::clone(scores);
        }
        let scores = Rc::new(objective(blend));
        cache.borrow_mut().insert(key, Rc::clone(&scores));
        scores
    };
    let users = scores_of(&start).len();
    if users == 0 {
        return (start, 0.0);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(BOOTSTRAP_SEED);
    let mut sums = [0.0f64; 12];
    for _ in 0..BOOTSTRAP_RESAMPLES {
        let sample: Vec<usize> = (0..users).map(|_| rng.random_range(0..users)).collect();
        let (chosen, _) = coordinate_ascent(start, names, |blend| {
            let scores = scores_of(blend);
            sample.iter().map(|&user| scores[user]).collect()
        });
        for (sum, (_, weight)) in sums.iter_mut().zip(chosen.weights()) {
            *sum += f64::from(weight);
        }
    }
    let mut bagged = start;
    for (sum, (_, weight)) in sums.iter().zip(bagged.weights_mut()) {
        *weight = (sum / BOOTSTRAP_RESAMPLES as f64) as f32;
    }
    let score = mean(&scores_of(&bagged));
    (bagged, score)
}

/// A blend's weights as bits, a cache key for its scores.
fn weight_bits(blend: &Blend) -> [u32; 12] {
    blend.weights().map(|(_, weight)| weight.to_bits())
}

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

    #[test]
    fn bagging_agrees_with_one_ascent_when_every_user_agrees_and_scores_each_blend_once() {
        let start = Blend::for_surface(Surface::Home);
        let calls = std::cell::Cell::new(0usize);
        let objective = |b: &Blend| -> Vec<f64> {
            calls.set(calls.get() + 1);
            let s = -((b.repeat - 2.0).powi(2) + (b.popular - 0.1).powi(2)) as f64;
            (0..40).map(|u| s + 0.001 * f64::from(u)).collect()
        };
        let (plain, _) = coordinate_ascent(start, &["repeat", "popular"], objective);
        let plain_calls = calls.replace(0);
        let (bagged, _) = bagged_coordinate_ascent(start, &["repeat", "popular"], objective);
        assert_eq!(bagged, plain);
        // Every resample walks the same blends; each is scored once (plus the mean blend).
        assert!(
            calls.get() <= plain_calls + 1,
            "{} calls against {plain_calls}",
            calls.get()
        );
    }

    #[test]
    fn bagging_shrinks_a_weight_that_only_a_few_users_want() {
        let start = Blend::for_surface(Surface::Home);
        // Raising `popular` helps 10 of 100 users a lot and costs the other 90 a little. One
        // ascent on all of them takes the largest value (mean gain past one standard error);
        // resamples with fewer of the ten do not, so the mean weight lands in between.
        let objective = |b: &Blend| -> Vec<f64> {
            let p = f64::from(b.popular);
            (0..100)
                .map(|u| if u % 10 == 0 { 10.0 * p } else { -0.5 * p })
                .collect()
        };
        let (plain, _) = coordinate_ascent(start, &["popular"], objective);
        assert_eq!(plain.popular, 4.0);
        let (bagged, score) = bagged_coordinate_ascent(start, &["popular"], objective);
        assert!(
            bagged.popular > start.popular && bagged.popular < 4.0,
            "bagged popular {}",
            bagged.popular
        );
        let expected = f64::from(bagged.popular) * (10.0 * 10.0 - 90.0 * 0.5) / 100.0;
        assert!((score - expected).abs() < 1e-6);
        assert_eq!(bagged.repeat, start.repeat);
    }
}
