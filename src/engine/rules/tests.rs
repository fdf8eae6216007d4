//! The loader: positions, overrides, errors, and Falco files through it.

use super::*;

fn load(files: &[(&str, &str)]) -> Result<RuleSource, Vec<LoadError>> {
    let mut source = RuleSource::default();
    let mut errors = Vec::new();
    for (name, text) in files {
        source.apply_text(name, text, &mut errors);
    }
    if errors.is_empty() {
        Ok(source)
    } else {
        Err(errors)
    }
}

const BASE: &str = r#"
- list: trusted
  items: [a, b]
- macro: is_create
  condition: verb == 'create'
- rule: R
  desc: d
  condition: is_create
  output: out {user.username}
  priority: WARNING
  tags: [k8s]
"#;

#[test]
fn falco_files_load_through_the_same_loader() {
    let falco = r#"
- required_engine_version: 15
- list: images
  items: [nginx, 443]
- rule: Syscall
  desc: d
  condition: evt.type = open
  output: o
  priority: NOTICE
  warn_evttypes: false
- rule: Syscall
  enabled: false
- rule: Audit
  desc: d
  condition: ka.verb = create
  output: "%ka.user.name"
  priority: INFO
  source: k8s_audit
  exceptions:
    - name: short
      fields: ka.target.namespace
      values: [kube-system, default]
    - name: long
      fields: [ka.user.name, ka.verb]
      comps: [=, in]
      values: [[admin, [get, list]]]
-
"#;
    let later = "- rule: Audit\n  exceptions:\n    - name: short\n      values: [monitoring]\n  append: true\n";
    let mut source = RuleSource::default();
    let mut errors = Vec::new();
    source.apply_text_in("falco.yaml", falco, Dialect::Falco, &mut errors);
    source.apply_text_in("local.yaml", later, Dialect::Falco, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    // The syscall rule and the change to it are left out; the audit rule is read.
    assert_eq!(source.rules.keys().collect::<Vec<_>>(), ["Audit"]);
    let rule = &source.rules["Audit"];
    assert_eq!(rule.priority, Priority::Informational);
    assert_eq!(rule.origin.line, 13);
    assert_eq!(source.lists["images"].items[1], Scalar::Int(443));
    // The short form written out as the long one, and appended to by the later file.
    let short = &rule.exceptions[0];
    assert_eq!(
        (short.fields.as_slice(), short.comps.as_slice()),
        (&["ka.target.namespace".to_string()][..], &["in".to_string()][..])
    );
    let text = |v: &[ExceptionValue]| format!("{v:?}");
    assert_eq!(short.values.len(), 2);
    assert!(text(&short.values[0]).contains("kube-system") && text(&short.values[1]).contains("monitoring"));
    assert_eq!(rule.exceptions[1].values[0].len(), 2);
    // A kaudit file may not carry what a Falco file may.
    let errors = load(&[("k.yaml", "- required_engine_version: 15\n")]).unwrap_err();
    assert!(
        errors[0].message.contains("unknown field `required_engine_version`"),
        "{errors:?}"
    );
    // Errors in Falco files name file, line and item too.
    let mut errors = Vec::new();
    RuleSource::default().apply_text_in(
        "f.yaml",
        "- list: x\n  items: [a]\n  append: true\n",
        Dialect::Falco,
        &mut errors,
    );
    assert_eq!(
        errors[0].to_string(),
        "f.yaml:1:3: list 'x': appends to a list that is not defined"
    );
}

#[test]
fn loads_items_with_positions() {
    let s = load(&[("base.yaml", BASE)]).unwrap();
    assert_eq!(s.lists["trusted"].items.len(), 2);
    let r = &s.rules["R"];
    assert_eq!(r.priority, Priority::Warning);
    assert_eq!(r.origin.line, 6);
    assert_eq!(r.condition_origin.line, 8);
    assert!(r.enabled);
}

#[test]
fn later_files_disable_append_and_add_exceptions() {
    let overlay = r#"
- list: trusted
  items: [c]
  override: { items: append }
- macro: is_create
  condition: "|| verb == 'update'"
  append: true
- rule: R
  enabled: false
- rule: R
  exceptions:
    - name: ns
      fields: [objectRef.namespace]
      values: [[kube-system]]
  override: { exceptions: append }
"#;
    let s = load(&[("base.yaml", BASE), ("mine.yaml", overlay)]).unwrap();
    assert_eq!(s.lists["trusted"].items.len(), 3);
    assert_eq!(s.macros["is_create"].condition, "verb == 'create' || verb == 'update'");
    assert!(!s.rules["R"].enabled);
    assert_eq!(s.rules["R"].exceptions[0].name, "ns");
}

#[test]
fn errors_name_file_line_and_item() {
    let bad = r#"
- rule: A
  desc: d
  condition: "true"
  output: o
  priority: warning
- rule: B
  desc: d
  condition: "true"
  output: o
  priority: loud
- rule: C
  desc: d
  conditon: "true"
"#;
    let errors = load(&[("bad.yaml", bad)]).unwrap_err();
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 1, "{text:?}");
    // An unknown key fails the whole file: the YAML layer reports it with its position.
    assert!(text[0].starts_with("bad.yaml:14:"), "{text:?}");
    assert!(text[0].contains("conditon"), "{text:?}");

    let bad_priority = &bad[..bad.find("- rule: C").unwrap()];
    let errors = load(&[("bad.yaml", bad_priority)]).unwrap_err();
    assert_eq!(errors[0].origin.line, 7);
    assert_eq!(errors[0].item, "rule 'B'");
    assert!(errors[0].message.contains("loud"));
}

#[test]
fn append_to_missing_things_is_an_error() {
    let errors = load(&[(
        "x.yaml",
        "- list: nope\n  items: [a]\n  append: true\n- rule: Z\n  enabled: false\n",
    )])
    .unwrap_err();
    assert_eq!(errors.len(), 2);
    assert!(errors[0].message.contains("not defined"));
    assert_eq!(errors[1].item, "rule 'Z'");
}
