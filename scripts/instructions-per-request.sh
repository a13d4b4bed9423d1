#!/bin/bash
# Instructions per proxied request, counted by valgrind's callgrind: a figure that, unlike CPU time, does
# not move with the machine's noise, so two builds (or lb and nginx) can be compared a few percent apart.
#
#   scripts/instructions-per-request.sh lb [PATH]   # default target/release/lb (cargo build --release -p lb)
#   scripts/instructions-per-request.sh nginx       # nginx 1 worker, keepalive upstream, as lb-compare balancers runs it
#   scripts/instructions-per-request.sh lb-h2 [PATH] # lb with HTTP/2 over TLS 1.3 from h2load -c8 -m10
#                                                    # (crates/lb/config/certs' test certificate)
#   scripts/instructions-per-request.sh lb-https [PATH] # lb with HTTP/1.1 over TLS 1.3 from wrk -c8
#   scripts/instructions-per-request.sh nginx-https  # nginx, the same certificate, HTTP/1.1 over TLS 1.3
#   scripts/instructions-per-request.sh nginx-h2     # nginx, the same certificate, HTTP/2 over TLS 1.3
#
# CALLGRIND_OUT=FILE keeps callgrind's profile (for `callgrind_annotate --inclusive=yes FILE`).
#
# Three nginx `return 200` backends on 127.0.0.1:25001-25003 (core 0), the proxy under callgrind on
# 127.0.0.1:25080 (core 1), wrk -c8 for 3 s of warm-up and 8 s counted. Needs valgrind, wrk, nginx
# (apt-get install -y valgrind wrk nginx). Counts user-space instructions only; `rep movsb` copies count
# one instruction per byte, so large memory copies weigh more here than in CPU time.
set -u
what=${1:-lb}
d=$(mktemp -d); mkdir -p "$d/logs"
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$d"' EXIT
for tool in valgrind callgrind_control callgrind_annotate wrk nginx; do
  command -v $tool >/dev/null || { echo "error: needs $tool (apt-get install -y valgrind wrk nginx)" >&2; exit 2; }
done
case $what in *-h2) h2=1 ;; *) h2= ;; esac
case $what in *-h2|*-https) tls=1 ;; *) tls= ;; esac
if [ -n "$h2" ]; then
  command -v h2load >/dev/null || { echo "error: needs h2load (apt-get install -y nghttp2-client)" >&2; exit 2; }
fi
certs=$(cd "$(dirname "$0")/../crates/lb/config/certs" && pwd)
cat > "$d/b.conf" <<C
worker_processes 1; daemon off; pid $d/b.pid; error_log $d/logs/b.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:25001; location / { return 200 "backend-1\n"; } }
  server { listen 127.0.0.1:25002; location / { return 200 "backend-2\n"; } }
  server { listen 127.0.0.1:25003; location / { return 200 "backend-3\n"; } } }
C
cat > "$d/n.conf" <<C
worker_processes 1; master_process off; daemon off; pid $d/n.pid; error_log $d/logs/n.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream app { server 127.0.0.1:25001; server 127.0.0.1:25002; server 127.0.0.1:25003; keepalive 1024; keepalive_requests 1000000; }
  server { $(if [ -n "$tls" ]; then
      echo "listen 127.0.0.1:25080 ssl$([ -n "$h2" ] && echo ' http2'); ssl_protocols TLSv1.3;"
      echo "ssl_certificate $certs/backend.lb.test.pem; ssl_certificate_key $certs/backend.lb.test.key;"
    else echo "listen 127.0.0.1:25080;"; fi)
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
C
taskset -c 0 nginx -c "$d/b.conf" -p "$d" >/dev/null 2>&1 &
case $what in
  lb)
    lb=${2:-target/release/lb}; [ -x "$lb" ] || { echo "error: no lb at $lb (cargo build --release -p lb)" >&2; exit 2; }
    cmd=("$lb" --listen 127.0.0.1:25080 --admin 127.0.0.1:25900 --workers 1 --algorithm round-robin
         --backend 127.0.0.1:25001 --backend 127.0.0.1:25002 --backend 127.0.0.1:25003) ;;
  lb-h2|lb-https)
    lb=${2:-target/release/lb}; [ -x "$lb" ] || { echo "error: no lb at $lb (cargo build --release -p lb)" >&2; exit 2; }
    cat > "$d/lb.toml" <<C
[server]
listen = []
listen_tls = ["127.0.0.1:25080"]
workers = 1
[[server.tls]]
cert = "$certs/backend.lb.test.pem"
key = "$certs/backend.lb.test.key"
[admin]
listen = "127.0.0.1:25900"
[[upstream]]
name = "app"
algorithm = "round-robin"
backends = ["127.0.0.1:25001", "127.0.0.1:25002", "127.0.0.1:25003"]
C
    cmd=("$lb" --config "$d/lb.toml") ;;
  nginx|nginx-https|nginx-h2) cmd=(nginx -c "$d/n.conf" -p "$d") ;;
  *) echo "usage: $0 lb [PATH] | lb-https [PATH] | lb-h2 [PATH] | nginx | nginx-https | nginx-h2" >&2; exit 2 ;;
esac
# The load: wrk over HTTP/1.1 (plain or TLS), or h2load over TLS with HTTP/2 (8 connections, 10
# streams each).
load() {
  if [ -n "$h2" ]; then
    taskset -c 0 h2load -t1 -c8 -m10 -D"$1" https://127.0.0.1:25080/
  else
    taskset -c 0 wrk -t1 -c8 -d"$1"s "http${tls:+s}://127.0.0.1:25080/"
  fi
}
taskset -c 1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$d/out.cg" "${cmd[@]}" >"$d/vg.log" 2>&1 &
proxy=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/25080) 2>/dev/null && break; sleep 0.2; done
load 3 >/dev/null
callgrind_control -i on $proxy >/dev/null 2>&1
out=$(load 8)
callgrind_control -i off $proxy >/dev/null 2>&1
if [ -n "$h2" ]; then
  echo "$out" | grep -q "Application protocol: h2" || { echo "error: h2 not negotiated: $out" >&2; exit 1; }
  echo "$out" | grep -Eq "status codes: [0-9]+ 2xx, 0 3xx, 0 4xx, 0 5xx" || { echo "error: non-2xx answers" >&2; exit 1; }
  n=$(echo "$out" | awk '/^requests:/ {print $8}')
else
  echo "$out" | grep -q "Non-2xx" && { echo "error: non-2xx answers" >&2; exit 1; }
  n=$(echo "$out" | awk '/requests in/ {print $1}')
fi
kill $proxy; wait $proxy 2>/dev/null
ir=$(callgrind_annotate "$d/out.cg" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
[ -n "${CALLGRIND_OUT:-}" ] && cp "$d/out.cg" "$CALLGRIND_OUT"
python3 -c "print('$what: %d requests, %.0f instructions per request' % ($n, $ir / $n))"
