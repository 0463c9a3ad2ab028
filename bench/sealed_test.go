package bench

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

const bulkPort = "8081"

// bulkServer: per connection, reads a 4-byte count of MiB and sends that many, then closes.
func startBulkServer(t *testing.T) {
	ln, err := net.Listen("tcp", destHost+":"+bulkPort)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	chunk := make([]byte, 1<<20)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var req [4]byte
				if _, err := io.ReadFull(c, req[:]); err != nil {
					return
				}
				for i := uint32(0); i < binary.BigEndian.Uint32(req[:]); i++ {
					if _, err := c.Write(chunk); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// TestReportSealed compares SealedNetwork 0 and 1 (issue 10) with the client speaking SOCKS5
// itself, interleaved: per-connect cost (connbench), bulk throughput of one download
// (sealbench bulk, BENCH_BULK_MIB MiB), and the supervisor's memory and descriptors with
// BENCH_HOLD (default 10000) connections open and after they close. BENCH_BASELINE, the path of
// another torsocks build, adds it with SealedNetwork 1 ("baseline-1") to every measurement.
func TestReportSealed(t *testing.T) {
	if testing.Short() || os.Getenv("BENCH_REPORT") == "" {
		t.Skip("set BENCH_REPORT=1 to run the benchmark report")
	}
	setup(t)
	startBulkServer(t)
	sb := filepath.Join(dir, "sealbench")
	if out, err := exec.Command("gcc", "-O2", "-o", sb, "testdata/sealbench.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	n, mib, hold, rounds := 3000, 1024, 10000, 5
	for _, v := range []struct {
		name string
		p    *int
	}{{"BENCH_CONNECTS", &n}, {"BENCH_BULK_MIB", &mib}, {"BENCH_HOLD", &hold}, {"BENCH_ROUNDS", &rounds}} {
		if x, err := strconv.Atoi(os.Getenv(v.name)); err == nil {
			*v.p = x
		}
	}
	// The held connections: the program holds one descriptor each, the supervisor two (six in
	// the previous build), this process three (SOCKS server and destination). Root (the
	// benchmarks run as root, in their own network namespace) may raise the hard limit.
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil {
		if need := uint64(8*hold + 1000); rl.Max < need && os.Getuid() == 0 {
			rl.Max = need
		}
		rl.Cur = rl.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
			t.Logf("setrlimit(RLIMIT_NOFILE, %d): %v", rl.Max, err)
		}
	}
	sealed0 := []string{"TORSOCKS_SEALED_NETWORK=0"}
	sealed1 := []string{"TORSOCKS_SEALED_NETWORK=1"}
	ways := []struct {
		name    string
		wrapper []string
		mode    string
		env     []string
	}{
		{"client-socks5", nil, "socks", nil},
		{"sealed-0", []string{torsocksGo}, "direct", sealed0},
		{"sealed-1", []string{torsocksGo}, "direct", sealed1},
	}
	if base := os.Getenv("BENCH_BASELINE"); base != "" {
		ways = append(ways, struct {
			name    string
			wrapper []string
			mode    string
			env     []string
		}{"baseline-1", []string{base}, "direct", sealed1})
	}
	conn := map[string][]float64{}
	bulk := map[string][]float64{}
	for r := 0; r < rounds; r++ {
		for _, w := range ways {
			res := run(t, w.wrapper, w.mode, n/rounds, w.env...)
			v, _ := strconv.ParseFloat(res["ns_per_connect"], 64)
			conn[w.name] = append(conn[w.name], v)
			args := append(append([]string{}, w.wrapper...), sb, w.mode, "bulk", strconv.Itoa(mib), destHost, bulkPort)
			res = runArgs(t, args, w.env...)
			v, _ = strconv.ParseFloat(res["mib_per_s"], 64)
			bulk[w.name] = append(bulk[w.name], v)
		}
	}
	med := func(x []float64) float64 {
		s := append([]float64(nil), x...)
		sort.Float64s(s)
		return s[len(s)/2]
	}
	c0, b0 := med(conn["client-socks5"]), med(bulk["client-socks5"])
	for _, w := range ways {
		t.Logf("%-14s connect %7.1f µs (ratio %.2f)   bulk %7.0f MiB/s (ratio %.2f)   [connect %v] [bulk %v]",
			w.name, med(conn[w.name])/1000, med(conn[w.name])/c0, med(bulk[w.name]), med(bulk[w.name])/b0, conn[w.name], bulk[w.name])
	}
	for _, w := range ways[1:] {
		args := append(append([]string{}, w.wrapper...), sb, "direct", "hold", strconv.Itoa(hold), destHost, destPort)
		res := runArgs(t, args, w.env...)
		t.Logf("%-14s %d connections open: supervisor VmRSS %s, VmHWM %s, %s descriptors; after they closed: VmRSS %s, %s descriptors",
			w.name, hold, res["open_VmRSS"], res["open_VmHWM"], res["open_fds"], res["closed_VmRSS"], res["closed_fds"])
	}
}
