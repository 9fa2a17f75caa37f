//! Weight tuning for `cobuy eval`: coordinate ascent over a grid, on validation users only.

use crate::rank::Blend;

/// Values tried for each weight.
const GRID: [f32; 9] = [0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 4.0];
/// Passes over the weights; the second one rarely changes more than one weight.
const PASSES: usize = 2;

/// Improves `start` one named weight at a time, keeping a change only when `objective` (higher
/// is better) strictly improves. Deterministic: ties keep the earlier value.
pub fn coordinate_ascent(
    start: Blend,
    names: &[&str],
    objective: impl Fn(&Blend) -> f64,
) -> (Blend, f64) {
    let mut best = start;
    let mut best_score = objective(&best);
    for _ in 0..PASSES {
        let mut changed = false;
        for &name in names {
            for value in GRID {
                let mut trial = best;
                let Some((_, w)) = trial.weights_mut().into_iter().find(|(n, _)| *n == name) else {
                    continue;
                };
                if *w == value {
                    continue;
                }
                *w = value;
                let score = objective(&trial);
                if score > best_score + 1e-9 {
                    best = trial;
                    best_score = score;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    (best, best_score)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rank::request::Surface;

    #[test]
    fn finds_the_grid_optimum_of_a_separable_objective() {
        let start = Blend::for_surface(Surface::Home);
        // Best at repeat = 2, popular = 0.1; other weights are not named, so they stay.
        let objective =
            |b: &Blend| -> f64 { -((b.repeat - 2.0).powi(2) + (b.popular - 0.1).powi(2)) as f64 };
        let (best, score) = coordinate_ascent(start, &["repeat", "popular"], objective);
        assert_eq!((best.repeat, best.popular), (2.0, 0.1));
        assert!(score.abs() < 1e-9);
        assert_eq!(best.buy_again, start.buy_again);
    }
}
