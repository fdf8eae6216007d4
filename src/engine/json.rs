//! One event's fields as borrowed JSON trees, read by the compiled path ([`super::compiled`]).
//!
//! A top-level field is parsed once per event, the first time any rule reads it, and every
//! rule shares the tree. The tree lives in the event's arena (a [`Bump`] reset between events,
//! so a tree costs no allocation of its own and nothing to drop): strings without escapes are
//! borrowed from the event's text, the others copied into the arena; objects are slices of
//! entries (Kubernetes objects are small, and a scan beats hashing them). The
//! tree mirrors what [`super::bind::json_to_val`] gives the interpreter, so both paths see
//! the same values: integers stay `int` where they fit, a duplicate key's last value wins, a
//! field whose value is `null` is absent (as Kubernetes means a nil slice, map or pointer: an
//! aggregated ClusterRole has `"rules": null`, and `.?rules.orValue([])` must give `[]`), and a value nested deeper than [`MAX_VALUE_DEPTH`] becomes [`J::TooDeep`] (skipped without
//! recursion), which the compiled path never reads itself (it hands such events to the
//! interpreter, whose `Unusable` values make them evaluation errors).

use super::bind::MAX_VALUE_DEPTH;
use bumpalo::Bump;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;

/// A JSON value borrowed from an event and its arena.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum J<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(&'a str),
    Arr(&'a [J<'a>]),
    /// Entries in the event's order; a key may repeat (the last one counts).
    Obj(&'a [(&'a str, J<'a>)]),
    /// A value nested deeper than [`MAX_VALUE_DEPTH`].
    TooDeep,
}

/// The empty object an absent object-valued field reads as.
pub static EMPTY_OBJECT: J<'static> = J::Obj(&[]);

impl<'a> J<'a> {
    /// The value at `key` of an object (its last occurrence); `None` for a missing key or a
    /// value that is no object.
    pub fn get(&self, key: &str) -> Option<&J<'a>> {
        match self {
            J::Obj(entries) => J::member(entries, key),
            _ => None,
        }
    }

    /// The value at `key` among an object's entries (its last occurrence), by a scan.
    pub fn member<'e>(entries: &'e [(&'a str, J<'a>)], key: &str) -> Option<&'e J<'a>> {
        entries.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// An object's keys, each once (its last occurrence), in the order of those occurrences, as
    /// a CEL map has them. Linear in the entries (an event's object can hold tens of thousands
    /// of keys; a quadratic look-back made one crafted event cost seconds).
    pub fn distinct_keys(entries: &[(&'a str, J<'a>)]) -> Vec<&'a str> {
        let later = |i: usize, k: &str| entries[i + 1..].iter().any(|(other, _)| *other == k);
        if entries.len() <= 16 {
            return (0..entries.len())
                .filter(|&i| !later(i, entries[i].0))
                .map(|i| entries[i].0)
                .collect();
        }
        // Keys are the sender's: a hasher seeded per process (no chosen collisions).
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        let mut keys: Vec<&'a str> = entries
            .iter()
            .rev()
            .map(|(k, _)| *k)
            .filter(|k| seen.insert(*k))
            .collect();
        keys.reverse();
        keys
    }

    /// Whether a value nested too deep is anywhere inside.
    pub fn has_too_deep(&self) -> bool {
        let mut stack = vec![self];
        while let Some(j) = stack.pop() {
            match j {
                J::TooDeep => return true,
                J::Arr(items) => stack.extend(items.iter()),
                J::Obj(entries) => stack.extend(entries.iter().map(|(_, v)| v)),
                _ => {}
            }
        }
        false
    }

    /// The value as `serde_json`, as [`super::functions::to_json`] would give the interpreter's
    /// value (keys sorted, the last duplicate winning); `None` if a part is nested too deep.
    pub fn to_json(&self) -> Option<serde_json::Value> {
        use serde_json::Value;
        Some(match self {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Int(i) => Value::from(*i),
            J::UInt(u) => Value::from(*u),
            J::Double(d) => serde_json::Number::from_f64(*d)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            J::Str(s) => Value::String(s.to_string()),
            J::Arr(items) => Value::Array(items.iter().map(J::to_json).collect::<Option<_>>()?),
            J::Obj(entries) => {
                // serde_json's map keeps keys sorted (its `preserve_order` feature is off: a
                // test below holds it so), and a repeated key's last value wins.
                let mut map = serde_json::Map::new();
                for (k, v) in entries.iter() {
                    map.insert(k.to_string(), v.to_json()?);
                }
                Value::Object(map)
            }
            J::TooDeep => return None,
        })
    }
}

/// Parses one field's raw JSON text into `arena`.
pub fn parse<'a>(raw: &'a str, arena: &'a Bump) -> Result<J<'a>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(raw);
    Seed { depth: 0, arena }.deserialize(&mut de)
}

#[derive(Clone, Copy)]
struct Seed<'a> {
    depth: usize,
    arena: &'a Bump,
}

impl<'de> DeserializeSeed<'de> for Seed<'de> {
    type Value = J<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        if self.depth > MAX_VALUE_DEPTH {
            let _: &serde_json::value::RawValue = Deserialize::deserialize(d)?;
            return Ok(J::TooDeep);
        }
        d.deserialize_any(self)
    }
}

impl<'de> Seed<'de> {
    fn inner(self) -> Seed<'de> {
        Seed {
            depth: self.depth + 1,
            arena: self.arena,
        }
    }
}

impl<'de> Visitor<'de> for Seed<'de> {
    type Value = J<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(J::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(J::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => J::Int(i),
            Err(_) => J::UInt(v),
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(J::Double(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(J::Str(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(J::Str(self.arena.alloc_str(v)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(J::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(J::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = bumpalo::collections::Vec::new_in(self.arena);
        while let Some(item) = seq.next_element_seed(self.inner())? {
            items.push(item);
        }
        Ok(J::Arr(items.into_bump_slice()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = bumpalo::collections::Vec::new_in(self.arena);
        let mut nulls = false;
        while let Some(crate::audit::CowStr(key)) = map.next_key()? {
            let key: &'de str = match key {
                Cow::Borrowed(k) => k,
                Cow::Owned(k) => self.arena.alloc_str(&k),
            };
            // A null field is an absent one, as Kubernetes means it (it takes away what came
            // before it); a later duplicate wins. Nulls stay as marks until the object ends.
            let value = map.next_value_seed(self.inner())?;
            nulls |= value == J::Null;
            entries.push((key, value));
        }
        if nulls {
            // From the end: a mark hides its key's earlier entries (and itself). Linear, where
            // taking each null's key away at once was quadratic in a crafted object.
            let mut hidden = std::collections::HashSet::new();
            let mut kept = bumpalo::collections::Vec::with_capacity_in(entries.len(), self.arena);
            for &(key, value) in entries.iter().rev() {
                if value == J::Null {
                    hidden.insert(key);
                } else if !hidden.contains(key) {
                    kept.push((key, value));
                }
            }
            kept.reverse();
            entries = kept;
        }
        Ok(J::Obj(entries.into_bump_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_borrow_strings_keep_the_last_duplicate_and_cut_deep_values() {
        let arena = Bump::new();
        let j = parse(r#"{"a":"x","a":"y","n":18446744073709551615,"e":"\u0041"}"#, &arena).unwrap();
        assert_eq!(j.get("a"), Some(&J::Str("y")));
        assert_eq!(j.get("n"), Some(&J::UInt(u64::MAX)));
        // As the interpreter's values render: keys sorted, the last duplicate kept.
        let keys: Vec<String> = j.to_json().unwrap().as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["a", "e", "n"]);
        assert_eq!(j.to_json().unwrap()["a"], "y");
        assert_eq!(j.get("e"), Some(&J::Str("A")));
        // A null field is absent; a null list item is a null.
        let j = parse(r#"{"a":1,"a":null,"b":null,"c":[null],"d":null,"d":2}"#, &arena).unwrap();
        assert_eq!(j.get("a"), None);
        assert_eq!(j.get("b"), None);
        assert_eq!(j.get("c"), Some(&J::Arr(&[J::Null])));
        assert_eq!(j.get("d"), Some(&J::Int(2)));
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let j = parse(&deep, &arena).unwrap();
        assert!(j.has_too_deep());
        assert_eq!(j.to_json(), None);
    }
}
