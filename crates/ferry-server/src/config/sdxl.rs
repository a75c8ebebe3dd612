//! `[sdxl]`: style presets and the quality boost of the SDXL routes.
//!
//! The types are [`crate::sdxl::SdxlConfig`] and [`crate::sdxl::StylePreset`]; this file
//! checks them at load, each error naming its key (`sdxl.styles.2.steps`).

use crate::sdxl::styles::check_preset;
use crate::sdxl::SdxlConfig;

/// Checks `[sdxl]`: presets (names unique and well formed, templates holding `{prompt}`,
/// scheduler, steps and guidance the schema accepts) and the boost's settings.
pub(super) fn validate(c: &SdxlConfig) -> Result<(), (String, String)> {
    let mut names = std::collections::BTreeSet::new();
    for (i, preset) in c.styles.iter().enumerate() {
        check_preset(preset)
            .map_err(|(field, reason)| (format!("sdxl.styles.{i}.{field}"), reason))?;
        if !names.insert(preset.name.as_str()) {
            return Err((
                format!("sdxl.styles.{i}.name"),
                format!("`{}` is defined twice", preset.name),
            ));
        }
    }
    if !(c.boost_steps_factor.is_finite() && c.boost_steps_factor >= 1.0) {
        return Err((
            "sdxl.boost_steps_factor".into(),
            "expected a number of at least 1".into(),
        ));
    }
    if !(1..=200).contains(&c.boost_min_steps) {
        return Err((
            "sdxl.boost_min_steps".into(),
            "expected 1 to 200 (the schema's range of scheduler.steps)".into(),
        ));
    }
    if c.boost_refiner.as_deref().is_some_and(str::is_empty) {
        return Err((
            "sdxl.boost_refiner".into(),
            "expected a model folder's name (or leave it out)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::FerryConfig;

    fn err(text: &str) -> String {
        let e = FerryConfig::parse(text, "t").unwrap_err();
        format!("{}: {}", e.key, e.reason)
    }

    #[test]
    fn presets_are_read_and_checked_with_their_key() {
        let c = FerryConfig::parse(
            "[sdxl]\nboost_refiner = \"refiner\"\n[[sdxl.styles]]\nname = \"noir\"\nprompt = \"{prompt}, film noir\"\nsteps = 25\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.sdxl.styles[0].name, "noir");
        assert_eq!(c.sdxl.boost_refiner.as_deref(), Some("refiner"));
        assert!(FerryConfig::parse("", "t").unwrap().sdxl.builtin_styles);
        assert!(
            err("[[sdxl.styles]]\nname = \"noir\"\nprompt = \"film noir\"\n")
                .starts_with("sdxl.styles.0.prompt: the template must hold `{prompt}`")
        );
        assert!(
            err("[[sdxl.styles]]\nname = \"noir\"\nprompt = \"{prompt}\"\nsteps = 0\n")
                .starts_with("sdxl.styles.0.steps: ")
        );
        assert!(err("[[sdxl.styles]]\nname = \"a\"\nprompt = \"{prompt}\"\n[[sdxl.styles]]\nname = \"a\"\nprompt = \"{prompt}\"\n")
            .starts_with("sdxl.styles.1.name: `a` is defined twice"));
        assert!(err("[sdxl]\nboost_min_steps = 0\n").starts_with("sdxl.boost_min_steps: "));
        assert!(err("[sdxl]\ncolour = 1\n").contains("colour"));
    }
}
