//! The committed diagrams in `docs/lessons/diagrams/` are what `examples/diagrams.rs` draws from this
//! crate's code now. After a change to the ring, Maglev or bounded-load code that moves them, redraw
//! with `cargo run -p lb-algorithms --example diagrams -- docs/lessons/diagrams` and look at them.

#[path = "../examples/diagrams.rs"]
mod diagrams;

use std::path::Path;

#[test]
fn committed_diagrams_match_the_code() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/lessons/diagrams");
    let mut stale = Vec::new();
    for (name, drawn) in diagrams::diagrams() {
        let committed = std::fs::read_to_string(folder.join(name)).unwrap_or_default();
        if committed != drawn {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "{stale:?} in docs/lessons/diagrams differ from what the code draws now; redraw them with \
         cargo run -p lb-algorithms --example diagrams -- docs/lessons/diagrams"
    );
}

#[test]
fn every_diagram_is_well_formed_svg() {
    for (name, svg) in diagrams::diagrams() {
        let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{name}: {e}"));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg", "{name}");
        // A title for screen readers, and no coordinate that is not a number.
        assert!(root.children().any(|n| n.has_tag_name("title")), "{name} has no <title>");
        for node in doc.descendants().filter(|n| n.is_element()) {
            for attribute in node.attributes() {
                let value = attribute.value();
                assert!(
                    !value.contains("NaN") && !value.contains("inf"),
                    "{name}: {}={value}",
                    attribute.name()
                );
            }
        }
    }
}
