//! `lb-compare report --quick` writes a Markdown page whose charts exist, are SVG and parse as XML, with
//! a caption under each, and whose algorithm charts give every algorithm a colour of its own.

use std::collections::BTreeSet;
use std::path::Path;

use lb_algorithms::Algorithm;

use lb_compare::report::{self, ReportOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_report_writes_markdown_and_parseable_svgs() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let options = ReportOptions { quick: true, with_balancers: false, with_live: false, root };
    let written = report::write(dir.path(), &options, |_| {}).await.unwrap_or_else(|e| panic!("{e}"));
    let md = std::fs::read_to_string(&written.readme).unwrap_or_else(|e| panic!("{e}"));
    // The supermarket chart, the stale-information chart and two per scenario.
    assert_eq!(written.charts.len(), 2 + 2 * report::SCENARIOS.len(), "{:?}", written.charts);
    for chart in &written.charts {
        assert!(md.contains(&format!("]({chart})")), "README.md does not link {chart}");
        let svg = std::fs::read_to_string(dir.path().join(chart)).unwrap_or_else(|e| panic!("{chart}: {e}"));
        assert!(svg.contains("<svg"), "{chart}");
        let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{chart}: {e}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg", "{chart}");
        // The caption follows the image, in italics, and says what to see.
        let after = md.split(&format!("]({chart})")).nth(1).unwrap_or_default();
        assert!(after.trim_start().starts_with("*What to see:"), "{chart} has no caption under it");
        if chart.starts_with("scenario-") {
            assert_distinct_colours(chart, &doc);
        }
    }
    for section in [
        "## Smooth weighted round robin",
        "## Balls into bins",
        "## The supermarket model",
        "## Several balancers and stale load information",
        "## Consistent hashing",
        "### one-slow",
    ] {
        assert!(md.contains(section), "missing {section}");
    }
}

/// Every algorithm named in the chart's legend is drawn in a colour no other series uses: the number of
/// colours on the page (black, white and the grey separators aside) equals the number of algorithms.
/// Ten algorithms over an eight-colour palette, as the charts once had, fails here.
fn assert_distinct_colours(chart: &str, doc: &roxmltree::Document<'_>) {
    let names: BTreeSet<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
    let legend: BTreeSet<&str> =
        doc.descendants().filter_map(|n| n.text()).map(str::trim).filter(|t| names.contains(t)).collect();
    let neutral = ["#000000", "#FFFFFF", "#D2D2D2", "none"];
    let colours: BTreeSet<&str> = doc
        .descendants()
        .flat_map(|n| [n.attribute("fill"), n.attribute("stroke")])
        .flatten()
        .filter(|c| !neutral.contains(c))
        .collect();
    assert!(legend.len() >= 4, "{chart}: legend names only {legend:?}");
    assert_eq!(colours.len(), legend.len(), "{chart}: {} algorithms, colours {colours:?}", legend.len());
}
