package bench

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestReportConcurrent measures concurrent connects: BENCH_THREADS threads (default 16) making
// BENCH_PER_THREAD connects each (default 500) at once, with a C program (pthreads,
// testdata/connpar.c) and a static Go client (goroutines, testdata/goconn), in interleaved rounds
// (BENCH_ROUNDS, default 5; medians): natively, the client speaking SOCKS5 itself, the C torsocks
// (C client only: it does not see a static Go program's connects), this torsocks and
// BENCH_BASELINE. Throughput in connects/s, and CPU per connect (user+system of the command and
// everything it waited for: program plus supervisor; the SOCKS server and the destination run in
// the test process and are not counted). Unless BENCH_WAYS picks ways, the C threads' rows end
// with the floor of the sealed path (testdata/sealfloor.c client and join, as many threads).
func TestReportConcurrent(t *testing.T) {
	if testing.Short() || os.Getenv("BENCH_REPORT") == "" {
		t.Skip("set BENCH_REPORT=1 to run the benchmark report") // opt-in (make bench): a skip in CI too
	}
	setup(t)
	cpar := filepath.Join(dir, "connpar")
	if out, err := exec.Command("gcc", "-O2", "-o", cpar, "testdata/connpar.c", "-lpthread").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	floor := filepath.Join(dir, "sealfloor")
	if out, err := exec.Command("gcc", "-O2", "-o", floor, "testdata/sealfloor.c", "-lpthread").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	goconn := filepath.Join(dir, "goconn")
	build := exec.Command("go", "build", "-o", goconn, "./testdata/goconn")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build goconn: %v\n%s", err, out)
	}
	// The test namespace's port range and TIME_WAIT reuse: see setup.
	threads, per, rounds := envInt("BENCH_THREADS", 16), envInt("BENCH_PER_THREAD", 500), envInt("BENCH_ROUNDS", 5)
	type cway struct {
		name    string
		wrapper []string
		mode    string
	}
	all := []cway{{"native", nil, "direct"}, {"client-socks5", nil, "socks"}, {"torsocks-c", cTorsocks(t), "direct"}, {"torsocks-go", []string{torsocksGo}, "direct"}}
	if base := os.Getenv("BENCH_BASELINE"); base != "" {
		all = append(all, cway{"baseline", []string{base}, "direct"})
	}
	for _, prog := range []struct{ name, path string }{{"C threads", cpar}, {"Go client", goconn}} {
		rate, cpu := map[string][]float64{}, map[string][]float64{}
		var ws []cway
		// With the C threads, the floor of the sealed path (testdata/sealfloor.c, no seccomp):
		// the client's connects, and the same with the inner join and a C relay thread added.
		var floors []string
		if prog.path == cpar && os.Getenv("BENCH_WAYS") == "" {
			floors = []string{"client", "join"}
		}
		for _, w := range all {
			if only := os.Getenv("BENCH_WAYS"); only != "" && !slices.Contains(strings.Split(only, ","), w.name) {
				continue
			}
			if prog.path == goconn && w.name == "torsocks-c" {
				continue // LD_PRELOAD does not see a static Go program's connects: they would leak
			}
			ws = append(ws, w)
		}
		for r := 0; r < rounds; r++ {
			for _, w := range ws {
				args := append(append([]string{}, w.wrapper...), prog.path, w.mode, strconv.Itoa(threads), strconv.Itoa(per), destHost, destPort)
				cmd := exec.Command(args[0], args[1:]...)
				var errb bytes.Buffer
				cmd.Stderr = &errb
				out, err := cmd.Output()
				if err != nil {
					t.Fatalf("%v: %v\n%s%s", args, err, out, errb.Bytes())
				}
				res := parseKV(out)
				v, _ := strconv.ParseFloat(res["conn_per_s"], 64)
				rate[w.name] = append(rate[w.name], v)
				st := cmd.ProcessState
				cpu[w.name] = append(cpu[w.name], float64((st.UserTime()+st.SystemTime()).Microseconds())/float64(threads*per))
			}
			for _, m := range floors {
				res := runArgs(t, []string{floor, m, strconv.Itoa(threads * per), destHost, destPort, "127.0.0.1", "9050", strconv.Itoa(threads)})
				v, _ := strconv.ParseFloat(res["conn_per_s"], 64)
				rate["floor-"+m] = append(rate["floor-"+m], v)
				v, _ = strconv.ParseFloat(res["process_cpu_ns"], 64)
				cpu["floor-"+m] = append(cpu["floor-"+m], v/1000/float64(threads*per))
			}
		}
		for _, m := range floors {
			ws = append(ws, cway{name: "floor-" + m})
		}
		for _, w := range ws {
			m, c := median(rate[w.name]), median(cpu[w.name])
			line := "concurrent %-9s %-13s %7.0f conn/s (min %.0f)  CPU %6.1f µs/connect"
			a := []any{prog.name, w.name, m, minOf(rate[w.name]), c}
			if ref, ok := rate["torsocks-c"]; ok && len(ref) > 0 {
				line += "  throughput ratio to torsocks-c %.2f  CPU ratio %.2f"
				a = append(a, m/median(ref), c/median(cpu["torsocks-c"]))
			}
			if ref, ok := rate["client-socks5"]; ok && len(ref) > 0 {
				line += "  throughput ratio to client-socks5 %.2f"
				a = append(a, m/median(ref))
			}
			t.Logf(line, a...)
		}
	}
}
