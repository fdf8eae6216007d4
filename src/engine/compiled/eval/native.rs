//! The kaudit and Kubernetes library functions the compiled path runs natively: the image
//! reference parts (`image_registry`, …), `exec_command`,
//! the strings extension's `join` and `split`, and the network library's `isIP` and
//! `cidr(…).containsIP(…)`. Each gives what the interpreter's gives; any case it does not model
//! (a wrong type, an address that does not parse, an empty separator) is deferred to the
//! interpreter, which answers it, errors included.

use super::{elements, E, V};
use crate::engine::compiled::{ImagePart, NativeFn};
use crate::engine::functions::{exec_args, parse_image};
use crate::engine::net::{parse_cidr, parse_ip};
use std::borrow::Cow;
use std::rc::Rc;

pub(super) fn call<'r>(f: NativeFn, mut args: Vec<V<'r>>) -> Result<V<'r>, E> {
    Ok(match (f, args.as_slice()) {
        (NativeFn::Image(part), [V::Str(image)]) => {
            let image = parse_image(image);
            V::Str(Cow::Owned(
                match part {
                    ImagePart::Registry => image.registry,
                    ImagePart::Repository => image.repository,
                    ImagePart::Tag => image.tag,
                    ImagePart::Digest => image.digest,
                }
                .to_string(),
            ))
        }
        (NativeFn::ExecCommand, [V::Str(uri)]) => owned_strings(exec_args(uri)),
        (NativeFn::Split, [V::Str(s), V::Str(sep)]) if !sep.is_empty() => {
            owned_strings(s.split(sep.as_ref()).map(str::to_string).collect())
        }
        (NativeFn::SplitFirst, [V::Str(s), V::Str(sep)]) if !sep.is_empty() => V::Str(match s {
            Cow::Borrowed(s) => {
                let s: &'r str = s;
                Cow::Borrowed(s.split(sep.as_ref()).next().unwrap_or_default())
            }
            Cow::Owned(s) => Cow::Owned(s.split(sep.as_ref()).next().unwrap_or_default().to_string()),
        }),
        (NativeFn::Join, [_] | [_, V::Str(_)]) => {
            let sep = match args.pop() {
                Some(V::Str(sep)) if !args.is_empty() => sep,
                Some(list) => {
                    args.push(list);
                    Cow::Borrowed("")
                }
                None => return Err(E::Defer),
            };
            let list = args.pop().ok_or(E::Defer)?;
            // A map's keys come in an order the interpreter does not share.
            if matches!(list, V::Json(crate::engine::json::J::Obj(_))) {
                return Err(E::Defer);
            }
            let mut parts = Vec::new();
            for item in elements(list)? {
                match item {
                    V::Str(s) => parts.push(s),
                    _ => return Err(E::Defer),
                }
            }
            V::Str(Cow::Owned(parts.join(sep.as_ref())))
        }
        (NativeFn::IsIp, [V::Str(s)]) => V::Bool(parse_ip(s).is_ok()),
        (NativeFn::CidrContainsIp, [V::Str(net), V::Str(ip)]) => match (parse_cidr(net), parse_ip(ip)) {
            (Ok(net), Ok(ip)) => V::Bool(net.contains(&ip)),
            _ => return Err(E::Defer),
        },
        _ => return Err(E::Defer),
    })
}

fn owned_strings<'r>(items: Vec<String>) -> V<'r> {
    V::Items(Rc::new(items.into_iter().map(|s| V::Str(Cow::Owned(s))).collect()))
}
