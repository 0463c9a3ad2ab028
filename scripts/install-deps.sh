#!/usr/bin/env bash
# Installs what torsocks' tests and demo need on a bare Debian 12 machine with Go (run as root).
# Idempotent: skips apt when everything is already there.
set -euo pipefail
need=(tor torsocks curl wget git python3 gcc gcc-multilib musl-tools dnsutils iproute2 netcat-openbsd libc-ares-dev util-linux qemu-user chromium)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian tor package starts a system tor on 127.0.0.1:9050 on install; the tests and the demo
# run their own tors inside private network namespaces, so the system one is not needed there.
gopath=$(go env GOPATH)
if [ ! -x "$gopath/bin/staticcheck" ]; then
  echo "installing staticcheck"
  go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
