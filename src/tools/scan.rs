//! `kaudit scan`: the engine over audit log files, offline.
//!
//! Reads each file (JSON lines, EventList, array, gzip, managed clusters' envelopes; `-` is
//! stdin), evaluates the rules,
//! writes alerts as JSON lines, and reports what it read: events, malformed items with their
//! positions, alerts and evaluation errors per rule, and events/s.

use crate::alert::encode::{Encoder, Encoding};
use crate::alert::Alert;
use crate::audit::{DocumentReader, Format};
use crate::dedup::Verdict;
use crate::detect::{Detect, Source};
use crate::engine::RuleSet;
use anyhow::Context as _;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What a scan read and found.
#[derive(Debug, Default)]
pub struct Summary {
    pub events: u64,
    pub malformed: u64,
    /// The first malformed items, as `file: line N: reason`.
    pub malformed_examples: Vec<String>,
    pub alerts: u64,
    /// Matches held back by dedup (reported in summary alerts or later alerts' counts).
    pub suppressed: u64,
    /// Matches of stateful rules later than the allowed lateness (dropped).
    pub late: u64,
    pub elapsed: Duration,
}

const MALFORMED_EXAMPLES: usize = 10;

/// How to scan.
#[derive(Debug, Clone)]
pub struct Options {
    /// The cluster of events whose envelope names none.
    pub cluster: String,
    /// The shape of the records (auto-detected per record by default).
    pub format: Format,
    /// Stateful windows and rate limits, on event time as in the detector.
    pub dedup: crate::dedup::DedupConfig,
    /// A progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// How alerts are written (encoding, redaction, the event attached or not).
    pub encoder: Encoder,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            cluster: "default".into(),
            format: Format::Auto,
            dedup: Default::default(),
            progress: false,
            // Redaction is on unless asked otherwise.
            encoder: Encoder::builtin(Encoding::Falco, false, true),
        }
    }
}

/// Scans `files` with `rules`, writing alerts to `out`. Keys still holding repeats at the end
/// get summary alerts.
pub fn scan(files: &[PathBuf], rules: &RuleSet, options: &Options, out: &mut dyn Write) -> anyhow::Result<Summary> {
    let deduper = crate::dedup::Deduper::new(&options.dedup)?;
    let detect = Detect::new(rules, &deduper);
    let mut alerts = Vec::new();
    let start = Instant::now();
    let mut summary = Summary::default();
    for path in files {
        let name = path.display().to_string();
        let (input, len): (Box<dyn Read + Send>, u64) = if name == "-" {
            (Box::new(std::io::stdin()), 0)
        } else {
            let file = std::fs::File::open(path).with_context(|| format!("cannot open {name}"))?;
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            (Box::new(file), len)
        };
        let bar = progress_bar(options.progress && len > 0, len, &name);
        let input: Box<dyn Read + Send> = match &bar {
            Some(bar) => Box::new(bar.wrap_read(input)),
            None => input,
        };
        let reader = DocumentReader::new(input, options.format).with_context(|| format!("cannot read {name}"))?;
        for item in reader {
            match item.with_context(|| format!("cannot read {name}"))? {
                Ok(record) => {
                    summary.events += 1;
                    let source = Source {
                        cluster: record.cluster.as_deref().unwrap_or(&options.cluster),
                        ..Default::default()
                    };
                    for (_, verdict) in detect.event(&record.event, &source, &mut alerts) {
                        match verdict {
                            Verdict::Suppressed => summary.suppressed += 1,
                            Verdict::Late => summary.late += 1,
                            Verdict::Passed | Verdict::Held => {}
                        }
                    }
                    summary.alerts += write_alerts(out, &options.encoder, &mut alerts)?;
                }
                Err(bad) => {
                    summary.malformed += 1;
                    if summary.malformed_examples.len() < MALFORMED_EXAMPLES {
                        let bad = crate::telemetry::truncated(&bad.to_string(), 256).into_owned();
                        summary.malformed_examples.push(format!("{name}: {bad}"));
                    }
                }
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    }
    deduper.flush(&mut alerts);
    summary.alerts += write_alerts(out, &options.encoder, &mut alerts)?;
    out.flush()?;
    summary.elapsed = start.elapsed();
    Ok(summary)
}

/// Writes and empties `alerts`; how many there were.
fn write_alerts(out: &mut dyn Write, encoder: &Encoder, alerts: &mut Vec<Alert>) -> anyhow::Result<u64> {
    let n = alerts.len() as u64;
    out.write_all(&crate::alert::sink::json_lines(encoder, alerts)?)?;
    alerts.clear();
    Ok(n)
}

fn progress_bar(show: bool, len: u64, name: &str) -> Option<indicatif::ProgressBar> {
    if !show || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(name.to_string());
    Some(bar)
}

/// The summary as people read it (stderr).
pub fn report(summary: &Summary, rules: &RuleSet, err: &mut dyn Write) -> std::io::Result<()> {
    let secs = summary.elapsed.as_secs_f64().max(1e-9);
    writeln!(
        err,
        "scanned {} events ({} malformed) in {:.3}s: {:.0} events/s, {} alerts ({} repeats suppressed by dedup)",
        summary.events,
        summary.malformed,
        secs,
        summary.events as f64 / secs,
        summary.alerts,
        summary.suppressed
    )?;
    if summary.late > 0 {
        writeln!(
            err,
            "  {} matches of stateful rules arrived later than the allowed lateness and were dropped",
            summary.late
        )?;
    }
    for example in &summary.malformed_examples {
        writeln!(err, "  malformed: {example}")?;
    }
    if summary.malformed > summary.malformed_examples.len() as u64 {
        writeln!(
            err,
            "  … and {} more malformed",
            summary.malformed - summary.malformed_examples.len() as u64
        )?;
    }
    for rule in rules.rules() {
        let matched = rule.stats.matched.load(Ordering::Relaxed);
        let errors = rule.stats.errors.load(Ordering::Relaxed);
        let interpreted = rule.stats.interpreted.load(Ordering::Relaxed);
        if matched == 0 && errors == 0 && interpreted == 0 {
            continue;
        }
        write!(err, "  {:>8} matches  {:>6} errors  {}", matched, errors, rule.name)?;
        if interpreted > 0 {
            write!(err, "  ({interpreted} evaluations left to the interpreter)")?;
        }
        if let Some(e) = rule
            .stats
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
        {
            write!(err, "  (last error: {e})")?;
        }
        writeln!(err)?;
    }
    Ok(())
}

/// The rules by the time they took (measured with [`RuleSet::profile`]), costliest first: the
/// ones that account for nine tenths of it, at least ten.
pub fn profile(rules: &RuleSet, err: &mut dyn Write) -> std::io::Result<()> {
    let mut costs: Vec<(u64, u64, u64, &str)> = rules
        .rules()
        .iter()
        .map(|r| {
            let s = &r.stats;
            let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            (load(&s.nanos), load(&s.evaluated), load(&s.matched), r.name.as_str())
        })
        .filter(|c| c.1 > 0)
        .collect();
    costs.sort_by_key(|c| std::cmp::Reverse(c.0));
    let total: u64 = costs.iter().map(|c| c.0).sum();
    writeln!(
        err,
        "rule time: {:.3} s over {} rules (shared work counts for the first rule that needs it)",
        total as f64 / 1e9,
        costs.len()
    )?;
    writeln!(
        err,
        "  {:>6} {:>9} {:>10} {:>8} {:>8}  rule",
        "share", "ms", "evaluated", "ns/eval", "matched"
    )?;
    let mut listed = 0;
    for (shown, (nanos, evaluated, matched, name)) in costs.iter().enumerate() {
        if shown >= 10 && listed * 10 >= total * 9 {
            break;
        }
        listed += nanos;
        writeln!(
            err,
            "  {:>5.1}% {:>9.1} {:>10} {:>8} {:>8}  {name}",
            *nanos as f64 * 100.0 / total.max(1) as f64,
            *nanos as f64 / 1e6,
            evaluated,
            nanos / evaluated.max(&1),
            matched
        )?;
    }
    Ok(())
}
