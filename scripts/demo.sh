#!/usr/bin/env bash
# make demo: a private Tor network on loopback, in a network namespace of its own, and programs run
# through bin/torsocks against it: curl by address, by name and to a .onion, a static Go client, a
# refused UDP datagram, and, for contrast, the static Go client under the C torsocks.
#
# Root on Debian 12 with Go; `make demo` first runs scripts/install-deps.sh and builds bin/torsocks.
# Nothing leaves the machine: the namespace holds only lo, carrying the test addresses
#   203.0.113.10   the test host: a web server on :80, and on :8080 behind the onion service
#   198.51.100.1   the address the Tor exits connect from (so the web server can tell Tor from a leak)
# Everything it starts is stopped when it ends (and dies with the namespace).
#
# scripts/demo.sh COMMAND [ARG...] brings up the same network and runs COMMAND in it instead of the
# demo's own programs (bin/torsocks is $TORSOCKS, the onion address $ONION, the test host web.test):
#   scripts/demo.sh sh -c '$TORSOCKS curl -sS http://$ONION/'
#   scripts/demo.sh bash -i     (a shell in the namespace, to try any program)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

say() { printf '\n==> %s\n' "$*"; }
indent() { sed 's/^/    /'; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

if [ "${1:-}" != --inside ]; then
	if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
		sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'
		exit 0
	fi
	[ "$(id -u)" = 0 ] || die "run as root (it creates a network namespace): sudo make demo"
	for cmd in go tor python3 curl unshare ip; do
		command -v "$cmd" >/dev/null || die "$cmd is missing: run scripts/install-deps.sh (or make demo)"
	done
	if [ -z "${DEMO_TORSOCKS:-}" ]; then
		[ -x bin/torsocks ] || make build
	fi
	work=$(mktemp -d /tmp/torsocks-demo.XXXXXX)
	say "building the network launcher (cmd/testnet) and a static Go client (CGO_ENABLED=0)"
	if ! go build -o "$work/testnet" ./cmd/testnet ||
		! CGO_ENABLED=0 go build -o "$work/goclient" ./internal/integration/testdata/goclient; then
		rm -rf "$work"
		die "build failed"
	fi
	echo "    ok"
	say "creating a private network namespace (only lo; nothing here can reach the real network)"
	DEMO_WORK=$work exec unshare --net -- "$BASH" "$0" --inside "$@"
fi
shift # --inside

# --- inside the namespace ---------------------------------------------------------------------
ip link set lo up
ip addr add 203.0.113.10/32 dev lo
ip addr add 198.51.100.1/32 dev lo

work=$DEMO_WORK
cache=${XDG_CACHE_HOME:-$HOME/.cache}/gotorsocks/demo-testnet # keys kept: same onion address every run
pids=()
cleanup() {
	local rc=$?
	set +e
	if [ ${#pids[@]} -gt 0 ]; then
		say "tearing down"
		kill -TERM "${pids[@]}" 2>/dev/null
		wait "${pids[@]}" 2>/dev/null
		echo "    tor network, web servers and the DNS stub stopped"
	fi
	rm -rf "$work"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

torsocks=${DEMO_TORSOCKS:-$root/bin/torsocks} # DEMO_TORSOCKS: another build (the tests use it)
export TORSOCKS_CONF_FILE=$work/torsocks.conf # the same file works for both torsocks
printf 'TorAddress 127.0.0.1\nTorPort 9050\n' >"$TORSOCKS_CONF_FILE"
export LC_ALL=C
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy 2>/dev/null || true

# A web server that says who it saw: 198.51.100.1 is a Tor exit; 203.0.113.10 itself is either the
# onion service (port 8080) or a program that went around Tor.
cat >"$work/web.py" <<'EOF'
import http.server, sys
port, what, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        src = self.client_address[0]
        body = ("<h1>%s</h1>\n<p>you reached 203.0.113.10:%d from %s</p>\n" % (what, port, src)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        who = {"198.51.100.1": "a Tor exit"}.get(src, "the onion service" if port == 8080 else "NOT TOR: a direct connection")
        with open(log, "a") as f:
            f.write("web server :%d: GET %s from %s (%s)\n" % (port, self.path, src, who))
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("203.0.113.10", port), H).serve_forever()
EOF

# The exits' resolver: web.test (and *.web.test) is the test host; anything else does not exist.
cat >"$work/dns.py" <<'EOF'
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 5353))
while True:
    q, peer = s.recvfrom(512)
    if len(q) < 12:
        continue
    i, labels = 12, []
    while i < len(q) and q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace")); i += 1 + q[i]
    qend = i + 5
    name, qtype = ".".join(labels).lower(), struct.unpack("!H", q[i + 1:i + 3])[0]
    known = name == "web.test" or name.endswith(".web.test")
    flags = 0x8580 if known else 0x8583
    ans = b""
    if known and qtype == 1:
        ans = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("203.0.113.10")
    s.sendto(q[:2] + struct.pack("!HHHHH", flags, 1, 1 if ans else 0, 0, 0) + q[12:qend] + ans, peer)
EOF

# Tor's control port, followed: which circuit each stream took, through which relays.
cat >"$work/circuits.py" <<'EOF'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)))
f = s.makefile("rwb", buffering=0)
def send(line): f.write(line.encode() + b"\r\n")
def reply():
    lines = []
    while True:
        l = f.readline().decode().rstrip("\r\n")
        lines.append(l)
        if l[3:4] == "+":
            while True:
                d = f.readline().decode().rstrip("\r\n")
                if d == ".": break
                lines.append(d)
        elif l[3:4] == " ":
            return lines
send("AUTHENTICATE " + open(sys.argv[2], "rb").read().hex()); reply()
paths, targets = {}, {}
def note_circ(fields):
    if len(fields) > 2 and fields[2].startswith("$"):
        hops = [h.split("~")[-1] for h in fields[2].split(",")]
        purpose = next((x[8:] for x in fields if x.startswith("PURPOSE=")), "")
        paths[fields[0]] = (hops, purpose)
send("GETINFO circuit-status")
for l in reply()[1:]:
    note_circ(l.split())
send("SETEVENTS CIRC STREAM"); reply()
while True:
    l = f.readline().decode().rstrip("\r\n")
    if not l: break
    p = l.split()
    if len(p) < 6 or p[0] != "650": continue
    if p[1] == "CIRC":
        note_circ(p[2:])
        continue
    if p[1] != "STREAM": continue
    sid, status, circ, target = p[2], p[3], p[4], p[5]
    if status in ("NEW", "NEWRESOLVE"):
        targets[sid] = target
    if status != "SUCCEEDED": continue
    asked = targets.pop(sid, target)
    hops, purpose = paths.get(circ, (["?"], ""))
    if purpose == "HS_CLIENT_REND":
        via = "client -> " + " -> ".join(hops) + " (rendezvous point) <- onion service's own circuit"
    elif purpose.startswith("HS_") or ".exit:" in asked:
        continue  # tor's own directory and descriptor fetches
    else:  # GENERAL, or a CONFLUX leg
        via = "client -> " + " -> ".join(hops) + " (exit) -> destination"
    resolved = "" if asked == target else " (the exit resolved it to %s)" % target.rsplit(":", 1)[0]
    print("tor: stream to %s%s on circuit %s (%s): %s" % (asked, resolved, circ, purpose, via), flush=True)
EOF

say "starting the test host's web servers (203.0.113.10:80, and :8080 for the onion service) and the exits' DNS server"
python3 "$work/web.py" 80 "Hello from the test web server" "$work/web.log" &
pids+=($!)
python3 "$work/web.py" 8080 "Hello from the onion service" "$work/web.log" &
pids+=($!)
python3 "$work/dns.py" &
pids+=($!)
touch "$work/web.log"

say "starting a private Tor network: 3 directory authorities, 3 exits, a client (SocksPort 127.0.0.1:9050), an onion service"
mkdir -p "$cache"
started=$(date +%s%3N)
"$work/testnet" -dir "$cache" -socks-port 9050 -onion-target 203.0.113.10:8080 \
	-exit-source 198.51.100.1 -resolver 127.0.0.1:5353 -ready-file "$work/ready" \
	2> >(sed -u 's/^/    /') >"$work/testnet.out" &
tn=$!
pids+=($tn)
for _ in $(seq 1200); do
	[ -f "$work/ready" ] && break
	kill -0 "$tn" 2>/dev/null || die "the Tor network did not come up (logs under $cache)"
	sleep 0.1
done
[ -f "$work/ready" ] || die "the Tor network did not come up within 120 s (logs under $cache)"
# shellcheck disable=SC1091
. "$work/ready"
ms=$(($(date +%s%3N) - started))
printf '    up after %d.%d s: SocksPort %s, ControlPort %s, onion service %s\n' \
	$((ms / 1000)) $((ms % 1000 / 100)) "$SOCKS" "$CONTROL" "$ONION"

python3 "$work/circuits.py" "$CONTROL" "$CONTROL_COOKIE" >"$work/circuits.log" 2>&1 &
pids+=($!)
sleep 0.3

# step TITLE COMMAND...: runs COMMAND, shows its output, its stderr (torsocks' lines), what the web
# server saw and the circuits the streams took.
web_seen=0 circ_seen=0 last_rc=0
step() {
	local title=$1
	shift
	say "$title"
	printf '    $ %s\n' "$*"
	local rc=0
	"$@" >"$work/out" 2>"$work/err" || rc=$?
	sleep 0.5 # let the control port's events arrive
	indent <"$work/out"
	if [ -s "$work/err" ]; then
		echo "    stderr:"
		sed 's/^/      /' "$work/err"
	fi
	[ $rc -eq 0 ] || echo "    (exit status $rc)"
	tail -n +$((web_seen + 1)) "$work/web.log" | indent
	web_seen=$(wc -l <"$work/web.log")
	tail -n +$((circ_seen + 1)) "$work/circuits.log" | indent
	circ_seen=$(wc -l <"$work/circuits.log")
	last_rc=$rc
}

if [ $# -gt 0 ]; then
	export TORSOCKS=$torsocks ONION SOCKS CONTROL
	say "running your command in the namespace (test host 203.0.113.10 = web.test, onion $ONION)"
	printf '    $ %s\n' "$*"
	rc=0
	"$@" || rc=$?
	sleep 0.5
	say "what the web server saw"
	indent <"$work/web.log"
	say "the circuits the streams took"
	indent <"$work/circuits.log"
	exit $rc
fi

step "curl to the web server by address, through bin/torsocks" \
	"$torsocks" curl -sS --max-time 60 http://203.0.113.10/

dns=no
if "$torsocks" getent hosts web.test >/dev/null 2>&1; then
	dns=yes
	step "curl to the web server by name: the name goes to Tor, the exit resolves it" \
		"$torsocks" curl -sS --max-time 60 http://web.test/
	# On a network this young the first rendezvous sometimes fails (the onion service's descriptor
	# or introduction points are not everywhere yet); a second try is what a user would do.
	step "curl to the onion service by its .onion name" \
		"$torsocks" curl -sS --max-time 60 "http://$ONION/"
	if [ "$last_rc" != 0 ]; then
		step "the onion service again (a first rendezvous on a fresh network can fail)" \
			"$torsocks" curl -sS --max-time 60 "http://$ONION/"
	fi
	step "the static Go client by name (Go's own resolver and raw syscalls: LD_PRELOAD cannot see them)" \
		"$torsocks" "$work/goclient" http://web.test/
	# A well-formed v3 address (valid key and checksum) that no service publishes.
	step "a refusal: an onion address that does not exist" \
		"$torsocks" curl -sS --max-time 60 http://y5dgxyuko4scq4eermr73jnak6plcwmjpw2jkx6j4mk6kzatcdpucsid.onion/
else
	say "names do not resolve under this build of torsocks yet (DNS support): skipping by-name and .onion through torsocks"
	step "the onion service, with curl speaking SOCKS to Tor itself (no torsocks)" \
		curl -sS --max-time 60 --socks5-hostname 127.0.0.1:9050 "http://$ONION/"
	step "the static Go client by address (Go's raw syscalls: LD_PRELOAD cannot see them)" \
		"$torsocks" "$work/goclient" http://203.0.113.10/
fi

step "a refusal: a UDP datagram that is not DNS" \
	"$torsocks" python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("203.0.113.10", 9999))'

if [ -x /usr/bin/torsocks ]; then
	step "for contrast, the C torsocks (LD_PRELOAD) with the same static Go client: it goes around Tor" \
		/usr/bin/torsocks "$work/goclient" http://203.0.113.10/
fi

say "done: pages came through Tor exits (198.51.100.1) and the onion service; names through Tor: $dns"
