#!/bin/bash
# Instructions per proxied request, counted by valgrind's callgrind: a figure that, unlike CPU time, does
# not move with the machine's noise, so two builds (or lb and nginx) can be compared a few percent apart.
#
#   scripts/instructions-per-request.sh lb [PATH]   # default target/release/lb (cargo build --release -p lb)
#   scripts/instructions-per-request.sh nginx       # nginx 1 worker, keepalive upstream, as lb-compare balancers runs it
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
  upstream app { server 127.0.0.1:25001; server 127.0.0.1:25002; server 127.0.0.1:25003; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:25080; location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
C
taskset -c 0 nginx -c "$d/b.conf" -p "$d" >/dev/null 2>&1 &
case $what in
  lb)
    lb=${2:-target/release/lb}; [ -x "$lb" ] || { echo "error: no lb at $lb (cargo build --release -p lb)" >&2; exit 2; }
    cmd=("$lb" --listen 127.0.0.1:25080 --admin 127.0.0.1:25900 --workers 1 --algorithm round-robin
         --backend 127.0.0.1:25001 --backend 127.0.0.1:25002 --backend 127.0.0.1:25003) ;;
  nginx) cmd=(nginx -c "$d/n.conf" -p "$d") ;;
  *) echo "usage: $0 lb [PATH] | nginx" >&2; exit 2 ;;
esac
taskset -c 1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$d/out.cg" "${cmd[@]}" >"$d/vg.log" 2>&1 &
proxy=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/25080) 2>/dev/null && break; sleep 0.2; done
taskset -c 0 wrk -t1 -c8 -d3s http://127.0.0.1:25080/ >/dev/null
callgrind_control -i on $proxy >/dev/null 2>&1
out=$(taskset -c 0 wrk -t1 -c8 -d8s http://127.0.0.1:25080/)
callgrind_control -i off $proxy >/dev/null 2>&1
echo "$out" | grep -q "Non-2xx" && { echo "error: non-2xx answers" >&2; exit 1; }
n=$(echo "$out" | awk '/requests in/ {print $1}')
kill $proxy; wait $proxy 2>/dev/null
ir=$(callgrind_annotate "$d/out.cg" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
python3 -c "print('$what: %d requests, %.0f instructions per request' % ($n, $ir / $n))"
