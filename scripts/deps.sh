#!/usr/bin/env bash
# Installs (once) what the test suite, the benchmarks and the demo need
# besides Go and the PostgreSQL 15 server binaries of the machine image:
#   kcat      independent Kafka client (librdkafka) for the interop test   (Debian package)
#   chromium  headless browser for the /status page test                   (Debian package)
#   curl      the README tour, which the tests run as written              (Debian package)
#   minio     S3 server for the archive tests, built from source once and cached in $(go env GOPATH)/bin
#   staticcheck, deadcode   the linters scripts/test.sh runs, pinned, built once into the same place
# Everything is cached: a second run takes well under a second.
set -euo pipefail

need_apt=()
command -v kcat >/dev/null 2>&1 || need_apt+=(kcat)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "deps: installing ${need_apt[*]} (apt)"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

minio_version="v0.0.0-20260212201848-7aac2a2c5b7c"
gobin="$(go env GOPATH)/bin"
stamp="$gobin/.minio-$minio_version"
if [ ! -x "$gobin/minio" ] || [ ! -e "$stamp" ]; then
  echo "deps: building minio $minio_version (about 4 minutes the first time)"
  go install "github.com/minio/minio@$minio_version"
  touch "$stamp"
fi

# The linters, pinned so that a new release cannot fail CI on its own.
# staticcheck's release 2026.2.2 is module version v0.8.2 (its -version
# prints "staticcheck 2026.2.2 (0.8.2)"); deadcode is golang.org/x/tools's. A binary is rebuilt when its module version or the
# Go toolchain it was built with differs: staticcheck refuses to check code
# for a newer Go than its own.
go_version="$(go env GOVERSION)"
install_tool() { # name package version
  local bin="$gobin/$1" have
  have="$(go version -m "$bin" 2>/dev/null | awk 'NR==1 {print $2} $1=="mod" {print $3}' | paste -sd' ')" || true
  if [ "$have" != "$go_version $3" ]; then
    echo "deps: building $1 $3 with $go_version"
    GOBIN="$gobin" go install "$2@$3"
  fi
}
install_tool staticcheck honnef.co/go/tools/cmd/staticcheck v0.8.2
install_tool deadcode golang.org/x/tools/cmd/deadcode v0.53.0

if ! command -v pg_config >/dev/null 2>&1 || [ ! -x "$(pg_config --bindir)/initdb" ]; then
  echo "deps: PostgreSQL server binaries not found (pg_config --bindir); install postgresql-15" >&2
  exit 1
fi
