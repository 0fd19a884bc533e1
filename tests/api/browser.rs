//! A real browser for the console's tests: Debian's `chromium`, headless,
//! driven over WebDriver (`chromedriver`, the `fantoccini` client).
//!
//! Needs `chromium` and `chromium-driver` (Debian's packages; `.ci/run`
//! installs them). chromedriver picks its own port (`--port=0`) and says
//! which; the browser runs on the machine's clock even under faketime (the
//! variables that carry faketime are not passed on): nothing it does depends
//! on the date, and the gateway's own certificate is accepted as it is.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless chromium, closed (and its driver killed) on [`Browser::close`] or drop.
pub struct Browser {
    pub client: Client,
    _driver: Child,
}

impl Browser {
    pub async fn start() -> Self {
        let mut driver = Command::new("chromedriver")
            .arg("--port=0")
            .env_remove("LD_PRELOAD")
            .env_remove("FAKETIME")
            .env_remove("FAKETIME_NO_CACHE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot run chromedriver: install Debian's chromium and chromium-driver for the console's browser tests");
        let mut lines = BufReader::new(driver.stdout.take().expect("piped stdout")).lines();
        let port = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                // "ChromeDriver was started successfully on port 37283."
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    return rest.trim_end_matches('.').parse::<u16>().ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .expect("chromedriver says which port it listens on");
        // Keep reading what chromedriver prints, so that its pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let mut capabilities = Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", "--lang=en-GB", "--no-first-run", "--disable-extensions"],
            }),
        );
        // The gateway's certificate is the tests' own, valid at the test clock's time.
        capabilities.insert("acceptInsecureCerts".to_owned(), Value::Bool(true));
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a chromium session through chromedriver");
        Self { client, _driver: driver }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The path (and query) of the page shown.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current URL");
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// The visible text of the page. A page that moves on while it is read
    /// (a form posted, a refresh) is read again, the new one.
    pub async fn text(&self) -> String {
        let mut last_error = None;
        for _ in 0..50 {
            let read = match self.client.find(Locator::Css("body")).await {
                Ok(body) => body.text().await,
                Err(error) => Err(error),
            };
            match read {
                Ok(text) => return text,
                Err(error) => last_error = Some(error),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the page's text could not be read: {last_error:?}");
    }

    pub async fn title(&self) -> String {
        self.client.title().await.expect("the page's title")
    }

    pub async fn click_link(&self, text: &str) {
        self.client.find(Locator::LinkText(text)).await.unwrap_or_else(|e| panic!("a link {text:?}: {e}")).click().await.expect("click");
    }

    pub async fn click(&self, css: &str) {
        let Ok(element) = self.client.find(Locator::Css(css)).await else {
            panic!("no {css} on {}:\n{}", self.path().await, self.text().await);
        };
        element.click().await.expect("click");
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let Ok(field) = self.client.find(Locator::Css(css)).await else {
            panic!("no {css} on {}:\n{}", self.path().await, self.text().await);
        };
        field.clear().await.expect("clear");
        field.send_keys(value).await.expect("type");
    }

    /// Waits until the page's path is `path` (a page may move on by itself).
    pub async fn wait_for_path(&self, path: &str) {
        self.wait_until(&format!("reach {path}"), || async { self.path().await == path }).await;
    }

    /// Waits until the page shows `needle` (after a form posted back to the same address, say).
    pub async fn wait_for_text(&self, needle: &str) {
        self.wait_until(&format!("show {needle:?}"), || async { self.text().await.contains(needle) }).await;
    }

    /// Waits until the page's path and query start with `prefix`.
    pub async fn wait_for_path_starting(&self, prefix: &str) {
        self.wait_until(&format!("reach {prefix}..."), || async { self.path().await.starts_with(prefix) }).await;
    }

    /// Polls `done` up to 30 s; on timeout, says what the browser shows instead.
    async fn wait_until<F, Fut>(&self, what: &str, mut done: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !done().await {
            assert!(std::time::Instant::now() < deadline, "the browser did not {what}; it shows {}:\n{}", self.path().await, self.text().await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Saves a screenshot of the page as `name`.png under `target/console-screenshots/`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).expect("the screenshots' folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, self.client.screenshot().await.expect("a screenshot")).expect("write the screenshot");
        path
    }

    /// Saves a screenshot of the first element `css` finds, as `name`.png beside the others.
    pub async fn element_screenshot(&self, css: &str, name: &str) -> PathBuf {
        let element = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).expect("the screenshots' folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, element.screenshot().await.expect("a screenshot")).expect("write the screenshot");
        path
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
