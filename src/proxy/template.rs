//! The config fragments marathon-lb let users override (reference section 1.5), with
//! their defaults. An override comes from a template dir (`--templates DIR`, a file per
//! template named `HAPROXY_<NAME>`, for every app) or from an app label
//! (`HAPROXY_{n}_<NAME>`, for that port; it wins).
//!
//! Placeholders are `{name}` (marathon-lb's names; `{{` and `}}` are literal braces)
//! and are filled with values that were validated as labels. An override is validated
//! before use: every line must be a directive that belongs in its section (no new
//! `frontend`, `backend`, `global`..., no `lua-load` or `external-check`), no control
//! characters, backslashes only as back-references (`\1`), and only known placeholders. Directives HAProxy 2.1
//! removed (`reqirep`, `rspadd`, `rspirep`) are refused with the replacement named.

use std::collections::BTreeMap;

/// Overrides by template name (without the `HAPROXY_` prefix).
pub type Templates = BTreeMap<&'static str, String>;

/// Section a template's lines belong to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Frontend,
    Backend,
    Global,
}

/// (name, section, default). `HEAD` is the global part (template dir only).
const TEMPLATES: &[(&str, Section, &str)] = &[
    ("FRONTEND_HEAD", Section::Frontend, "\nfrontend {backend}\n  bind {bindAddr}:{servicePort}{sslCert}{bindOptions}\n  mode {mode}\n"),
    ("FRONTEND_BACKEND_GLUE", Section::Frontend, "  use_backend {backend}\n"),
    ("BACKEND_HEAD", Section::Backend, "\nbackend {backend}\n  balance {balance}\n  mode {mode}\n"),
    (
        "BACKEND_HTTP_OPTIONS",
        Section::Backend,
        "  option forwardfor\n  http-request set-header X-Forwarded-Port %[dst_port]\n  http-request add-header X-Forwarded-Proto https if {{ ssl_fc }}\n  retry-on all-retryable-errors\n  http-request disable-l7-retry if !METH_GET\n",
    ),
    (
        "BACKEND_HTTP_HEALTHCHECK_OPTIONS",
        Section::Backend,
        "  option  httpchk GET {healthCheckPath}\n  timeout check {healthCheckTimeoutSeconds}s\n",
    ),
    ("BACKEND_TCP_HEALTHCHECK_OPTIONS", Section::Backend, ""),
    ("BACKEND_STICKY_OPTIONS", Section::Backend, "  cookie mesosphere_server_id insert indirect nocache\n"),
    ("BACKEND_HSTS_OPTIONS", Section::Backend, "  http-response set-header Strict-Transport-Security max-age=15768000\n"),
    (
        "HTTP_BACKEND_PROXYPASS_GLUE",
        Section::Backend,
        "  http-request set-header Host {hostname}\n  http-request replace-path ^{proxypath}/?(.*) /\\1\n",
    ),
    (
        "HTTP_BACKEND_REVPROXY_GLUE",
        Section::Backend,
        "  http-response replace-header Location https?://[^/]*(/.*) {rootpath}\\1\n",
    ),
    ("HTTP_BACKEND_REDIR", Section::Backend, "  acl is_root path -i /\n  acl is_domain hdr(host) -i {hostname}\n  redirect code 301 location {redirpath} if is_domain is_root\n"),
    ("HEAD", Section::Global, ""),
];

/// Placeholders any template may use.
const PLACEHOLDERS: &[&str] = &[
    "backend",
    "bindAddr",
    "servicePort",
    "sslCert",
    "bindOptions",
    "mode",
    "balance",
    "healthCheckPath",
    "healthCheckTimeoutSeconds",
    "healthCheckIntervalSeconds",
    "healthCheckFalls",
    "healthCheckPortOptions",
    "hostname",
    "proxypath",
    "rootpath",
    "redirpath",
    "appId",
    "socket",
    "stateFile",
    "statsBind",
];

const SECTION_WORDS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "userlist",
    "peers",
    "resolvers",
    "program",
    "cache",
    "ring",
    "mailers",
    "http-errors",
];
const FORBIDDEN: &[&str] =
    &["lua-load", "lua-load-per-thread", "external-check", "setenv", "presetenv", "resetenv", "unsetenv"];
const REMOVED: &[(&str, &str)] = &[
    ("reqirep", "http-request replace-path / replace-header"),
    ("reqrep", "http-request replace-path / replace-header"),
    ("rspadd", "http-response add-header"),
    ("rspirep", "http-response replace-header"),
    ("rsprep", "http-response replace-header"),
    ("reqadd", "http-request add-header"),
];

fn find(name: &str) -> Option<(&'static str, Section, &'static str)> {
    TEMPLATES.iter().find(|(n, _, _)| *n == name).copied()
}

/// The default text of template `name`.
pub fn default(name: &str) -> &'static str {
    find(name).map_or("", |(_, _, d)| d)
}

/// The text to use for `name`: the label override, else the global one, else the default.
pub fn pick<'a>(name: &str, app: &'a Templates, global: &'a Templates) -> &'a str {
    app.get(name).or_else(|| global.get(name)).map(String::as_str).unwrap_or_else(|| default(name))
}

/// Fills `{placeholders}` from `vars`.
pub fn fill(template: &str, vars: &[(&str, &str)], out: &mut String) {
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if let Some(end) = tail.find('}').filter(|_| tail.starts_with('{')) {
            let key = &tail[1..end];
            if let Some((_, v)) = vars.iter().find(|(k, _)| *k == key) {
                out.push_str(v);
            }
            rest = &tail[end + 1..];
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
}

/// Checks an override of template `name`; returns the text to keep (CRLF made LF).
pub fn validate(name: &str, text: &str) -> Result<String, String> {
    let Some((_, section, _)) = find(name) else {
        return Err(format!("HAPROXY_{name} is not a template that can be overridden"));
    };
    let text = text.replace("\r\n", "\n");
    if let Some(c) = text.chars().find(|c| (c.is_control() && *c != '\n') || *c == '`') {
        return Err(format!("contains {c:?}, which is not allowed in a template"));
    }
    // A backslash only as a regex back-reference (`\1`).
    let bytes = text.as_bytes();
    if bytes.iter().enumerate().any(|(i, b)| *b == b'\\' && !bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
        return Err("contains a backslash that is not a back-reference (\\1)".into());
    }
    // Placeholders must be known and braces balanced.
    let mut rest = text.as_str();
    while let Some(i) = rest.find(['{', '}']) {
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            rest = &tail[2..];
            continue;
        }
        let end = tail
            .find('}')
            .filter(|_| tail.starts_with('{'))
            .ok_or("has an unbalanced brace (write {{ or }} for a literal one)")?;
        let key = &tail[1..end];
        if !PLACEHOLDERS.contains(&key) {
            return Err(format!("uses the unknown placeholder {{{key}}}"));
        }
        rest = &tail[end + 1..];
    }
    for line in text.lines() {
        let Some(word) = line.split_whitespace().next() else { continue };
        if let Some((_, instead)) = REMOVED.iter().find(|(w, _)| *w == word) {
            return Err(format!("'{word}' was removed in HAProxy 2.1: use {instead}"));
        }
        if FORBIDDEN.contains(&word) {
            return Err(format!("'{word}' is not allowed in a template"));
        }
        let header = !line.starts_with(char::is_whitespace);
        let own_header = match section {
            Section::Frontend => line.trim_end() == "frontend {backend}",
            Section::Backend => line.trim_end() == "backend {backend}",
            Section::Global => SECTION_WORDS.contains(&word) && matches!(word, "global" | "defaults" | "listen"),
        };
        if header && !own_header {
            return Err(format!("line '{line}' would start a new section; directives must be indented"));
        }
        if !header && SECTION_WORDS.contains(&word) && section != Section::Global {
            return Err(format!("'{word}' starts a section and is not allowed here"));
        }
    }
    Ok(text)
}

/// The overrides among an app's labels for port `index` (`HAPROXY_{index}_<NAME>`),
/// validated; an error names the label.
pub fn from_labels(labels: &BTreeMap<String, String>, index: usize) -> Result<Templates, (String, String)> {
    let mut out = Templates::new();
    let prefix = format!("HAPROXY_{index}_");
    for (k, v) in labels.range(prefix.clone()..) {
        let Some(name) = k.strip_prefix(&prefix) else { break };
        let Some((known, section, _)) = find(name) else { continue };
        // `HAPROXY_{n}_HTTP_BACKEND_REDIR` is the redirect's path (a value label), as
        // in marathon-lb; that template is overridden from the template dir only.
        if section == Section::Global || known == "HTTP_BACKEND_REDIR" {
            continue;
        }
        out.insert(known, validate(known, v).map_err(|m| (k.clone(), m))?);
    }
    Ok(out)
}

/// Global overrides from a template dir: files named `HAPROXY_<NAME>`.
pub fn from_dir(dir: &std::path::Path) -> Result<Templates, String> {
    let mut out = Templates::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read template dir {}: {e}", dir.display()))?;
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().to_string();
        let Some((known, _, _)) = file.strip_prefix("HAPROXY_").and_then(find) else { continue };
        let text = std::fs::read_to_string(e.path()).map_err(|e| format!("cannot read {file}: {e}"))?;
        out.insert(known, validate(known, &text).map_err(|m| format!("{file}: {m}"))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_placeholders_and_literal_braces() {
        let mut out = String::new();
        fill("a {backend} {{ ssl_fc }} {unknown}.", &[("backend", "web_10000")], &mut out);
        assert_eq!(out, "a web_10000 { ssl_fc } .");
    }

    #[test]
    fn overrides_are_checked() {
        assert!(validate("BACKEND_HTTP_OPTIONS", "  option forwardfor\r\n  timeout server 5s\n").is_ok());
        assert!(validate("BACKEND_HEAD", "\nbackend {backend}\n  balance {balance}\n").is_ok());
        let bad = [
            ("BACKEND_HTTP_OPTIONS", "  option forwardfor\nfrontend evil\n  bind :1\n", "new section"),
            ("BACKEND_HTTP_OPTIONS", "  option forwardfor\n  listen x\n", "starts a section"),
            ("BACKEND_HTTP_OPTIONS", "  reqirep ^Host: x", "removed in HAProxy 2.1"),
            ("BACKEND_HTTP_OPTIONS", "  lua-load /tmp/x.lua", "not allowed"),
            ("BACKEND_HTTP_OPTIONS", "  option {nope}", "unknown placeholder"),
            ("BACKEND_HTTP_OPTIONS", "  option {backend", "unbalanced"),
            ("BACKEND_HTTP_OPTIONS", "  option x\u{7}", "not allowed"),
            ("NOT_A_TEMPLATE", "", "can be overridden"),
        ];
        for (name, text, why) in bad {
            let e = validate(name, text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
        let labels = super::super::labels::labels(&[
            ("HAPROXY_0_BACKEND_HTTP_OPTIONS", "  option forwardfor\n"),
            ("HAPROXY_0_VHOST", "x.com"),
            ("HAPROXY_1_BACKEND_HEAD", "backend evil"),
        ]);
        assert_eq!(from_labels(&labels, 0).unwrap().len(), 1);
        assert_eq!(from_labels(&labels, 1).unwrap_err().0, "HAPROXY_1_BACKEND_HEAD");
    }
}
