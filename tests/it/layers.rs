//! The layering rule of docs/architecture.md, checked on the source: every `crate::x` a
//! module names (outside its test code) is in a lower layer, so dependencies point one way
//! and there is no import cycle between the top-level modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module may import only from modules of lower layers.
const LAYERS: &[&[&str]] = &[
    // foundation: what a mail is
    &["sync", "address"],
    &["ical"],
    &["ical_json"],
    &["mail"],
    // what the user wrote
    &["config"],
    // process-wide services
    &["observe", "broker", "logging", "allocator"],
    // durable state
    &["store"],
    &["outbox", "repository"],
    &["spool"],
    // clients of the servers mailetd writes to
    &["dav"],
    &["consolidate"],
    // the engine, then what runs in it
    &["pipeline"],
    &["mailets", "matchers"],
    // the ways in
    &["ingest", "http"],
    // assembly
    &["server"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text without `#[cfg(test)]` items and `//` comments: test code may build fixtures
/// from any layer.
fn production_code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            // skip the next item: up to the line where its braces balance
            let mut depth = 0i32;
            let mut opened = false;
            for item in lines.by_ref() {
                depth += item.matches('{').count() as i32 - item.matches('}').count() as i32;
                opened |= item.contains('{');
                if (opened && depth <= 0) || (!opened && item.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        let code = line.split("//").next().unwrap_or("");
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// The top-level modules `text` names through `crate::`.
fn imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            // crate::{a::X, b::{Y, Z}}: the first segment of each path at depth 0
            let mut depth = 0;
            let mut starts = vec![0];
            let mut end = group.len();
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        end = i;
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => starts.push(i + 1),
                    _ => {}
                }
            }
            starts.iter().map(|&s| &group[s..end]).collect()
        } else {
            vec![rest]
        };
        for name in names {
            let ident: String = name
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !ident.is_empty() {
                found.insert(ident);
            }
        }
    }
    found
}

#[test]
fn every_import_points_to_a_lower_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut unplaced = BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let name = relative.file_name().unwrap().to_string_lossy();
        if name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            unplaced.insert(module);
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for target in imports(&production_code(&text)) {
            if target == module {
                continue;
            }
            match layer_of(&target) {
                Some(layer) if layer < own => {}
                Some(_) => {
                    upward
                        .entry((module.clone(), target))
                        .or_default()
                        .insert(relative.display().to_string());
                }
                None if src.join(&target).is_dir() || src.join(format!("{target}.rs")).exists() => {
                    unplaced.insert(target);
                }
                None => {}
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules in no layer (add them to LAYERS here and to docs/architecture.md): {unplaced:?}"
    );
    let report: Vec<String> = upward
        .iter()
        .map(|((from, to), files)| format!("{from} -> {to} (same or higher layer) in {files:?}"))
        .collect();
    assert!(
        report.is_empty(),
        "imports against the layering:\n{}",
        report.join("\n")
    );
}

#[test]
fn the_checker_sees_grouped_imports_and_skips_test_code() {
    let text = "use crate::mail::Mail;\nuse crate::{config::X, dav::{a, b}};\n\
                fn f() { crate::observe::metrics::count(); } // crate::http in a comment\n\
                #[cfg(test)]\nmod tests {\n    use crate::server;\n}\n";
    let found = imports(&production_code(text));
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["config", "dav", "mail", "observe"]
    );
}
