package bench

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/testnet"
)

// TestReportTor measures, from one run, the per-connect cost through a real Tor network (a
// private one on loopback, internal/testnet): each connect builds a stream through a 3-hop
// circuit to the destination. Ways: the client speaking SOCKS5 itself, torsocks-go, the C
// torsocks. Set BENCH_REPORT=1; BENCH_TOR_CONNECTS changes the count (default 300).
func TestReportTor(t *testing.T) {
	if testing.Short() || os.Getenv("BENCH_REPORT") == "" {
		t.Skip("set BENCH_REPORT=1 to run the benchmark report") // opt-in (make bench): a skip in CI too
	}
	setup(t)
	cache, _ := os.UserCacheDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	net, err := testnet.Start(ctx, testnet.Options{
		Dir:        t.TempDir(),
		KeyCache:   filepath.Join(cache, "gotorsocks", "testnet-keys"),
		ExitSource: netnstest.SocksSrcV4,
		SocksPort:  9150,
		Logf:       t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	port := strconv.Itoa(int(net.SocksAddr.Port()))
	n := 300
	if v, err := strconv.Atoi(os.Getenv("BENCH_TOR_CONNECTS")); err == nil {
		n = v
	}
	conf := filepath.Join(dir, "c-torsocks-tor.conf")
	if err := os.WriteFile(conf, []byte("TorAddress 127.0.0.1\nTorPort "+port+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	modes := []struct {
		name    string
		wrapper []string
		mode    string
		env     []string
	}{
		{"client-socks5", nil, "socks", nil},
		{"torsocks-go", []string{torsocksGo}, "direct", []string{"TORSOCKS_TOR_PORT=" + port}},
		{"torsocks-c", []string{"env", "TORSOCKS_CONF_FILE=" + conf, "/usr/bin/torsocks"}, "direct", nil},
	}
	ns := map[string]float64{}
	for round := 0; round < 3; round++ {
		for _, m := range modes {
			args := append(append([]string{}, m.wrapper...), connbn, m.mode, strconv.Itoa(n/3), destHost, destPort, "127.0.0.1", port)
			res := runArgs(t, args, m.env...)
			v, _ := strconv.ParseFloat(res["ns_per_connect"], 64)
			if old, ok := ns[m.name]; !ok || v < old {
				ns[m.name] = v
			}
		}
	}
	base := ns["client-socks5"]
	for _, m := range modes {
		t.Logf("through Tor: %-14s %8.2f ms/connect  ratio to client-socks5 %.3f", m.name, ns[m.name]/1e6, ns[m.name]/base)
	}
}
