package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// way is one way of running a workload: nothing in front of it, the C torsocks, this torsocks, or
// another build of it (BENCH_BASELINE).
type way struct {
	name    string
	wrapper []string
}

func ways(t *testing.T) []way {
	w := []way{{"native", nil}, {"torsocks-c", cTorsocks(t)}, {"torsocks-go", []string{torsocksGo}}}
	if base := os.Getenv("BENCH_BASELINE"); base != "" {
		w = append(w, way{"baseline", []string{base}})
	}
	return w
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

// TestReportStartup times, in interleaved rounds (BENCH_ROUNDS, default 21; medians), programs that
// make no network call: true, sh -c true, tar of 4000 files and git status in a 4000-file tree,
// natively, under the C torsocks and under this torsocks (and BENCH_BASELINE). Wall time of the
// whole command as its caller sees it, in ms.
func TestReportStartup(t *testing.T) {
	if testing.Short() || os.Getenv("BENCH_REPORT") == "" {
		t.Skip("set BENCH_REPORT=1 to run the benchmark report") // opt-in (make bench): a skip in CI too
	}
	setup(t)
	tree := filepath.Join(dir, "tree")
	if _, err := os.Stat(tree); err != nil {
		for i := 0; i < 4000; i++ {
			d := filepath.Join(tree, fmt.Sprintf("d%02d", i%40))
			os.MkdirAll(d, 0o755)
			if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%04d.txt", i)), []byte(fmt.Sprintf("file %d\n", i)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for _, args := range [][]string{{"init", "-q"}, {"add", "."}, {"-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "x"}} {
			cmd := exec.Command("git", args...)
			cmd.Dir = tree
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Skipf("git %v: %v %s", args, err, out)
			}
		}
	}
	tarOut := filepath.Join(dir, "out.tar")
	// Most users are not root: their torsocks makes the sandbox in a user namespace, and its
	// factory is spawned before the program starts (sandbox.SpawnEarly). The nobody rows run
	// every way under setpriv (its own exec is in the native row too).
	nobody := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}
	workloads := []struct {
		name   string
		args   []string
		prefix []string
	}{
		{"true", []string{"/bin/true"}, nil},
		{"sh -c true", []string{"/bin/sh", "-c", "true"}, nil},
		{"tar 4000 files", []string{"tar", "-cf", tarOut, "-C", tree, "."}, nil},
		{"git status 4000 files", []string{"git", "-C", tree, "status", "--porcelain"}, nil},
		{"true, as nobody", []string{"/bin/true"}, nobody},
		{"sh -c true, as nobody", []string{"/bin/sh", "-c", "true"}, nobody},
	}
	ws := ways(t)
	rounds := envInt("BENCH_ROUNDS", 21)
	ms := map[string][]float64{}
	for r := 0; r < rounds; r++ {
		for _, wl := range workloads {
			for _, w := range ws {
				args := append(append(append([]string{}, wl.prefix...), w.wrapper...), wl.args...)
				cmd := exec.Command(args[0], args[1:]...)
				start := time.Now()
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("%v: %v\n%s", args, err, out)
				}
				ms[wl.name+"/"+w.name] = append(ms[wl.name+"/"+w.name], float64(time.Since(start).Microseconds())/1000)
			}
		}
	}
	for _, wl := range workloads {
		native, c := median(ms[wl.name+"/native"]), median(ms[wl.name+"/torsocks-c"])
		for _, w := range ws {
			v := ms[wl.name+"/"+w.name]
			m := median(v)
			t.Logf("startup %-22s %-12s %7.2f ms (min %.2f)  ratio to native %.2f  ratio to torsocks-c %.2f", wl.name, w.name, m, minOf(v), m/native, m/c)
		}
	}
}

// TestReportLookups measures name lookups of distinct names (BENCH_LOOKUPS a run, default 500;
// BENCH_ROUNDS interleaved rounds, default 5; medians) with glibc's getaddrinfo and with Go's own
// resolver, after their floor (the notifications of a lookup without it, BENCH_TRIPS a run): natively against a local nameserver that answers every A query, under the C torsocks
// (Tor's RESOLVE, answered by the local SOCKS server: host unreachable, as it knows no name), and
// under this torsocks (its DNS responder, map mode: answered locally).
func TestReportLookups(t *testing.T) {
	if testing.Short() || os.Getenv("BENCH_REPORT") == "" {
		t.Skip("set BENCH_REPORT=1 to run the benchmark report") // opt-in (make bench): a skip in CI too
	}
	setup(t)
	clookup := filepath.Join(dir, "lookups")
	if out, err := exec.Command("gcc", "-O2", "-o", clookup, "testdata/lookups.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	golookup := filepath.Join(dir, "golookup")
	build := exec.Command("go", "build", "-o", golookup, "./testdata/golookup")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build golookup: %v\n%s", err, out)
	}
	trips := filepath.Join(dir, "trips")
	if out, err := exec.Command("gcc", "-O2", "-o", trips, "testdata/trips.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	stop := nameserver(t)
	defer stop()
	n, rounds := envInt("BENCH_LOOKUPS", 500), envInt("BENCH_ROUNDS", 5)
	ws := ways(t)
	// The floor: a lookup's notifications without the lookup (socket + connect of a UDP socket
	// to the nameserver, and close), and the two parts of it (testdata/trips.c). Not under the C
	// torsocks, which refuses UDP sockets.
	var fws []way
	for _, w := range ws {
		if w.name != "torsocks-c" {
			fws = append(fws, w)
		}
	}
	for _, mode := range []string{"peer", "sock", "udp"} {
		ns := map[string][]float64{}
		for r := 0; r < rounds; r++ {
			for _, w := range fws {
				res := runArgs(t, append(append([]string{}, w.wrapper...), trips, mode, strconv.Itoa(envInt("BENCH_TRIPS", 3000))))
				v, _ := strconv.ParseFloat(res["ns_per_iter"], 64)
				ns[w.name] = append(ns[w.name], v)
			}
		}
		for _, w := range fws {
			t.Logf("floor %-5s %-12s %7.1f µs/iteration (peer: getpeername let run; sock: UDP socket + close; udp: socket + connect + close)", mode, w.name, median(ns[w.name])/1000)
		}
	}
	for _, prog := range []struct{ name, path string }{{"getaddrinfo", clookup}, {"Go resolver", golookup}} {
		ns := map[string][]float64{}
		ok := map[string]string{}
		for r := 0; r < rounds; r++ {
			for _, w := range ws {
				args := append(append([]string{}, w.wrapper...), prog.path, strconv.Itoa(n), fmt.Sprintf("%s%d", w.name, r))
				res := runArgs(t, args)
				v, _ := strconv.ParseFloat(res["ns_per_lookup"], 64)
				ns[w.name] = append(ns[w.name], v)
				ok[w.name] = res["ok"]
			}
		}
		native := median(ns["native"])
		for _, w := range ws {
			m := median(ns[w.name])
			t.Logf("lookups %-12s %-12s %7.1f µs/lookup %8.0f lookups/s  ratio (throughput) to native %.2f  (%s of %d answered)", prog.name, w.name, m/1000, 1e9/m, native/m, ok[w.name], n)
		}
	}
}

func minOf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = min(m, x)
	}
	return m
}
