//! Binds one event to CEL, lazily: a top-level field becomes a CEL value the first time a rule
//! reads it, and strings are borrowed from the event's text, not copied. Macros are evaluated
//! once per event on first use and their result shared by every rule that names them; lists
//! are values built once per rule set.

use crate::audit::EventView;
use cel::common::types::{CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, Program};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// Top-level event fields that hold objects: when absent they read as `{}`, so that
/// `has(requestObject.spec)` is false rather than an error.
pub(crate) const OBJECT_FIELDS: &[&str] = &[
    "objectRef",
    "user",
    "impersonatedUser",
    "responseStatus",
    "requestObject",
    "responseObject",
    "annotations",
    "authenticationMetadata",
];

/// What a name in a condition refers to, besides event fields.
pub enum Symbol {
    Macro(usize),
    List(usize),
    Cluster,
    /// `_top`: the event's top-level fields but `requestObject` as one map, for rules imported
    /// from Falco (which read fields that may be absent without failing).
    Top,
}

/// Everything of a rule set that bindings need: the names, the macros and the lists.
pub struct Scope {
    pub env: Arc<Env>,
    pub symbols: HashMap<String, Symbol>,
    pub macros: Vec<Program>,
    pub lists: Vec<Box<dyn Val>>,
}

/// One event's variables, converted on first use.
pub struct Bindings<'e> {
    scope: &'e Scope,
    view: &'e EventView<'e>,
    cluster: &'e str,
    fields: Vec<OnceLock<Option<Box<dyn Val + 'e>>>>,
    macros: Vec<OnceLock<Option<Box<dyn Val>>>>,
    empty: CelMap<'static>,
    top: OnceLock<Box<dyn Val + 'e>>,
}

impl<'e> Bindings<'e> {
    pub fn new(scope: &'e Scope, view: &'e EventView<'e>, cluster: &'e str) -> Bindings<'e> {
        Bindings {
            scope,
            view,
            cluster,
            fields: (0..view.fields().count()).map(|_| OnceLock::new()).collect(),
            macros: (0..scope.macros.len()).map(|_| OnceLock::new()).collect(),
            empty: CelMap::from(HashMap::new()),
            top: OnceLock::new(),
        }
    }

    fn top(&self) -> CowVal<'_, '_> {
        let top = self.top.get_or_init(|| {
            let mut map = HashMap::new();
            for (key, raw) in self.view.fields() {
                if key == "requestObject" {
                    continue;
                }
                if let Ok(value) = json_to_val(raw) {
                    map.insert(CelMapKey::String(CelString::from(key.to_string())), value);
                }
            }
            Box::new(CelMap::from(map))
        });
        CowVal::Borrowed(&**top)
    }

    /// A context whose variables are this event's.
    pub fn context(&self) -> Context<'_, '_> {
        let mut ctx = Context::with_env(self.scope.env.clone());
        ctx.set_variable_resolver(self);
        ctx
    }

    fn field(&self, name: &str) -> Option<CowVal<'_, '_>> {
        let Some(index) = self.view.fields().position(|(k, _)| k == name) else {
            return OBJECT_FIELDS
                .contains(&name)
                .then(|| CowVal::Borrowed(&self.empty as &dyn Val));
        };
        let raw = self.view.fields().nth(index).map(|(_, raw)| raw)?;
        let value = self.fields[index].get_or_init(|| json_to_val(raw).ok());
        value.as_deref().map(CowVal::Borrowed)
    }

    pub(crate) fn macro_value(&self, index: usize) -> Option<CowVal<'_, '_>> {
        let value = self.macros[index].get_or_init(|| {
            let program = &self.scope.macros[index];
            let outer = take_unusable();
            // The value as the evaluation left it (a JSON value copied with its unusable parts),
            // else converted through `cel::Value`.
            let result = catch_panic(|| {
                let context = self.context();
                cel::Value::resolve_val(program.expression(), &context).map(|v| match owned(&*v) {
                    Some(v) => Ok(v),
                    None => match program.execute(&context) {
                        Ok(value) => Box::<dyn Val>::try_from(value).map_err(|_| ()),
                        Err(_) => Err(()),
                    },
                })
            });
            let inner = take_unusable();
            mark_unusable(outer.or(inner));
            let is_true = |v: &dyn Val| v.downcast_ref::<CelBool>().is_some_and(|b| *b.inner());
            match result {
                // A match is a match; anything else that read an unusable value is unusable.
                Ok(Ok(Ok(v))) if is_true(&*v) => Some(v),
                _ if inner.is_some() => Some(Box::new(Unusable::MacroFailed) as Box<dyn Val>),
                // A field the event lacks: the macro is absent, as the field is.
                Ok(Err(cel::ExecutionError::NoSuchKey(_) | cel::ExecutionError::UndeclaredReference(_))) => None,
                Ok(Ok(Ok(v))) => Some(v),
                Ok(Ok(Err(()))) | Ok(Err(_)) | Err(_) => Some(Box::new(Unusable::MacroFailed) as Box<dyn Val>),
            }
        });
        value.as_deref().map(CowVal::Borrowed)
    }
}

impl VariableResolver for Bindings<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match self.scope.symbols.get(variable) {
            Some(Symbol::Macro(i)) => self.macro_value(*i),
            Some(Symbol::List(i)) => Some(CowVal::Borrowed(&*self.scope.lists[*i])),
            Some(Symbol::Cluster) => Some(CowVal::owned(CelString::from(self.cluster))),
            Some(Symbol::Top) => Some(self.top()),
            None => self.field(variable),
        }
    }
}

/// Runs `f`, turning a panic inside the CEL interpreter into an error instead of a crash.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into())
    })
}

/// Deepest nesting of a field's value that becomes CEL values. A value nested deeper (an
/// attacker can nest a patch body thousands of levels) becomes [`Unusable::TooDeep`]: the rest of the
/// field still converts, so rules reading its shallow parts evaluate as usual, and a rule that
/// reaches the deep part gets an evaluation error, never "absent" ([`Unusable`]). The same depth
/// as an event's value ([`crate::audit::MAX_VALUE_DEPTH`]), so what a rule reads, what an alert
/// shows and what redaction walks stop at one place.
pub const MAX_VALUE_DEPTH: usize = crate::audit::MAX_VALUE_DEPTH;

/// Converts raw JSON to a CEL value in one pass, borrowing strings that have no escapes.
/// Values nested deeper than [`MAX_VALUE_DEPTH`] become [`Unusable::TooDeep`].
pub fn json_to_val(raw: &str) -> Result<Box<dyn Val + '_>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(raw);
    JsonSeed { depth: 0 }.deserialize(&mut de)
}

thread_local! {
    static UNUSABLE_READ: std::cell::Cell<Option<Unusable>> = const { std::cell::Cell::new(None) };
}

/// Returns (and clears) what [`Unusable`] value an evaluation on this thread has read.
pub fn take_unusable() -> Option<Unusable> {
    UNUSABLE_READ.with(|c| c.take())
}

/// Marks that an evaluation on this thread read an [`Unusable`] value (the first one counts).
pub fn mark_unusable(u: Option<Unusable>) {
    if let Some(u) = u {
        UNUSABLE_READ.with(|c| {
            if c.get().is_none() {
                c.set(Some(u))
            }
        });
    }
}

static UNUSABLE_TYPE: cel::common::types::Type = cel::common::types::Type::new_unspecified_type("kaudit.unusable");

/// A value a condition cannot use: one nested deeper than [`MAX_VALUE_DEPTH`], or a macro
/// whose evaluation failed. Every operation on it fails (it has no fields, no elements, no
/// size, no conversion); only `==` cannot fail in CEL, and it is false. Whatever touches it
/// marks the evaluation ([`take_unusable`]), so the engine reports the rule's result as an
/// error instead of trusting a "no match" that may be this value's doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    TooDeep,
    MacroFailed,
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::TooDeep => write!(
                f,
                "the condition read a value nested deeper than {MAX_VALUE_DEPTH} levels"
            ),
            Unusable::MacroFailed => f.write_str("a macro the condition uses could not be evaluated"),
        }
    }
}

impl Val for Unusable {
    fn get_type(&self) -> &cel::common::types::Type {
        mark_unusable(Some(*self));
        &UNUSABLE_TYPE
    }
    fn cel_type() -> &'static cel::common::types::Type {
        &UNUSABLE_TYPE
    }
    fn equals(&self, _other: &dyn Val) -> bool {
        mark_unusable(Some(*self));
        false
    }
    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v> {
        Box::new(*self)
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl cel::common::value::StaticVal for Unusable {}

/// A copy of an event's value that borrows nothing, its unusable parts kept as they are: a value
/// macro (an object of the event) then fails only where a rule reads such a part, as the field
/// itself does. `None` for a value that is no JSON value. Its depth is that of the converted
/// field, at most [`MAX_VALUE_DEPTH`].
fn owned(v: &dyn Val) -> Option<Box<dyn Val>> {
    if let Some(u) = v.downcast_ref::<Unusable>() {
        return Some(Box::new(*u));
    }
    if let Some(s) = v.downcast_ref::<CelString>() {
        return Some(Box::new(CelString::from(s.inner().to_string())));
    }
    if let Some(l) = v.downcast_ref::<CelList>() {
        let items: Option<Vec<Box<dyn Val>>> = l.inner().iter().map(|i| owned(&**i)).collect();
        return Some(Box::new(CelList::from(items?)));
    }
    if let Some(m) = v.downcast_ref::<CelMap>() {
        let mut entries: HashMap<CelMapKey<'static>, Box<dyn Val>> = HashMap::new();
        for (k, v) in m.inner() {
            let key = match k {
                CelMapKey::String(s) => CelMapKey::from(s.inner().to_string()),
                CelMapKey::Int(i) => CelMapKey::from(*i.inner()),
                CelMapKey::UInt(u) => CelMapKey::from(*u.inner()),
                CelMapKey::Bool(b) => CelMapKey::from(*b.inner()),
            };
            entries.insert(key, owned(&**v)?);
        }
        return Some(Box::new(CelMap::from(entries)));
    }
    if let Some(b) = v.downcast_ref::<CelBool>() {
        return Some(Box::new(CelBool::from(*b.inner())));
    }
    if let Some(i) = v.downcast_ref::<CelInt>() {
        return Some(Box::new(CelInt::from(*i.inner())));
    }
    if let Some(u) = v.downcast_ref::<CelUInt>() {
        return Some(Box::new(CelUInt::from(*u.inner())));
    }
    if let Some(d) = v.downcast_ref::<CelDouble>() {
        return Some(Box::new(CelDouble::from(*d.inner())));
    }
    v.downcast_ref::<CelNull>().map(|_| Box::new(CelNull) as Box<dyn Val>)
}

struct JsonSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for JsonSeed {
    type Value = Box<dyn Val + 'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        if self.depth > MAX_VALUE_DEPTH {
            // Skipped without recursion (serde_json reads a raw value with a loop).
            let _: &serde_json::value::RawValue = Deserialize::deserialize(d)?;
            return Ok(Box::new(Unusable::TooDeep));
        }
        d.deserialize_any(JsonVisitor { depth: self.depth })
    }
}

struct JsonVisitor {
    depth: usize,
}

/// A map's value: `None` when it is `null` (the field is then absent). Its type is known while
/// it is read, without asking the value (an `Unusable` value asked for its type counts as read).
struct FieldSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = Option<Box<dyn Val + 'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        if self.depth > MAX_VALUE_DEPTH {
            return JsonSeed { depth: self.depth }.deserialize(d).map(Some);
        }
        d.deserialize_any(FieldVisitor(JsonVisitor { depth: self.depth }))
    }
}

struct FieldVisitor(JsonVisitor);

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Option<Box<dyn Val + 'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.0.visit_bool(v).map(Some)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.0.visit_i64(v).map(Some)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.0.visit_u64(v).map(Some)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.0.visit_f64(v).map(Some)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        self.0.visit_borrowed_str(v).map(Some)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.0.visit_str(v).map(Some)
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        self.0.visit_string(v).map(Some)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(seq).map(Some)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(map).map(Some)
    }
}

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Box<dyn Val + 'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Box::new(CelBool::from(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Box::new(CelInt::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        // JSON has one number type: keep integers `int` where they fit, as Kubernetes' CEL does.
        Ok(match i64::try_from(v) {
            Ok(i) => Box::new(CelInt::from(i)),
            Err(_) => Box::new(CelUInt::from(v)),
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Box::new(CelDouble::from(v)))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Box::new(CelString::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Box::new(CelString::from(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Box::new(CelString::from(v)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Box::new(CelNull))
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Box::new(CelNull))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items: Vec<Box<dyn Val + 'de>> = Vec::with_capacity(seq.size_hint().unwrap_or(4));
        while let Some(item) = seq.next_element_seed(JsonSeed { depth: self.depth + 1 })? {
            items.push(item);
        }
        Ok(Box::new(CelList::from(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries: HashMap<CelMapKey<'de>, Box<dyn Val + 'de>> =
            HashMap::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(crate::audit::CowStr(key)) = map.next_key()? {
            let key = match key {
                std::borrow::Cow::Borrowed(k) => CelMapKey::from(k),
                std::borrow::Cow::Owned(k) => CelMapKey::from(k),
            };
            // A null field is an absent one (see `crate::engine::json`); a later duplicate wins.
            match map.next_value_seed(FieldSeed { depth: self.depth + 1 })? {
                Some(value) => entries.insert(key, value),
                None => entries.remove(&key),
            };
        }
        Ok(Box::new(CelMap::from(entries)))
    }
}

/// A list of a rule file as a CEL value.
pub fn list_to_val(items: &[crate::engine::rules::Scalar]) -> Box<dyn Val> {
    use crate::engine::rules::Scalar;
    let items: Vec<Box<dyn Val>> = items
        .iter()
        .map(|item| -> Box<dyn Val> {
            match item {
                Scalar::Bool(b) => Box::new(CelBool::from(*b)),
                Scalar::Int(i) => Box::new(CelInt::from(*i)),
                Scalar::Float(f) => Box::new(CelDouble::from(*f)),
                Scalar::String(s) => Box::new(CelString::from(s.clone())),
            }
        })
        .collect();
    Box::new(CelList::from(items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_becomes_cel_values_with_borrowed_strings() {
        let raw = r#"{"a":[1,"x",true,null,2.5],"b\u0041":"y\n"}"#;
        let val = json_to_val(raw).unwrap();
        let value = cel::Value::try_from(&*val).unwrap();
        let text = format!("{value:?}");
        assert!(
            text.contains("Int(1)") && text.contains("\"x\"") && text.contains("Float(2.5)"),
            "{text}"
        );
        assert!(text.contains("bA"), "{text}");
        // A null field is absent (a later duplicate wins); a null list item stays.
        let val = json_to_val(r#"{"a":1,"a":null,"b":null,"c":[null],"d":null,"d":2}"#).unwrap();
        let text = format!("{:?}", cel::Value::try_from(&*val).unwrap());
        assert!(!text.contains("\"a\"") && !text.contains("\"b\""), "{text}");
        assert!(text.contains("Null") && text.contains("Int(2)"), "{text}");
    }
}
