//! Every relative link of the tracked Markdown files resolves: the file or directory it names
//! exists, and its `#anchor`, if any, is a heading of the target (GitHub's slugs) or an
//! explicit `id`/`name` there. Links to other sites are not fetched (tests run offline).
//! The README is the front door: every document in `docs/` is linked from it.
//! Also: no document or source gives an example code that the service never answers
//! (issue 32: `schema_violation`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::dashboards::repository;

/// The tracked files whose name ends with `suffix`, relative to the repository.
fn tracked(suffix: &str) -> Vec<PathBuf> {
    let output = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(repository())
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git ls-files");
    output
        .stdout
        .split(|byte| *byte == 0)
        .filter(|name| !name.is_empty())
        .map(|name| PathBuf::from(String::from_utf8_lossy(name).into_owned()))
        .filter(|name| name.to_string_lossy().ends_with(suffix))
        .collect()
}

/// `text` without fenced code blocks and inline code spans, line by line (numbered from 1).
fn prose(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut fence: Option<&str> = None;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(open) = fence {
            if trimmed.starts_with(open) {
                fence = None;
            }
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fence = Some(&trimmed[..3]);
            continue;
        }
        // Drop code spans (`…` and ``…``).
        let mut kept = String::new();
        let mut rest = line;
        while let Some(start) = rest.find('`') {
            kept.push_str(&rest[..start]);
            let ticks = rest[start..].chars().take_while(|c| *c == '`').count();
            let after = &rest[start + ticks..];
            let closing = "`".repeat(ticks);
            match after.find(&closing) {
                Some(end) => rest = &after[end + ticks..],
                None => {
                    rest = after;
                    break;
                }
            }
        }
        kept.push_str(rest);
        lines.push((number + 1, kept));
    }
    lines
}

/// The targets of the inline links and images (`[text](target)`) in `line`.
fn link_targets(line: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = line;
    while let Some(position) = rest.find("](") {
        let after = &rest[position + 2..];
        let Some(end) = after.find(')') else { break };
        // `[text](<target> "title")`: the target is up to the first space.
        let target = after[..end]
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_matches(|c| c == '<' || c == '>');
        targets.push(target.to_owned());
        rest = &after[end..];
    }
    // Reference definitions: `[name]: target`.
    let trimmed = line.trim_start();
    if trimmed.starts_with('[') {
        if let Some(position) = trimmed.find("]: ") {
            if let Some(target) = trimmed[position + 3..].split_whitespace().next() {
                targets.push(target.to_owned());
            }
        }
    }
    targets
}

/// GitHub's anchor of a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors a Markdown file defines: its headings' slugs (a repeated one gets `-1`, `-2`,
/// …, as on GitHub) and explicit `id="…"` / `name="…"` attributes.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut fence = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fence = !fence;
            continue;
        }
        if fence {
            continue;
        }
        if let Some(heading) = trimmed.strip_prefix('#') {
            let heading = heading.trim_start_matches('#');
            if heading.starts_with(' ') {
                // Inline code and links keep their text in the slug.
                let text: String = heading.replace(['`', '*'], "");
                let text = strip_link_syntax(&text);
                let base = slug(&text);
                let mut candidate = base.clone();
                let mut n = 0;
                while !anchors.insert(candidate.clone()) {
                    n += 1;
                    candidate = format!("{base}-{n}");
                }
            }
        }
        for attribute in ["id=\"", "name=\""] {
            let mut rest = line;
            while let Some(position) = rest.find(attribute) {
                let after = &rest[position + attribute.len()..];
                let Some(end) = after.find('"') else { break };
                anchors.insert(after[..end].to_owned());
                rest = &after[end..];
            }
        }
    }
    anchors
}

/// `[text](target)` as `text`.
fn strip_link_syntax(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](") else {
            break;
        };
        let Some(end) = rest[open + close..].find(')') else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..open + close]);
        rest = &rest[open + close + end + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn every_relative_link_and_anchor_of_the_markdown_files_resolves() {
    let root = repository();
    let files = tracked(".md");
    assert!(
        files.iter().any(|file| file == Path::new("README.md")),
        "{files:?}"
    );
    assert!(
        files.iter().filter(|file| file.starts_with("docs")).count() >= 5,
        "the documents of docs/ are not among the files checked: {files:?}"
    );
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let dir = file.parent().unwrap_or(Path::new(""));
        for (line, prose) in prose(&text) {
            for target in link_targets(&prose) {
                if target.is_empty()
                    || target.contains("://")
                    || target.starts_with("mailto:")
                    || target.starts_with("//")
                {
                    continue;
                }
                checked += 1;
                let (path, anchor) = match target.split_once('#') {
                    Some((path, anchor)) => (path, Some(anchor)),
                    None => (target.as_str(), None),
                };
                let path = path.split('?').next().unwrap_or("");
                let resolved = if path.is_empty() {
                    file.clone()
                } else if let Some(absolute) = path.strip_prefix('/') {
                    PathBuf::from(absolute)
                } else {
                    dir.join(path)
                };
                let full = root.join(&resolved);
                if !full.exists() {
                    broken.push(format!(
                        "{}:{line}: {target}: no {}",
                        file.display(),
                        resolved.display()
                    ));
                    continue;
                }
                let Some(anchor) = anchor else { continue };
                if !full.is_file() || full.extension().is_none_or(|ext| ext != "md") {
                    continue; // a line anchor in source (#L10) or a directory
                }
                let defined = anchors(&std::fs::read_to_string(&full).unwrap());
                if !defined.contains(anchor) {
                    broken.push(format!(
                        "{}:{line}: {target}: no heading #{anchor} in {}",
                        file.display(),
                        resolved.display()
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(
        checked >= 10,
        "only {checked} relative links: is the parser right?"
    );
}

#[test]
fn the_slugs_are_githubs() {
    let text = "# The Eye\n## Tenancy and security\n### `errors replay`: what it does\n## Tenancy and security\n```\n# not a heading\n```\n<a id=\"custom\"></a>\n";
    let defined = anchors(text);
    for anchor in [
        "the-eye",
        "tenancy-and-security",
        "tenancy-and-security-1",
        "errors-replay-what-it-does",
        "custom",
    ] {
        assert!(defined.contains(anchor), "{anchor}: {defined:?}");
    }
    assert!(!defined.contains("not-a-heading"), "{defined:?}");
    assert_eq!(
        link_targets("see [a](#x) and [b](docs/y.md#z \"t\"), not `[c](#w)`"),
        ["#x", "docs/y.md#z", "#w"]
    );
    assert_eq!(prose("see `[c](#w)` and [a](#x)")[0].1, "see  and [a](#x)");
}

/// No example code that the service never answers: the codes an example names (`e.g.`) in
/// the CLI's help, the OpenAPI text and the documents were once `schema_violation`, which
/// no rule emits.
#[test]
fn no_example_names_a_code_that_does_not_exist() {
    let root = repository();
    let mut found = Vec::new();
    for suffix in [".md", ".rs", ".py", ".ts", ".js", ".json", ".toml"] {
        for file in tracked(suffix) {
            // This file names it to look for it.
            if file.ends_with("tests/it/links.rs") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(root.join(&file)) else {
                continue;
            };
            if text.contains("schema_violation") {
                found.push(file.display().to_string());
            }
        }
    }
    assert!(found.is_empty(), "`schema_violation` in {found:?}");
}

/// Every document in `docs/` is linked from the README, so that a reader who starts there can
/// reach it (issue 32: the README is the index of the documentation).
#[test]
fn the_readme_links_every_document_of_docs() {
    let root = repository();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let linked: BTreeSet<PathBuf> = prose(&readme)
        .iter()
        .flat_map(|(_, line)| link_targets(line))
        .map(|target| PathBuf::from(target.split('#').next().unwrap_or("")))
        .collect();
    let documents: Vec<PathBuf> = tracked(".md")
        .into_iter()
        .filter(|file| file.parent() == Some(Path::new("docs")))
        .collect();
    assert!(!documents.is_empty(), "no document in docs/");
    let unlinked: Vec<_> = documents
        .iter()
        .filter(|document| !linked.contains(*document))
        .collect();
    assert!(
        unlinked.is_empty(),
        "documents of docs/ that README.md does not link: {unlinked:?}"
    );
}
