//! Compiling rule files into a [`RuleSet`]: every condition, macro, list, exception, output,
//! dedup key and window parsed, checked (unknown names, macro cycles, nesting depth, regexes)
//! and lowered to the compiled path, each problem reported with its file and line.

use super::*;

impl RuleSet {
    pub fn compile(source: RuleSource, matching: Matching) -> Result<RuleSet, LoadErrors> {
        let mut env = Env::stdlib();
        functions::register(&mut env);
        let env = Arc::new(env);
        let mut errors = Vec::new();
        let mut symbols = HashMap::new();
        symbols.insert("cluster".to_string(), Symbol::Cluster);
        symbols.insert("_top".to_string(), Symbol::Top);

        let mut lists = Vec::new();
        let mut native_lists = Vec::new();
        for (name, list) in &source.lists {
            if RESERVED.contains(&name.as_str()) {
                errors.push(item_error(
                    &list.origin,
                    "list",
                    name,
                    "shadows an event field; choose another name",
                ));
                continue;
            }
            symbols.insert(name.clone(), Symbol::List(lists.len()));
            lists.push(bind::list_to_val(&list.items));
            native_lists.push(Arc::new(compiled::LitList::from_scalars(&list.items)));
        }

        let mut macros = Vec::new();
        let mut macro_names = Vec::new();
        for (name, m) in &source.macros {
            if RESERVED.contains(&name.as_str()) || symbols.contains_key(name) {
                errors.push(item_error(
                    &m.origin,
                    "macro",
                    name,
                    "shadows an event field or a list; choose another name",
                ));
                continue;
            }
            match env.compile(&m.condition) {
                Ok(program) => {
                    symbols.insert(name.clone(), Symbol::Macro(macros.len()));
                    macros.push(program);
                    macro_names.push(name.clone());
                }
                Err(e) => errors.push(cel_error(&m.origin, "macro", name, "condition", &e)),
            }
        }
        if let Some(cycle) = macro_cycle(&macro_names, &macros) {
            let m = &source.macros[&cycle[0]];
            errors.push(item_error(
                &m.origin,
                "macro",
                &cycle[0],
                &format!("refers to itself: {}", cycle.join(" → ")),
            ));
        }

        // How deep each macro is, the macros it names counted in (none if they form a cycle).
        let mut macro_depths: HashMap<String, usize> = HashMap::new();
        if errors.is_empty() {
            fn depth_of(name: &str, names: &[String], macros: &[Program], memo: &mut HashMap<String, usize>) -> usize {
                if let Some(d) = memo.get(name) {
                    return *d;
                }
                let Some(i) = names.iter().position(|n| n == name) else {
                    return 0;
                };
                let mut inner = HashMap::new();
                for v in macros[i].references().variables() {
                    if names.iter().any(|n| n == v) {
                        let d = depth_of(v, names, macros, memo);
                        inner.insert(v.to_string(), d);
                    }
                }
                let d = expr_depth(macros[i].expression(), &|n| inner.get(n).copied().unwrap_or(0));
                memo.insert(name.to_string(), d);
                d
            }
            for name in &macro_names {
                let depth = depth_of(name, &macro_names, &macros, &mut macro_depths);
                if depth > MAX_EXPR_DEPTH {
                    errors.push(item_error(
                        &source.macros[name].origin,
                        "macro",
                        name,
                        &format!(
                            "is nested {depth} levels deep (the macros it names included); at most {MAX_EXPR_DEPTH}"
                        ),
                    ));
                }
            }
        }
        let depth_of = |expr: &Expression| expr_depth(expr, &|n| macro_depths.get(n).copied().unwrap_or(0));

        let scope = Scope {
            env: env.clone(),
            symbols,
            macros,
            lists,
        };
        let names = ScopeNames {
            scope: &scope,
            source: &source,
        };
        let mut rules = Vec::new();
        let mut routes = Vec::new();
        for def in source.rules.values() {
            let what = |e: &str| item_error(&def.origin, "rule", &def.name, e);
            let window_sources = match def.stateful.as_ref().map(stateful::window_sources).transpose() {
                Ok(w) => w,
                Err(e) => {
                    errors.push(what(&e));
                    continue;
                }
            };
            let mut compile_part = |part: &str, src: &str| match env.compile(src) {
                Ok(p) => {
                    let depth = depth_of(p.expression());
                    if depth > MAX_EXPR_DEPTH {
                        errors.push(what(&format!(
                            "{part} is nested {depth} levels deep (the macros it names included); at most {MAX_EXPR_DEPTH}"
                        )));
                        return None;
                    }
                    for name in unknown_names(&p, &scope) {
                        errors.push(what(&format!(
                            "{part} names `{name}`, which is no event field, macro or list"
                        )));
                    }
                    Some(p)
                }
                Err(e) => {
                    errors.push(cel_error(&def.condition_origin, "rule", &def.name, part, &e));
                    None
                }
            };
            let condition = match compile_part("condition", &def.condition) {
                Some(p) => p,
                None => continue,
            };
            let window = match window_sources {
                None => None,
                Some(w) => {
                    let key: Vec<Program> = w
                        .key
                        .iter()
                        .filter_map(|k| compile_part(&format!("window key `{k}`"), k))
                        .collect();
                    let field = w.field.as_ref().and_then(|f| compile_part("distinct field", f));
                    let steps: Vec<Program> = w
                        .steps
                        .iter()
                        .enumerate()
                        .filter_map(|(i, s)| compile_part(&format!("sequence step {}", i + 1), s))
                        .collect();
                    if key.len() != w.key.len() || steps.len() != w.steps.len() || field.is_none() != w.field.is_none()
                    {
                        continue;
                    }
                    Some(Window {
                        policy: w.policy,
                        key,
                        field,
                        steps,
                    })
                }
            };
            // A sequence rule matches an event that matches any of its steps.
            let condition = match &window {
                Some(w) if !w.steps.is_empty() => {
                    let steps = def.stateful.as_ref().map(sequence_steps).unwrap_or_default();
                    let any = steps.iter().map(|s| format!("({s})")).collect::<Vec<_>>().join(" || ");
                    match env.compile(&format!("({}) && ({any})", def.condition)) {
                        Ok(p) => p,
                        Err(e) => {
                            errors.push(cel_error(&def.condition_origin, "rule", &def.name, "condition", &e));
                            continue;
                        }
                    }
                }
                _ => condition,
            };
            let mut exceptions = Vec::new();
            for exc in &def.exceptions {
                let compiled = exception_source(exc, &scope)
                    .and_then(|src| env.compile(&src).map_err(|e| e.to_string()))
                    .and_then(|p| match depth_of(p.expression()) {
                        depth if depth > MAX_EXPR_DEPTH => {
                            Err(format!("is nested {depth} levels deep; at most {MAX_EXPR_DEPTH}"))
                        }
                        _ => Ok(p),
                    });
                match compiled {
                    Ok(p) => exceptions.push((exc.name.clone(), p)),
                    Err(e) => errors.push(what(&format!("exception '{}': {e}", exc.name))),
                }
            }
            let output = match output::Template::compile(&env, &def.output) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(what(&format!("output: {e}")));
                    continue;
                }
            };
            let (dedup, key_sources) = match stateful::dedup_setting(def.dedup.as_ref()) {
                Ok(d) => d,
                Err(e) => {
                    errors.push(what(&format!("dedup: {e}")));
                    continue;
                }
            };
            let mut dedup_key = Vec::new();
            for src in &key_sources {
                match env.compile(src) {
                    Ok(p) => dedup_key.push(p),
                    Err(e) => errors.push(what(&format!("dedup key `{src}`: {e}"))),
                }
            }
            let programs = std::iter::once(&condition)
                .chain(exceptions.iter().map(|(_, p)| p))
                .chain(output.programs())
                .chain(window.iter().flat_map(|w| w.key.iter().chain(&w.field).chain(&w.steps)));
            for program in programs {
                if let Err(e) = check_regexes(program.expression()) {
                    errors.push(what(&e));
                }
            }
            // A rule that requires lists is quiet while any of them is empty.
            let mut empty = Vec::new();
            for list in &def.meta.requires {
                match source.lists.get(list) {
                    Some(l) if l.items.is_empty() => empty.push(list.clone()),
                    Some(_) => {}
                    None => errors.push(what(&format!("requires `{list}`, which is no list"))),
                }
            }
            let dormant = (!empty.is_empty()).then(|| empty.join(", "));
            let route = prefilter::analyze(condition.expression(), &names);
            let reads = prefilter::reads(condition.expression(), &names);
            routes.push((def.enabled && dormant.is_none()).then(|| route.clone()));
            rules.push(Rule {
                name: def.name.clone(),
                desc: def.desc.clone(),
                priority: def.priority,
                tags: def.tags.clone(),
                enabled: def.enabled,
                dormant,
                origin: def.origin.clone(),
                condition,
                exceptions,
                output,
                dedup_key,
                dedup,
                window,
                stats: RuleStats::default(),
                meta: def.meta.clone(),
                route,
                reads,
            });
        }
        for (m, name) in scope.macros.iter().zip(&macro_names) {
            if let Err(e) = check_regexes(m.expression()) {
                errors.push(item_error(&source.macros[name].origin, "macro", name, &e));
            }
        }
        if !errors.is_empty() {
            return Err(LoadErrors(errors));
        }
        let prefilter = Prefilter::new(&routes);
        let all = scope
            .macros
            .iter()
            .map(Program::expression)
            .chain(rules.iter().flat_map(|r| {
                std::iter::once(&r.condition)
                    .chain(r.output.programs())
                    .chain(&r.dedup_key)
                    .chain(
                        r.window
                            .iter()
                            .flat_map(|w| w.key.iter().chain(&w.field).chain(&w.steps)),
                    )
                    .map(Program::expression)
            }));
        let mut compiler = compiled::Compiler::new(&scope.symbols, native_lists, all);
        for m in &scope.macros {
            compiler.add_macro(m.expression());
        }
        for rule in &rules {
            compiler.add_rule(
                rule.condition.expression(),
                rule.output.programs().map(Program::expression),
                rule.dedup_key.iter().map(Program::expression),
                rule.window
                    .iter()
                    .flat_map(|w| w.key.iter().chain(&w.field).chain(&w.steps))
                    .map(Program::expression),
            );
        }
        let compiled = compiler.finish();
        Ok(RuleSet {
            degraded: degraded_rule(&env),
            scope,
            rules,
            prefilter,
            matching,
            compiled,
            profiling: false,
        })
    }
}

/// What a stateful rule's match feeds its window: key, distinct value, steps matched.
fn sequence_steps(def: &rules::StatefulDef) -> Vec<String> {
    match def {
        rules::StatefulDef::Sequence(s) => s.steps.clone(),
        _ => Vec::new(),
    }
}

struct ScopeNames<'a> {
    scope: &'a Scope,
    source: &'a RuleSource,
}

impl Names for ScopeNames<'_> {
    fn macro_expr(&self, name: &str) -> Option<&Expression> {
        match self.scope.symbols.get(name) {
            Some(Symbol::Macro(i)) => Some(self.scope.macros[*i].expression()),
            _ => None,
        }
    }
    fn list_strings(&self, name: &str) -> Option<Vec<String>> {
        let list = self.source.lists.get(name)?;
        list.items
            .iter()
            .map(|i| match i {
                Scalar::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Free names of a condition that nothing defines (comprehension variables excluded).
fn unknown_names(program: &Program, scope: &Scope) -> Vec<String> {
    let mut bound = HashSet::new();
    collect_bound(program.expression(), &mut bound);
    let mut names: Vec<String> = program
        .references()
        .variables()
        .into_iter()
        .filter(|v| !bound.contains(*v) && !scope.symbols.contains_key(*v) && !RESERVED.contains(v))
        .map(|v| v.to_string())
        .collect();
    names.sort();
    names
}

fn collect_bound(expr: &Expression, out: &mut HashSet<String>) {
    walk(expr, &mut |e| {
        if let Expr::Comprehension(c) = &e.expr {
            out.insert(c.iter_var.clone());
            out.extend(c.iter_var2.clone());
            out.insert(c.accu_var.clone());
        }
    });
}

/// Visits every node of an expression, without recursion (a chain of 1,500 `+` is 1,500 deep).
fn walk(expr: &Expression, f: &mut dyn FnMut(&Expression)) {
    let mut stack = vec![expr];
    while let Some(e) = stack.pop() {
        f(e);
        stack.extend(children(e));
    }
}

/// The direct subexpressions of a node.
fn children(expr: &Expression) -> Vec<&Expression> {
    match &expr.expr {
        Expr::Call(call) => call.target.iter().map(|t| &**t).chain(call.args.iter()).collect(),
        Expr::Comprehension(c) => vec![&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result],
        Expr::List(l) => l.elements.iter().collect(),
        Expr::Map(m) => m
            .entries
            .iter()
            .flat_map(|entry| match &entry.expr {
                cel::common::ast::EntryExpr::MapEntry(me) => vec![&me.key, &me.value],
                _ => Vec::new(),
            })
            .collect(),
        Expr::Select(s) => vec![&s.operand],
        _ => Vec::new(),
    }
}

/// Deepest expression a condition, macro or output placeholder may be, the macros it names
/// counted in. The interpreter recurses once per level (about 2 KiB of stack a level in a
/// release build, tens of KiB in a debug one): a rule past this is a load error, so that no
/// rule can overflow a detector's stack.
pub const MAX_EXPR_DEPTH: usize = 100;

/// How deep `expr` is, a macro named in it counting as deep as `macro_depth` says.
fn expr_depth(expr: &Expression, macro_depth: &dyn Fn(&str) -> usize) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(expr, 1usize)];
    while let Some((e, depth)) = stack.pop() {
        let named = match &e.expr {
            Expr::Ident(name) => macro_depth(name),
            _ => 0,
        };
        deepest = deepest.max(depth + named);
        stack.extend(children(e).into_iter().map(|c| (c, depth + 1)));
    }
    deepest
}

/// Compiles every literal pattern of `matches` now: a bad regex is a load error, and the
/// pattern is in the cache before the first event.
fn check_regexes(expr: &Expression) -> Result<(), String> {
    let mut result = Ok(());
    walk(expr, &mut |e| {
        if let Expr::Call(call) = &e.expr {
            if call.func_name == "matches" {
                if let Some(Expr::Literal(LiteralValue::String(p))) = call.args.last().map(|a| &a.expr) {
                    if let Err(err) = functions::compiled_regex(p.inner()) {
                        result = Err(format!("regex '{}' does not compile: {err}", p.inner()));
                    }
                }
            }
        }
    });
    result
}

/// Finds a macro that reaches itself through other macros.
fn macro_cycle(names: &[String], programs: &[Program]) -> Option<Vec<String>> {
    let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let deps: Vec<Vec<usize>> = programs
        .iter()
        .map(|p| {
            p.references()
                .variables()
                .iter()
                .filter_map(|v| index.get(*v).copied())
                .collect()
        })
        .collect();
    fn visit(n: usize, deps: &[Vec<usize>], state: &mut [u8], path: &mut Vec<usize>) -> bool {
        if state[n] == 1 {
            path.push(n);
            return true;
        }
        if state[n] == 2 {
            return false;
        }
        state[n] = 1;
        path.push(n);
        for &d in &deps[n] {
            if visit(d, deps, state, path) {
                return true;
            }
        }
        path.pop();
        state[n] = 2;
        false
    }
    let mut state = vec![0u8; names.len()];
    for start in 0..names.len() {
        let mut path = Vec::new();
        if visit(start, &deps, &mut state, &mut path) {
            let last = *path.last()?;
            let from = path.iter().position(|&n| n == last)?;
            return Some(path[from..].iter().map(|&n| names[n].clone()).collect());
        }
    }
    None
}

/// An exception as one CEL condition: any tuple of values whose every field compares true.
fn exception_source(exc: &ExceptionDef, scope: &Scope) -> Result<String, String> {
    if let Some(condition) = &exc.condition {
        if !exc.fields.is_empty() || !exc.values.is_empty() {
            return Err("has both `condition` and `fields`/`values`".into());
        }
        return Ok(condition.clone());
    }
    if exc.fields.is_empty() {
        return Err("needs `fields` and `values`, or a `condition`".into());
    }
    if !exc.comps.is_empty() && exc.comps.len() != exc.fields.len() {
        return Err(format!("has {} fields but {} comps", exc.fields.len(), exc.comps.len()));
    }
    // One list of value tuples and one test over a tuple: as deep for 5,000 tuples as for one
    // (a chain of `||` would be as deep as the list is long).
    let mut tuples = Vec::new();
    for tuple in &exc.values {
        if tuple.len() != exc.fields.len() {
            return Err(format!(
                "a value tuple has {} values for {} fields",
                tuple.len(),
                exc.fields.len()
            ));
        }
        let values: Vec<String> = tuple
            .iter()
            .map(|value| match value {
                // A string naming a list stands for the list, as in Falco.
                ExceptionValue::One(Scalar::String(s)) if matches!(scope.symbols.get(s), Some(Symbol::List(_))) => {
                    s.clone()
                }
                ExceptionValue::One(v) => cel_literal(v),
                ExceptionValue::Many(vs) => format!("[{}]", vs.iter().map(cel_literal).collect::<Vec<_>>().join(", ")),
            })
            .collect();
        tuples.push(format!("[{}]", values.join(", ")));
    }
    if tuples.is_empty() {
        return Ok("false".into());
    }
    let mut terms = Vec::new();
    for (i, field) in exc.fields.iter().enumerate() {
        let comp = exc.comps.get(i).map(String::as_str).unwrap_or("==");
        let value = format!("__t[{i}]");
        terms.push(match comp {
            "==" | "=" => format!("({field}) == {value}"),
            "!=" => format!("({field}) != {value}"),
            "in" => format!("({field}) in {value}"),
            "startsWith" | "startswith" => format!("({field}).startsWith({value})"),
            "endsWith" | "endswith" => format!("({field}).endsWith({value})"),
            "contains" => format!("({field}).contains({value})"),
            other => {
                return Err(format!(
                    "comparison `{other}` is not one of ==, !=, in, startsWith, endsWith, contains"
                ))
            }
        });
    }
    Ok(format!("[{}].exists(__t, {})", tuples.join(", "), terms.join(" && ")))
}

fn cel_literal(value: &Scalar) -> String {
    match value {
        Scalar::Bool(b) => b.to_string(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => format!("{f:?}"),
        Scalar::String(s) => serde_json::to_string(s).unwrap_or_default(),
    }
}

fn item_error(origin: &Origin, kind: &str, name: &str, message: &str) -> LoadError {
    LoadError {
        origin: origin.clone(),
        item: format!("{kind} '{name}'"),
        message: message.to_string(),
    }
}

fn cel_error(origin: &Origin, kind: &str, name: &str, part: &str, e: &cel::ParseErrors) -> LoadError {
    let messages: Vec<String> = e
        .errors
        .iter()
        .map(|pe| {
            format!(
                "{part}: {} (line {}, column {} of the expression)",
                pe.msg,
                pe.pos.0,
                pe.pos.1 + 1
            )
        })
        .collect();
    item_error(origin, kind, name, &messages.join("; "))
}
