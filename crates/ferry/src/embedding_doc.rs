//! `docs/embedding.md` shows code only as regions of the examples: each ` ```rust ` block
//! follows a `<!-- example: PATH#NAME -->` line and must equal the lines between
//! `// ANCHOR: NAME` and `// ANCHOR_END: NAME` in that file (dedented, anchor lines left
//! out). The examples are compiled by the build and run by `scripts/test`, so the page
//! cannot show code that no longer builds or runs.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The lines of region `name` of `source`, dedented, anchor lines left out.
fn region(source: &str, name: &str) -> Option<String> {
    let start = format!("// ANCHOR: {name}");
    let end = format!("// ANCHOR_END: {name}");
    let mut lines = source.lines().skip_while(|l| l.trim() != start).skip(1);
    let mut body = Vec::new();
    loop {
        let line = lines.next()?;
        if line.trim() == end {
            break;
        }
        if !line.trim_start().starts_with("// ANCHOR") {
            body.push(line);
        }
    }
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    Some(
        body.iter()
            .map(|l| l.get(indent..).unwrap_or("").trim_end())
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Each code block of `doc`: the marker line before it (if any), its fence, its body.
fn blocks(doc: &str) -> Vec<(Option<String>, String, String)> {
    let mut out = Vec::new();
    let mut lines = doc.lines();
    let mut previous: Option<&str> = None;
    while let Some(line) = lines.next() {
        if let Some(fence) = line.strip_prefix("```") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            let marker = previous
                .and_then(|p| p.strip_prefix("<!-- example: "))
                .and_then(|p| p.strip_suffix(" -->"))
                .map(str::to_owned);
            out.push((marker, fence.to_owned(), body.join("\n")));
            previous = None;
        } else if !line.trim().is_empty() {
            previous = Some(line);
        }
    }
    out
}

#[test]
fn every_code_block_of_the_embedding_guide_is_an_example_region() {
    let root = workspace();
    let doc = std::fs::read_to_string(root.join("docs/embedding.md")).unwrap();
    let blocks = blocks(&doc);
    assert!(blocks.len() >= 5, "the guide lost its examples");
    for (marker, fence, body) in blocks {
        let marker = marker.unwrap_or_else(|| {
            panic!("a ```{fence} block without a `<!-- example: PATH#NAME -->` line:\n{body}")
        });
        assert_eq!(fence, "rust", "{marker}: only Rust blocks, from examples");
        let (path, name) = marker.split_once('#').expect("PATH#NAME");
        let source = std::fs::read_to_string(root.join(path))
            .unwrap_or_else(|e| panic!("{marker}: cannot read {path}: {e}"));
        let expected = region(&source, name)
            .unwrap_or_else(|| panic!("{marker}: no region `{name}` in {path}"));
        assert!(
            body == expected,
            "docs/embedding.md, block {marker}, differs from the example; it should read:\n{expected}"
        );
    }
}

#[test]
fn regions_are_dedented_and_drop_nested_anchors() {
    let source = "fn main() {\n    // ANCHOR: a\n    let x = 1;\n\n    // ANCHOR: b\n    if x > 0 {\n        x;\n    }\n    // ANCHOR_END: b\n    // ANCHOR_END: a\n}\n";
    assert_eq!(
        region(source, "a").unwrap(),
        "let x = 1;\n\nif x > 0 {\n    x;\n}"
    );
    assert_eq!(region(source, "c"), None);
}
