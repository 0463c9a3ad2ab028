package bench

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/socks5test"
)

const httpPort = "8082"

// startHTTP serves on destHost:httpPort: reads a request's header, answers "HTTP/1.0 200 OK" and
// closes.
func startHTTP(t *testing.T) {
	ln, err := net.Listen("tcp", destHost+":"+httpPort)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if l == "\r\n" {
						break
					}
				}
				c.Write([]byte("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"))
			}()
		}
	}()
}

// TestReportAsync measures asynchronous connects (issue 11) against a SOCKS server that answers
// each CONNECT after BENCH_ASYNC_DELAY_MS (default 100 ms, a circuit round trip), with one C
// program (testdata/asyncbench.c, one thread, poll()): (a) BENCH_ASYNC_K (default 32)
// non-blocking connects started at once, time until all are established; (b) time to first
// byte of an HTTP GET (non-blocking connect, poll, GET, first byte; median of BENCH_ASYNC_GETS,
// default 5, a run). Ways: the program speaking SOCKS5 itself, the C torsocks, this torsocks
// (AsyncConnect 1 and 0) and BENCH_BASELINE; interleaved rounds (BENCH_ROUNDS, default 5),
// medians, ratios to the client speaking SOCKS5 itself.
func TestReportAsync(t *testing.T) {
	if testing.Short() || os.Getenv("BENCH_REPORT") == "" {
		t.Skip("set BENCH_REPORT=1 to run the benchmark report") // opt-in (make bench): a skip in CI too
	}
	setup(t)
	startHTTP(t)
	ab := filepath.Join(dir, "asyncbench")
	if out, err := exec.Command("gcc", "-O2", "-o", ab, "testdata/asyncbench.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	k, delay, gets, rounds := envInt("BENCH_ASYNC_K", 32), envInt("BENCH_ASYNC_DELAY_MS", 100), envInt("BENCH_ASYNC_GETS", 5), envInt("BENCH_ROUNDS", 5)
	srv, err := socks5test.Start(socks5test.Options{Listen: []string{"127.0.0.1:0"}, SourceV4: netnstest.SocksSrcV4, ReplyDelay: time.Duration(delay) * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	sport := strconv.Itoa(srv.Addrs()[0].(*net.TCPAddr).Port)
	conf := filepath.Join(dir, "c-torsocks-async.conf")
	if err := os.WriteFile(conf, []byte("TorAddress 127.0.0.1\nTorPort "+sport+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cts := cTorsocks(t) // skips without Debian's torsocks
	cts[1] = "TORSOCKS_CONF_FILE=" + conf
	type way struct {
		name    string
		wrapper []string
		mode    string
		env     []string
	}
	port := []string{"TORSOCKS_TOR_PORT=" + sport}
	ways := []way{
		{"client-socks5", nil, "socks", nil},
		{"torsocks-c", cts, "direct", nil},
		{"torsocks-go", []string{torsocksGo}, "direct", append([]string{"TORSOCKS_ASYNC_CONNECT=1"}, port...)},
		{"torsocks-go async 0", []string{torsocksGo}, "direct", append([]string{"TORSOCKS_ASYNC_CONNECT=0"}, port...)},
	}
	if base := os.Getenv("BENCH_BASELINE"); base != "" {
		ways = append(ways, way{"baseline", []string{base}, "direct", port})
	}
	many, ttfb := map[string][]float64{}, map[string][]float64{}
	for r := 0; r < rounds; r++ {
		for _, w := range ways {
			args := append(append([]string{}, w.wrapper...), ab, w.mode, "many", strconv.Itoa(k), destHost, destPort, sport)
			v, _ := strconv.ParseFloat(runArgs(t, args, w.env...)["ms"], 64)
			many[w.name] = append(many[w.name], v)
			args = append(append([]string{}, w.wrapper...), ab, w.mode, "ttfb", strconv.Itoa(gets), destHost, httpPort, sport)
			v, _ = strconv.ParseFloat(runArgs(t, args, w.env...)["ms"], 64)
			ttfb[w.name] = append(ttfb[w.name], v)
		}
	}
	m0, t0 := median(many["client-socks5"]), median(ttfb["client-socks5"])
	t.Logf("SOCKS reply after %d ms; %d rounds, medians; ratio to client-socks5", delay, rounds)
	for _, w := range ways {
		m, f := median(many[w.name]), median(ttfb[w.name])
		t.Logf("%-20s %d non-blocking connects %8.1f ms (ratio %5.2f)   HTTP GET first byte %7.1f ms (ratio %.2f)   [many %v] [ttfb %v]",
			w.name, k, m, m/m0, f, f/t0, many[w.name], ttfb[w.name])
	}
	t.Logf("SOCKS server: at most %d CONNECT requests waiting at once", srv.MaxInFlight())
}
