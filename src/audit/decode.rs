//! Every shape in which audit events reach kaudit, turned into [`Event`]s.
//!
//! - the webhook backend's `EventList` (items usually lack `kind`/`apiVersion`),
//! - a single Event, or a JSON array of Events,
//! - the log backend's JSON lines (one Event per line), plain or gzip,
//! - concatenated JSON objects (as Firehose writes them),
//! - and, inside any of these, the managed clusters' envelopes ([`super::envelope`]): every JSON
//!   object is unwrapped according to the source's [`Format`], one object giving zero or more
//!   events.
//!
//! A malformed line or item is reported with its position and skipped; it never costs the rest
//! of the document.

use super::envelope::{self, Format, Record};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};

/// Where in its document an item stood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// 1-based line of a JSON-lines document.
    Line(usize),
    /// 0-based index into an `EventList`'s items or a JSON array.
    Item(usize),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line(n) => write!(f, "line {n}"),
            Position::Item(n) => write!(f, "item {n}"),
        }
    }
}

/// An item that is not an audit event, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub position: Position,
    pub reason: String,
    /// The item's text as received (for a dead-letter topic), cut to 64 KiB.
    pub text: String,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.position, self.reason)
    }
}

impl std::error::Error for Malformed {}

/// Most of a bad item's text a dead letter keeps.
const MAX_DEAD_LETTER_TEXT: usize = 64 * 1024;

impl Malformed {
    /// A bad item at `position`, keeping at most 64 KiB of its text for the dead-letter topic.
    pub fn new(position: Position, reason: impl Into<String>, text: &[u8]) -> Malformed {
        let cut = &text[..text.len().min(MAX_DEAD_LETTER_TEXT)];
        Malformed {
            position,
            reason: reason.into(),
            text: String::from_utf8_lossy(cut).into_owned(),
        }
    }
}

/// The events one JSON object holds, each error with the object's position.
fn records_at(format: Format, position: Position, text: &[u8]) -> Vec<Result<Record, Malformed>> {
    Doc::new(format, &envelope::InflateBudget::new(envelope::MAX_RECORD_INFLATE)).records_at(position, text)
}

/// One document being decoded: how its objects are unwrapped, the decompression budget they
/// share, and where the document had bytes that are not UTF-8 (replaced before parsing, so
/// that only the items holding them are refused).
struct Doc<'a> {
    format: Format,
    budget: &'a envelope::InflateBudget,
    /// The document's text, and the byte ranges in it that replace invalid UTF-8.
    text: &'a str,
    invalid: Vec<std::ops::Range<usize>>,
}

impl<'a> Doc<'a> {
    fn new(format: Format, budget: &'a envelope::InflateBudget) -> Doc<'a> {
        Doc {
            format,
            budget,
            text: "",
            invalid: Vec::new(),
        }
    }

    /// Where in the document the item `text` has a byte that was not UTF-8, if it has one.
    fn invalid_in(&self, text: &[u8]) -> Option<usize> {
        let start = (text.as_ptr() as usize).checked_sub(self.text.as_ptr() as usize)?;
        let end = start + text.len();
        self.invalid
            .iter()
            .find(|r| r.start < end && r.end > start)
            .map(|r| r.start - start)
    }

    fn records_at(&self, position: Position, text: &[u8]) -> Vec<Result<Record, Malformed>> {
        if let Some(at) = self.invalid_in(text) {
            return vec![Err(Malformed::new(
                position,
                format!("not UTF-8 (at byte {at} of the item)"),
                text,
            ))];
        }
        envelope::unwrap_within(self.format, text, self.budget)
            .into_iter()
            .map(|r| r.map_err(|reason| Malformed::new(position, reason, text)))
            .collect()
    }

    fn records_of(&self, items: impl Iterator<Item = (Position, &'a [u8])>) -> Vec<Result<Record, Malformed>> {
        items
            .flat_map(|(position, text)| self.records_at(position, text))
            .collect()
    }
}

/// The text of `bytes`, each invalid UTF-8 sequence replaced by U+FFFD, and where those are.
fn lossy(bytes: &[u8]) -> (String, Vec<std::ops::Range<usize>>) {
    let mut text = String::with_capacity(bytes.len());
    let mut invalid = Vec::new();
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            invalid.push(text.len()..text.len() + char::REPLACEMENT_CHARACTER.len_utf8());
            text.push(char::REPLACEMENT_CHARACTER);
        }
    }
    (text, invalid)
}

#[derive(Deserialize)]
struct List<'a> {
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
}

/// Decodes a whole document held in memory: an `EventList`, a single Event, a JSON array, JSON
/// lines or concatenated objects, each object unwrapped as `format` says. `Err` only when the
/// document is not JSON at all (nothing in it can be read). An item holding bytes that are not
/// UTF-8 is malformed; the others are read.
pub fn decode_document(bytes: &[u8], format: Format) -> Result<Vec<Result<Record, Malformed>>, String> {
    decode_document_within(
        bytes,
        format,
        &envelope::InflateBudget::new(envelope::MAX_RECORD_INFLATE),
    )
}

/// [`decode_document`] with every envelope's compressed data inflated within one `budget`.
pub fn decode_document_within(
    bytes: &[u8],
    format: Format,
    budget: &envelope::InflateBudget,
) -> Result<Vec<Result<Record, Malformed>>, String> {
    let repaired;
    let mut doc = Doc::new(format, budget);
    doc.text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(_) => {
            let (text, invalid) = lossy(bytes);
            repaired = text;
            doc.invalid = invalid;
            &repaired
        }
    };
    let text = doc.text;
    let trimmed = text.trim_start();
    match trimmed.as_bytes().first() {
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(trimmed).map_err(|e| format!("not a JSON array: {e}"))?;
            Ok(doc.records_of(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, raw)| (Position::Item(i), raw.get().as_bytes())),
            ))
        }
        Some(b'{') => match serde_json::from_str::<&RawValue>(trimmed) {
            Ok(one) => Ok(decode_object(&doc, one)),
            // More than one value, the first a whole line: the log backend's JSON lines.
            Err(_) if first_line_is_json(trimmed) => Ok(decode_lines(&doc, text)),
            Err(e) => decode_concatenated(&doc, trimmed).ok_or_else(|| format!("not JSON: {e}")),
        },
        Some(_) => Err("not JSON: expected an EventList, an Event or an array of Events".into()),
        None => Ok(Vec::new()),
    }
}

/// Objects written one after another without separators (Firehose's S3 objects). `None` if the
/// first of them is not whole JSON.
fn decode_concatenated<'a>(doc: &Doc<'a>, text: &'a str) -> Option<Vec<Result<Record, Malformed>>> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<&RawValue>();
    let first = stream.next()?.ok()?;
    let mut out = doc.records_at(Position::Item(0), first.get().as_bytes());
    for (i, raw) in stream.enumerate() {
        match raw {
            Ok(raw) => out.extend(doc.records_at(Position::Item(i + 1), raw.get().as_bytes())),
            Err(e) => {
                out.push(Err(Malformed::new(
                    Position::Item(i + 1),
                    format!("not JSON: {e}"),
                    b"",
                )));
                break;
            }
        }
    }
    Some(out)
}

fn first_line_is_json(text: &str) -> bool {
    let first = text.lines().next().unwrap_or_default();
    first.len() < text.len() && serde_json::from_str::<&RawValue>(first).is_ok()
}

/// One JSON object: an `EventList` (it has `items`) or one record.
fn decode_object<'a>(doc: &Doc<'a>, one: &'a RawValue) -> Vec<Result<Record, Malformed>> {
    if let Ok(list) = serde_json::from_str::<List>(one.get()) {
        return doc.records_of(
            list.items
                .iter()
                .enumerate()
                .map(|(i, raw)| (Position::Item(i), raw.get().as_bytes())),
        );
    }
    doc.records_at(Position::Item(0), one.get().as_bytes())
}

fn decode_lines<'a>(doc: &Doc<'a>, text: &'a str) -> Vec<Result<Record, Malformed>> {
    doc.records_of(
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| (Position::Line(i + 1), line.trim().as_bytes())),
    )
}

/// Reads audit events from a file or stream, JSON lines streamed one at a time, any other
/// shape read whole. gzip input (by its magic bytes) is decompressed on the fly.
pub struct DocumentReader {
    input: Box<dyn BufRead + Send>,
    format: Format,
    mode: Mode,
    line: usize,
    buf: Vec<u8>,
    /// Records read but not yet returned (a whole document, or an envelope holding several).
    pending: VecDeque<Result<Record, Malformed>>,
}

#[derive(PartialEq)]
enum Mode {
    Start,
    Lines,
    Done,
}

impl DocumentReader {
    pub fn new(input: impl Read + Send + 'static, format: Format) -> io::Result<DocumentReader> {
        let mut input = BufReader::with_capacity(256 * 1024, input);
        let gz = input.fill_buf()?.starts_with(&[0x1f, 0x8b]);
        let input: Box<dyn BufRead + Send> = if gz {
            Box::new(BufReader::with_capacity(
                256 * 1024,
                flate2::bufread::MultiGzDecoder::new(input),
            ))
        } else {
            Box::new(input)
        };
        Ok(DocumentReader {
            input,
            format,
            mode: Mode::Start,
            line: 0,
            buf: Vec::with_capacity(8192),
            pending: VecDeque::new(),
        })
    }

    fn next_line(&mut self) -> io::Result<bool> {
        self.buf.clear();
        let n = self.input.read_until(b'\n', &mut self.buf)?;
        self.line += 1;
        Ok(n > 0)
    }

    /// Reads the first non-blank line and decides: a line that is a whole object and not an
    /// `EventList` starts JSON lines; anything else is one document read whole.
    fn start(&mut self) -> io::Result<()> {
        loop {
            if !self.next_line()? {
                self.mode = Mode::Done;
                return Ok(());
            }
            if !self.buf.trim_ascii().is_empty() {
                break;
            }
        }
        let first = self.buf.trim_ascii();
        let lines = first.starts_with(b"{")
            && serde_json::from_slice::<&RawValue>(first).is_ok()
            && serde_json::from_slice::<List>(first).is_err();
        if lines {
            self.mode = Mode::Lines;
            self.pending = records_at(self.format, Position::Line(self.line), first).into();
            return Ok(());
        }
        let mut whole = std::mem::take(&mut self.buf);
        self.input.read_to_end(&mut whole)?;
        let items = decode_document(&whole, self.format)
            .unwrap_or_else(|reason| vec![Err(Malformed::new(Position::Item(0), reason, &whole))]);
        self.pending = items.into();
        self.mode = Mode::Done;
        Ok(())
    }
}

impl Iterator for DocumentReader {
    type Item = io::Result<Result<Record, Malformed>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(record) = self.pending.pop_front() {
                return Some(Ok(record));
            }
            match self.mode {
                Mode::Start => {
                    if let Err(e) = self.start() {
                        return Some(Err(e));
                    }
                }
                Mode::Lines => match self.next_line() {
                    Err(e) => return Some(Err(e)),
                    Ok(false) => self.mode = Mode::Done,
                    Ok(true) => {
                        let line = self.buf.trim_ascii();
                        if !line.is_empty() {
                            self.pending
                                .extend(records_at(self.format, Position::Line(self.line), line));
                        }
                    }
                },
                Mode::Done => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E1: &str = r#"{"auditID":"1","stage":"ResponseComplete","verb":"get"}"#;
    const E2: &str = r#"{"auditID":"2","stage":"ResponseComplete","verb":"create"}"#;

    fn ids(items: &[Result<Record, Malformed>]) -> Vec<String> {
        items
            .iter()
            .map(|r| match r {
                Ok(r) => r.event.view().audit_id().into_owned(),
                Err(m) => format!("bad {}", m.position),
            })
            .collect()
    }

    #[test]
    fn event_list_without_item_kinds() {
        let body = format!(
            r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{E1},{{"kind":"Pod"}},{E2}]}}"#
        );
        let items = decode_document(body.as_bytes(), Format::Auto).unwrap();
        assert_eq!(ids(&items), ["1", "bad item 1", "2"]);
    }

    #[test]
    fn single_event_array_and_lines() {
        assert_eq!(ids(&decode_document(E1.as_bytes(), Format::Auto).unwrap()), ["1"]);
        let arr = format!("[{E1}, 42, {E2}]");
        assert_eq!(
            ids(&decode_document(arr.as_bytes(), Format::Auto).unwrap()),
            ["1", "bad item 1", "2"]
        );
        let lines = format!("{E1}\n\n{{broken\n{E2}\n");
        assert_eq!(
            ids(&decode_document(lines.as_bytes(), Format::Auto).unwrap()),
            ["1", "bad line 3", "2"]
        );
    }

    #[test]
    fn not_json_is_an_error() {
        for bad in [&b"hello"[..], b"{ nope", b"[1, 2"] {
            assert!(decode_document(bad, Format::Auto).is_err());
        }
    }

    fn read_all(bytes: Vec<u8>) -> Vec<Result<Record, Malformed>> {
        DocumentReader::new(std::io::Cursor::new(bytes), Format::Auto)
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    #[test]
    fn reader_streams_lines_and_skips_bad_ones() {
        let text = format!("\n{E1}\nnot json\n{E2}");
        assert_eq!(ids(&read_all(text.into_bytes())), ["1", "bad line 3", "2"]);
    }

    #[test]
    fn reader_reads_pretty_documents_whole_and_gzip() {
        let pretty = format!("{{\n \"items\": [\n{E1},\n{E2}\n]\n}}\n");
        assert_eq!(ids(&read_all(pretty.clone().into_bytes())), ["1", "2"]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, format!("{E1}\n{E2}\n").as_bytes()).unwrap();
        assert_eq!(ids(&read_all(gz.finish().unwrap())), ["1", "2"]);
    }

    #[test]
    fn reader_reports_a_document_that_is_not_json() {
        let items = read_all(b"{\n nope".to_vec());
        assert_eq!(ids(&items), ["bad item 0"]);
    }

    #[test]
    fn concatenated_objects_and_envelopes_in_lines() {
        let eks = |id: &str| {
            serde_json::json!({"logGroup": "/aws/eks/c1/cluster", "logEvents": [{"message": E1.replace("\"1\"", id)}]})
                .to_string()
        };
        // Firehose: objects back to back, no separator.
        let firehose = format!("{}{}", eks("\"x\""), eks("\"y\""));
        assert_eq!(ids(&read_all(firehose.into_bytes())), ["x", "y"]);
        let lines = format!("{}\n{E2}\n", eks("\"z\""));
        let items = read_all(lines.into_bytes());
        assert_eq!(ids(&items), ["z", "2"]);
        assert_eq!(items[0].as_ref().unwrap().cluster.as_deref(), Some("c1"));
        assert_eq!(items[1].as_ref().unwrap().cluster, None);
    }

    #[test]
    fn a_line_that_is_not_utf8_is_reported_and_skipped() {
        let mut bytes = format!("{E1}\n").into_bytes();
        bytes.extend_from_slice(b"{\"auditID\":\"\xff\"}\n");
        bytes.extend_from_slice(format!("{E2}\n").as_bytes());
        let items = read_all(bytes);
        assert_eq!(ids(&items), ["1", "bad line 2", "2"]);
        assert!(
            items[1].as_ref().unwrap_err().reason.contains("UTF-8"),
            "{:?}",
            items[1]
        );
    }
}
