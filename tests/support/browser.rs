//! A small W3C WebDriver client for the browser suites: Debian's chromium,
//! headless, driven through its own chromedriver on a free port. Every
//! helper panics with the WebDriver error JSON, since these are test steps;
//! wait loops treat "no such element" and "stale element reference" as
//! "not yet", because the pages re-render under the test.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::task::Poll;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The key under which W3C WebDriver passes element references.
pub const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// WebDriver key codes for `send_keys` and `press_key`.
pub const TAB: &str = "\u{E004}";
pub const ENTER: &str = "\u{E007}";
pub const ESCAPE: &str = "\u{E00C}";

/// Whether the browser suites run. Off, one line says why; on, the browser
/// must be there: a suite that silently skips would pass without testing.
pub fn enabled(test: &str) -> bool {
    if std::env::var("INCIDENTD_TEST_BROWSER").as_deref() != Ok("1") {
        eprintln!(
            "skipped {test}: INCIDENTD_TEST_BROWSER is not 1 (this suite drives Debian's chromium through chromedriver; .ci/run installs both)"
        );
        return false;
    }
    assert!(
        Path::new(CHROMIUM).is_file(),
        "INCIDENTD_TEST_BROWSER=1 but {CHROMIUM} is missing (apt-get install chromium chromium-driver)"
    );
    chromedriver();
    true
}

fn chromedriver() -> PathBuf {
    super::find_program(&["/usr/bin/chromedriver", "chromedriver"]).unwrap_or_else(|| {
        panic!("INCIDENTD_TEST_BROWSER=1 but chromedriver is neither /usr/bin/chromedriver nor on PATH (apt-get install chromium-driver)")
    })
}

fn is_transient(err: &Value) -> bool {
    matches!(
        err["error"].as_str(),
        Some("no such element" | "stale element reference")
    ) || err["message"]
        .as_str()
        .is_some_and(|m| m.contains(DETACHED))
}

/// How Chromium reports, as an "unknown error", an element the page
/// replaced between finding and reading it: stale, in other words.
const DETACHED: &str = "does not belong to the document";

/// One WebDriver session's address; cheap to clone into every [`Element`].
#[derive(Clone)]
struct Wire {
    http: reqwest::Client,
    session: String,
}

impl Wire {
    /// The command's `value`, or the error object (stack trace dropped:
    /// chromedriver's are native addresses).
    async fn try_cmd(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| json!({"error": "transport", "message": e.to_string()}))?;
        let ok = resp.status().is_success();
        let text = resp.text().await.unwrap_or_default();
        let mut v: Value = serde_json::from_str(&text)
            .map_err(|_| json!({"error": "not JSON", "message": text}))?;
        let mut value = v["value"].take();
        if ok {
            return Ok(value);
        }
        if let Some(o) = value.as_object_mut() {
            o.remove("stacktrace");
        }
        Err(value)
    }

    async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let what = format!("WebDriver {method} {path}");
        let r = self.try_cmd(method, path, body).await;
        r.unwrap_or_else(|e| panic!("{what} failed: {e}"))
    }

    async fn get(&self, path: &str) -> Value {
        self.cmd(Method::GET, path, None).await
    }

    async fn get_str(&self, path: &str) -> String {
        as_string(self.get(path).await)
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.cmd(Method::POST, path, Some(body)).await
    }

    fn element(&self, v: &Value) -> Element {
        let id = v[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("not an element: {v}"));
        Element {
            wire: self.clone(),
            id: id.to_owned(),
        }
    }

    async fn try_find(&self, scope: &str, css: &str) -> Result<Element, Value> {
        let body = json!({"using": "css selector", "value": css});
        let path = format!("{scope}/element");
        Ok(self.element(&self.try_cmd(Method::POST, &path, Some(body)).await?))
    }

    async fn try_find_all(&self, scope: &str, css: &str) -> Result<Vec<Element>, Value> {
        let body = json!({"using": "css selector", "value": css});
        let path = format!("{scope}/elements");
        let v = self.try_cmd(Method::POST, &path, Some(body)).await?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .map(|e| self.element(e))
            .collect())
    }

    async fn find(&self, scope: &str, css: &str) -> Element {
        let r = self.try_find(scope, css).await;
        r.unwrap_or_else(|e| panic!("find {css:?}: {e}"))
    }

    /// All matches; stale ones (the list re-rendering) count as none yet.
    async fn find_all(&self, scope: &str, css: &str) -> Vec<Element> {
        match self.try_find_all(scope, css).await {
            Ok(all) => all,
            Err(e) if is_transient(&e) => vec![],
            Err(e) => panic!("find all {css:?}: {e}"),
        }
    }

    /// `None` when absent or gone stale; other errors still fail the test.
    async fn maybe_find(&self, scope: &str, css: &str) -> Option<Element> {
        match self.try_find(scope, css).await {
            Ok(e) => Some(e),
            Err(e) if is_transient(&e) => None,
            Err(e) => panic!("find {css:?}: {e}"),
        }
    }
}

/// A headless chromium with its chromedriver. [`Browser::quit`] ends the
/// session (chromedriver then closes its chromium); Drop is the fallback.
pub struct Browser {
    wire: Wire,
    port: u16,
    session_id: String,
    driver: Child,
    log: PathBuf,
    open: bool,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A browser whose window is `width` x `height` (the viewport is shorter,
    /// see [`Browser::set_size`]), with a fresh profile so parallel tests
    /// share nothing.
    pub async fn start(width: u32, height: u32) -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port for chromedriver")
            .port();
        let log =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("chromedriver-{port}.log"));
        let out =
            std::fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log handle");
        let mut driver = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromedriver: {e}"));
        let profile = tempfile::Builder::new()
            .prefix("incidentd-chromium-")
            .tempdir()
            .expect("profile dir");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("HTTP client");
        let root = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = driver.try_wait() {
                panic!("chromedriver exited at start ({status}): {}", tail(&log));
            }
            let status = http.get(format!("{root}/status")).send().await;
            let ready = match status {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("chromedriver not ready within 20s: {}", tail(&log));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {"binary": CHROMIUM, "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--disable-extensions",
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ]}}}});
        let new = Wire {
            http,
            session: format!("{root}/session"),
        };
        let v = match new.try_cmd(Method::POST, "", Some(caps)).await {
            Ok(v) => v,
            Err(e) => {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("new WebDriver session: {e}\n{}", tail(&log));
            }
        };
        let session_id = v["sessionId"].as_str().expect("sessionId").to_owned();
        let wire = Wire {
            session: format!("{root}/session/{session_id}"),
            ..new
        };
        Browser {
            wire,
            port,
            session_id,
            driver,
            log,
            open: true,
            _profile: profile,
        }
    }

    /// Ends the session (closing chromium) and stops chromedriver.
    pub async fn quit(mut self) {
        self.wire.cmd(Method::DELETE, "", None).await;
        self.open = false;
    }

    pub async fn goto(&self, url: &str) {
        self.wire.post("/url", json!({"url": url})).await;
    }
    pub async fn url(&self) -> String {
        self.wire.get_str("/url").await
    }
    pub async fn refresh(&self) {
        self.wire.post("/refresh", json!({})).await;
    }
    pub async fn title(&self) -> String {
        self.wire.get_str("/title").await
    }
    pub async fn page_source(&self) -> String {
        self.wire.get_str("/source").await
    }
    /// The window's outer size. Even headless, chromium keeps room for its
    /// toolbar: the viewport is as wide but 143 px shorter (chromium 156).
    pub async fn set_size(&self, width: u32, height: u32) {
        let rect = json!({"width": width, "height": height});
        self.wire.post("/window/rect", rect).await;
    }
    pub async fn find(&self, css: &str) -> Element {
        self.wire.find("", css).await
    }
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.wire.find_all("", css).await
    }
    pub async fn try_find(&self, css: &str) -> Option<Element> {
        self.wire.maybe_find("", css).await
    }
    /// Clicks the first element matching `css`, found again if a live
    /// update replaced it between finding and clicking (panics if none
    /// can be clicked within 5 s).
    pub async fn click_on(&self, css: &str) {
        let start = Instant::now();
        loop {
            if let Some(e) = self.try_find(css).await {
                match e
                    .wire
                    .try_cmd(Method::POST, &e.path("/click"), Some(json!({})))
                    .await
                {
                    Ok(_) => return,
                    Err(err) if is_transient(&err) => {}
                    Err(err) => panic!("click on {css:?}: {err}"),
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "nothing to click matches {css:?} at {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Presses and releases `key` (a WebDriver key code such as [`TAB`] or
    /// [`ENTER`]) on whatever has the focus, as a keyboard does: no
    /// element reference that a live update could make stale.
    pub async fn press_key(&self, key: &str) {
        let body = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]});
        self.wire.post("/actions", body).await;
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`, pass
    /// elements as [`Element::json`]); its return value.
    pub async fn exec(&self, script: &str, args: Vec<Value>) -> Value {
        let body = json!({"script": script, "args": args});
        self.wire.post("/execute/sync", body).await
    }

    /// The text of the first element matching `css`, read again if a live
    /// update replaced the element meanwhile (panics if none within 5 s).
    pub async fn text_of(&self, css: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(e) = self.try_find(css).await
                && let Some(t) = e.try_text().await
            {
                return t;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "no element {css:?} to read at {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Emulates the system's colour scheme (`dark` or `light`) for
    /// `prefers-color-scheme`, through chromedriver's DevTools passthrough.
    pub async fn color_scheme(&self, scheme: &str) {
        let body = json!({"cmd": "Emulation.setEmulatedMedia", "params": {
            "features": [{"name": "prefers-color-scheme", "value": scheme}]}});
        self.wire.post("/goog/cdp/execute", body).await;
    }

    /// The viewport as a PNG at `path` (parent directories created).
    pub async fn screenshot(&self, path: &Path) {
        let b64 = self.wire.get_str("/screenshot").await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("screenshot is base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// The whole page (up to 8000 px tall): the window is made as tall as
    /// the document for the shot, then given its size back.
    pub async fn full_screenshot(&self, path: &Path) {
        let rect = self.wire.get("/window/rect").await;
        let (w, h) = (
            rect["width"].as_u64().unwrap_or(0),
            rect["height"].as_u64().unwrap_or(0),
        );
        let script = "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight];";
        let v = self.exec(script, vec![]).await;
        let tall = v[0].as_u64().unwrap_or(h) + v[1].as_u64().unwrap_or(0);
        self.set_size(w as u32, tall.min(8000).max(h) as u32).await;
        self.screenshot(path).await;
        self.set_size(w as u32, h as u32).await;
    }

    /// Polls `f` every 100 ms until it is true; fails with `what` and the
    /// current URL after `within`. A panic in `f` from a missing or stale
    /// element counts as "not yet" (the page was re-rendering).
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        mut f: impl AsyncFnMut(&Browser) -> bool,
    ) {
        let start = Instant::now();
        loop {
            let mut fut = Box::pin(f(self));
            let polled = std::future::poll_fn(|cx| {
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    fut.as_mut().poll(cx)
                })) {
                    Ok(Poll::Pending) => Poll::Pending,
                    Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
                    Err(p) => Poll::Ready(Err(p)),
                }
            })
            .await;
            drop(fut);
            match polled {
                Ok(true) => return,
                Ok(false) => {}
                Err(p) => {
                    let msg = p
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| p.downcast_ref::<&str>().copied())
                        .unwrap_or("");
                    if !(msg.contains("\"no such element\"")
                        || msg.contains("\"stale element reference\"")
                        || msg.contains(DETACHED))
                    {
                        std::panic::resume_unwind(p);
                    }
                }
            }
            if start.elapsed() >= within {
                panic!("not within {within:?}: {what} (at {})", self.url().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The first element matching `css` whose text contains `needle`, once
    /// there is one.
    pub async fn wait_text(&self, css: &str, needle: &str, within: Duration) -> Element {
        let mut found = None;
        let what = format!("an element {css:?} with text {needle:?}");
        self.wait_for(&what, within, async |b| {
            for e in b.find_all(css).await {
                if e.try_text().await.is_some_and(|t| t.contains(needle)) {
                    found = Some(e);
                    return true;
                }
            }
            false
        })
        .await;
        found.expect("found")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.open {
            // Best effort, blocking (Drop cannot await): chromedriver closes
            // the session's chromium, which killing chromedriver would orphan.
            let _ = delete_session(self.port, &self.session_id);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- chromedriver log ({}) -----\n{}",
                self.log.display(),
                tail(&self.log)
            );
        }
    }
}

fn delete_session(port: u16, id: &str) -> std::io::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    // chromedriver answers once chromium is closed, but keeps the
    // connection open: the first bytes of the answer are enough.
    s.read(&mut [0; 64]).map(drop)
}

fn as_string(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => panic!("expected a string from WebDriver, got {other}"),
    }
}

/// The last 8 KiB of a log file.
fn tail(log: &Path) -> String {
    let text = std::fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let cut = text.len().saturating_sub(8192);
    let cut = (cut..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[cut..].to_owned()
}

/// An element of the page, as chromedriver knows it (it goes stale when the
/// page replaces it).
#[derive(Clone)]
pub struct Element {
    wire: Wire,
    id: String,
}

impl Element {
    /// The reference to pass in [`Browser::exec`]'s arguments.
    pub fn json(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }
    fn path(&self, rest: &str) -> String {
        format!("/element/{}{rest}", self.id)
    }
    pub async fn text(&self) -> String {
        self.wire.get_str(&self.path("/text")).await
    }
    /// The text, or `None` if the element went stale.
    pub async fn try_text(&self) -> Option<String> {
        match self
            .wire
            .try_cmd(Method::GET, &self.path("/text"), None)
            .await
        {
            Ok(v) => Some(as_string(v)),
            Err(e) if is_transient(&e) => None,
            Err(e) => panic!("text of element {}: {e}", self.id),
        }
    }
    pub async fn click(&self) {
        self.wire.post(&self.path("/click"), json!({})).await;
    }
    pub async fn send_keys(&self, text: &str) {
        let keys = json!({"text": text});
        self.wire.post(&self.path("/value"), keys).await;
    }
    pub async fn clear(&self) {
        self.wire.post(&self.path("/clear"), json!({})).await;
    }
    /// The HTML attribute (`None` when it is not set).
    pub async fn attr(&self, name: &str) -> Option<String> {
        let v = self
            .wire
            .get(&self.path(&format!("/attribute/{name}")))
            .await;
        v.as_str().map(str::to_owned)
    }
    /// The DOM property (e.g. `value`, `checked`), as JSON.
    pub async fn prop(&self, name: &str) -> Value {
        self.wire
            .get(&self.path(&format!("/property/{name}")))
            .await
    }
    /// The computed style, e.g. `rgba(0, 0, 0, 1)` for a colour.
    pub async fn css_value(&self, name: &str) -> String {
        self.wire.get_str(&self.path(&format!("/css/{name}"))).await
    }
    pub async fn find(&self, css: &str) -> Element {
        self.wire.find(&self.path(""), css).await
    }
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.wire.find_all(&self.path(""), css).await
    }
    pub async fn try_find(&self, css: &str) -> Option<Element> {
        self.wire.maybe_find(&self.path(""), css).await
    }
}
