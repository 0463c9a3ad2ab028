package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/socks5test"
	"github.com/gotorsocks/torsocks/internal/testnet"
)

var update = flag.Bool("update", false, "rewrite docs/compatibility.md from this run's results")

// Addresses and ports of the test network (inside the private namespace).
var (
	testHost   = netnstest.DestV4     // 203.0.113.10: web server, banner service, onion target
	exitSource = netnstest.SocksSrcV4 // 198.51.100.1: the exits' OutboundBindAddressExit
	// onionSource is the onion service's OutboundBindAddressExit: its connections to the onion
	// target come from it. (Finding the owner of the connecting socket after accept is racy: the
	// onion service may have closed it by then, as when a browser abandons a request.)
	onionSource = netip.MustParseAddr("127.0.0.3")
)

const (
	webPort      = 80
	onionPort    = 8080 // the onion service's port 80 forwards here
	bannerPort   = 22
	rejectPort   = 25 // every exit's policy rejects it
	closedPort   = 9  // nothing listens there
	exitResolver = "127.0.0.1:5353"
	nameDomain   = "web.test" // ID.web.test resolves to testHost at the exits' resolver
	cTorsocks    = "/usr/bin/torsocks"
	maxRuns      = 6 // programs running at once
	runTimeout   = 90 * time.Second
)

// Tools a program runs under.
const (
	toolGo   = "go"   // this torsocks
	toolC    = "c"    // Debian's C torsocks (LD_PRELOAD)
	toolNone = "none" // no torsocks: the canary self-test
)

// TestMain runs the tests in a private network namespace.
func TestMain(m *testing.M) { netnstest.Main(m) }

// env is the shared test environment of one TestE2E run.
type env struct {
	probeMu   sync.Mutex       // guards probes
	probes    map[string]error // program name -> result of its probe (programRun)
	net       *testnet.Network
	dir       string
	torsocks  string // this torsocks, built for the run
	goclient  string // static (CGO_ENABLED=0) Go HTTP client
	raw       string // raw-syscall C HTTP client
	conf      string // torsocks.conf for both torsocks
	home      string
	baseEnv   []string
	cVersion  string // C torsocks package version, "" if not installed
	dnsWorks  bool   // this torsocks resolves names (issue 4)
	dnsDetail string

	rec     *recorder
	web     *webServer
	exitDNS *testnet.DNSStub   // the exits' resolver: names reaching it went through Tor
	leakDNS []*testnet.DNSStub // on the program's nameservers: every query is a DNS leak
	leakTCP []*socks5test.Canary

	sem     chan struct{} // bounds concurrent program runs
	onionMu sync.Mutex    // serialises .onion runs, so DNS leaks of the onion name are attributable
	seq     atomic.Int64

	mu    sync.Mutex
	runs  map[string]string // run ID -> tool
	table *table

	timings struct {
		build, network, total time.Duration
	}
}

// setup builds the binaries, starts the servers and the Tor network.
func setup(t *testing.T) *env {
	t.Helper()
	began := time.Now()
	e := &env{
		dir:   t.TempDir(),
		sem:   make(chan struct{}, maxRuns),
		runs:  map[string]string{},
		table: newTable(),
	}
	e.home = filepath.Join(e.dir, "home")
	if err := os.MkdirAll(e.home, 0o755); err != nil {
		t.Fatal(err)
	}
	e.baseEnv = cleanEnv(e.home)
	e.conf = filepath.Join(e.dir, "torsocks.conf")
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", "torsocks").Output(); err == nil {
		if _, err := os.Stat(cTorsocks); err == nil {
			e.cVersion = string(out)
		}
	}

	// Binaries and the git repository while the network comes up.
	buildErr := make(chan error, 1)
	var building sync.WaitGroup
	building.Add(1)
	t.Cleanup(building.Wait) // before the directory goes, if setup fails early
	go func() {
		defer building.Done()
		t0 := time.Now()
		err := e.build()
		e.timings.build = time.Since(t0)
		buildErr <- err
	}()

	// Destinations.
	e.rec = newRecorder()
	e.web = newWebServer(e.rec, filepath.Join(e.dir, "repo.git"))
	t.Cleanup(e.web.close)
	for _, l := range []struct {
		port  int
		onion bool
	}{{webPort, false}, {onionPort, true}} {
		if _, err := e.web.listen(net.JoinHostPort(testHost.String(), fmt.Sprint(l.port)), l.onion); err != nil {
			t.Fatal(err)
		}
	}
	bl, err := startBanner(e.rec, net.JoinHostPort(testHost.String(), fmt.Sprint(bannerPort)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bl.Close() })

	names := map[string]netip.Addr{nameDomain: testHost, "*." + nameDomain: testHost}
	if e.exitDNS, err = testnet.StartDNSStub(exitResolver, names); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.exitDNS.Close() })
	e.startLeakDNS(t, names)

	// The Tor network.
	keyCache := ""
	if dir, err := os.UserCacheDir(); err == nil {
		keyCache = filepath.Join(dir, "gotorsocks", "testnet-keys")
	}
	t0 := time.Now()
	n, err := testnet.Start(context.Background(), testnet.Options{
		Dir:         filepath.Join(e.dir, "tor"),
		KeyCache:    keyCache,
		SocksPort:   9050,
		ExitSource:  exitSource,
		OnionTarget: net.JoinHostPort(testHost.String(), fmt.Sprint(onionPort)),
		OnionSource: onionSource,
		RejectPorts: []uint16{rejectPort},
		Resolver:    exitResolver,
		Logf:        t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.timings.network = time.Since(t0)
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Error(err)
		}
	})
	e.net = n
	t.Logf("Tor network up in %v: keys %v, consensus %v, client bootstrapped %v, onion descriptor %v after launch",
		e.timings.network.Round(time.Millisecond), n.Timings.Keys.Round(time.Millisecond), n.Timings.Consensus.Round(time.Millisecond),
		n.Timings.Bootstrap.Round(time.Millisecond), n.Timings.Onion.Round(time.Millisecond))

	conf := fmt.Sprintf("TorAddress %s\nTorPort %d\n", n.SocksAddr.Addr(), n.SocksAddr.Port())
	if err := os.WriteFile(e.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-buildErr; err != nil {
		t.Fatal(err)
	}
	e.probeDNS(t)
	t.Logf("setup took %v (builds %v in parallel); DNS under this torsocks: %v (%s)",
		time.Since(began).Round(time.Millisecond), e.timings.build.Round(time.Millisecond), e.dnsWorks, e.dnsDetail)
	return e
}

// build builds this torsocks, the static Go client and the raw C client, and
// makes the bare git repository.
func (e *env) build() error {
	e.torsocks = filepath.Join(e.dir, "torsocks")
	e.goclient = filepath.Join(e.dir, "goclient")
	e.raw = filepath.Join(e.dir, "rawconnect")
	var wg sync.WaitGroup
	errs := make([]error, 4)
	steps := []func() error{
		func() error {
			if raceEnabled { // the race detector needs cgo
				return command("", []string{"CGO_ENABLED=1"}, "go", "build", "-race", "-o", e.torsocks, "github.com/gotorsocks/torsocks/cmd/torsocks")
			}
			return goBuild(e.torsocks, "github.com/gotorsocks/torsocks/cmd/torsocks")
		},
		func() error { return goBuild(e.goclient, "../integration/testdata/goclient") }, // the integration tests' client
		func() error {
			return command("", nil, "gcc", "-O1", "-Wall", "-o", e.raw, filepath.Join("testdata", "rawconnect.c"))
		},
		e.makeRepo,
	}
	for i, f := range steps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func goBuild(out, pkg string) error {
	return command("", []string{"CGO_ENABLED=0", "GOARCH=" + runtime.GOARCH}, "go", "build", "-trimpath", "-o", out, pkg)
}

// makeRepo makes a bare repository with one commit, ready for dumb HTTP.
func (e *env) makeRepo() error {
	work := filepath.Join(e.dir, "repo-work")
	bare := filepath.Join(e.dir, "repo.git")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(work, "README"), []byte(repoReadme), 0o644); err != nil {
		return err
	}
	env := append(cleanEnv(e.home), "GIT_AUTHOR_NAME=e2e", "GIT_AUTHOR_EMAIL=e2e@example.invalid",
		"GIT_COMMITTER_NAME=e2e", "GIT_COMMITTER_EMAIL=e2e@example.invalid")
	for _, args := range [][]string{
		{"git", "init", "-q", "-b", "main", work},
		{"git", "-C", work, "add", "README"},
		{"git", "-C", work, "commit", "-q", "-m", "e2e"},
		{"git", "clone", "-q", "--bare", work, bare},
		{"git", "-C", bare, "update-server-info"},
	} {
		if err := command("", env, args...); err != nil {
			return err
		}
	}
	return nil
}

const repoReadme = "the e2e test repository\n"

func command(dir string, env []string, args ...string) error {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// cleanEnv is the environment programs run with: no proxy or torsocks
// settings inherited from the caller.
func cleanEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		lk := strings.ToLower(k)
		if strings.HasSuffix(lk, "_proxy") || strings.HasPrefix(k, "TORSOCKS_") || strings.HasPrefix(k, "GIT_") ||
			k == "HOME" || k == "LD_PRELOAD" {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "HOME="+home, "LC_ALL=C", "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0")
	if raceEnabled {
		env = append(env, "GORACE=halt_on_error=1 exitcode=66 atexit_sleep_ms=0")
	}
	return env
}

// startLeakDNS puts a DNS server (answering like the exits' resolver) and a
// TCP canary on port 53 of every nameserver of /etc/resolv.conf, adding the
// address to lo where needed: a program that resolves without Tor reaches
// them, and every query they get is a DNS leak.
func (e *env) startLeakDNS(t *testing.T, names map[string]netip.Addr) {
	t.Helper()
	for _, ns := range resolvConfNameservers() {
		if !ns.IsLoopback() && !isLocal(ns) {
			args := []string{"addr", "add", netip.PrefixFrom(ns, ns.BitLen()).String(), "dev", "lo"}
			if ns.Is6() {
				args = append([]string{"-6"}, append(args, "nodad")...)
			}
			if err := command("", nil, append([]string{"ip"}, args...)...); err != nil {
				t.Fatal(err)
			}
		}
		addr := netip.AddrPortFrom(ns, 53).String()
		s, err := testnet.StartDNSStub(addr, names)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		e.leakDNS = append(e.leakDNS, s)
		c, err := socks5test.StartCanary(addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		e.leakTCP = append(e.leakTCP, c)
	}
}

// resolvConfNameservers returns the nameservers programs use (glibc's
// default 127.0.0.1 when none is configured).
func resolvConfNameservers() []netip.Addr {
	var nss []netip.Addr
	if f, err := os.Open("/etc/resolv.conf"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) >= 2 && fs[0] == "nameserver" {
				if a, err := netip.ParseAddr(fs[1]); err == nil && a.Zone() == "" {
					nss = append(nss, a.Unmap())
				}
			}
		}
	}
	if len(nss) == 0 {
		nss = append(nss, netip.MustParseAddr("127.0.0.1"))
	}
	return nss
}

func isLocal(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil && p.Addr().Unmap() == a {
			return true
		}
	}
	return false
}

// probeDNS checks whether programs under this torsocks can resolve names
// (issue 4); the name-based cases skip until they can.
func (e *env) probeDNS(t *testing.T) {
	id := e.newID(toolGo)
	r := e.run(t, toolGo, nil, "", "getent", "hosts", id+"."+nameDomain)
	e.dnsWorks = r.code == 0 && strings.TrimSpace(r.stdout) != ""
	e.dnsDetail = fmt.Sprintf("getent hosts %s.%s: exit %d %s", id, nameDomain, r.code, strings.TrimSpace(r.stdout+" "+lastLine(r.stderr)))
}

// newID returns a fresh run ID, usable as a DNS label, and notes its tool.
func (e *env) newID(tool string) string {
	id := fmt.Sprintf("r%d", e.seq.Add(1))
	e.mu.Lock()
	e.runs[id] = tool
	e.mu.Unlock()
	return id
}

func (e *env) toolOf(id string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.runs[id]
}

// probeOnce runs probe for the program name once per suite and returns its result every time.
func (e *env) probeOnce(name string, probe func(*env) error) error {
	e.probeMu.Lock()
	defer e.probeMu.Unlock()
	if e.probes == nil {
		e.probes = map[string]error{}
	}
	if err, ok := e.probes[name]; ok {
		return err
	}
	err := probe(e)
	e.probes[name] = err
	return err
}

// writeOnce writes content to path unless an earlier run wrote it (programs run concurrently).
func (e *env) writeOnce(path, content string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, err := os.Stat(path); err == nil {
		return
	}
	os.WriteFile(path, []byte(content), 0o644)
}

// result is what one program run did.
type result struct {
	stdout, stderr string
	code           int // -1: did not finish
	dur            time.Duration
}

// run runs args under tool (with torsocks options opts) and stdin, bounded by
// runTimeout and the shared concurrency limit.
func (e *env) run(t *testing.T, tool string, opts []string, stdin string, args ...string) result {
	t.Helper()
	return e.runFor(t, runTimeout, tool, opts, stdin, args...)
}

// runFor is run with its own time limit.
func (e *env) runFor(t *testing.T, runTimeout time.Duration, tool string, opts []string, stdin string, args ...string) result {
	t.Helper()
	e.sem <- struct{}{}
	defer func() { <-e.sem }()
	var argv []string
	switch tool {
	case toolGo:
		argv = append(append([]string{e.torsocks}, opts...), args...)
	case toolC:
		argv = append(append([]string{cTorsocks}, opts...), args...)
	case toolNone:
		argv = args
	default:
		t.Fatalf("unknown tool %q", tool)
	}
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(append([]string(nil), e.baseEnv...), "TORSOCKS_CONF_FILE="+e.conf)
	cmd.Dir = e.dir
	cmd.WaitDelay = 5 * time.Second
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	t0 := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), dur: time.Since(t0)}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		r.code = -1
		r.stderr += fmt.Sprintf("\n[timed out after %v]", runTimeout)
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run %v: %v", argv, err)
	}
	t.Logf("%s: %s -> exit %d in %v", tool, shortArgs(opts, args), r.code, r.dur.Round(time.Millisecond))
	return r
}

// shortArgs renders a command line for the log, scripts abbreviated.
func shortArgs(opts, args []string) string {
	var b strings.Builder
	for i, a := range append(append([]string(nil), opts...), args...) {
		if i > 0 {
			b.WriteByte(' ')
		}
		if first, _, multi := strings.Cut(a, "\n"); multi {
			a = first + "..."
		}
		b.WriteString(a)
	}
	return b.String()
}

// lastLine is the last non-empty line of s, shortened.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	l := strings.TrimSpace(lines[len(lines)-1])
	if len(l) > 160 {
		l = l[:157] + "..."
	}
	return l
}

// concurrently runs each named subtest in its own goroutine and waits for all.
// (Program runs are bounded by env.sem, not by -parallel: they wait on Tor,
// not on the CPU.)
func concurrently(t *testing.T, names []string, fs []func(t *testing.T)) {
	var wg sync.WaitGroup
	for i := range fs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(names[i], fs[i])
		}()
	}
	wg.Wait()
}

// TestE2E is the whole end-to-end suite, on one private Tor network.
func TestE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real Tor network; skipped with -short") // asked for, so a skip in CI too
	}
	netnstest.Require(t)
	if _, err := exec.LookPath("tor"); err != nil {
		if _, err := os.Stat("/usr/sbin/tor"); err != nil {
			netnstest.Skip(t, "tor is not installed (scripts/install-deps.sh)")
		}
	}
	began := time.Now()
	e := setup(t)
	concurrently(t, []string{"Programs", "Errors", "Isolation", "CanarySelfTest", "Async"}, []func(*testing.T){
		func(t *testing.T) { testPrograms(t, e) },
		func(t *testing.T) { testErrors(t, e) },
		func(t *testing.T) { testIsolation(t, e) },
		func(t *testing.T) { testCanarySelfTest(t, e) },
		func(t *testing.T) { testAsync(t, e) },
	})
	e.checkUnattributedLeaks(t)
	e.timings.total = time.Since(began)
	t.Logf("suite: %v (Tor network %v, client bootstrap %v after launch)", e.timings.total.Round(time.Millisecond),
		e.timings.network.Round(time.Millisecond), e.net.Timings.Bootstrap.Round(time.Millisecond))
	e.finishTable(t)
}

// checkUnattributedLeaks fails if a destination or nameserver saw anything
// from outside Tor that no run without this torsocks explains.
func (e *env) checkUnattributedLeaks(t *testing.T) {
	for c, id := range e.rec.leaks() {
		if tool := e.toolOf(id); tool != toolC && tool != toolNone {
			t.Errorf("LEAK: %s accepted a connection from %v (run %q, tool %q): not from a Tor exit", c.listener, c.remote, id, tool)
		}
	}
	for _, s := range e.leakDNS {
		for _, q := range s.Queries() {
			id, _, _ := strings.Cut(q.Name, ".")
			tool := e.toolOf(id)
			if q.Name == strings.ToLower(e.net.OnionHost) {
				tool = "onion" // attributed by time in the .onion runs
			}
			if tool != toolC && tool != toolNone && tool != "onion" {
				t.Errorf("DNS LEAK: nameserver %v got %v %s from %v (run %q, tool %q)", s.Addr(), q.Type, q.Name, q.From, id, tool)
			}
		}
	}
	for _, c := range e.leakTCP {
		if r := c.Remotes(); len(r) > 0 {
			t.Logf("DNS over TCP reached the nameserver %v from %v (runs under the C torsocks or none only are expected to)", c.Addr(), r)
		}
	}
}
