// Package bench measures what torsocks costs a program, in one run, against the alternatives: no
// proxy at all, the program speaking SOCKS5 itself, and the C torsocks (LD_PRELOAD, Debian's
// package). Everything runs inside a private network namespace (internal/netnstest) against a
// local SOCKS5 server and a local destination. Run: go test -run '^$' -bench . ./bench/
//
// Results are ratios, written up in docs/benchmarks.md; nothing here asserts a time.
package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/socks5test"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

var (
	once                    sync.Once
	onceErr                 error
	dir, torsocksGo, connbn string
	unixmsg                 string
)

const destHost, destPort = "203.0.113.10", "8080"

func setup(b testing.TB) {
	b.Helper()
	netnstest.Require(b)
	once.Do(func() {
		// Every connect leaves TIME_WAIT sockets for 60 s (the program's, on the way to the
		// SOCKS server, and the SOCKS server's, bound to its source address, on the way to the
		// destination): tens of thousands of connects a row would run out of source ports, and
		// before that the kernel's port search would dominate every proxied row, and the more
		// the later a way runs in a round (TestReport's 20 000 connects a way had the C torsocks
		// at 4 ms a connect, after this torsocks). In the test's own network namespace, for
		// every row: a wider range, TIME_WAIT ports reused after 1 ms instead of 1 s, and at
		// most 20 000 TIME_WAIT sockets kept (the state a connection-heavy program leaves; the
		// sock_diag sweeps of the registry used to walk them all). The range starts above the
		// private Tor network's ports (TestReportTor, testnet's BasePort 15000), which a source
		// port in TIME_WAIT would otherwise keep from being listened on.
		for f, v := range map[string]string{"ip_local_port_range": "16384 65535", "tcp_tw_reuse": "1", "tcp_tw_reuse_delay": "1", "tcp_max_tw_buckets": "20000"} {
			if err := os.WriteFile("/proc/sys/net/ipv4/"+f, []byte(v), 0o644); err != nil {
				b.Logf("sysctl %s: %v", f, err)
			}
		}
		dir, onceErr = os.MkdirTemp("", "torsocks-bench-")
		if onceErr != nil {
			return
		}
		torsocksGo = filepath.Join(dir, "torsocks")
		build := exec.Command("go", "build", "-trimpath", "-o", torsocksGo, "github.com/gotorsocks/torsocks/cmd/torsocks")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			onceErr = fmt.Errorf("build: %v\n%s", err, out)
			return
		}
		unixmsg = filepath.Join(dir, "unixmsg")
		if out, err := exec.Command("gcc", "-O2", "-o", unixmsg, "testdata/unixmsg.c", "-lpthread").CombinedOutput(); err != nil {
			onceErr = fmt.Errorf("gcc: %v\n%s", err, out)
			return
		}
		connbn = filepath.Join(dir, "connbench")
		if out, err := exec.Command("gcc", "-O2", "-o", connbn, "testdata/connbench.c").CombinedOutput(); err != nil {
			onceErr = fmt.Errorf("gcc: %v\n%s", err, out)
			return
		}
		// Destination: accept, read one byte, close.
		ln, err := net.Listen("tcp", destHost+":"+destPort)
		if err != nil {
			onceErr = err
			return
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { io.Copy(io.Discard, c); c.Close() }()
			}
		}()
		_, onceErr = socks5test.Start(socks5test.Options{Listen: []string{"127.0.0.1:9050"}, SourceV4: netnstest.SocksSrcV4})
	})
	if onceErr != nil {
		b.Fatal(onceErr)
	}
}

// run runs connbench with n connects under the given wrapper and returns its output lines.
func run(b testing.TB, wrapper []string, mode string, n int, env ...string) map[string]string {
	b.Helper()
	return runArgs(b, append(append([]string{}, wrapper...), connbn, mode, strconv.Itoa(n), destHost, destPort), env...)
}

// runArgs runs a command and returns its KEY=VALUE (or KEY: VALUE) output lines, and as
// process_cpu_ns the CPU time of the command and the descendants it waited for (under torsocks:
// the supervisor and the program).
func runArgs(b testing.TB, args []string, env ...string) map[string]string {
	b.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		b.Fatalf("%v: %v\n%s%s", args, err, out.String(), errb.String())
	}
	kv := parseKV(out.Bytes())
	st := cmd.ProcessState
	kv["process_cpu_ns"] = strconv.FormatInt((st.UserTime() + st.SystemTime()).Nanoseconds(), 10)
	return kv
}

// parseKV returns the KEY=VALUE (or KEY: VALUE) lines of a program's output.
func parseKV(out []byte) map[string]string {
	res := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			res[k] = v
		} else if k, v, ok := strings.Cut(sc.Text(), ":"); ok {
			res[k] = strings.TrimSpace(v)
		}
	}
	return res
}

func cTorsocks(b testing.TB) []string {
	if _, err := exec.LookPath("torsocks"); err != nil {
		b.Skip("Debian's torsocks is not installed")
	}
	// Its own config file, whatever /etc/tor/torsocks.conf says (an empty one would crash 2.4.0).
	conf := filepath.Join(dir, "c-torsocks.conf")
	if err := os.WriteFile(conf, []byte("TorAddress 127.0.0.1\nTorPort 9050\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	return []string{"env", "TORSOCKS_CONF_FILE=" + conf, "/usr/bin/torsocks"}
}

// BenchmarkConnect: one op is one TCP connect (and close) made by a C program.
func BenchmarkConnect(b *testing.B) {
	setup(b)
	cases := []struct {
		name    string
		wrapper func(testing.TB) []string
		mode    string
	}{
		{"direct", func(testing.TB) []string { return nil }, "direct"},
		{"client-socks5", func(testing.TB) []string { return nil }, "socks"},
		{"torsocks-go", func(testing.TB) []string { return []string{torsocksGo} }, "direct"},
		{"torsocks-c", cTorsocks, "direct"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			w := c.wrapper(b)
			res := run(b, w, c.mode, b.N)
			ns, _ := strconv.ParseFloat(res["ns_per_connect"], 64)
			b.ReportMetric(ns, "ns/connect")
		})
	}
}

// TestReport prints, from one run, the per-connect cost of each way as a ratio to the client
// speaking SOCKS5 itself, and the supervisor's memory after many short connections. It only
// reports (go test -run TestReport -v ./bench/); set BENCH_CONNECTS to change the count, and
// BENCH_BASELINE to the path of another torsocks build to measure it alongside ("baseline").
func TestReport(t *testing.T) {
	if testing.Short() || os.Getenv("BENCH_REPORT") == "" {
		t.Skip("set BENCH_REPORT=1 to run the benchmark report") // opt-in (make bench): a skip in CI too
	}
	setup(t)
	n := 20000
	if v, err := strconv.Atoi(os.Getenv("BENCH_CONNECTS")); err == nil {
		n = v
	}
	ns := map[string]float64{}
	modes := []struct {
		name    string
		wrapper []string
		mode    string
	}{
		{"direct", nil, "direct"},
		{"client-socks5", nil, "socks"},
		{"torsocks-go", []string{torsocksGo}, "direct"},
		{"torsocks-c", cTorsocks(t), "direct"},
	}
	if base := os.Getenv("BENCH_BASELINE"); base != "" {
		// Another build of torsocks-go (an earlier commit, say), measured in the same run.
		modes = append(modes, struct {
			name    string
			wrapper []string
			mode    string
		}{"baseline", []string{base}, "direct"})
	}
	for round := 0; round < 3; round++ { // interleaved rounds, best of three
		for _, m := range modes {
			res := run(t, m.wrapper, m.mode, n/3)
			v, _ := strconv.ParseFloat(res["ns_per_connect"], 64)
			if old, ok := ns[m.name]; !ok || v < old {
				ns[m.name] = v
			}
		}
	}
	base := ns["client-socks5"]
	for _, m := range modes {
		t.Logf("%-14s %8.1f µs/connect  ratio to client-socks5 %.2f", m.name, ns[m.name]/1000, ns[m.name]/base)
	}

	// A program that never touches the network but talks a lot over unix sockets (D-Bus, Wayland):
	// what the filter costs it.
	plain, wrapped := 1e18, 1e18
	for round := 0; round < 3; round++ {
		for _, w := range [][]string{nil, {torsocksGo}} {
			args := append(append([]string{}, w...), unixmsg, "200000", "plain")
			out, err := exec.Command(args[0], args[1:]...).Output()
			if err != nil {
				t.Fatalf("%v: %v", args, err)
			}
			v, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(string(out), "ns_per_roundtrip=")), 64)
			if w == nil {
				plain = min(plain, v)
			} else {
				wrapped = min(wrapped, v)
			}
		}
	}
	t.Logf("unix sendmsg/recvmsg round trip: %.2f µs plain, %.2f µs under torsocks-go, ratio %.3f", plain/1000, wrapped/1000, wrapped/plain)
}

// TestReportMemory reports the supervisor's memory after many short connections (default 100000,
// BENCH_MEMORY_CONNECTS), read by the program itself from /proc/PPID/status at its end.
func TestReportMemory(t *testing.T) {
	if testing.Short() || os.Getenv("BENCH_REPORT") == "" {
		t.Skip("set BENCH_REPORT=1 to run the benchmark report") // opt-in (make bench): a skip in CI too
	}
	setup(t)
	n := 100000
	if v, err := strconv.Atoi(os.Getenv("BENCH_MEMORY_CONNECTS")); err == nil {
		n = v
	}
	for _, k := range []int{n / 10, n} {
		res := run(t, []string{torsocksGo}, "direct", k, "BENCH_PARENT_STATUS=1")
		t.Logf("torsocks-go supervisor after %d connects: VmHWM %s, VmRSS %s", k, res["parent_VmHWM"], res["parent_VmRSS"])
	}
}

// TestReportRecv measures what VetReceivedSockets costs a program that exchanges messages over a
// unix socketpair with sendmsg/recvmsg (bench/testdata/unixmsg.c), without and with one
// descriptor per message: no torsocks, the C torsocks, this torsocks with the setting off and on.
// Interleaved rounds (BENCH_ROUNDS, default 5), medians; BENCH_RECV_TRIPS round trips a run.
func TestReportRecv(t *testing.T) {
	if testing.Short() || os.Getenv("BENCH_REPORT") == "" {
		t.Skip("set BENCH_REPORT=1 to run the benchmark report") // opt-in (make bench): a skip in CI too
	}
	setup(t)
	// The C torsocks keeps every descriptor it peeks at (one per message received): the runs
	// get the hard descriptor limit, and the default count stays under it.
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil {
		rl.Cur = rl.Max
		unix.Setrlimit(unix.RLIMIT_NOFILE, &rl)
	}
	trips, rounds := 8000, 5
	if v, err := strconv.Atoi(os.Getenv("BENCH_RECV_TRIPS")); err == nil {
		trips = v
	}
	if v, err := strconv.Atoi(os.Getenv("BENCH_ROUNDS")); err == nil {
		rounds = v
	}
	ways := []struct {
		name    string
		wrapper []string
		env     []string
	}{
		{"no torsocks", nil, nil},
		{"torsocks-c", cTorsocks(t), nil},
		{"torsocks-go, vetting off", []string{torsocksGo}, []string{"TORSOCKS_VET_RECEIVED_SOCKETS=0"}},
		{"torsocks-go, vetting on", []string{torsocksGo}, []string{"TORSOCKS_VET_RECEIVED_SOCKETS=1"}},
	}
	for _, mode := range []string{"plain", "fds"} {
		ns := map[string][]float64{}
		for r := 0; r < rounds; r++ {
			for _, w := range ways {
				args := append(append([]string{}, w.wrapper...), unixmsg, strconv.Itoa(trips), mode)
				res := runArgs(t, args, w.env...)
				v, _ := strconv.ParseFloat(res["ns_per_roundtrip"], 64)
				ns[w.name] = append(ns[w.name], v)
			}
		}
		base := median(ns["no torsocks"])
		for _, w := range ways {
			m := median(ns[w.name])
			t.Logf("unixmsg %-5s %-26s %7.1f µs/round trip  %8.0f msgs/s  ratio to no torsocks %.2f", mode, w.name, m/1000, 2e9/m, m/base)
		}
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}
