use cel::common::types::*;
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, ExecutionError};
use std::sync::{Arc, OnceLock};

struct R<'a> {
    s: &'a str,
    obj: OnceLock<Box<dyn Val + 'a>>,
}
impl<'a> VariableResolver for R<'a> {
    fn resolve<'b>(&'b self, v: &str) -> Option<CowVal<'b, 'b>> {
        match v {
            "verb" => Some(CowVal::owned(CelString::from(self.s))),
            "requestObject" => {
                let o = self.obj.get_or_init(|| {
                    let m: std::collections::HashMap<CelMapKey, Box<dyn Val>> = [(
                        CelMapKey::from("spec".to_string()),
                        Box::new(CelString::from("x".to_string())) as Box<dyn Val>,
                    )]
                    .into_iter()
                    .collect();
                    Box::new(CelMap::from(m))
                });
                Some(CowVal::Borrowed(&**o))
            }
            "str" => Some(CowVal::owned(CelString::from("abc"))),
            _ => None,
        }
    }
}

fn my_matches<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let s = args[0].downcast_ref::<CelString>().map(|s| s.inner().to_string());
    let p = args[1].downcast_ref::<CelString>().map(|s| s.inner().to_string());
    Ok(CowVal::owned(CelBool::from(s.is_some() && p.is_some() && s.unwrap().contains(&p.unwrap()))))
}

fn assert_send_sync<T: Send + Sync>() {}

fn main() {
    assert_send_sync::<Env>();
    assert_send_sync::<cel::Program>();
    let mut env = Env::stdlib();
    env.add_overload("matches", "m_g", vec![STRING_TYPE, STRING_TYPE], my_matches).unwrap();
    env.add_member_overload("matches", "m_m", STRING_TYPE, vec![STRING_TYPE], my_matches).unwrap();
    let env = Arc::new(env);
    let root: Context<'static, 'static> = Context::with_env(env.clone());
    for src in [
        "verb == 'create'",
        "verb.matches('cre')",
        "matches(verb, 'zz')",
        "missing == 'x'",
        "missing == 'x' || true",
        "requestObject.spec == 'x'",
        "requestObject.nope == 'x'",
        "has(requestObject.nope)",
        "str.spec == 'x'",
        "str.exists(c, c == 'a')",
        "verb.exists(c, c.securityContext.privileged == true)",
        "null.exists(c, true)",
        "str.foo.bar",
        "[1,2].exists(c, c.x == 1)",
        "size(str) > 1",
        "verb in ['a','create']",
    ] {
        let p = env.compile(src).unwrap();
        let r = R { s: "create", obj: OnceLock::new() };
        let mut ctx = root.new_inner_scope();
        ctx.set_variable_resolver(&r);
        println!("{src:50} => {:?}", p.execute(&ctx));
    }
    let p = env.compile("a && (b || c.d == 'x') && verb in ['get']").unwrap();
    println!("{:#?}", p.expression());
}
