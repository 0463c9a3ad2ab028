package bench

import (
	"bufio"
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

// bulkServer: per connection, reads a 4-byte count of MiB (big-endian) and sends that many, then
// closes; with the count's top bit set it reads that many instead, then answers one byte.
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
				n := binary.BigEndian.Uint32(req[:])
				if n&(1<<31) != 0 {
					buf := make([]byte, 1<<20)
					for left := int64(n&^(1<<31)) << 20; left > 0; {
						k, err := c.Read(buf[:min(left, int64(len(buf)))])
						if err != nil {
							return
						}
						left -= int64(k)
					}
					c.Write([]byte{1})
					return
				}
				for i := uint32(0); i < n; i++ {
					if _, err := c.Write(chunk); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// TestReportSealed compares SealedNetwork 0 and 1 (issue 10) with the client speaking SOCKS5
// itself, interleaved: per-connect cost (connbench), bulk throughput of one download and one
// upload (sealbench bulk and upload, BENCH_BULK_MIB MiB each), and the supervisor's memory and
// descriptors with
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
	floor := filepath.Join(dir, "sealfloor")
	if out, err := exec.Command("gcc", "-O2", "-o", floor, "testdata/sealfloor.c", "-lpthread").CombinedOutput(); err != nil {
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
	// Every connect leaves a TIME_WAIT behind, and the SOCKS server binds its upstream
	// connections to one source address: with the default port range, the later runs of a long
	// report would spend milliseconds a connect looking for a free port (seen: 8 ms past some
	// 25000). The range is this network namespace's own.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("1024 65535"), 0o644); err != nil {
		t.Logf("widen the local port range: %v", err)
	}
	// The held connections: the program holds one descriptor each, the supervisor two (six in
	// the previous build), this process one (holdSocks). All run with this process' hard limit.
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	rl.Cur = rl.Max
	unix.Setrlimit(unix.RLIMIT_NOFILE, &rl)
	if most := int(rl.Max-100) / 2; hold > most {
		t.Logf("holding %d connections, not %d: the hard descriptor limit is %d and the supervisor holds two a connection", most, hold, rl.Max)
		hold = most
	}
	holdPort := startHoldSocks(t)
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
	// The floor (testdata/sealfloor.c): what the sealed path adds to the client's connect, done
	// in plain C without seccomp, once with the handshake to an inner listener and once with
	// TCP_REPAIR; its client mode gives the CPU to compare with.
	floors := []string{"client", "join", "repair"}
	floorNs := map[string][]float64{}
	floorCPU := map[string][]float64{}
	conn := map[string][]float64{}
	connCPU := map[string][]float64{} // CPU of the command and what it waited for, a connect
	down := map[string][]float64{}    // sealbench bulk: the program downloads
	up := map[string][]float64{}      // sealbench upload: the program uploads
	for r := 0; r < rounds; r++ {
		for _, w := range ways {
			res := run(t, w.wrapper, w.mode, n/rounds, w.env...)
			v, _ := strconv.ParseFloat(res["ns_per_connect"], 64)
			conn[w.name] = append(conn[w.name], v)
			v, _ = strconv.ParseFloat(res["process_cpu_ns"], 64)
			connCPU[w.name] = append(connCPU[w.name], v/float64(n/rounds))
			for _, b := range []struct {
				what string
				m    map[string][]float64
			}{{"bulk", down}, {"upload", up}} {
				args := append(append([]string{}, w.wrapper...), sb, w.mode, b.what, strconv.Itoa(mib), destHost, bulkPort)
				res = runArgs(t, args, w.env...)
				v, _ = strconv.ParseFloat(res["mib_per_s"], 64)
				b.m[w.name] = append(b.m[w.name], v)
			}
		}
		for _, m := range floors {
			res := runArgs(t, []string{floor, m, strconv.Itoa(n / rounds), destHost, destPort, "127.0.0.1", "9050"})
			v, _ := strconv.ParseFloat(res["ns_per_connect"], 64)
			floorNs[m] = append(floorNs[m], v)
			v, _ = strconv.ParseFloat(res["cpu_ns_per_connect"], 64)
			floorCPU[m] = append(floorCPU[m], v)
		}
	}
	med := func(x []float64) float64 {
		s := append([]float64(nil), x...)
		sort.Float64s(s)
		return s[len(s)/2]
	}
	c0 := med(conn["client-socks5"])
	for _, w := range ways {
		t.Logf("%-14s connect %7.1f µs (ratio %.2f), CPU %6.1f µs (ratio %.2f)   [%v]", w.name, med(conn[w.name])/1000, med(conn[w.name])/c0,
			med(connCPU[w.name])/1000, med(connCPU[w.name])/med(connCPU["client-socks5"]), conn[w.name])
	}
	for _, m := range floors {
		t.Logf("floor-%-8s connect %7.1f µs (ratio %.2f), CPU %6.1f µs (ratio %.2f to floor-client)   [%v]", m,
			med(floorNs[m])/1000, med(floorNs[m])/c0, med(floorCPU[m])/1000, med(floorCPU[m])/med(floorCPU["client"]), floorNs[m])
	}
	for _, b := range []struct {
		what string
		m    map[string][]float64
	}{{"download", down}, {"upload", up}} {
		b0 := med(b.m["client-socks5"])
		for _, w := range ways {
			t.Logf("%-14s bulk %-8s %7.0f MiB/s (ratio %.2f)   [%v]", w.name, b.what, med(b.m[w.name]), med(b.m[w.name])/b0, b.m[w.name])
		}
	}
	for _, w := range ways[1:] {
		k := hold
		if w.name == "baseline-1" {
			k = min(hold, int(rl.Max-100)/6) // six descriptors a connection before internal/relay
		}
		args := append(append([]string{}, w.wrapper...), sb, "direct", "hold", strconv.Itoa(k), destHost, destPort)
		res := runArgs(t, args, append([]string{"TORSOCKS_TOR_PORT=" + holdPort}, w.env...)...)
		t.Logf("%-14s %d connections open: supervisor VmRSS %s, VmHWM %s, %s descriptors; after they closed: VmRSS %s, %s descriptors",
			w.name, k, res["open_VmRSS"], res["open_VmHWM"], res["open_fds"], res["closed_VmRSS"], res["closed_fds"])
	}
}

// startHoldSocks starts a SOCKS5 server on 127.0.0.1 (its port returned) that answers every
// CONNECT with success without connecting anywhere, and holds the connection until the client
// closes it: one descriptor a held connection in this process, where the SOCKS server and the
// destination would take three.
func startHoldSocks(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
				var hdr [2]byte
				if _, err := io.ReadFull(r, hdr[:]); err != nil || hdr[0] != 5 {
					return
				}
				if _, err := r.Discard(int(hdr[1])); err != nil {
					return
				}
				c.Write([]byte{5, 0})
				var req [4]byte
				if _, err := io.ReadFull(r, req[:]); err != nil {
					return
				}
				n := map[byte]int{1: 4, 4: 16}[req[3]]
				if req[3] == 3 {
					l, err := r.ReadByte()
					if err != nil {
						return
					}
					n = int(l)
				}
				if _, err := r.Discard(n + 2); err != nil {
					return
				}
				c.Write([]byte{5, 0, 0, 1, 0, 0, 0, 0, 0, 0})
				io.Copy(io.Discard, r)
			}()
		}
	}()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}
