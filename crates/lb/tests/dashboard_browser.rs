//! The admin dashboard in a real browser: headless Chromium, driven through chromedriver (WebDriver) by
//! `fantoccini`, against the demo (`lb` with no arguments: three toy backends behind round robin).
//!
//! It checks what a learner would look at: the page lists the three backends; traffic sent to the proxy
//! moves their counters and draws the chart; the drain button marks a backend draining and the proxy
//! then sends it nothing (checked through the admin API, not the page); the decision list explains the
//! picks. When a check fails, a screenshot of the page is saved under `target/tmp/` and its path printed.
//!
//! Needs Debian's `chromium` and `chromium-driver`. Without them the test prints that it skipped and how
//! to install them; with `LB_REQUIRE_EXTERNAL=1` (CI) it fails instead. chromedriver listens on the first
//! free port of 9860-9869 on 127.0.0.1.

#![allow(clippy::unwrap_used)]

mod proxy_support;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser as _;
use fantoccini::{Client, ClientBuilder, Locator};
use proxy_support::client;

const INSTALL: &str = "apt-get install -y chromium chromium-driver";

/// How long the page gets to show something before a check fails.
const PATIENCE: Duration = Duration::from_secs(20);

fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}

/// chromedriver, killed when the test ends however it ends.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_chromedriver(program: &Path) -> Driver {
    let port = (9860..9870)
        .find(|&p| TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], p))).is_ok())
        .expect("a free port in 9860-9869 for chromedriver");
    let child = Command::new(program)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let driver = Driver { child, port };
    let deadline = Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    driver
}

async fn browser(driver: &Driver, chromium: &Path, profile: &Path) -> Client {
    // Without the background-networking switches Chromium keeps trying to reach Google's services,
    // which a closed network refuses; a fresh profile keeps each run independent of the last.
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ];
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_string(),
        serde_json::json!({ "binary": chromium.display().to_string(), "args": args }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .unwrap_or_else(|e| panic!("cannot open a Chromium session through chromedriver: {e}"))
}

/// Ask `f` until it answers `Some`, for up to [`PATIENCE`]: the page updates once a second.
async fn until<T, F, Fut>(what: &str, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("the page never showed {what}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn webdriver<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

/// The text of every element `css` matches, or an attribute of each: read in one script, as the page
/// redraws its chart every second (elements found one call and read the next may be gone by then).
async fn query(page: &Client, css: &str, attribute: Option<&str>) -> Result<Vec<String>, String> {
    let script = "return Array.from(document.querySelectorAll(arguments[0]))
        .map(e => arguments[1] === null ? e.textContent : (e.getAttribute(arguments[1]) || ''));";
    let value = page
        .execute(script, vec![serde_json::json!(css), serde_json::json!(attribute)])
        .await
        .map_err(webdriver("query"))?;
    serde_json::from_value(value).map_err(|e| format!("query {css}: {e}"))
}

async fn texts(page: &Client, css: &str) -> Result<Vec<String>, String> {
    query(page, css, None).await
}

async fn attrs(page: &Client, css: &str, name: &str) -> Result<Vec<String>, String> {
    query(page, css, Some(name)).await
}

/// Each backend's response count, as the admin API says.
async fn api_requests(admin: &str) -> Vec<(String, u64, String)> {
    let v: serde_json::Value =
        client().get(format!("{admin}/backends")).send().await.unwrap().json().await.unwrap();
    v["upstreams"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["addr"].as_str().unwrap().to_string(),
                b["requests"].as_u64().unwrap(),
                b["health"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn traffic(proxy: &str, n: usize) -> Result<(), String> {
    let http = client();
    for _ in 0..n {
        let response = http.get(format!("{proxy}/")).send().await.map_err(|e| format!("request: {e}"))?;
        if response.status() != 200 {
            return Err(format!("the proxy answered {}", response.status()));
        }
    }
    Ok(())
}

/// The checks, each an `Err` with what went wrong (the caller takes the screenshot).
async fn walk_through(page: &Client, demo: &lb::cli::Demo) -> Result<(), String> {
    let admin = format!("http://{}", demo.running.admin.unwrap());
    let proxy = demo.running.url();
    let addrs: Vec<String> = demo.backends.iter().map(|b| b.addr().to_string()).collect();
    page.goto(&format!("{admin}/")).await.map_err(webdriver("goto"))?;

    // 1. The three backends, in order, healthy, under round robin.
    let rows = until("three backend rows", || async {
        let rows = attrs(page, "tr[data-addr]", "data-addr").await?;
        Ok((rows.len() == 3).then_some(rows))
    })
    .await?;
    if rows != addrs {
        return Err(format!("rows {rows:?}, expected the demo's backends {addrs:?}"));
    }
    let algorithm = texts(page, ".algorithm").await?;
    if algorithm != ["round-robin"] {
        return Err(format!("algorithm shown: {algorithm:?}"));
    }
    let states = texts(page, "td.state").await?;
    if states.iter().any(|s| s != "healthy") {
        return Err(format!("states before any traffic: {states:?}"));
    }

    // 2. Traffic moves every counter and draws every line of the chart.
    traffic(&proxy, 30).await?;
    until("30 requests counted and a line per backend in the chart", || async {
        let counts = texts(page, "td.requests").await?;
        let total: u64 = counts.iter().filter_map(|c| c.parse::<u64>().ok()).sum();
        let lines = attrs(page, "svg.chart polyline", "points").await?;
        Ok((total >= 30
            && counts.iter().all(|c| c != "0")
            && lines.len() == 3
            && lines.iter().all(|p| !p.is_empty()))
        .then_some(()))
    })
    .await?;

    // 3. The decision list explains round robin's picks.
    let reasons = until("explained decisions", || async {
        let r = texts(page, "li.decision .reason").await?;
        Ok((!r.is_empty()).then_some(r))
    })
    .await?;
    if !reasons.iter().all(|r| r.starts_with("round-robin")) {
        return Err(format!("decision reasons: {reasons:?}"));
    }
    let targets = texts(page, "li.decision .to").await?;
    if !targets.iter().all(|t| addrs.iter().any(|a| t == &format!("demo -> {a}"))) {
        return Err(format!("decision targets: {targets:?}"));
    }

    // 4. Drain the first backend from the page: it shows draining, and gets nothing new.
    let drained = &addrs[0];
    let button = format!("tr[data-addr=\"{drained}\"] button.drain");
    page.find(Locator::Css(&button))
        .await
        .map_err(webdriver("the drain button"))?
        .click()
        .await
        .map_err(webdriver("click"))?;
    let state_css = format!("tr[data-addr=\"{drained}\"] td.state");
    until("the drained backend as draining", || async {
        Ok((texts(page, &state_css).await? == ["draining"]).then_some(()))
    })
    .await?;
    let before = api_requests(&admin).await;
    if before[0].2 != "draining" {
        return Err(format!("the admin API says {before:?} after the click"));
    }
    traffic(&proxy, 12).await?;
    let after = api_requests(&admin).await;
    if after[0].1 != before[0].1 || after[1].1 + after[2].1 != before[1].1 + before[2].1 + 12 {
        return Err(format!("a drained backend got requests: before {before:?}, after {after:?}"));
    }
    // The button now undoes it.
    let undrain = format!("tr[data-addr=\"{drained}\"] button.undrain");
    page.find(Locator::Css(&undrain)).await.map_err(webdriver("the undrain button"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_demo_live_and_its_drain_button_drains() {
    let (Some(chromium), Some(chromedriver)) = (find("chromium"), find("chromedriver")) else {
        assert!(
            std::env::var_os("LB_REQUIRE_EXTERNAL").is_none(),
            "chromium and chromedriver are required (LB_REQUIRE_EXTERNAL is set): {INSTALL}"
        );
        println!("SKIPPED: dashboard_browser needs chromium and chromedriver: install with {INSTALL}");
        return;
    };
    let args = lb::cli::Args::parse_from([
        "lb",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--workers",
        "1",
    ]);
    let demo = lb::cli::start_demo(&args).await.unwrap_or_else(|e| panic!("{e:#}"));
    let driver = start_chromedriver(&chromedriver);
    let profile = tempfile::tempdir().unwrap();
    let page = browser(&driver, &chromium, profile.path()).await;

    let result = walk_through(&page, &demo).await;
    if let Err(problem) = &result {
        let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-browser-failure.png");
        match page.screenshot().await {
            Ok(png) => match std::fs::write(&shot, png) {
                Ok(()) => eprintln!("{problem}\nscreenshot of the page: {}", shot.display()),
                Err(e) => eprintln!("{problem}\n(no screenshot: {e})"),
            },
            Err(e) => eprintln!("{problem}\n(no screenshot: {e})"),
        }
    }
    let _ = page.close().await;
    drop(driver);
    demo.running.shutdown().await;
    for b in demo.backends {
        b.shutdown().await;
    }
    if let Err(problem) = result {
        panic!("{problem}");
    }
}
