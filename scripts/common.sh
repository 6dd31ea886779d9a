# Shared by the measurement scripts (sourced, not run): the repository root, the ferrite binary
# they measure, the provenance line every result starts with, and waiting for a server.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The binary to measure: $FERRITE_BIN (a prebuilt binary, e.g. to measure while sources
# change), else a fresh release build of this checkout.
ferrite_bin() {
  if [[ -n ${FERRITE_BIN:-} ]]; then
    echo "$FERRITE_BIN"
  else
    (cd "$root" && cargo build --quiet --release -p ferrite) >&2
    echo "$root/target/release/ferrite"
  fi
}

# "date: … commit: … cpu: …" followed by the caller's own settings.
stamp() {
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  commit: $(git -C "$root" rev-parse --short HEAD)  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)${1:+  $1}"
}

# Wait up to 2 minutes for URL to answer 2xx.
wait_for() {
  for _ in $(seq 600); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done
  echo "$1 did not answer within 2 minutes" >&2
  return 1
}
