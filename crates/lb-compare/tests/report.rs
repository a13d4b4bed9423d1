//! `lb-compare report --quick` writes a Markdown page whose charts exist, are SVG and parse as XML.

use std::path::Path;

use lb_compare::report::{self, ReportOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_report_writes_markdown_and_parseable_svgs() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let options = ReportOptions { quick: true, with_balancers: false, with_live: false, root };
    let written = report::write(dir.path(), &options, |_| {}).await.unwrap_or_else(|e| panic!("{e}"));
    let md = std::fs::read_to_string(&written.readme).unwrap_or_else(|e| panic!("{e}"));
    // The supermarket chart and two per scenario.
    assert_eq!(written.charts.len(), 1 + 2 * report::SCENARIOS.len(), "{:?}", written.charts);
    for chart in &written.charts {
        assert!(md.contains(&format!("]({chart})")), "README.md does not link {chart}");
        let svg = std::fs::read_to_string(dir.path().join(chart)).unwrap_or_else(|e| panic!("{chart}: {e}"));
        assert!(svg.contains("<svg"), "{chart}");
        let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{chart}: {e}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg", "{chart}");
    }
    for section in [
        "## Smooth weighted round robin",
        "## Balls into bins",
        "## The supermarket model",
        "## Consistent hashing",
        "### one-slow",
    ] {
        assert!(md.contains(section), "missing {section}");
    }
}
