//! marathon-lb's app labels (reference section 1.4), parsed and validated into one
//! [`Service`] per (app, service port). Every value that reaches the config is checked
//! here: no line breaks, no quotes, no comment signs, and each label only in its own
//! shape (a hostname list, a path, a CIDR list, ...). A label that breaks a rule is an
//! error naming the app and the label, and the app is left out; it is never written
//! into the config as it is.
//!
//! Labels per service port `n` are `HAPROXY_{n}_<NAME>`; the app-level ones are
//! `HAPROXY_GROUP` and `HAPROXY_DEPLOYMENT_GROUP`. Template overrides
//! (`HAPROXY_{n}_BACKEND_HEAD`, ...) are checked by [`super::template`].

use super::model::{LbApp, LbHealthCheck};
use super::template::{self, Templates};
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    Http,
    Tcp,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Http => "http",
            Mode::Tcp => "tcp",
        }
    }
}

/// One service port of one app, as the load balancer exposes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub app_id: String,
    pub index: usize,
    /// The port the frontend binds (the service port, or the `PORT` label).
    pub port: u16,
    /// Backend (and frontend) name: `grp_web_10000` for `/grp/web` on 10000.
    pub backend: String,
    pub mode: Mode,
    pub balance: String,
    pub vhosts: Vec<String>,
    pub path: Option<String>,
    pub weight: i64,
    pub bind_addr: String,
    pub bind_options: Option<String>,
    pub ssl_cert: Option<String>,
    pub redirect_to_https: bool,
    pub hsts: bool,
    pub sticky: bool,
    /// (realm, user, encrypted password).
    pub auth: Option<(String, String, String)>,
    pub proxypass_path: Option<String>,
    pub revproxy_path: Option<String>,
    pub redirect_root: Option<String>,
    pub network_allowed: Vec<String>,
    pub health: Option<LbHealthCheck>,
    /// Take the health check port from this port index of each task.
    pub health_port_index: Option<usize>,
    /// Template overrides from labels, already validated.
    pub templates: Templates,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelError {
    pub app_id: String,
    pub label: String,
    pub message: String,
}

impl std::fmt::Display for LabelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "app {}: label {}: {}", self.app_id, self.label, self.message)
    }
}

/// Which apps a load balancer serves (`--group`, `--strict-mode`).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Groups to expose; `*` exposes every app, grouped or not.
    pub groups: Vec<String>,
    /// Only ports labelled `HAPROXY_{n}_ENABLED=true` are exposed.
    pub strict: bool,
}

/// The services of `app` that `sel` exposes, or the first label error.
pub fn services(app: &LbApp, sel: &Selection) -> Result<Vec<Service>, LabelError> {
    let err = |label: &str, message: String| LabelError { app_id: app.id.clone(), label: label.into(), message };
    let app_groups = match app.labels.get("HAPROXY_GROUP") {
        Some(g) => list(g).map_err(|m| err("HAPROXY_GROUP", m))?,
        None => Vec::new(),
    };
    let mut out = Vec::new();
    for (index, &service_port) in app.service_ports.iter().enumerate() {
        let label = |name: &str| format!("HAPROXY_{index}_{name}");
        let port_labels = port_labels(app, index);
        let get = |name: &str| port_labels.get(name).copied();
        let groups = match get("GROUP") {
            Some(g) => list(g).map_err(|m| err(&label("GROUP"), m))?,
            None => app_groups.clone(),
        };
        let selected = sel.groups.iter().any(|g| g == "*" || groups.contains(g));
        let enabled = match get("ENABLED") {
            Some(v) => flag(v).map_err(|m| err(&label("ENABLED"), m))?,
            None => !sel.strict,
        };
        if !selected || !enabled {
            continue;
        }
        let mut s = parse_port(app, &port_labels, index, service_port).map_err(|(name, m)| err(&label(&name), m))?;
        s.templates = template::from_labels(&app.labels, index).map_err(|(l, m)| err(&l, m))?;
        out.push(s);
    }
    Ok(out)
}

type PortError = (String, String);

/// The labels `HAPROXY_{index}_<NAME>` of `app`, by `<NAME>` (one range scan of the
/// sorted labels, not one lookup per name).
fn port_labels(app: &LbApp, index: usize) -> BTreeMap<&str, &str> {
    let prefix = format!("HAPROXY_{index}_");
    app.labels.range(prefix.clone()..).map_while(|(k, v)| Some((k.strip_prefix(&prefix)?, v.as_str()))).collect()
}

/// Tags an error with the label name (without its `HAPROXY_{n}_` prefix).
fn e(name: &str) -> impl FnOnce(String) -> PortError + '_ {
    move |m| (name.to_string(), m)
}

fn parse_port(
    app: &LbApp,
    labels: &BTreeMap<&str, &str>,
    index: usize,
    service_port: u16,
) -> Result<Service, PortError> {
    let get = |name: &str| labels.get(name).copied();
    let opt = |name: &str, check: fn(&str) -> Result<String, String>| -> Result<Option<String>, PortError> {
        get(name).map(check).transpose().map_err(e(name))
    };
    let bool_label = |name: &str| -> Result<bool, PortError> {
        get(name).map(flag).transpose().map_err(e(name)).map(|b| b == Some(true))
    };

    let vhosts = match get("VHOST") {
        Some(v) => hostnames(v).map_err(e("VHOST"))?,
        None => Vec::new(),
    };
    let health = app.health_checks.iter().find(|h| h.port.is_some() || h.port_index.unwrap_or(0) == index).cloned();
    let health_http = health.as_ref().is_some_and(|h| h.protocol.contains("HTTP"));
    let mode = match get("MODE") {
        Some("http") => Mode::Http,
        Some("tcp") => Mode::Tcp,
        Some(other) => return Err(("MODE".into(), format!("'{other}' is neither http nor tcp"))),
        None if !vhosts.is_empty() || health_http => Mode::Http,
        None => Mode::Tcp,
    };
    let port = match get("PORT") {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or(("PORT".into(), format!("'{p}' is not a port")))?,
        None => service_port,
    };
    if port == 0 {
        return Err(("PORT".into(), "the app has no service port here (0): dromos assigns one when it is 0".into()));
    }
    let path = opt("PATH", path_with_flags)?;
    if path.is_some() && vhosts.is_empty() {
        return Err(("PATH".into(), "a path needs HAPROXY_{n}_VHOST".into()));
    }
    let auth = match get("AUTH") {
        Some(v) => Some(auth(v).map_err(e("AUTH"))?),
        None => None,
    };
    let network_allowed = match get("BACKEND_NETWORK_ALLOWED_ACL") {
        Some(v) => cidrs(v).map_err(e("BACKEND_NETWORK_ALLOWED_ACL"))?,
        None => Vec::new(),
    };
    let health_port_index = match get("BACKEND_HEALTHCHECK_PORT_INDEX") {
        Some(v) => Some(
            v.parse::<usize>()
                .map_err(|_| ("BACKEND_HEALTHCHECK_PORT_INDEX".into(), format!("'{v}' is not an index")))?,
        ),
        None => None,
    };
    Ok(Service {
        app_id: app.id.clone(),
        index,
        port,
        backend: backend_name(&app.id, service_port),
        mode,
        balance: opt("BALANCE", balance)?.unwrap_or_else(|| "roundrobin".into()),
        vhosts,
        path,
        weight: match get("BACKEND_WEIGHT") {
            Some(w) => w.parse().map_err(|_| ("BACKEND_WEIGHT".into(), format!("'{w}' is not a number")))?,
            None => 0,
        },
        bind_addr: opt("BIND_ADDR", bind_addr)?.unwrap_or_else(|| "*".into()),
        bind_options: opt("BIND_OPTIONS", words)?,
        ssl_cert: opt("SSL_CERT", file_list)?,
        redirect_to_https: bool_label("REDIRECT_TO_HTTPS")?,
        hsts: bool_label("USE_HSTS")?,
        sticky: bool_label("STICKY")?,
        auth,
        proxypass_path: opt("HTTP_BACKEND_PROXYPASS_PATH", url_path)?,
        revproxy_path: opt("HTTP_BACKEND_REVPROXY_PATH", url_path)?,
        redirect_root: opt("HTTP_BACKEND_REDIR", url_path)?,
        network_allowed,
        health,
        health_port_index,
        templates: Templates::default(),
    })
}

/// `/grp/web` on 10000 is `grp_web_10000` (marathon-lb's naming); anything that is not
/// a letter, digit, `.`, `-` or `_` becomes `_`.
pub fn backend_name(app_id: &str, service_port: u16) -> String {
    let id: String = app_id
        .trim_start_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    format!("{id}_{service_port}")
}

/// Characters no label value may contain: they would end a line, open a quoted string
/// or a comment, or escape.
fn plain(v: &str) -> Result<(), String> {
    if let Some(c) = v.chars().find(|c| c.is_control() || matches!(c, '"' | '\'' | '#' | '\\' | '`')) {
        return Err(format!("contains {c:?}, which is not allowed in a load balancer label"));
    }
    if v.trim().is_empty() {
        return Err("is empty".into());
    }
    Ok(())
}

fn all_chars(v: &str, what: &str, ok: impl Fn(char) -> bool) -> Result<(), String> {
    plain(v)?;
    match v.chars().find(|c| !ok(*c)) {
        Some(c) => Err(format!("'{v}' is not {what}: {c:?} is not allowed")),
        None => Ok(()),
    }
}

fn flag(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("'{v}' is neither true nor false")),
    }
}

fn list(v: &str) -> Result<Vec<String>, String> {
    all_chars(v, "a list of names", |c| c.is_ascii_alphanumeric() || matches!(c, ',' | '-' | '_' | '.' | '*'))?;
    Ok(v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
}

fn hostnames(v: &str) -> Result<Vec<String>, String> {
    all_chars(v, "a list of host names", |c| c.is_ascii_alphanumeric() || matches!(c, ',' | '-' | '.' | ' '))?;
    let hosts: Vec<String> = v.split(',').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect();
    if hosts.iter().any(|h| h.contains(' ') || h.starts_with('.') || h.starts_with('-')) {
        return Err(format!("'{v}' is not a comma-separated list of host names"));
    }
    Ok(hosts)
}

fn path_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '/' | '.' | '-' | '_' | '~' | '%' | '+' | '=' | ',' | ':' | '@' | '!' | '$' | '&' | '*' | ';')
}

fn url_path(v: &str) -> Result<String, String> {
    all_chars(v, "a URL path", path_char)?;
    if !v.starts_with('/') {
        return Err(format!("'{v}' does not start with /"));
    }
    Ok(v.to_string())
}

/// `path_beg` arguments: paths, optionally after flags such as `-i`.
fn path_with_flags(v: &str) -> Result<String, String> {
    all_chars(v, "a path list", |c| path_char(c) || c == ' ')?;
    for w in v.split_whitespace() {
        if !(w.starts_with('/') || matches!(w, "-i" | "-m" | "beg" | "str")) {
            return Err(format!("'{w}' is neither a path nor a match flag (-i)"));
        }
    }
    Ok(v.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn balance(v: &str) -> Result<String, String> {
    all_chars(v, "a balance algorithm", |c| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '(' | ')' | ' ' | '.')
    })?;
    const KNOWN: &[&str] = &[
        "roundrobin",
        "static-rr",
        "leastconn",
        "first",
        "source",
        "uri",
        "url_param",
        "hdr",
        "random",
        "rdp-cookie",
        "hash",
    ];
    let head = v.split(['(', ' ']).next().unwrap_or("");
    if !KNOWN.contains(&head) {
        return Err(format!("'{head}' is not an HAProxy balance algorithm"));
    }
    Ok(v.to_string())
}

fn bind_addr(v: &str) -> Result<String, String> {
    if v == "*" || v.parse::<IpAddr>().is_ok() {
        return Ok(v.to_string());
    }
    Err(format!("'{v}' is neither * nor an IP address"))
}

/// Bind options: words of letters, digits and `-_./:=,@`.
fn words(v: &str) -> Result<String, String> {
    all_chars(v, "a list of bind options", |c| {
        c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.' | '/' | ':' | '=' | ',' | '@')
    })?;
    Ok(v.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Certificate paths, comma-separated, absolute.
fn file_list(v: &str) -> Result<String, String> {
    all_chars(v, "a list of files", |c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '-' | '_' | ','))?;
    if v.split(',').any(|p| !p.starts_with('/')) {
        return Err(format!("'{v}': certificate paths must be absolute"));
    }
    Ok(v.to_string())
}

fn auth(v: &str) -> Result<(String, String, String), String> {
    plain(v)?;
    let mut parts = v.splitn(3, ':');
    let (Some(realm), Some(user), Some(pass)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("must be realm:user:encrypted-password".into());
    };
    let token = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !token(realm) || !token(user) {
        return Err("realm and user may only hold letters, digits, '-', '_' and '.'".into());
    }
    if pass.is_empty() || !pass.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '$' | '.' | '/' | '=')) {
        return Err("the password must be a crypt(3) hash".into());
    }
    Ok((realm.into(), user.into(), pass.into()))
}

fn cidrs(v: &str) -> Result<Vec<String>, String> {
    plain(v)?;
    v.split_whitespace()
        .map(|c| {
            let (ip, len) = c.split_once('/').unwrap_or((c, ""));
            let addr: IpAddr = ip.parse().map_err(|_| format!("'{c}' is not a CIDR"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if !len.is_empty() && len.parse::<u8>().ok().filter(|l| *l <= max).is_none() {
                return Err(format!("'{c}' is not a CIDR"));
            }
            Ok(c.to_string())
        })
        .collect()
}

/// Labels by name, for tests.
#[cfg(test)]
pub fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(pairs: &[(&str, &str)]) -> LbApp {
        LbApp {
            id: "/grp/web".into(),
            labels: labels(pairs),
            service_ports: vec![10000, 10001],
            health_checks: Vec::new(),
            tasks: Vec::new(),
        }
    }

    fn all() -> Selection {
        Selection { groups: vec!["*".into()], strict: false }
    }

    #[test]
    fn groups_select_apps_and_ports() {
        let ext = Selection { groups: vec!["external".into()], strict: false };
        assert!(services(&app(&[]), &ext).unwrap().is_empty(), "no group: only '*' load balancers");
        assert_eq!(services(&app(&[]), &all()).unwrap().len(), 2);
        let s = services(&app(&[("HAPROXY_GROUP", "internal,external")]), &ext).unwrap();
        assert_eq!(s.iter().map(|s| s.backend.as_str()).collect::<Vec<_>>(), ["grp_web_10000", "grp_web_10001"]);
        // The per-port group wins.
        let s = services(&app(&[("HAPROXY_GROUP", "external"), ("HAPROXY_1_GROUP", "internal")]), &ext).unwrap();
        assert_eq!(s.len(), 1);
        // Strict mode exposes only enabled ports; otherwise ENABLED=false hides one.
        let strict = Selection { strict: true, ..all() };
        assert_eq!(services(&app(&[("HAPROXY_1_ENABLED", "true")]), &strict).unwrap()[0].index, 1);
        assert_eq!(services(&app(&[("HAPROXY_0_ENABLED", "false")]), &all()).unwrap().len(), 1);
    }

    #[test]
    fn values_are_typed_and_mode_is_inferred() {
        let s = services(
            &app(&[
                ("HAPROXY_0_VHOST", "Shop.Example.com, www.example.com"),
                ("HAPROXY_0_PATH", "-i /api /v2"),
                ("HAPROXY_0_BALANCE", "leastconn"),
                ("HAPROXY_0_BACKEND_WEIGHT", "3"),
                ("HAPROXY_0_STICKY", "true"),
                ("HAPROXY_0_AUTH", "admins:alice:$6$salt$abc/def."),
                ("HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL", "10.0.0.0/8 192.168.1.1"),
                ("HAPROXY_1_PORT", "9999"),
                ("HAPROXY_1_BIND_ADDR", "127.0.0.1"),
            ]),
            &all(),
        )
        .unwrap();
        assert_eq!(s[0].vhosts, ["shop.example.com", "www.example.com"]);
        assert_eq!((s[0].mode, s[0].balance.as_str(), s[0].weight, s[0].sticky), (Mode::Http, "leastconn", 3, true));
        assert_eq!(s[0].path.as_deref(), Some("-i /api /v2"));
        assert_eq!(s[0].auth.as_ref().unwrap().0, "admins");
        assert_eq!(s[0].network_allowed.len(), 2);
        assert_eq!((s[1].mode, s[1].port, s[1].bind_addr.as_str()), (Mode::Tcp, 9999, "127.0.0.1"));
    }

    #[test]
    fn injection_and_malformed_values_are_rejected_with_the_label_named() {
        let bad = [
            ("HAPROXY_0_VHOST", "a.com\n  use_backend evil"),
            ("HAPROXY_0_VHOST", "a.com if TRUE"),
            ("HAPROXY_0_BIND_OPTIONS", "ssl\r\nlisten x"),
            ("HAPROXY_0_BALANCE", "roundrobin\n  server x 1.2.3.4:1"),
            ("HAPROXY_0_BALANCE", "evil"),
            ("HAPROXY_0_PATH", "/a' or '1"),
            ("HAPROXY_0_PATH", "/a if TRUE"),
            ("HAPROXY_0_MODE", "udp"),
            ("HAPROXY_0_PORT", "70000"),
            ("HAPROXY_0_BIND_ADDR", "0.0.0.0:80 name x"),
            ("HAPROXY_0_SSL_CERT", "relative.pem"),
            ("HAPROXY_0_AUTH", "realm:user"),
            ("HAPROXY_0_AUTH", "re alm:user:$1$x"),
            ("HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL", "10.0.0.0/33"),
            ("HAPROXY_0_REDIRECT_TO_HTTPS", "yes"),
            ("HAPROXY_0_HTTP_BACKEND_PROXYPASS_PATH", "/x#comment"),
            ("HAPROXY_GROUP", "a b"),
        ];
        for (k, v) in bad {
            let e = services(&app(&[(k, v)]), &all()).unwrap_err();
            assert_eq!(e.label, k, "{v:?}");
            assert_eq!(e.app_id, "/grp/web");
            assert!(!e.message.is_empty());
        }
        // A path needs a vhost.
        assert_eq!(services(&app(&[("HAPROXY_0_PATH", "/a")]), &all()).unwrap_err().label, "HAPROXY_0_PATH");
    }

    #[test]
    fn backend_names_follow_marathon_lb() {
        assert_eq!(backend_name("/nginx", 10000), "nginx_10000");
        assert_eq!(backend_name("/grp/sub/web-1.v2", 10001), "grp_sub_web-1.v2_10001");
    }
}
