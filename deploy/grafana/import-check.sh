#!/usr/bin/env bash
# The dashboard against Grafana's own published schema: importcheck/ (Go) decodes it with the
# strict decoder of the Grafana Foundation SDK v0.0.22 (Grafana Labs, Apache-2.0, from the Go
# module proxy, pinned by go.mod/go.sum), which rejects unknown fields, wrong types and missing
# required fields in the dashboard, every panel's options and field config, and every
# Prometheus query, and checks enum values against the SDK's constants. No Grafana server is
# installable here (not in Debian, not in any reachable registry), so this is the schema an
# import meets, not a running Grafana: see deploy/README.md, "Grafana".
#
#   deploy/grafana/import-check.sh install          # build .cache/grafana/importcheck if stale
#   deploy/grafana/import-check.sh check [FILE...]  # install, then check (default: recstream.json)
#
# check prints one JSON report per file and exits 1 when a file has a problem, 2 when it cannot
# run (no Go, no module proxy on the first build). Go modules and the build cache live in
# .cache/go/ (ignored); the first build takes about a minute, later checks well under a second.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
src=$here/importcheck
cache=$root/.cache/grafana
bin=$cache/importcheck

die() { echo "grafana import-check: $*" >&2; exit 2; }

install() {
  local tmp
  local f stale=0
  command -v go >/dev/null || die "go not found: the dashboard's import check needs Go 1.21 or newer"
  mkdir -p "$cache"
  exec 9>"$cache/build.lock"
  flock -w 600 9 || die "another build still holds $cache/build.lock after 600s"
  [[ -x $bin ]] || stale=1
  for f in "$src"/*.go "$src"/go.mod "$src"/go.sum; do
    [[ $f -nt $bin ]] && stale=1
  done
  ((stale)) || return 0
  echo "grafana import-check: building $bin ($(go version | cut -d' ' -f3))" >&2
  tmp=$bin.tmp.$$
  (cd "$src" && gocmd build -trimpath -o "$tmp" .) || {
    rm -f "$tmp"
    die "go build failed in $src (modules come from the Go module proxy: GOPROXY=$(go env GOPROXY))"
  }
  mv -f "$tmp" "$bin"
}

# Modules and build cache in the clone (distclean removes .cache); no toolchain download.
gocmd() {
  GOMODCACHE=$root/.cache/go/mod GOCACHE=$root/.cache/go/build GOTOOLCHAIN=local \
    GOFLAGS="-modcacherw -mod=readonly -buildvcs=false" go "$@"
}

case ${1:-} in
  install) install ;;
  check)
    shift
    (install) # in a subshell: the build lock is released before the check
    (($#)) || set -- "$here/recstream.json"
    # The SDK's source, for its enum values: the version go.sum pins, already in the cache.
    sdk=$(cd "$src" && gocmd list -m -f '{{.Dir}}' github.com/grafana/grafana-foundation-sdk/go) ||
      die "cannot locate the Grafana Foundation SDK module in $root/.cache/go/mod"
    exec "$bin" -sdk "$sdk" "$@"
    ;;
  *) echo "usage: $0 install | check [FILE...]" >&2; exit 2 ;;
esac
