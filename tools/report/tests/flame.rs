//! Flame graphs: the folded stacks add up to what `uftrace report` says of the root calls, the
//! SVG inferno draws is well-formed XML (parsed here) and names the hot functions, and a file
//! of folded stacks is drawn too.

mod common;

use std::path::Path;

use common::*;
use vftrace_report::flame::{fold_trace, read_folded, write_folded, write_svg};
use vftrace_report::time::write_duration;

/// The text of every `<title>` of the SVG (inferno puts `name (N ns, P%)` there per frame).
fn svg_titles(svg: &str) -> Vec<String> {
    // inferno writes the SVG 1.1 DOCTYPE.
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(svg, opts)
        .expect("the flame graph is not well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.tag_name().name() == "title")
        .filter_map(|n| n.text().map(str::to_string))
        .collect()
}

fn uftrace_total(dir: &Path, function: &str) -> String {
    let report = uftrace(dir, &["report"]);
    let line = report
        .lines()
        .find(|l| l.trim_end().ends_with(&format!("  {function}")))
        .unwrap_or_else(|| panic!("{function} not in uftrace report:\n{report}"));
    line[..12].trim().to_string()
}

#[test]
fn folded_stacks_add_up_to_uftrace_totals_and_the_svg_names_hot_functions() {
    if !judges() {
        return;
    }
    for trace in traces() {
        let folded = fold_trace(&trace.dir, None, &mut |_, _| {}).unwrap();
        let (root, hot) = if trace.name.starts_with("rust") {
            (
                "vftrace_example_rust::demo",
                "vftrace_example_rust::sleep_10ms",
            )
        } else if trace.name.starts_with("C example") {
            ("demo", "sleep_10ms")
        } else {
            ("main", "slow")
        };
        // The self times under a root call add up to its inclusive time.
        let mut ours = Vec::new();
        write_duration(&mut ours, folded.total_under(root), false);
        assert_eq!(
            String::from_utf8(ours).unwrap().trim(),
            uftrace_total(&trace.dir, root),
            "{}: inclusive time of {root}",
            trace.name
        );
        let mut svg = Vec::new();
        write_svg(&folded, "test", &mut svg).unwrap();
        let titles = svg_titles(std::str::from_utf8(&svg).unwrap());
        for name in [root, hot] {
            assert!(
                titles.iter().any(|t| t.starts_with(&format!("{name} ("))),
                "{}: {name} not in the flame graph: {titles:?}",
                trace.name
            );
        }
        // The stacks through the (non-recursive) hot function add up to its inclusive time.
        let hot_ns: u64 = folded
            .stacks
            .iter()
            .filter(|(s, _)| s.split(';').any(|f| f == hot))
            .map(|(_, c)| c)
            .sum();
        let mut ours = Vec::new();
        write_duration(&mut ours, hot_ns, false);
        assert_eq!(
            String::from_utf8(ours).unwrap().trim(),
            uftrace_total(&trace.dir, hot),
            "{}: inclusive time of {hot}",
            trace.name
        );
    }
}

#[test]
fn a_file_of_folded_stacks_is_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("profile.folded");
    std::fs::write(
        &file,
        "main;parse;lex 30\nmain;parse 10\n\nmain;render 55\nmain;parse;lex 5\n",
    )
    .unwrap();
    let folded = read_folded(&file).unwrap();
    assert_eq!(folded.total_under("main"), 100);
    let mut text = Vec::new();
    write_folded(&folded, &mut text).unwrap();
    assert_eq!(
        String::from_utf8(text).unwrap(),
        "main;parse 10\nmain;parse;lex 35\nmain;render 55\n"
    );
    let mut svg = Vec::new();
    write_svg(&folded, "profile", &mut svg).unwrap();
    let titles = svg_titles(std::str::from_utf8(&svg).unwrap());
    for name in ["main", "parse", "lex", "render"] {
        assert!(
            titles.iter().any(|t| t.starts_with(&format!("{name} ("))),
            "{name} not in {titles:?}"
        );
    }
}

#[test]
fn a_garbage_line_is_an_error_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.folded");
    std::fs::write(&file, "main;a 3\nthis is not a stack\n").unwrap();
    let err = read_folded(&file).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}:2: ", file.display())) && err.contains("folded stack"),
        "{err}"
    );
    std::fs::write(&file, [0xff, 0xfe, 0x00, 0x01]).unwrap();
    let err = read_folded(&file).unwrap_err().to_string();
    assert!(err.contains("not UTF-8"), "{err}");
}
