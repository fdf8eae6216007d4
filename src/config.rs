//! The pipeline configuration: one TOML file (`pipelines/*.toml`) plus environment overrides
//! `KAUDIT__SECTION__KEY=value` (e.g. `KAUDIT__SHIM__LISTEN=0.0.0.0:8765`). Every section is
//! optional and has defaults that make `kaudit run` work with no file at all. An unknown key
//! or a value of the wrong type is an error that names it.
//!
//! The config types of each stage live beside the stage (`shim::ShimConfig`, `bus::BusConfig`,
//! `detector::DetectorConfig`, `alert::sink::OutputConfig`, `alert::redact::RedactionConfig`,
//! `telemetry::TelemetryConfig`); this
//! module only assembles them.

use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    pub shim: crate::shim::ShimConfig,
    pub bus: crate::bus::BusConfig,
    pub detector: crate::detector::DetectorConfig,
    /// Where alerts go; `kaudit run` defaults to stdout.
    pub outputs: Vec<crate::alert::sink::OutputConfig>,
    /// What outputs redact (on by default per output): the marker and extra patterns.
    pub redaction: crate::alert::redact::RedactionConfig,
    pub telemetry: crate::telemetry::TelemetryConfig,
}

impl PipelineConfig {
    /// Reads `file` (when given), then the `KAUDIT__*` environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<PipelineConfig> {
        Self::load_with_env(file, None)
    }

    /// As `load`, with the environment given explicitly (tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: Option<std::collections::HashMap<String, String>>,
    ) -> anyhow::Result<PipelineConfig> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            if !file.is_file() {
                anyhow::bail!("pipeline file {} does not exist", file.display());
            }
            builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
        }
        let mut environment = config::Environment::with_prefix("KAUDIT")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("detector.rules");
        if let Some(env) = env {
            environment = environment.source(Some(env));
        }
        let settings = builder.add_source(environment).build()?;
        let where_ = file
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "the environment".into());
        let config: PipelineConfig = settings
            .try_deserialize()
            .map_err(|e| anyhow::anyhow!("pipeline config ({where_}): {e}"))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn defaults_work_without_a_file() {
        let c = PipelineConfig::load_with_env(None, Some(HashMap::new())).unwrap();
        assert_eq!(c.shim.listen, "127.0.0.1:8765");
        assert_eq!(c.shim.max_body_bytes, 64 * 1024 * 1024);
    }

    #[test]
    fn environment_overrides_the_file_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "[shim]\nlisten = \"127.0.0.1:1\"\nmax_body_bytes = 10\n").unwrap();
        let env = HashMap::from([("KAUDIT__SHIM__LISTEN".to_string(), "0.0.0.0:9".to_string())]);
        let c = PipelineConfig::load_with_env(Some(&file), Some(env)).unwrap();
        assert_eq!(c.shim.listen, "0.0.0.0:9");
        assert_eq!(c.shim.max_body_bytes, 10);

        std::fs::write(&file, "[shim]\nlisten_on = \"x\"\n").unwrap();
        let err = PipelineConfig::load_with_env(Some(&file), Some(HashMap::new()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_on"), "{err}");
        std::fs::write(&file, "[shim]\nmax_body_bytes = \"lots\"\n").unwrap();
        let err = PipelineConfig::load_with_env(Some(&file), Some(HashMap::new()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_body_bytes"), "{err}");
    }

    #[test]
    fn shipped_pipelines_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            PipelineConfig::load_with_env(Some(&path), Some(HashMap::new()))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}
