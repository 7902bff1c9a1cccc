//! A small, blocking WebDriver client for the web UI tests.
//!
//! The UI tests drive a real headless Chromium over WebDriver: `Browser::start` runs
//! `chromedriver` (from Debian's `chromium-driver` package) on a free local port, opens a
//! session on `/usr/bin/chromium` with a fresh profile, and `Drop` ends the session and
//! kills chromedriver's whole process group, so no browser outlives the test. Everything
//! panics with the WebDriver error on failure: this is test code. A missing browser or
//! driver is a failure, never a skip (CI installs both through scripts/install-deps.sh).

use base64::Engine as _;
use serde_json::{json, Value};
use std::fmt;
use std::fs::File;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const CHROMEDRIVER: &str = "chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const MISSING: &str = "chromium-driver is not installed: run make test / scripts/install-deps.sh";
/// The key under which W3C WebDriver wraps an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
const POLL: Duration = Duration::from_millis(50);

/// An error answer from chromedriver (or a transport failure, with `error` "transport").
#[derive(Debug)]
struct WdError {
    status: u16,
    error: String,
    message: String,
}

impl fmt::Display for WdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = self.message.lines().next().unwrap_or("");
        write!(f, "{} ({}): {message}", self.error, self.status)
    }
}

/// One WebDriver command: the answer's `value`, or its error.
fn request(agent: &ureq::Agent, method: &str, url: &str, body: Option<Value>) -> Result<Value, WdError> {
    let req = agent.request(method, url);
    let answer = match body {
        Some(body) => req.send_json(body),
        None => req.call(),
    };
    let transport = |message: String| WdError { status: 0, error: "transport".into(), message };
    match answer {
        Ok(resp) => {
            let mut v: Value = resp.into_json().map_err(|e| transport(format!("{method} {url}: {e}")))?;
            Ok(v["value"].take())
        }
        Err(ureq::Error::Status(status, resp)) => {
            let v: Value = resp.into_json().unwrap_or(Value::Null);
            let field = |k: &str| v["value"][k].as_str().unwrap_or("").to_string();
            Err(WdError { status, error: field("error"), message: field("message") })
        }
        Err(e) => Err(transport(format!("{method} {url}: {e}"))),
    }
}

/// A chromedriver process with one open session on a headless Chromium.
pub struct Browser {
    driver: Child,
    agent: ureq::Agent,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
    find_timeout: Duration,
    /// The browser profile and chromedriver's log; removed after the processes end.
    dir: tempfile::TempDir,
}

/// An element of the current page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; panics if either is missing
    /// or does not come up.
    pub fn start() -> Browser {
        assert!(Path::new(CHROMIUM).exists(), "{CHROMIUM} not found; {MISSING}");
        let dir = tempfile::tempdir().expect("temp dir for the browser");
        let log = dir.path().join("chromedriver.log");
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
        let (driver, base) = (0..5)
            .find_map(|_| spawn_driver(&agent, &log))
            .unwrap_or_else(|| panic!("chromedriver did not start; its log:\n{}", read_log(&log)));
        let profile = dir.path().join("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // Shorter than the agent's timeout, so a stuck page gives a WebDriver error.
            "timeouts": {"pageLoad": 30_000, "script": 30_000},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1280,900", format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let mut browser = Browser { driver, agent, session: String::new(), find_timeout: Duration::from_secs(20), dir };
        match request(&browser.agent, "POST", &format!("{base}/session"), Some(caps)) {
            Ok(v) => {
                let id = v["sessionId"].as_str().expect("new session answer has a sessionId");
                browser.session = format!("{base}/session/{id}");
            }
            // Drop kills chromedriver; the log says why Chromium did not start.
            Err(e) => panic!("cannot start Chromium: {e}; chromedriver's log:\n{}", browser.log()),
        }
        browser
    }

    /// How long `find` and `Element::find` wait for a selector (default 20 s).
    pub fn set_find_timeout(&mut self, timeout: Duration) {
        self.find_timeout = timeout;
    }

    fn log(&self) -> String {
        read_log(&self.dir.path().join("chromedriver.log"))
    }

    fn try_cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, WdError> {
        request(&self.agent, method, &format!("{}{path}", self.session), body)
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_cmd(method, path, body).unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    fn string(&self, path: &str) -> String {
        let v = self.cmd("GET", path, None);
        v.as_str().unwrap_or_else(|| panic!("GET {path}: expected a string, got {v}")).to_string()
    }

    /// Navigates to `url` and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.string("/url")
    }

    pub fn title(&self) -> String {
        self.string("/title")
    }

    pub fn page_source(&self) -> String {
        self.string("/source")
    }

    /// The first element matching `css`, waiting for it up to the find timeout.
    pub fn find(&self, css: &str) -> Element<'_> {
        self.wait_find("", css)
    }

    /// The first element matching `css` now, if any.
    pub fn try_find(&self, css: &str) -> Option<Element<'_>> {
        self.find_now("", css)
    }

    /// Every element matching `css` now (no waiting).
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let v = self.cmd("POST", "/elements", Some(json!({"using": "css selector", "value": css})));
        let all = v.as_array().unwrap_or_else(|| panic!("find_all {css:?}: expected a list, got {v}"));
        all.iter().map(|e| self.element(e)).collect()
    }

    /// Clicks the first element matching `css`, finding it again if the page replaced it
    /// between the find and the click (live regions are swapped when events arrive).
    pub fn click(&self, css: &str) {
        let deadline = Instant::now() + self.find_timeout;
        loop {
            let el = self.find(css);
            match self.try_cmd("POST", &el.path("/click"), Some(json!({}))) {
                Ok(_) => return,
                Err(e) if e.error == "stale element reference" && Instant::now() < deadline => sleep(POLL),
                Err(e) => panic!("click {css:?}: {e}"),
            }
        }
    }

    /// Waits until an element matching `css` contains `needle` in its text, and returns it.
    pub fn wait_for_text(&self, css: &str, needle: &str, timeout: Duration) -> Element<'_> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut texts = Vec::new();
            for el in self.find_all(css) {
                // The page may replace the element between the two commands: poll again.
                let Ok(text) = el.try_text() else { continue };
                if text.contains(needle) {
                    return el;
                }
                texts.push(text);
            }
            if Instant::now() >= deadline {
                panic!("no {css:?} contains {needle:?} after {timeout:?} at {}; their text now: {texts:?}", self.url());
            }
            sleep(POLL);
        }
    }

    /// Runs `script` (a function body: `return` gives the result) with `args`
    /// (`Element::to_arg` passes an element).
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd("POST", "/execute/sync", Some(json!({"script": script, "args": args})))
    }

    /// Writes a PNG of the viewport to `path`.
    pub fn screenshot(&self, path: impl AsRef<Path>) {
        let png =
            base64::engine::general_purpose::STANDARD.decode(self.string("/screenshot")).expect("screenshot is base64");
        std::fs::write(path.as_ref(), png).unwrap_or_else(|e| panic!("write {}: {e}", path.as_ref().display()));
    }

    pub fn set_window_size(&self, width: u32, height: u32) {
        self.cmd("POST", "/window/rect", Some(json!({"width": width, "height": height})));
    }

    fn element(&self, v: &Value) -> Element<'_> {
        let id = v[ELEMENT_KEY].as_str().unwrap_or_else(|| panic!("not an element reference: {v}"));
        Element { browser: self, id: id.to_string() }
    }

    /// The first match of `css` under `scope` ("" for the page, or "/element/ID").
    fn find_now(&self, scope: &str, css: &str) -> Option<Element<'_>> {
        let body = json!({"using": "css selector", "value": css});
        match self.try_cmd("POST", &format!("{scope}/element"), Some(body)) {
            Ok(v) => Some(self.element(&v)),
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("find {css:?}: {e}"),
        }
    }

    fn wait_find(&self, scope: &str, css: &str) -> Element<'_> {
        let deadline = Instant::now() + self.find_timeout;
        loop {
            if let Some(el) = self.find_now(scope, css) {
                return el;
            }
            if Instant::now() >= deadline {
                let url = match self.try_cmd("GET", "/url", None) {
                    Ok(v) => v.as_str().unwrap_or_default().to_string(),
                    Err(e) => format!("(url unknown: {e})"),
                };
                panic!("no element matches {css:?} after {:?} at {url}", self.find_timeout);
            }
            sleep(POLL);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Closes Chromium; a hung one is killed with the process group below.
            let _ = self.agent.delete(&self.session).timeout(Duration::from_secs(10)).call();
        }
        // chromedriver leads its own process group, which Chromium and its helpers join.
        let pid = self.driver.id() as libc::pid_t;
        // SAFETY: kill(2) on a process group we created; no memory is involved.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.driver.wait();
    }
}

impl Element<'_> {
    fn path(&self, rest: &str) -> String {
        format!("/element/{}{rest}", self.id)
    }

    pub fn click(&self) {
        self.browser.cmd("POST", &self.path("/click"), Some(json!({})));
    }

    /// The rendered (visible) text.
    pub fn text(&self) -> String {
        self.try_text().unwrap_or_else(|e| panic!("element text: {e}"))
    }

    fn try_text(&self) -> Result<String, WdError> {
        let v = self.browser.try_cmd("GET", &self.path("/text"), None)?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// The HTML attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<String> {
        let v = self.browser.cmd("GET", &self.path(&format!("/attribute/{name}")), None);
        v.as_str().map(str::to_string)
    }

    /// The DOM property `name` (e.g. "value", "checked"); `Null` if unset.
    pub fn prop(&self, name: &str) -> Value {
        self.browser.cmd("GET", &self.path(&format!("/property/{name}")), None)
    }

    /// Types `text` into the element (focusing it first).
    pub fn send_keys(&self, text: &str) {
        self.browser.cmd("POST", &self.path("/value"), Some(json!({ "text": text })));
    }

    pub fn clear(&self) {
        self.browser.cmd("POST", &self.path("/clear"), Some(json!({})));
    }

    /// The first descendant matching `css`, waiting for it like `Browser::find`.
    pub fn find(&self, css: &str) -> Element<'_> {
        self.browser.wait_find(&self.path(""), css)
    }

    /// This element as an argument for `Browser::execute`.
    pub fn to_arg(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }
}

/// Runs chromedriver on a free port and waits until it is ready: `None` if it exited
/// (someone took the port meanwhile), so the caller retries on another.
fn spawn_driver(agent: &ureq::Agent, log: &Path) -> Option<(Child, String)> {
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let out = File::create(log).expect("chromedriver log file");
    let mut child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log file handle"))
        .stderr(out)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| match e.kind() {
            ErrorKind::NotFound => panic!("{CHROMEDRIVER} not found; {MISSING}"),
            _ => panic!("cannot run {CHROMEDRIVER}: {e}"),
        });
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if child.try_wait().expect("chromedriver status").is_some() {
            return None;
        }
        if let Ok(status) = request(agent, "GET", &format!("{base}/status"), None) {
            if status["ready"] == true {
                return Some((child, base));
            }
        }
        sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("chromedriver on port {port} not ready after 30 s; its log:\n{}", read_log(log));
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}
