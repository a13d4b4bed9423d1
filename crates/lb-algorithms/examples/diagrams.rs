//! Draws the lessons' diagrams of consistent hashing from this crate's own code, as SVG.
//!
//! Run with `cargo run -p lb-algorithms --example diagrams -- docs/lessons/diagrams`
//!
//! It writes four files to the folder it is given (the repository keeps them in `docs/lessons/diagrams/`):
//!
//! - `hash-ring.svg`: three backends with four points each on a ring, and where five keys land.
//! - `maglev-fill.svg`: how Maglev fills a table of M = 7 slots for three backends: each backend's
//!   permutation of the slots, the turn at which it claimed each slot, and the slots it found taken.
//! - `bounded-load-walk.svg`: a key whose home backend and the next one are full, walking on to the
//!   first backend with room.
//! - `clusterip-pinning.svg`: why a Kubernetes ClusterIP Service balances connections, not requests.
//!
//! The ring points, the Maglev permutations and the capacities are computed here with the formulas the
//! crate uses (`hash_pair(hash(addr), i)`, `offset`/`skip` from two hashes of the address), and every
//! outcome drawn is checked against the crate's own balancers (`RingHash`, `Maglev`, `BoundedLoad`)
//! before anything is written: if the code changes, the drawing fails rather than lie. The test
//! `tests/diagrams.rs` checks that the committed files are what this draws now. Everything is
//! deterministic: no clock, no randomness.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use lb_algorithms::BoundedLoad;
use lb_algorithms::Maglev;
use lb_algorithms::RingHash;
use lb_algorithms::hash_pair;
use lb_algorithms::{
    AlgorithmOptions, BackendSet, BackendSpec, Balancer, Explain, InFlightGuard, PickRequest, SetOptions,
    SkipReason, hash_bytes,
};

/// One colour per backend, the same in every diagram (colour-blind-safe Okabe-Ito hues).
const COLOURS: [&str; 4] = ["#0072b2", "#e69f00", "#009e73", "#cc79a7"];
const INK: &str = "#222222";
const FAINT: &str = "#999999";

/// The diagrams: file name and SVG text, in the order they are written.
pub fn diagrams() -> Vec<(&'static str, String)> {
    vec![
        ("hash-ring.svg", hash_ring()),
        ("maglev-fill.svg", maglev_fill()),
        ("bounded-load-walk.svg", bounded_load_walk()),
        ("clusterip-pinning.svg", clusterip_pinning()),
    ]
}

#[allow(dead_code)] // `tests/diagrams.rs` includes this file for `diagrams()` and has its own main.
fn main() -> std::io::Result<()> {
    let folder = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "docs/lessons/diagrams".into()));
    std::fs::create_dir_all(&folder)?;
    for (name, svg) in diagrams() {
        std::fs::write(folder.join(name), svg)?;
        println!("wrote {}", folder.join(name).display());
    }
    Ok(())
}

// --- A very small SVG writer -------------------------------------------------------------------------

struct Svg {
    text: String,
}

impl Svg {
    fn new(width: u32, height: u32, title: &str) -> Svg {
        let mut text = String::new();
        let _ = writeln!(
            text,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">"#
        );
        let _ = writeln!(text, "<title>{}</title>", escape(title));
        let _ = writeln!(text, r#"<rect width="{width}" height="{height}" fill="white"/>"#);
        Svg { text }
    }

    fn raw(&mut self, element: String) {
        self.text.push_str(&element);
        self.text.push('\n');
    }

    fn text(&mut self, x: f64, y: f64, anchor: &str, style: &str, words: &str) {
        self.raw(format!(
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" {style}>{}</text>"#,
            escape(words)
        ));
    }

    fn line(&mut self, (x1, y1): (f64, f64), (x2, y2): (f64, f64), colour: &str, width: f64, extra: &str) {
        self.raw(format!(
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{colour}" stroke-width="{width}" {extra}/>"#
        ));
    }

    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, stroke: &str) {
        self.raw(format!(
            r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}" stroke="{stroke}"/>"#
        ));
    }

    fn circle(&mut self, (x, y): (f64, f64), r: f64, fill: &str, stroke: &str) {
        self.raw(format!(r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r}" fill="{fill}" stroke="{stroke}"/>"#));
    }

    /// An arrowhead marker named `arrow-{colour without #}`, for `marker-end`.
    fn arrow_marker(&mut self, colour: &str) {
        self.raw(format!(
            r#"<defs><marker id="arrow-{}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker></defs>"#,
            colour.trim_start_matches('#')
        ));
    }

    fn finish(mut self) -> String {
        self.text.push_str("</svg>\n");
        self.text
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn arrow(colour: &str) -> String {
    format!(r#"marker-end="url(#arrow-{})""#, colour.trim_start_matches('#'))
}

// --- Ring geometry ---------------------------------------------------------------------------------------

/// A position on the ring as an angle: 0 at the top, clockwise, a full turn for 2^64.
fn angle(hash: u64) -> f64 {
    hash as f64 / 18_446_744_073_709_551_616.0 * std::f64::consts::TAU
}

fn on_circle(centre: (f64, f64), radius: f64, theta: f64) -> (f64, f64) {
    (centre.0 + radius * theta.sin(), centre.1 - radius * theta.cos())
}

/// An arc along the circle, clockwise from `from` to `to` (angles).
fn arc(centre: (f64, f64), radius: f64, from: f64, to: f64) -> String {
    let sweep = (to - from).rem_euclid(std::f64::consts::TAU);
    let (x1, y1) = on_circle(centre, radius, from);
    let (x2, y2) = on_circle(centre, radius, from + sweep);
    let large = u8::from(sweep > std::f64::consts::PI);
    format!("M{x1:.1},{y1:.1} A{radius},{radius} 0 {large} 1 {x2:.1},{y2:.1}")
}

/// The crate's ring, point by point: `(position, backend)` sorted by position, exactly as
/// `ring_hash::Ring::new` places them (point `i` of a backend at `hash_pair(hash(addr), i)`).
fn ring_points(addrs: &[&str], per_backend: u64) -> Vec<(u64, usize)> {
    let mut points: Vec<(u64, usize)> = addrs
        .iter()
        .enumerate()
        .flat_map(|(b, addr)| {
            let seed = hash_bytes(addr.as_bytes());
            (0..per_backend).map(move |i| (hash_pair(seed, i), b))
        })
        .collect();
    points.sort_unstable();
    points
}

/// The index of the first point at or after `key`, wrapping: where a key lands.
fn first_clockwise(points: &[(u64, usize)], key: u64) -> usize {
    points.iter().position(|&(h, _)| h >= key).unwrap_or(0)
}

fn backend_set(addrs: &[&str]) -> Arc<BackendSet> {
    BackendSet::new(addrs.iter().map(|a| BackendSpec::new(*a)), SetOptions::default())
}

fn pick(balancer: &dyn Balancer, key: u64, explain: Option<&mut Explain>) -> usize {
    balancer.pick(&PickRequest::new(0).with_key(Some(key)), explain).expect("a backend is available")
}

// --- 1. The hash ring ------------------------------------------------------------------------------------

const RING_BACKENDS: [&str; 3] = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"];
const RING_POINTS: u32 = 4;

fn hash_ring() -> String {
    let points = ring_points(&RING_BACKENDS, u64::from(RING_POINTS));
    let options = AlgorithmOptions { ring_points_per_weight: RING_POINTS, ..AlgorithmOptions::default() };
    let ring = RingHash::new(backend_set(&RING_BACKENDS), &options).expect("ring hash builds");

    let mut svg = Svg::new(790, 540, "A hash ring: three backends, four points each, five keys");
    let centre = (260.0, 290.0);
    let radius = 190.0;
    svg.circle(centre, radius, "none", FAINT);
    svg.text(530.0, 45.0, "start", r#"font-weight="bold""#, "Ring hash: 3 backends,");
    svg.text(530.0, 63.0, "start", r#"font-weight="bold""#, "4 points each, 5 keys");
    for colour in COLOURS {
        svg.arrow_marker(colour);
    }

    // Each key: a square on the ring, and an arc clockwise to the point that owns it, each key's arc on a
    // circle of its own so that two keys ending at one point stay apart.
    for k in 1..=5 {
        let name = format!("user-{k}");
        let key = hash_bytes(name.as_bytes());
        let p = first_clockwise(&points, key);
        let (position, owner) = points[p];
        assert_eq!(owner, pick(&ring, key, None), "{name}: the drawing and RingHash disagree");
        let colour = COLOURS[owner];
        let (from, to) = (angle(key), angle(position));
        svg.raw(format!(
            r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="3" {}/>"#,
            arc(centre, radius - 8.0 - 7.0 * k as f64, from, to),
            arrow(colour)
        ));
        let (x, y) = on_circle(centre, radius, from);
        svg.rect(x - 5.0, y - 5.0, 10.0, 10.0, INK, INK);
        let (lx, ly) = on_circle(centre, radius - 58.0, from);
        svg.text(lx, ly + 4.0, "middle", "", &name);
    }
    // The points, labelled backend#i; a label close to the one before it goes further out.
    let mut labelled: Vec<(f64, usize, String)> = Vec::new();
    for (b, addr) in RING_BACKENDS.iter().enumerate() {
        let seed = hash_bytes(addr.as_bytes());
        for i in 0..u64::from(RING_POINTS) {
            let theta = angle(hash_pair(seed, i));
            svg.circle(on_circle(centre, radius, theta), 7.0, COLOURS[b], "white");
            labelled.push((theta, b, format!("{}#{i}", b + 1)));
        }
    }
    labelled.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut level = 0;
    for (n, (theta, b, label)) in labelled.iter().enumerate() {
        let close = n > 0 && theta - labelled[n - 1].0 < 0.2;
        level = if close { level + 1 } else { 0 };
        let (lx, ly) = on_circle(centre, radius + 20.0 + 17.0 * level as f64, *theta);
        svg.text(lx, ly + 4.0, "middle", &format!(r#"fill="{}""#, COLOURS[*b]), label);
    }

    // The legend and what to see, beside the ring.
    let x = 530.0;
    for (b, addr) in RING_BACKENDS.iter().enumerate() {
        let y = 90.0 + 24.0 * b as f64;
        svg.circle((x + 6.0, y - 4.0), 7.0, COLOURS[b], "white");
        svg.text(x + 20.0, y, "start", "", &format!("backend {} = {addr}", b + 1));
    }
    svg.rect(x, 160.0, 10.0, 10.0, INK, INK);
    svg.text(x + 20.0, 169.0, "start", "", "a key, at hash(\"user-k\")");
    let notes = [
        "Each backend has 4 points, at",
        "hash_pair(hash(addr), i), i = 0..3.",
        "A key goes to the first point",
        "clockwise (the arcs). Remove a",
        "backend and only the keys of its",
        "points move, to the next point.",
        "lb uses 160 points per weight:",
        "more points, more even arcs.",
    ];
    for (i, note) in notes.iter().enumerate() {
        svg.text(x, 215.0 + 20.0 * i as f64, "start", "", note);
    }
    svg.finish()
}

// --- 2. Maglev's table -----------------------------------------------------------------------------------

const MAGLEV_M: usize = 7;

/// One backend's turn in the fill: the permutation positions it tried, the last of them claimed.
struct Turn {
    backend: usize,
    /// Positions `j` in the backend's permutation found taken, then the one claimed.
    tried: Vec<usize>,
}

/// Maglev's populate loop for M = 7, turn by turn; `offset` and `skip` as `maglev::populate` computes
/// them (two hashes of the address).
fn maglev_turns(addrs: &[&str]) -> (Vec<(usize, usize)>, Vec<Turn>, Vec<usize>) {
    let m = MAGLEV_M as u64;
    let params: Vec<(usize, usize)> = addrs
        .iter()
        .map(|a| {
            let offset = (hash_bytes(a.as_bytes()) % m) as usize;
            let skip = (xxhash_rust::xxh3::xxh3_64_with_seed(a.as_bytes(), 1) % (m - 1)) as usize + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0usize; addrs.len()];
    let mut table = vec![usize::MAX; MAGLEV_M];
    let mut turns = Vec::new();
    'fill: loop {
        for (b, &(offset, skip)) in params.iter().enumerate() {
            let mut tried = Vec::new();
            loop {
                let j = next[b];
                next[b] += 1;
                tried.push(j);
                let slot = (offset + j * skip) % MAGLEV_M;
                if table[slot] == usize::MAX {
                    table[slot] = b;
                    turns.push(Turn { backend: b, tried });
                    break;
                }
            }
            if table.iter().all(|&t| t != usize::MAX) {
                break 'fill;
            }
        }
    }
    (params, turns, table)
}

/// The Maglev picture: checks the fill against the crate's `Maglev`, then draws it top to bottom.
/// Longer than 80 lines on purpose: it is one picture's layout (rows, arrows, labels at coordinates
/// that depend on each other), and split into pieces those coordinates would have to be passed around.
fn maglev_fill() -> String {
    let (params, turns, table) = maglev_turns(&RING_BACKENDS);
    let options = AlgorithmOptions { maglev_table_size: MAGLEV_M, ..AlgorithmOptions::default() };
    let maglev = Maglev::new(backend_set(&RING_BACKENDS), &options).expect("maglev builds");
    for (slot, &owner) in table.iter().enumerate() {
        // A key k goes to table[k % M]: the key equal to the slot number reads that slot.
        assert_eq!(pick(&maglev, slot as u64, None), owner, "slot {slot}: the drawing and Maglev disagree");
    }

    let cell = 46.0;
    let left = 250.0;
    let mut svg = Svg::new(760, 470, "How Maglev fills a table of 7 slots for three backends");
    svg.text(
        380.0,
        30.0,
        "middle",
        r#"font-weight="bold""#,
        "Maglev, M = 7: each backend's preference list, and the turns",
    );
    // Column headings: the preference rank j.
    for j in 0..MAGLEV_M {
        svg.text(
            left + cell * (j as f64 + 0.5),
            68.0,
            "middle",
            &format!(r#"fill="{FAINT}""#),
            &format!("j = {j}"),
        );
    }
    // One row per backend: its permutation, slot (offset + j x skip) mod 7 at rank j.
    let mut step_of = vec![Vec::new(); RING_BACKENDS.len()];
    for (step, turn) in turns.iter().enumerate() {
        for (k, &j) in turn.tried.iter().enumerate() {
            let claimed = k + 1 == turn.tried.len();
            step_of[turn.backend].push((j, step + 1, claimed));
        }
    }
    for (b, &(offset, skip)) in params.iter().enumerate() {
        let y = 80.0 + 70.0 * b as f64;
        svg.text(
            20.0,
            y + 22.0,
            "start",
            &format!(r#"fill="{}" font-weight="bold""#, COLOURS[b]),
            &format!("backend {}", b + 1),
        );
        svg.text(20.0, y + 40.0, "start", "", &format!("offset {offset}, skip {skip}"));
        for j in 0..MAGLEV_M {
            let slot = (offset + j * skip) % MAGLEV_M;
            let x = left + cell * j as f64;
            let visit = step_of[b].iter().find(|&&(jj, _, _)| jj == j);
            let fill = match visit {
                Some(&(_, _, true)) => COLOURS[b],
                _ => "white",
            };
            svg.rect(x, y, cell - 4.0, 42.0, fill, if visit.is_some() { COLOURS[b] } else { FAINT });
            let ink = if matches!(visit, Some(&(_, _, true))) { "white" } else { INK };
            svg.text(
                x + (cell - 4.0) / 2.0,
                y + 20.0,
                "middle",
                &format!(r#"fill="{ink}" font-size="15""#),
                &slot.to_string(),
            );
            match visit {
                Some(&(_, step, true)) => {
                    svg.text(
                        x + (cell - 4.0) / 2.0,
                        y + 36.0,
                        "middle",
                        r#"fill="white" font-size="11""#,
                        &format!("turn {step}"),
                    );
                }
                Some(&(_, step, false)) => {
                    svg.line((x + 4.0, y + 38.0), (x + cell - 8.0, y + 4.0), INK, 1.5, "");
                    svg.text(
                        x + (cell - 4.0) / 2.0,
                        y + 36.0,
                        "middle",
                        r#"font-size="11""#,
                        &format!("turn {step}"),
                    );
                }
                None => {}
            }
        }
    }
    // The resulting table.
    let y = 320.0;
    svg.text(20.0, y + 26.0, "start", r#"font-weight="bold""#, "the table");
    for (slot, &owner) in table.iter().enumerate() {
        let x = left + cell * slot as f64;
        svg.rect(x, y, cell - 4.0, 40.0, COLOURS[owner], "white");
        svg.text(x + (cell - 4.0) / 2.0, y + 25.0, "middle", r#"fill="white""#, &format!("{}", owner + 1));
        svg.text(
            x + (cell - 4.0) / 2.0,
            y + 56.0,
            "middle",
            &format!(r#"fill="{FAINT}""#),
            &format!("slot {slot}"),
        );
    }
    let counts: Vec<String> = (0..RING_BACKENDS.len())
        .map(|b| format!("backend {}: {}", b + 1, table.iter().filter(|&&t| t == b).count()))
        .collect();
    let notes = [
        "Row: the slot a backend prefers at rank j, (offset + j x skip) mod 7. The backends take turns",
        "(1, 2, 3, 1, 2, ...); on its turn a backend claims its most preferred free slot. A crossed cell",
        &format!("was already taken. Slots per backend ({}) differ by at most one.", counts.join(", ")),
    ];
    for (i, note) in notes.iter().enumerate() {
        svg.text(20.0, 410.0 + 18.0 * i as f64, "start", "", note);
    }
    svg.finish()
}

// --- 3. The bounded-load walk ----------------------------------------------------------------------------

const BOUNDED_BACKENDS: [&str; 4] = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"];
/// The key placed, and how many requests are in flight on the backends while it is: the key's first
/// two backends clockwise hold 5 each and the other two 1 each, 12 in all, so with epsilon 0.25 each
/// may hold ceil(1.25 x 13 / 4) = 5.
const BOUNDED_KEY: &str = "user-1";
const FULL: usize = 5;

/// The bounded-load picture: checks the walk against the crate's `BoundedLoad`, then draws it. Over 80
/// lines for the same reason as `maglev_fill`: one layout whose coordinates depend on each other.
fn bounded_load_walk() -> String {
    let points = ring_points(&BOUNDED_BACKENDS, 1);
    let (name, key) = (BOUNDED_KEY, hash_bytes(BOUNDED_KEY.as_bytes()));
    let start = first_clockwise(&points, key);
    let walked: Vec<usize> = (0..points.len()).map(|s| points[(start + s) % points.len()].1).collect();
    let loads: Vec<usize> =
        (0..BOUNDED_BACKENDS.len()).map(|b| if walked[..2].contains(&b) { FULL } else { 1 }).collect();

    let set = backend_set(&BOUNDED_BACKENDS);
    let options = AlgorithmOptions { ring_points_per_weight: 1, ..AlgorithmOptions::default() };
    let bounded = BoundedLoad::new(set.clone(), &options).expect("bounded load builds");
    let _guards: Vec<InFlightGuard> =
        set.backends().iter().zip(&loads).flat_map(|(b, &n)| (0..n).map(move |_| b.start(0))).collect();
    let capacity = bounded.capacity(0, 0);
    assert_eq!(capacity, FULL as u64, "the capacity the notes explain");
    let mut explain = Explain::default();
    let chosen = pick(&bounded, key, Some(&mut explain));
    assert_eq!(
        explain.skipped,
        vec![(walked[0], SkipReason::OverCapacity), (walked[1], SkipReason::OverCapacity)],
        "the drawing and BoundedLoad disagree on the walk"
    );
    assert_eq!(chosen, walked[2], "the drawing and BoundedLoad disagree on the pick");

    let mut svg = Svg::new(760, 440, "Bounded load: a key walks past full backends to the first with room");
    svg.text(
        380.0,
        30.0,
        "middle",
        r#"font-weight="bold""#,
        &format!("Bounded load, epsilon 0.25: where {name} goes"),
    );
    let centre = (200.0, 230.0);
    let radius = 140.0;
    svg.circle(centre, radius, "none", FAINT);
    svg.arrow_marker(INK);
    // The walk: key -> first point (full) -> second point (full) -> third point (room).
    let mut from = angle(key);
    for s in 0..3 {
        let (position, _) = points[(start + s) % points.len()];
        let to = angle(position);
        let dash = if s == 0 { "" } else { r#"stroke-dasharray="5,4""# };
        svg.raw(format!(
            r#"<path d="{}" fill="none" stroke="{INK}" stroke-width="2.5" {dash} {}/>"#,
            arc(centre, radius - 14.0, from, to),
            arrow(INK)
        ));
        from = to;
    }
    let (x, y) = on_circle(centre, radius, angle(key));
    svg.rect(x - 5.0, y - 5.0, 10.0, 10.0, INK, INK);
    let (lx, ly) = on_circle(centre, radius - 34.0, angle(key));
    svg.text(lx, ly + 4.0, "middle", "", name);
    for &(position, b) in &points {
        let theta = angle(position);
        svg.circle(on_circle(centre, radius, theta), 9.0, COLOURS[b], "white");
        let (lx, ly) = on_circle(centre, radius + 24.0, theta);
        svg.text(
            lx,
            ly + 4.0,
            "middle",
            &format!(r#"fill="{}" font-weight="bold""#, COLOURS[b]),
            &format!("{}", b + 1),
        );
    }

    // Load bars: in flight against the capacity.
    let (bx, by) = (420.0, 80.0);
    svg.text(bx, by - 12.0, "start", "", &format!("in flight (capacity ceil(1.25 x 13 / 4) = {capacity})"));
    for (b, &load) in loads.iter().enumerate() {
        let y = by + 36.0 * b as f64;
        svg.text(
            bx,
            y + 17.0,
            "start",
            &format!(r#"fill="{}" font-weight="bold""#, COLOURS[b]),
            &format!("{}", b + 1),
        );
        for slot in 0..capacity as usize {
            let fill = if slot < load { COLOURS[b] } else { "white" };
            svg.rect(bx + 20.0 + 30.0 * slot as f64, y, 26.0, 24.0, fill, COLOURS[b]);
        }
        let verdict = match walked.iter().position(|&w| w == b) {
            Some(0) | Some(1) if load as u64 >= capacity => "full: walk on",
            _ if b == chosen => "room: picked",
            _ => "",
        };
        svg.text(bx + 30.0 + 30.0 * capacity as f64, y + 17.0, "start", "", verdict);
    }
    let notes = [
        format!("{name} lands just before backend {}'s point.", walked[0] + 1),
        "12 requests are in flight, so each backend".to_string(),
        format!("may hold ceil((1 + 0.25) x (12 + 1) / 4) = {capacity}."),
        format!("Backends {} and {} hold {capacity}: the pick walks on", walked[0] + 1, walked[1] + 1),
        format!("clockwise (dashed) to backend {}, the first", chosen + 1),
        "with room. With no load it is plain ring hash.".to_string(),
    ];
    for (i, note) in notes.iter().enumerate() {
        svg.text(bx, 260.0 + 20.0 * i as f64, "start", "", note);
    }
    svg.finish()
}

// --- 4. ClusterIP pins connections -----------------------------------------------------------------------

fn clusterip_pinning() -> String {
    let mut svg = Svg::new(760, 440, "A ClusterIP Service balances connections, not requests");
    svg.text(
        380.0,
        30.0,
        "middle",
        r#"font-weight="bold""#,
        "Kubernetes ClusterIP: one choice per connection",
    );
    for colour in [COLOURS[0], COLOURS[1], FAINT] {
        svg.arrow_marker(colour);
    }
    // Clients, each with one long-lived connection (HTTP/2, or HTTP/1.1 keep-alive).
    let clients = [("client A", 110.0, COLOURS[0]), ("client B", 250.0, COLOURS[1])];
    for &(name, y, colour) in &clients {
        svg.rect(30.0, y - 25.0, 120.0, 50.0, "white", colour);
        svg.text(90.0, y + 5.0, "middle", "", name);
    }
    // The Service: a virtual IP; kube-proxy's rules pick a Pod when a connection is opened.
    svg.rect(260.0, 60.0, 170.0, 240.0, "#f4f4f4", FAINT);
    svg.text(345.0, 90.0, "middle", r#"font-weight="bold""#, "Service 10.96.0.10");
    let service_notes =
        ["kube-proxy (iptables", "or IPVS) picks a Pod", "once, when the TCP", "connection opens"];
    for (i, note) in service_notes.iter().enumerate() {
        svg.text(345.0, 170.0 + 18.0 * i as f64, "middle", "", note);
    }
    // Pods: two old ones that carry every request, and a new one with nothing.
    let pods = [
        ("Pod 1", 110.0, "every request of A"),
        ("Pod 2", 250.0, "every request of B"),
        ("Pod 3 (new)", 350.0, "nothing"),
    ];
    for &(name, y, load) in &pods {
        svg.rect(560.0, y - 25.0, 150.0, 50.0, "white", INK);
        svg.text(635.0, y - 2.0, "middle", r#"font-weight="bold""#, name);
        svg.text(635.0, y + 16.0, "middle", r#"font-size="12""#, load);
    }
    for (i, &(_, y, colour)) in clients.iter().enumerate() {
        // Three requests on the one connection, all following the same path.
        for r in 0..3 {
            let dy = (r as f64 - 1.0) * 6.0;
            svg.line((150.0, y + dy), (260.0, y + dy), colour, 2.0, "");
            svg.line((430.0, y + dy), (560.0, pods[i].1 + dy), colour, 2.0, &arrow(colour));
        }
        svg.text(205.0, y - 14.0, "middle", r#"font-size="12""#, "1 connection,");
        svg.text(205.0, y + 26.0, "middle", r#"font-size="12""#, "many requests");
    }
    svg.line(
        (430.0, 330.0),
        (560.0, 350.0),
        FAINT,
        1.5,
        &format!(r#"stroke-dasharray="5,4" {}"#, arrow(FAINT)),
    );
    svg.text(440.0, 322.0, "start", &format!(r#"fill="{FAINT}" font-size="12""#), "only new connections");
    let notes = [
        "Scaling out added Pod 3, but A and B keep their connections, and with them their Pods. Fixes: balance",
        "per request (a mesh, a gateway, a client-side balancer), or give connections a maximum age.",
    ];
    for (i, note) in notes.iter().enumerate() {
        svg.text(30.0, 395.0 + 18.0 * i as f64, "start", "", note);
    }
    svg.finish()
}
