//! The values of an evaluation: conversions between event JSON, rule constants, CEL values and
//! [`V`], and CEL's equality and membership over them.

use super::{E, V};
use crate::engine::compiled::Const;
use crate::engine::json::J;
use cel::common::types::{CelBool, CelDouble, CelInt, CelNull, CelString, CelUInt};
use std::borrow::Cow;

/// The elements a comprehension iterates: a list's items, a map's keys (each once), read in
/// place where the list is.
pub(super) fn elements(range: V<'_>) -> Result<Elements<'_>, E> {
    Ok(match range {
        V::Json(J::Arr(items)) => Elements::Json(items.iter()),
        V::Json(J::Obj(entries)) => Elements::Made(
            J::distinct_keys(entries)
                .into_iter()
                .map(|k| V::Str(Cow::Borrowed(k)))
                .collect::<Vec<_>>()
                .into_iter(),
        ),
        V::List(list) => Elements::Consts(list.items.iter()),
        V::Strs(s) => Elements::Strs(s.iter()),
        V::Refs(r) => Elements::Made(r.iter().map(|j| from_j(j)).collect::<Vec<_>>().into_iter()),
        V::Items(items) => Elements::Made(items.as_ref().clone().into_iter()),
        _ => return Err(E::Defer),
    })
}

/// An iterator over [`elements`].
pub(super) enum Elements<'r> {
    Json(std::slice::Iter<'r, J<'r>>),
    Consts(std::slice::Iter<'r, Const>),
    Strs(std::slice::Iter<'r, String>),
    Made(std::vec::IntoIter<V<'r>>),
}

impl<'r> Iterator for Elements<'r> {
    type Item = V<'r>;

    fn next(&mut self) -> Option<V<'r>> {
        match self {
            Elements::Json(items) => items.next().map(from_j),
            Elements::Consts(items) => items.next().map(from_const),
            Elements::Strs(items) => items.next().map(|s| V::Str(Cow::Borrowed(s.as_str()))),
            Elements::Made(items) => items.next(),
        }
    }
}

/// The pod spec inside a Pod, a workload's template or a CronJob's job template (as
/// `pod_spec` finds it for the interpreter); parts nested too deep are left to it.
pub(super) fn pod_spec<'r>(obj: &'r J<'r>) -> Result<Option<&'r J<'r>>, E> {
    match obj {
        J::Obj(_) => {}
        J::Arr(_) => return Ok(None),
        _ => return Err(E::Defer),
    }
    let path = |keys: &[&str]| -> Result<Option<&'r J<'r>>, E> {
        let mut v = obj;
        for k in keys {
            match v {
                J::Obj(_) => match v.get(k) {
                    Some(next) => v = next,
                    None => return Ok(None),
                },
                J::TooDeep => return Err(E::Defer),
                _ => return Ok(None),
            }
        }
        Ok(Some(v))
    };
    if let Some(spec) = path(&["spec", "template", "spec"])? {
        return Ok(Some(spec));
    }
    if let Some(spec) = path(&["spec", "jobTemplate", "spec", "template", "spec"])? {
        return Ok(Some(spec));
    }
    path(&["spec"])
}

pub(super) fn from_j<'r>(j: &'r J<'r>) -> V<'r> {
    match j {
        J::Null => V::Null,
        J::Bool(b) => V::Bool(*b),
        J::Int(i) => V::Int(*i),
        J::UInt(u) => V::UInt(*u),
        J::Double(d) => V::Double(*d),
        J::Str(s) => V::Str(Cow::Borrowed(*s)),
        J::Arr(_) | J::Obj(_) | J::TooDeep => V::Json(j),
    }
}

pub(super) fn from_const(c: &Const) -> V<'_> {
    match c {
        Const::Null => V::Null,
        Const::Bool(b) => V::Bool(*b),
        Const::Int(i) => V::Int(*i),
        Const::UInt(u) => V::UInt(*u),
        Const::Double(d) => V::Double(*d),
        Const::Str(s) => V::Str(Cow::Borrowed(s)),
    }
}

pub(super) fn from_cel<'r>(v: &dyn cel::common::value::Val) -> V<'r> {
    if let Some(b) = v.downcast_ref::<CelBool>() {
        V::Bool(*b.inner())
    } else if let Some(s) = v.downcast_ref::<CelString>() {
        V::Str(Cow::Owned(s.inner().to_string()))
    } else if let Some(i) = v.downcast_ref::<CelInt>() {
        V::Int(*i.inner())
    } else if let Some(u) = v.downcast_ref::<CelUInt>() {
        V::UInt(*u.inner())
    } else if let Some(d) = v.downcast_ref::<CelDouble>() {
        V::Double(*d.inner())
    } else if v.downcast_ref::<CelNull>().is_some() {
        V::Null
    } else {
        V::Opaque
    }
}

/// A value as JSON, as `output::to_json` renders the interpreter's; `None` where it must.
pub(super) fn to_json(v: &V<'_>) -> Option<serde_json::Value> {
    use serde_json::Value;
    let double = |d: f64| {
        serde_json::Number::from_f64(d)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    };
    Some(match v {
        V::Null => Value::Null,
        V::Bool(b) => Value::Bool(*b),
        V::Int(i) => Value::from(*i),
        V::UInt(u) => Value::from(*u),
        V::Double(d) => double(*d),
        V::Str(s) => Value::String(s.to_string()),
        V::Json(j) => j.to_json()?,
        V::List(l) => Value::Array(
            l.items
                .iter()
                .map(|c| match c {
                    Const::Null => Value::Null,
                    Const::Bool(b) => Value::Bool(*b),
                    Const::Int(i) => Value::from(*i),
                    Const::UInt(u) => Value::from(*u),
                    Const::Double(d) => double(*d),
                    Const::Str(s) => Value::String(s.clone()),
                })
                .collect(),
        ),
        V::Strs(s) => Value::Array(s.iter().map(|s| Value::String(s.clone())).collect()),
        V::Refs(r) => Value::Array(r.iter().map(|j| j.to_json()).collect::<Option<_>>()?),
        V::Items(items) => Value::Array(items.iter().map(to_json).collect::<Option<_>>()?),
        V::Opt(_) | V::Opaque => return None,
    })
}

/// Whether any of `items` equals `x`; `None` if one cannot be compared with it.
pub(super) fn any_equal<'r>(items: impl Iterator<Item = V<'r>>, x: &V<'_>) -> Option<bool> {
    let mut found = false;
    for item in items {
        found |= scalar_eq(&item, x)?;
    }
    Some(found)
}

/// The value inside an optional (`None` for an empty one); any other value as it is.
pub(super) fn present(v: V<'_>) -> Option<V<'_>> {
    match v {
        V::Opt(inner) => inner.map(from_j),
        v => Some(v),
    }
}

/// A value whose use the interpreter must see (it marks the evaluation as unusable).
pub(super) fn unusable(v: &V<'_>) -> bool {
    matches!(v, V::Json(J::TooDeep) | V::Opaque)
}

/// Equality of two scalars of one type; `None` for anything else (the interpreter decides).
pub(super) fn scalar_eq(x: &V<'_>, y: &V<'_>) -> Option<bool> {
    Some(match (x, y) {
        (V::Null, V::Null) => true,
        (V::Bool(a), V::Bool(b)) => a == b,
        (V::Int(a), V::Int(b)) => a == b,
        (V::UInt(a), V::UInt(b)) => a == b,
        (V::Double(a), V::Double(b)) => a == b,
        (V::Str(a), V::Str(b)) => a == b,
        _ => return None,
    })
}

/// `x in container`; `None` where the interpreter must decide.
pub(super) fn contains(container: &V<'_>, x: &V<'_>) -> Option<bool> {
    match (container, x) {
        (V::List(l), V::Str(s)) => l.strings.as_ref().map(|set| set.contains(s.as_ref())),
        (V::List(l), V::Int(i)) => l.ints.as_ref().map(|set| set.contains(i)),
        (V::Strs(list), V::Str(s)) => Some(list.iter().any(|item| item == s)),
        (V::Json(J::Obj(entries)), V::Str(s)) => Some(entries.iter().any(|(k, _)| k == s)),
        (V::Items(items), x) => any_equal(items.iter().cloned(), x),
        (V::Json(J::Arr(items)), x) => any_equal(items.iter().map(from_j), x),
        _ => None,
    }
}
