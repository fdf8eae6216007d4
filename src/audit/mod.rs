//! The `audit.k8s.io` Event as kaudit carries it.
//!
//! An [`Event`] is the event's own JSON text, kept as bytes from the moment it is received until
//! an alert quotes it: the bus moves those bytes, the detector reads them. Nothing converts a
//! whole event into a tree. [`EventView`] indexes the top-level fields of one event without
//! copying them (each field stays raw JSON text), and the engine turns only the fields its rules
//! touch into values. Decoding of the shapes operators have (webhook `EventList`, log-backend
//! JSON lines, arrays, gzip) lives in [`decode`], the managed clusters' envelopes (EKS, GKE, AKS)
//! in [`envelope`].

pub mod decode;
pub mod envelope;

use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

pub use decode::{decode_document, DocumentReader, Malformed, Position};
pub use envelope::{Format, Record};

/// How much of a request the apiserver records (the audit Policy's levels), in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize, serde::Serialize)]
pub enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "None" => Some(Level::None),
            "Metadata" => Some(Level::Metadata),
            "Request" => Some(Level::Request),
            "RequestResponse" => Some(Level::RequestResponse),
            _ => None,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One audit event: valid JSON text of an object with a string `auditID` and `stage`, with
/// the positions of its top-level fields found once, when it was checked.
#[derive(Clone, PartialEq, Eq)]
pub struct Event {
    json: Bytes,
    fields: Arc<[Field]>,
}

/// Where one top-level field's key and value stand in the event's text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    key: FieldKey,
    value: (u32, u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FieldKey {
    At(u32, u32),
    /// A key written with escapes, kept unescaped.
    Unescaped(Box<str>),
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event").field("json", &self.as_str()).finish()
    }
}

impl Event {
    /// Checks that `json` is one audit event and keeps its bytes as they are.
    pub fn from_json(json: impl Into<Bytes>) -> Result<Event, String> {
        let json = json.into();
        let text = std::str::from_utf8(&json).map_err(|e| format!("not UTF-8: {e}"))?;
        let view = EventView::parse(text)?;
        let offset = |s: &str| (s.as_ptr() as usize - text.as_ptr() as usize) as u32;
        let span = |s: &str| (offset(s), offset(s) + s.len() as u32);
        let fields = view
            .fields
            .iter()
            .map(|(key, value)| Field {
                key: match key {
                    Cow::Borrowed(k) => {
                        let (start, end) = span(k);
                        FieldKey::At(start, end)
                    }
                    Cow::Owned(k) => FieldKey::Unescaped(k.as_str().into()),
                },
                value: span(value),
            })
            .collect();
        Ok(Event { json, fields })
    }

    /// The event's JSON text.
    pub fn as_str(&self) -> &str {
        // Checked in `from_json`; the bytes never change afterwards.
        std::str::from_utf8(&self.json).unwrap_or_default()
    }

    pub fn bytes(&self) -> &Bytes {
        &self.json
    }

    /// The event as the apiserver truncates one that is too large: without `requestObject` and
    /// `responseObject`, annotated `audit.k8s.io/truncated: "true"`.
    pub fn truncated(&self) -> Event {
        let view = self.view();
        let mut out = String::with_capacity(2048);
        out.push('{');
        for (key, raw) in view.fields() {
            if matches!(key, "requestObject" | "responseObject" | "annotations") {
                continue;
            }
            out.push_str(&serde_json::to_string(key).unwrap_or_default());
            out.push(':');
            out.push_str(raw);
            out.push(',');
        }
        let mut annotations: serde_json::Map<String, serde_json::Value> = view
            .get("annotations")
            .and_then(|raw| serde_json::from_str(raw).ok())
            .unwrap_or_default();
        annotations.insert("audit.k8s.io/truncated".into(), "true".into());
        out.push_str("\"annotations\":");
        out.push_str(&serde_json::Value::Object(annotations).to_string());
        out.push('}');
        // Every field came from a valid event; the result is one too.
        Event::from_json(out.into_bytes()).unwrap_or_else(|_| self.clone())
    }

    /// The top-level fields of this event, from the positions found when it was checked.
    pub fn view(&self) -> EventView<'_> {
        let text = self.as_str();
        let slice = |(start, end): (u32, u32)| text.get(start as usize..end as usize).unwrap_or_default();
        let fields = self
            .fields
            .iter()
            .map(|f| {
                let key = match &f.key {
                    FieldKey::At(start, end) => Cow::Borrowed(slice((*start, *end))),
                    FieldKey::Unescaped(k) => Cow::Borrowed(&**k),
                };
                (key, slice(f.value))
            })
            .collect();
        EventView { fields }
    }
}

/// The top-level fields of one event, each still raw JSON text borrowed from the event.
#[derive(Default, Debug)]
pub struct EventView<'a> {
    fields: Vec<(Cow<'a, str>, &'a str)>,
}

impl<'a> EventView<'a> {
    /// Indexes the top-level fields of `text` and checks what every audit event has.
    pub fn parse(text: &'a str) -> Result<EventView<'a>, String> {
        let view: EventView<'a> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        match view
            .get("kind")
            .map(|raw| serde_json::from_str::<CowStr>(raw).map(|s| s.0))
        {
            None => {}
            Some(Ok(k)) if k == "Event" => {}
            Some(_) => return Err("`kind` is not \"Event\"".into()),
        }
        for required in ["auditID", "stage"] {
            if view.str(required).is_none() {
                return Err(format!("`{required}` is missing or not a string"));
            }
        }
        Ok(view)
    }

    /// The raw JSON text of a top-level field.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    /// A top-level field when it is a JSON string.
    pub fn str(&self, name: &str) -> Option<Cow<'a, str>> {
        self.get(name).and_then(json_str)
    }

    pub fn fields(&self) -> impl Iterator<Item = (&str, &'a str)> + '_ {
        self.fields.iter().map(|(k, v)| (k.as_ref(), *v))
    }

    pub fn audit_id(&self) -> Cow<'a, str> {
        self.str("auditID").unwrap_or_default()
    }

    pub fn stage(&self) -> Cow<'a, str> {
        self.str("stage").unwrap_or_default()
    }

    /// The event time: `stageTimestamp`, else the v1beta1 `timestamp`, else `requestReceivedTimestamp`.
    pub fn time(&self) -> Option<Cow<'a, str>> {
        self.str("stageTimestamp")
            .or_else(|| self.str("timestamp"))
            .or_else(|| self.str("requestReceivedTimestamp"))
    }
}

/// Depth below which [`to_value`] keeps an event's JSON as it is.
pub const MAX_VALUE_DEPTH: usize = 64;

/// What replaces a part of an event nested deeper than [`MAX_VALUE_DEPTH`] in [`to_value`].
pub const TOO_DEEP: &str = "[nested too deep]";

/// An event's JSON as a tree, each part nested deeper than [`MAX_VALUE_DEPTH`] replaced by
/// [`TOO_DEEP`]: alerts embed it and redaction walks it, and an attacker can nest a request body
/// thousands of levels (past serde_json's limit, and past what a SIEM's parser takes).
pub fn to_value(text: &str) -> Result<serde_json::Value, serde_json::Error> {
    struct Bounded(usize);
    impl<'de> de::DeserializeSeed<'de> for Bounded {
        type Value = serde_json::Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            if self.0 > MAX_VALUE_DEPTH {
                // Skipped without recursion: serde_json reads a raw value with a loop.
                let _: &RawValue = Deserialize::deserialize(d)?;
                return Ok(serde_json::Value::String(TOO_DEEP.into()));
            }
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Bounded {
        type Value = serde_json::Value;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
            Ok(v.into())
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(v.into())
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(v.into())
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok(v.into())
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(v.into())
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(v.into())
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(serde_json::Value::Null)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element_seed(Bounded(self.0 + 1))? {
                items.push(item);
            }
            Ok(serde_json::Value::Array(items))
        }
        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
            let mut out = serde_json::Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = map.next_value_seed(Bounded(self.0 + 1))?;
                out.insert(key, value);
            }
            Ok(serde_json::Value::Object(out))
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let value = de::DeserializeSeed::deserialize(Bounded(0), &mut de)?;
    de.end()?;
    Ok(value)
}

/// A JSON string value, borrowed when it has no escapes.
pub fn json_str(raw: &str) -> Option<Cow<'_, str>> {
    serde_json::from_str::<CowStr>(raw).ok().map(|s| s.0)
}

/// A JSON string borrowed from the text it is read from where it has no escapes, copied only
/// where it has (serde's own `Cow<str>` is always a copy: a key read that way is an allocation).
#[derive(PartialEq, Eq, Hash)]
pub struct CowStr<'de>(pub Cow<'de, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Str;
        impl<'de> Visitor<'de> for Str {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Str)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for EventView<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Fields<'a> {
            type Value = EventView<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an audit event (a JSON object)")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut fields: Vec<(Cow<'a, str>, &'a str)> = Vec::with_capacity(20);
                while let Some(CowStr(key)) = map.next_key()? {
                    if fields.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                    }
                    let value: &'de RawValue = map.next_value()?;
                    fields.push((key, value.get()));
                }
                // A null field is an absent one, as Kubernetes means it (a nil slice or pointer).
                fields.retain(|(_, v)| *v != "null");
                Ok(EventView { fields })
            }
        }
        d.deserialize_map(Fields(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_indexes_top_level_fields_without_copying() {
        let text = r#"{"kind":"Event","auditID":"a1","stage":"ResponseComplete","verb":"create",
            "objectRef":{"resource":"pods","subresource":"exec"},"requestObject":{"x":[1,2]}}"#;
        let view = EventView::parse(text).unwrap();
        assert_eq!(view.audit_id(), "a1");
        assert_eq!(view.get("requestObject").unwrap(), r#"{"x":[1,2]}"#);
        // A null field is an absent one.
        let view = EventView::parse(r#"{"auditID":"a1","stage":"ResponseComplete","requestObject":null}"#).unwrap();
        assert_eq!(view.get("requestObject"), None);
        // Names and strings are the text's own, copied only where they hold an escape.
        let view = EventView::parse(r#"{"audit\u0049D":"a\u0031","stage":"x","verb":"get"}"#).unwrap();
        assert!(matches!(
            view.fields.iter().find(|(k, _)| k == "stage"),
            Some((Cow::Borrowed(_), _))
        ));
        assert!(matches!(view.str("verb"), Some(Cow::Borrowed("get"))));
        assert!(matches!(view.audit_id(), Cow::Owned(id) if id == "a1"));
    }

    #[test]
    fn rejects_what_is_not_an_event() {
        for (text, why) in [
            (r#"{"kind": 0}"#, "kind"),
            (r#"{"kind":"Pod","auditID":"a","stage":"s"}"#, "kind"),
            (r#"{"stage":"s"}"#, "auditID"),
            (
                r#"{"auditID":"a","stage":"s","verb":"get","verb":"create"}"#,
                "duplicate",
            ),
            (r#""a string""#, "object"),
            (r#"{"auditID":"a","#, "EOF"),
        ] {
            let err = EventView::parse(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn truncation_drops_the_objects_and_says_so() {
        let e = Event::from_json(
            r#"{"auditID":"a","stage":"s","requestObject":{"big":1},"responseObject":[2],"annotations":{"x":"y"}}"#,
        )
        .unwrap();
        let t = e.truncated();
        let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"auditID":"a","stage":"s","annotations":{"x":"y","audit.k8s.io/truncated":"true"}})
        );
    }

    #[test]
    fn escaped_keys_and_values_are_read() {
        let view = EventView::parse(r#"{"audit\u0049D":"a\"b","stage":"s"}"#).unwrap();
        assert_eq!(view.audit_id(), "a\"b");
        let event = Event::from_json(r#"{"audit\u0049D":"a","stage":"s","verb":"get"}"#).unwrap();
        assert_eq!(event.view().audit_id(), "a");
        assert_eq!(event.view().str("verb").as_deref(), Some("get"));
    }

    #[test]
    fn a_tree_of_any_depth_is_cut_below_the_limit() {
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        let text = format!(r#"{{"auditID":"a","requestObject":{{"x":{deep},"keep":"me"}}}}"#);
        let value = to_value(&text).unwrap();
        assert_eq!(value["requestObject"]["keep"], "me");
        let mut at = &value["requestObject"]["x"];
        let mut depth = 2;
        while let Some(inner) = at.get(0) {
            at = inner;
            depth += 1;
        }
        assert_eq!(at, TOO_DEEP);
        assert_eq!(depth, MAX_VALUE_DEPTH + 1);
        assert!(to_value("{\"a\":1} trailing").is_err());
    }
}
