//! The generator: a pure function from the apps (and the load balancer's settings) to
//! HAProxy 2.6 config text. Deterministic: apps in id order, services in port order,
//! vhost rules by `BACKEND_WEIGHT` (highest first, then id), servers by host and port;
//! the same input gives the same bytes on every load balancer.
//!
//! Besides the text it returns what the sidecar needs to change HAProxy without a
//! reload: each backend's server lines, whether the backend takes servers at runtime,
//! and a *skeleton* (the text without server lines). Two renders with the same
//! skeleton differ only in servers, and those changes go through the runtime API.
//!
//! An app whose labels are invalid, or that would clash with an app before it (the same
//! bind address and port, the same vhost and path), is left out and listed in
//! [`Rendered::rejected`]; the rest is rendered.

use super::labels::{services, LabelError, Mode, Selection, Service};
use super::model::{LbApp, LbTask};
use super::template::{fill, pick, Templates};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// Load-balancer-wide settings (the sidecar's flags).
#[derive(Debug, Clone)]
pub struct Settings {
    pub selection: Selection,
    /// The shared HTTP frontend's port (vhost routing); 0: none.
    pub http_port: u16,
    /// The shared HTTPS frontend's port, used when `ssl_certs` is not empty.
    pub https_port: u16,
    pub ssl_certs: Vec<String>,
    /// Where HAProxy's stats page, health check and Prometheus metrics listen.
    pub stats_bind: String,
    /// The runtime API socket (admin level, hands listeners over on reload).
    pub socket: String,
    /// Server states saved before a reload and loaded after it.
    pub state_file: String,
    /// Global template overrides (`--templates DIR`).
    pub templates: Templates,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            selection: Selection { groups: vec!["external".into()], strict: false },
            http_port: 80,
            https_port: 443,
            ssl_certs: Vec::new(),
            stats_bind: "127.0.0.1:9090".into(),
            socket: "/run/haproxy/admin.sock".into(),
            state_file: "/var/lib/haproxy/server-state".into(),
            templates: Templates::new(),
        }
    }
}

/// One `server` line: address and the keywords after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLine {
    pub addr: std::net::SocketAddrV4,
    pub options: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Backend {
    /// Whether servers can be added and deleted at runtime (HAProxy 2.6 needs a dynamic
    /// balance algorithm, and refuses `cookie` on dynamic servers).
    pub dynamic: bool,
    pub servers: BTreeMap<String, ServerLine>,
}

#[derive(Debug, Clone, Default)]
pub struct Rendered {
    pub text: String,
    /// The text without server lines.
    pub skeleton: String,
    pub backends: BTreeMap<String, Backend>,
    pub rejected: Vec<LabelError>,
}

/// The default `HEAD` template. It sets no global `maxconn`: HAProxy then sizes it to
/// the file descriptor limit, where a fixed 50,000 (marathon-lb's) needs 100,000
/// descriptors and HAProxy refuses to start on a host that cannot give them.
const DEFAULT_HEAD: &str = "global
  log stdout format raw local0 notice
  spread-checks 5
  max-spread-checks 15000
  stats socket {socket} mode 600 level admin expose-fd listeners
  stats timeout 2m
  server-state-file {stateFile}
  hard-stop-after 5m
  mworker-max-reloads 50
  ssl-default-bind-options no-sslv3 no-tlsv10 no-tls-tickets
defaults
  log global
  load-server-state-from-file global
  retries 3
  option redispatch
  option dontlognull
  backlog 10000
  maxconn 10000
  timeout connect 3s
  timeout client 30s
  timeout server 30s
  timeout tunnel 3600s
  timeout http-keep-alive 1s
  timeout http-request 15s
  timeout queue 30s
  timeout tarpit 60s
listen stats
  bind {statsBind}
  mode http
  option http-server-close
  monitor-uri /_haproxy_health_check
  http-request use-service prometheus-exporter if {{ path /metrics }}
  stats enable
  stats uri /haproxy?stats
";

/// Renders the config for `apps`.
pub fn render(apps: &[LbApp], s: &Settings) -> Rendered {
    let mut out = Rendered::default();
    let (selected, rejected) = select(apps, s);
    out.rejected = rejected;
    let all: Vec<&Service> = selected.iter().map(|(svc, _)| svc).collect();
    // The head and frontends: about 250 bytes per service.
    let mut w = Out::with_capacity(4096 + all.len() * 250);

    let head = s.templates.get("HEAD").map(String::as_str).unwrap_or(DEFAULT_HEAD);
    let mut t = String::new();
    fill(head, &[("socket", &s.socket), ("stateFile", &s.state_file), ("statsBind", &s.stats_bind)], &mut t);
    w.both(&t);

    for svc in all.iter().filter(|x| x.auth.is_some()) {
        if let Some((_, user, pass)) = &svc.auth {
            w.both(&format!("\nuserlist user_{}\n  user {user} password {pass}\n", svc.backend));
        }
    }

    // Vhost routing, highest weight first (marathon-lb's order), then by app and port.
    let mut routed: Vec<&Service> = all.iter().copied().filter(|x| !x.vhosts.is_empty()).collect();
    routed.sort_by(|a, b| b.weight.cmp(&a.weight).then_with(|| (&a.app_id, a.port).cmp(&(&b.app_id, b.port))));
    if s.http_port > 0 {
        w.both(&format!("\nfrontend marathon_http_in\n  bind *:{}\n  mode http\n", s.http_port));
        shared_frontend(&mut w, &routed, false);
    }
    if !s.ssl_certs.is_empty() {
        let certs: String = s.ssl_certs.iter().map(|c| format!(" crt {c}")).collect();
        w.both(&format!("\nfrontend marathon_https_in\n  bind *:{} ssl{certs}\n  mode http\n", s.https_port));
        shared_frontend(&mut w, &routed, true);
    }

    for svc in &all {
        let ssl = svc.ssl_cert.as_ref().map(|c| c.split(',').map(|c| format!(" ssl crt {c}")).collect::<String>());
        let port = svc.port.to_string();
        let bind_options = svc.bind_options.as_ref().map(|o| format!(" {o}")).unwrap_or_default();
        let vars = [
            ("backend", svc.backend.as_str()),
            ("bindAddr", svc.bind_addr.as_str()),
            ("servicePort", port.as_str()),
            ("sslCert", ssl.as_deref().unwrap_or("")),
            ("bindOptions", bind_options.as_str()),
            ("mode", svc.mode.name()),
            ("appId", svc.app_id.as_str()),
        ];
        w.template("FRONTEND_HEAD", svc, s, &vars);
        network_acl(&mut w, svc);
        w.template("FRONTEND_BACKEND_GLUE", svc, s, &vars);
    }

    // The backends, the bulk of the work (one server line per task), in parallel parts
    // joined in order: the bytes are the same as from one thread.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    let parts = backends(&selected, s, threads);
    let (text_len, skeleton_len) =
        parts.iter().fold((w.text.len(), w.skeleton.len()), |(t, k), p| (t + p.0.text.len(), k + p.0.skeleton.len()));
    w.text.reserve_exact(text_len - w.text.len());
    w.skeleton.reserve_exact(skeleton_len - w.skeleton.len());
    for (part, list) in parts {
        w.text.push_str(&part.text);
        w.skeleton.push_str(&part.skeleton);
        out.backends.extend(list);
    }
    out.text = w.text;
    out.skeleton = w.skeleton;
    out
}

/// Renders the backends of `selected` in order, split over up to `threads` threads when
/// there are enough servers to make it worth it.
fn backends(selected: &[(Service, &[LbTask])], s: &Settings, threads: usize) -> Vec<(Out, Vec<(String, Backend)>)> {
    let render_part = |part: &[(Service, &[LbTask])]| {
        let servers: usize = part.iter().map(|(_, t)| t.len()).sum();
        // About 250 bytes per backend head and 100 per server line.
        let mut w = Out::with_capacity(part.len() * 250 + servers * 100);
        let list = part.iter().map(|(svc, tasks)| (svc.backend.clone(), backend(&mut w, svc, tasks, s))).collect();
        (w, list)
    };
    let servers: usize = selected.iter().map(|(_, t)| t.len()).sum();
    if threads < 2 || servers < 10_000 {
        return vec![render_part(selected)];
    }
    // Parts of about equal server counts.
    let per = servers.div_ceil(threads);
    let mut parts = Vec::with_capacity(threads);
    let (mut start, mut count) = (0, 0);
    for (i, (_, tasks)) in selected.iter().enumerate() {
        count += tasks.len();
        if count >= per {
            parts.push(&selected[start..=i]);
            (start, count) = (i + 1, 0);
        }
    }
    if start < selected.len() {
        parts.push(&selected[start..]);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts.iter().map(|part| scope.spawn(|| render_part(part))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

/// The services to render with their app's tasks, and the apps left out (with why).
fn select<'a>(apps: &'a [LbApp], s: &Settings) -> (Vec<(Service, &'a [LbTask])>, Vec<LabelError>) {
    // Port to the addresses bound on it and by whom (looked up by port: no scan).
    let mut taken_binds: BTreeMap<u16, Vec<(String, String)>> = BTreeMap::new();
    if s.http_port > 0 {
        taken_binds.entry(s.http_port).or_default().push(("*".into(), "the HTTP frontend".into()));
    }
    if !s.ssl_certs.is_empty() {
        taken_binds.entry(s.https_port).or_default().push(("*".into(), "the HTTPS frontend".into()));
    }
    let mut taken_routes: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut all = Vec::new();
    let mut rejected = Vec::new();
    for app in apps {
        let list = match services(app, &s.selection) {
            Ok(l) => l,
            Err(e) => {
                rejected.push(e);
                continue;
            }
        };
        let clash = list.iter().find_map(|svc| {
            // The same port on the same address, or on all addresses, clashes.
            let on_port = taken_binds.get(&svc.port).map(Vec::as_slice).unwrap_or(&[]);
            let taken = on_port.iter().find(|(a, _)| a == "*" || svc.bind_addr == "*" || *a == svc.bind_addr);
            if let Some((_, other)) = taken {
                return Some((format!("HAPROXY_{}_PORT", svc.index), format!("port {} is taken by {other}", svc.port)));
            }
            svc.vhosts.iter().find_map(|v| {
                let key = (v.clone(), svc.path.clone().unwrap_or_default());
                taken_routes.get(&key).map(|other| {
                    (
                        format!("HAPROXY_{}_VHOST", svc.index),
                        format!("{v} (with this path) is routed to {other} already"),
                    )
                })
            })
        });
        if let Some((label, message)) = clash {
            rejected.push(LabelError { app_id: app.id.clone(), label, message });
            continue;
        }
        for svc in &list {
            taken_binds.entry(svc.port).or_default().push((svc.bind_addr.clone(), format!("app {}", svc.app_id)));
            for v in &svc.vhosts {
                taken_routes.insert((v.clone(), svc.path.clone().unwrap_or_default()), format!("app {}", svc.app_id));
            }
        }
        all.extend(list.into_iter().map(|svc| (svc, app.tasks.as_slice())));
    }
    (all, rejected)
}

/// The text being built, with and without server lines.
#[derive(Default)]
struct Out {
    text: String,
    skeleton: String,
}

impl Out {
    fn with_capacity(n: usize) -> Out {
        Out { text: String::with_capacity(n), skeleton: String::with_capacity(n / 2) }
    }

    fn both(&mut self, s: &str) {
        self.text.push_str(s);
        self.skeleton.push_str(s);
    }

    fn template(&mut self, name: &str, svc: &Service, s: &Settings, vars: &[(&str, &str)]) {
        let mut t = String::new();
        fill(pick(name, &svc.templates, &s.templates), vars, &mut t);
        self.both(&t);
    }
}

/// ACL-safe form of a name: letters, digits and `-`; the rest becomes `_`.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_clean(&mut out, s);
    out
}

fn push_clean(out: &mut String, s: &str) {
    out.extend(s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }));
}

/// The shared HTTP(S) frontend's body: every service's ACLs and `http-request` rules
/// first, then the `use_backend` lines in weight order (HAProxy runs `http-request`
/// rules before choosing a backend, whatever the order they are written in).
fn shared_frontend(w: &mut Out, routed: &[&Service], https: bool) {
    let mut rules = String::new();
    let mut routes = String::new();
    for svc in routed {
        http_rules(&mut rules, &mut routes, svc, https);
    }
    w.both(&rules);
    w.both(&routes);
}

/// The rules routing `svc`'s vhosts (and path) in a shared frontend.
fn http_rules(r: &mut String, routes: &mut String, svc: &Service, https: bool) {
    let b = &svc.backend;
    // Only services with a vhost are routed here (`routed` in `render`).
    let first = svc.vhosts.first().map(String::as_str).unwrap_or("");
    let host = format!("host_{}_{}", clean(first), clean(b));
    let path = svc.path.as_ref().map(|_| format!(" path_{b}"));
    let p = path.as_deref().unwrap_or("");
    if https {
        for v in &svc.vhosts {
            let _ = writeln!(r, "  acl {host}_sni ssl_fc_sni -i {v}");
        }
    } else {
        let _ = writeln!(r, "  acl {host} req.hdr(host),field(1,:) -i {}", svc.vhosts.join(" "));
    }
    let host = if https { format!("{host}_sni") } else { host };
    if let Some(pth) = &svc.path {
        let _ = writeln!(r, "  acl path_{b} path_beg {pth}");
    }
    if svc.redirect_to_https && !https {
        let _ = writeln!(r, "  http-request redirect scheme https code 301 if !{{ ssl_fc }} {host}{p}");
    }
    if svc.auth.is_some() {
        let realm = svc.auth.as_ref().map(|a| a.0.as_str()).unwrap_or("");
        let _ = writeln!(r, "  acl auth_{b} http_auth(user_{b})");
        let _ = writeln!(r, "  http-request auth realm {realm} if {host}{p} !auth_{b}");
    }
    let _ = writeln!(routes, "  use_backend {b} if {host}{p}");
}

/// `BACKEND_NETWORK_ALLOWED_ACL` in a service port's own frontend.
fn network_acl(w: &mut Out, svc: &Service) {
    if svc.network_allowed.is_empty() {
        return;
    }
    let cidrs = svc.network_allowed.join(" ");
    let rule = match svc.mode {
        Mode::Http => "  http-request deny if !network_allowed\n",
        Mode::Tcp => "  tcp-request connection reject if !network_allowed\n",
    };
    w.both(&format!("  acl network_allowed src {cidrs}\n{rule}"));
}

fn backend(w: &mut Out, svc: &Service, tasks: &[LbTask], s: &Settings) -> Backend {
    let health = svc.health.as_ref();
    let path = health.and_then(|h| h.path.clone()).unwrap_or_else(|| "/".into());
    let timeout = health.map_or(0, |h| h.timeout_seconds).to_string();
    let interval = health.map_or(0, |h| h.interval_seconds).to_string();
    let falls = health.map_or(0, |h| h.max_consecutive_failures + 1).to_string();
    let hostname = svc.vhosts.first().cloned().unwrap_or_default();
    let vars = [
        ("backend", svc.backend.as_str()),
        ("balance", svc.balance.as_str()),
        ("mode", svc.mode.name()),
        ("healthCheckPath", path.as_str()),
        ("healthCheckTimeoutSeconds", timeout.as_str()),
        ("healthCheckIntervalSeconds", interval.as_str()),
        ("healthCheckFalls", falls.as_str()),
        ("hostname", hostname.as_str()),
        ("proxypath", svc.proxypass_path.as_deref().unwrap_or("")),
        ("rootpath", svc.revproxy_path.as_deref().unwrap_or("")),
        ("redirpath", svc.redirect_root.as_deref().unwrap_or("")),
        ("appId", svc.app_id.as_str()),
    ];
    w.template("BACKEND_HEAD", svc, s, &vars);
    let http = svc.mode == Mode::Http;
    if http {
        w.template("BACKEND_HTTP_OPTIONS", svc, s, &vars);
        if svc.hsts {
            w.template("BACKEND_HSTS_OPTIONS", svc, s, &vars);
        }
        if svc.proxypass_path.is_some() && !hostname.is_empty() {
            w.template("HTTP_BACKEND_PROXYPASS_GLUE", svc, s, &vars);
        }
        if svc.revproxy_path.is_some() {
            w.template("HTTP_BACKEND_REVPROXY_GLUE", svc, s, &vars);
        }
        if svc.redirect_root.is_some() && !hostname.is_empty() {
            w.template("HTTP_BACKEND_REDIR", svc, s, &vars);
        }
    }
    let http_check = http && health.is_some_and(|h| h.protocol.contains("HTTP"));
    let tls_check = http_check && health.is_some_and(|h| h.protocol.contains("HTTPS"));
    if http_check {
        w.template("BACKEND_HTTP_HEALTHCHECK_OPTIONS", svc, s, &vars);
    } else if health.is_some() {
        w.template("BACKEND_TCP_HEALTHCHECK_OPTIONS", svc, s, &vars);
    }
    if svc.sticky && http {
        w.template("BACKEND_STICKY_OPTIONS", svc, s, &vars);
    }

    let algorithm = svc.balance.split([' ', '(']).next().unwrap_or("");
    let overridden =
        svc.templates.keys().any(|k| k.starts_with("BACKEND")) || s.templates.keys().any(|k| k.starts_with("BACKEND"));
    let mut out = Backend {
        dynamic: !(svc.sticky && http)
            && matches!(algorithm, "roundrobin" | "leastconn" | "first" | "random")
            && !overridden,
        servers: BTreeMap::new(),
    };
    // What every server of this backend has after its `id` and `cookie`.
    let mut check = String::new();
    if health.is_some() {
        check = format!(" check inter {interval}s fall {falls}");
    }
    // The loop runs once per task (100,000 times for a big cluster): plain pushes, no
    // formatting machinery.
    let mut ids = BTreeSet::new();
    let mut ip = String::with_capacity(15);
    for t in tasks {
        let Some(&port) = t.ports.get(svc.index) else { continue };
        ip.clear();
        push_ipv4(&mut ip, t.ip);
        // `host_ip_port`, or `ip_port` when the host is the address, made ACL-safe.
        let mut name = String::with_capacity(t.host.len() + ip.len() + 8);
        if t.host != ip {
            push_clean(&mut name, &t.host);
            name.push('_');
        }
        push_clean(&mut name, &ip);
        name.push('_');
        push_num(&mut name, port.into());
        if out.servers.contains_key(&name) {
            continue;
        }
        let id = server_id(&name, &mut ids);
        let mut options = String::with_capacity(check.len() + 40);
        options.push_str("id ");
        push_num(&mut options, id);
        if svc.sticky && http {
            options.push_str(" cookie ");
            options
                .push_str(&crate::domain::hex(digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &name).as_ref())[..10]);
        }
        if health.is_some() {
            options.push_str(&check);
            let check_port =
                health.and_then(|h| h.port).or_else(|| svc.health_port_index.and_then(|i| t.ports.get(i).copied()));
            if let Some(p) = check_port {
                options.push_str(" port ");
                push_num(&mut options, p.into());
            }
            if tls_check {
                options.push_str(" check-ssl verify none");
            }
        }
        for part in ["  server ", &name, " ", &ip, ":"] {
            w.text.push_str(part);
        }
        push_num(&mut w.text, port.into());
        for part in [" ", &options, "\n"] {
            w.text.push_str(part);
        }
        out.servers.insert(name, ServerLine { addr: std::net::SocketAddrV4::new(t.ip, port), options });
    }
    out
}

/// Appends `n` in decimal.
fn push_num(out: &mut String, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[i..].iter().map(|d| *d as char));
}

/// Appends `ip` in dotted decimal.
fn push_ipv4(out: &mut String, ip: std::net::Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        push_num(out, octet.into());
    }
}

fn digest(alg: &'static ring::digest::Algorithm, s: &str) -> ring::digest::Digest {
    ring::digest::digest(alg, s.as_bytes())
}

/// A server's `id`: sha256 of its name, as a number, modulo 32767 (marathon-lb's rule,
/// so `server-state-file` keeps matching across reloads). On a clash within the backend,
/// or 0, the name with ` 1`, ` 2`, ... appended is hashed instead.
pub fn server_id(name: &str, taken: &mut BTreeSet<u32>) -> u32 {
    let mut attempt = 0u32;
    loop {
        let probe;
        let key = if attempt == 0 {
            name
        } else {
            probe = format!("{name} {attempt}");
            &probe
        };
        let id = digest(&ring::digest::SHA256, key).as_ref().iter().fold(0u32, |r, b| (r * 256 + *b as u32) % 32767);
        if id != 0 && taken.insert(id) {
            return id;
        }
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_rendered_in_parallel_are_the_same_bytes() {
        use super::super::model::LbTask;
        let apps: Vec<LbApp> = (0..300)
            .map(|i| LbApp {
                id: format!("/app{i:03}"),
                labels: BTreeMap::from([("HAPROXY_GROUP".to_string(), "external".to_string())]),
                service_ports: vec![10_000 + i as u16],
                health_checks: Vec::new(),
                tasks: (0..(i % 90))
                    .map(|k| LbTask {
                        host: format!("node{k}"),
                        ip: std::net::Ipv4Addr::new(10, 0, (k / 200) as u8, (k % 200) as u8),
                        ports: vec![31_000 + i as u16],
                    })
                    .collect(),
            })
            .collect();
        let s = Settings::default();
        let (selected, _) = select(&apps, &s);
        let join = |parts: Vec<(Out, Vec<(String, Backend)>)>| {
            let n = parts.len();
            let (mut text, mut backends) = (String::new(), Vec::new());
            for (w, list) in parts {
                text.push_str(&w.text);
                backends.extend(list);
            }
            (n, text, backends)
        };
        let (one, text1, backends1) = join(backends(&selected, &s, 1));
        let (three, text3, backends3) = join(backends(&selected, &s, 3));
        assert_eq!((one, three), (1, 3));
        assert!(text1.lines().filter(|l| l.starts_with("  server ")).count() > 10_000);
        assert!(text1 == text3, "the parts join to the same text");
        assert_eq!(backends1, backends3);
    }

    #[test]
    fn numbers_and_addresses() {
        let mut s = String::new();
        for n in [0, 7, 10, 65535, u32::MAX] {
            s.clear();
            push_num(&mut s, n);
            assert_eq!(s, n.to_string());
        }
        for ip in [[0, 0, 0, 0], [10, 1, 20, 255], [255, 255, 255, 255]] {
            let ip = std::net::Ipv4Addr::from(ip);
            s.clear();
            push_ipv4(&mut s, ip);
            assert_eq!(s, ip.to_string());
        }
    }

    #[test]
    fn server_ids_match_marathon_lb() {
        let mut taken = BTreeSet::new();
        for (name, id) in
            [("agent1_1_1_1_1_1024", 28363), ("0", 17068), ("1", 25733), ("a", 25929), ("10_0_6_25_23336", 14676)]
        {
            assert_eq!(server_id(name, &mut taken), id, "{name}");
        }
        // Clashes are probed to the next free id; 30,000 names get 30,000 ids.
        let mut taken = BTreeSet::new();
        for i in 0..30_000 {
            server_id(&format!("server_{i}"), &mut taken);
        }
        assert_eq!(taken.len(), 30_000);
        assert!(!taken.contains(&0));
    }
}
