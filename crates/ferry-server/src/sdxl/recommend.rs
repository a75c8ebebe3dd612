//! Settings that fit a time or memory budget, from the worker's own estimate.
//!
//! `POST /api/sdxl/enhanced/recommend` sends the request to the worker's `inference.estimate`
//! once, reads from its answer the worker's measured rate (seconds per step per megapixel:
//! `estimated_seconds / (steps × megapixels × images)`) and its memory per image
//! (`activation_bytes_per_image`, which grows with the pixels), and searches here, without
//! further calls, for the settings that fit ([`recommend`]):
//!
//! - sizes: the request's, then smaller ones of the same shape (7/8, 3/4, 5/8, 1/2, 3/8, 1/4
//!   of each side, multiples of 8, at least 64);
//! - steps: the request's, then fewer (40, 30, 25, 20, 15, 10, 8, 6, 4 below it);
//! - images: the request's `num_images`, then fewer, down to 1; the batch (images at once)
//!   is as many as the memory budget holds (else half the worker's free memory, as the
//!   worker sizes its batches; 1 when the worker does not know its free memory).
//!
//! The first fit is answered, in this order of preference: steps of at least 20 (or the
//! request's own when fewer) before any fewer; then the largest size; then the most steps;
//! then the most images.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Fractions of each side tried, largest first.
const SCALES: [(u32, u32); 7] = [(1, 1), (7, 8), (3, 4), (5, 8), (1, 2), (3, 8), (1, 4)];

/// Step counts tried below the request's.
const STEPS: [u64; 9] = [40, 30, 25, 20, 15, 10, 8, 6, 4];

/// Below this many steps quality drops fast: tried only when nothing above fits.
const GOOD_STEPS: u64 = 20;

/// The budget of `POST /api/sdxl/enhanced/recommend`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// The longest the generation may take, in seconds.
    #[serde(default)]
    pub seconds: Option<f64>,
    /// The most device memory its activations may take, in MiB.
    #[serde(default)]
    pub memory_mb: Option<f64>,
}

/// What the worker's `inference.estimate` said about the request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Basis {
    /// The request's size.
    pub width: u32,
    /// The request's size.
    pub height: u32,
    /// The request's steps.
    pub steps: u64,
    /// The request's `num_images`.
    pub images: u64,
    /// Measured seconds per step per megapixel (`None` before the worker measured one).
    pub seconds_per_step_mp: Option<f64>,
    /// Activation bytes of one image per pixel.
    pub bytes_per_pixel: f64,
    /// The worker's free device memory, when it knows it.
    pub free_memory_bytes: Option<u64>,
}

impl Basis {
    /// Reads the estimate's answer for `request` (nested form, validated); `None` when the
    /// answer lacks a field it needs.
    pub fn from_estimate(request: &Value, estimate: &Value) -> Option<Basis> {
        let dims = request.get("dimensions");
        let side = |name: &str| {
            dims.and_then(|d| d.get(name))
                .and_then(Value::as_u64)
                .unwrap_or(1024) as u32
        };
        let (width, height) = (side("width"), side("height"));
        let steps = estimate.get("steps")?.as_u64()?;
        let images = estimate.get("images")?.as_u64()?;
        let per_image = estimate.get("activation_bytes_per_image")?.as_f64()?;
        let megapixels = f64::from(width) * f64::from(height) / 1e6;
        let seconds_per_step_mp = estimate
            .get("estimated_seconds")
            .and_then(Value::as_f64)
            .map(|s| s / (steps.max(1) as f64 * megapixels * images.max(1) as f64));
        Some(Basis {
            width,
            height,
            steps,
            images,
            seconds_per_step_mp,
            bytes_per_pixel: per_image / (f64::from(width) * f64::from(height)),
            free_memory_bytes: estimate.get("free_memory_bytes").and_then(Value::as_u64),
        })
    }
}

/// One setting and what it costs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Setting {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Denoising steps.
    pub steps: u64,
    /// Images.
    pub num_images: u64,
    /// Images run at once.
    pub batch_size: u64,
    /// Seconds it would take (`None` without a measured rate).
    pub estimated_seconds: Option<f64>,
    /// Activation bytes of one batch.
    pub estimated_memory_bytes: u64,
}

/// Why no recommendation can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecommendError {
    /// A time budget was given, and the worker has not measured a generation yet.
    #[error(
        "budget.seconds: the worker has measured no generation yet (inference.estimate: no \
         generation measured yet); run one generation, then ask again (or give only \
         budget.memory_mb)"
    )]
    NotMeasured,
    /// Neither budget was given, or one is not a positive number.
    #[error("budget: {0}")]
    Budget(String),
}

impl RecommendError {
    /// The stable error code: `invalid_state` (409) for [`NotMeasured`](Self::NotMeasured),
    /// `invalid_request` (400) otherwise.
    pub fn code(&self) -> &'static str {
        match self {
            RecommendError::NotMeasured => "invalid_state",
            RecommendError::Budget(_) => "invalid_request",
        }
    }
}

/// The answer: the first setting that fits, or (`fits: false`) the cheapest one tried.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// Whether `setting` fits the budget.
    pub fits: bool,
    /// The setting.
    pub setting: Setting,
    /// How many settings were weighed.
    pub candidates: usize,
}

fn sizes(width: u32, height: u32) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (n, d) in SCALES {
        let side = |s: u32| ((s * n / d) / 8 * 8).max(64);
        let size = (side(width), side(height));
        if !out.contains(&size) {
            out.push(size);
        }
    }
    out
}

fn step_counts(steps: u64) -> Vec<u64> {
    std::iter::once(steps)
        .chain(STEPS.into_iter().filter(|s| *s < steps))
        .collect()
}

/// The settings for `basis` that fit `budget` (see the module's documentation).
pub fn recommend(basis: &Basis, budget: &Budget) -> Result<Recommendation, RecommendError> {
    for (name, v) in [("seconds", budget.seconds), ("memory_mb", budget.memory_mb)] {
        if let Some(v) = v {
            if !(v.is_finite() && v > 0.0) {
                return Err(RecommendError::Budget(format!(
                    "{name}: expected a positive number, not {v}"
                )));
            }
        }
    }
    if budget.seconds.is_none() && budget.memory_mb.is_none() {
        return Err(RecommendError::Budget(
            "give seconds, memory_mb or both".into(),
        ));
    }
    if budget.seconds.is_some() && basis.seconds_per_step_mp.is_none() {
        return Err(RecommendError::NotMeasured);
    }
    let memory = budget
        .memory_mb
        .map(|mb| (mb * 1024.0 * 1024.0) as u64)
        .or(basis.free_memory_bytes.map(|f| f / 2));
    let floor = basis.steps.min(GOOD_STEPS);
    let mut tried = 0usize;
    let mut cheapest: Option<Setting> = None;
    for pass in [true, false] {
        for (width, height) in sizes(basis.width, basis.height) {
            let per_image = (basis.bytes_per_pixel * f64::from(width) * f64::from(height)) as u64;
            for steps in step_counts(basis.steps) {
                if (steps >= floor) != pass {
                    continue;
                }
                for images in (1..=basis.images.max(1)).rev() {
                    tried += 1;
                    let batch_size = match memory {
                        Some(m) => (m / per_image.max(1)).min(images),
                        None => 1,
                    };
                    let megapixels = f64::from(width) * f64::from(height) / 1e6;
                    let seconds = basis.seconds_per_step_mp.map(|r| {
                        (r * steps as f64 * megapixels * images as f64 * 1000.0).round() / 1000.0
                    });
                    let setting = Setting {
                        width,
                        height,
                        steps,
                        num_images: images,
                        batch_size: batch_size.max(1),
                        estimated_seconds: seconds,
                        estimated_memory_bytes: per_image * batch_size.max(1),
                    };
                    let fits_memory = budget.memory_mb.is_none() || batch_size >= 1;
                    let fits_time = match (budget.seconds, seconds) {
                        (Some(limit), Some(s)) => s <= limit,
                        _ => true,
                    };
                    if fits_memory && fits_time {
                        return Ok(Recommendation {
                            fits: true,
                            setting,
                            candidates: tried,
                        });
                    }
                    cheapest = Some(setting);
                }
            }
        }
    }
    let setting = cheapest.ok_or_else(|| RecommendError::Budget("nothing to weigh".into()))?;
    Ok(Recommendation {
        fits: false,
        setting,
        candidates: tried,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn basis() -> Basis {
        Basis::from_estimate(
            &json!({"dimensions": {"width": 1024, "height": 1024}}),
            &json!({"steps": 30, "images": 2, "estimated_seconds": 60.0,
                    "activation_bytes_per_image": 1_048_576_000u64, "free_memory_bytes": null}),
        )
        .unwrap()
    }

    #[test]
    fn the_rate_is_read_back_from_the_estimate() {
        let b = basis();
        let rate = b.seconds_per_step_mp.unwrap();
        assert!((rate * 30.0 * 1.048_576 * 2.0 - 60.0).abs() < 1e-9);
        assert!((b.bytes_per_pixel - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn a_budget_that_fits_the_request_keeps_it() {
        let r = recommend(
            &basis(),
            &Budget {
                seconds: Some(60.0),
                memory_mb: None,
            },
        )
        .unwrap();
        assert!(r.fits);
        assert_eq!(
            (r.setting.width, r.setting.steps, r.setting.num_images),
            (1024, 30, 2)
        );
    }

    #[test]
    fn a_tighter_time_budget_gives_fewer_steps_then_smaller_sizes() {
        // Half the time: 30 steps of one image, or fewer steps of two.
        let r = recommend(
            &basis(),
            &Budget {
                seconds: Some(30.0),
                memory_mb: None,
            },
        )
        .unwrap();
        assert!(r.fits);
        assert_eq!((r.setting.width, r.setting.height), (1024, 1024));
        assert!(r.setting.estimated_seconds.unwrap() <= 30.0);
        assert!(r.setting.steps >= 20, "{:?}", r.setting);
        // Far less: the size shrinks before steps go under 20.
        let r = recommend(
            &basis(),
            &Budget {
                seconds: Some(5.0),
                memory_mb: None,
            },
        )
        .unwrap();
        assert!(r.fits);
        assert!(
            r.setting.width < 1024 && r.setting.steps >= 20,
            "{:?}",
            r.setting
        );
        // Impossible: the cheapest setting, marked as not fitting.
        let r = recommend(
            &basis(),
            &Budget {
                seconds: Some(0.001),
                memory_mb: None,
            },
        )
        .unwrap();
        assert!(!r.fits);
        assert_eq!(
            (r.setting.width, r.setting.steps, r.setting.num_images),
            (256, 4, 1)
        );
    }

    #[test]
    fn a_memory_budget_sets_the_batch_and_the_size() {
        // One 1024² image takes 1000 MB: 2500 MiB hold two at once.
        let r = recommend(
            &basis(),
            &Budget {
                seconds: None,
                memory_mb: Some(2500.0),
            },
        )
        .unwrap();
        assert_eq!((r.setting.width, r.setting.batch_size), (1024, 2));
        // 500 MiB hold no 1024² image: a smaller one.
        let r = recommend(
            &basis(),
            &Budget {
                seconds: None,
                memory_mb: Some(500.0),
            },
        )
        .unwrap();
        assert!(r.fits);
        assert!(r.setting.width < 1024);
        assert!(r.setting.estimated_memory_bytes <= 500 * 1024 * 1024);
    }

    #[test]
    fn no_budget_or_no_measurement_is_refused() {
        let err = recommend(&basis(), &Budget::default()).unwrap_err();
        assert_eq!(err.code(), "invalid_request");
        let mut b = basis();
        b.seconds_per_step_mp = None;
        let err = recommend(
            &b,
            &Budget {
                seconds: Some(9.0),
                memory_mb: None,
            },
        )
        .unwrap_err();
        assert_eq!(err, RecommendError::NotMeasured);
        assert_eq!(err.code(), "invalid_state");
        assert!(recommend(
            &b,
            &Budget {
                seconds: None,
                memory_mb: Some(9000.0)
            }
        )
        .is_ok());
        let err = recommend(
            &b,
            &Budget {
                seconds: Some(-1.0),
                memory_mb: None,
            },
        )
        .unwrap_err();
        assert_eq!(err.code(), "invalid_request");
    }
}
