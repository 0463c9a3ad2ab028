package torstart

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"golang.org/x/sys/unix"
)

func envOf(kv ...string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		for _, e := range kv {
			if n, v, _ := strings.Cut(e, "="); n == k {
				return v, true
			}
		}
		return "", false
	}
}

func TestUserPaths(t *testing.T) {
	tests := []struct {
		env          []string
		run, data    string
		wantErrTexts string
	}{
		{[]string{"XDG_RUNTIME_DIR=/run/user/1000", "XDG_CACHE_HOME=/c", "HOME=/home/u"}, "/run/user/1000/torsocks", "/c/torsocks/tor", ""},
		{[]string{"HOME=/home/u"}, "/tmp/torsocks-1000", "/home/u/.cache/torsocks/tor", ""},
		{[]string{"XDG_RUNTIME_DIR=rel", "XDG_CACHE_HOME=rel", "HOME=/home/u"}, "/tmp/torsocks-1000", "/home/u/.cache/torsocks/tor", ""},
		{[]string{"HOME="}, "", "", "neither XDG_CACHE_HOME nor HOME"},
		{[]string{"HOME=/h", "XDG_RUNTIME_DIR=/" + strings.Repeat("x", 100)}, "", "", "too long for a unix socket path"},
	}
	for _, tt := range tests {
		t.Setenv("TMPDIR", "")
		p, err := UserPaths(envOf(tt.env...), 1000)
		if tt.wantErrTexts != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErrTexts) {
				t.Errorf("%v: err %v, want %q", tt.env, err, tt.wantErrTexts)
			}
			continue
		}
		if err != nil || p.RunDir != tt.run || p.DataDir != tt.data {
			t.Errorf("%v: %+v, %v; want %s %s", tt.env, p, err, tt.run, tt.data)
		}
	}
}

func shortDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "ts")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func testPaths(t *testing.T) Paths {
	d := shortDir(t)
	return Paths{RunDir: filepath.Join(d, "run"), DataDir: filepath.Join(d, "cache", "torsocks", "tor")}
}

func TestPrepare(t *testing.T) {
	uid := os.Getuid()
	p := testPaths(t)
	if err := p.Prepare(uid); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{p.RunDir, p.DataDir} {
		if st, err := os.Stat(d); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v", d, st.Mode(), err)
		}
	}
	if err := p.Prepare(uid); err != nil {
		t.Errorf("second Prepare: %v", err)
	}

	os.Chmod(p.RunDir, 0o750)
	if err := p.Prepare(uid); err == nil || !strings.Contains(err.Error(), "mode 0750, open to group or others") {
		t.Errorf("group-accessible: %v", err)
	}
	os.Chmod(p.RunDir, 0o700)

	if err := p.Prepare(uid + 1); err == nil || !strings.Contains(err.Error(), "not to uid") {
		t.Errorf("another user's: %v", err)
	}

	link := testPaths(t)
	os.MkdirAll(filepath.Dir(link.RunDir), 0o700)
	if err := os.Symlink(p.RunDir, link.RunDir); err != nil {
		t.Fatal(err)
	}
	if err := link.Prepare(uid); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("symbolic link: %v", err)
	}
}

func TestTorrc(t *testing.T) {
	p := Paths{RunDir: "/tmp/torsocks-0", DataDir: "/home/a b/.cache/torsocks/tor"}
	got, err := Torrc(p, []byte("DirAuthority a orport=1 127.0.0.1:2 AAAA\nUseBridges 1\n"), "/j.torrc")
	if err != nil {
		t.Fatal(err)
	}
	want := `# The tor torsocks started for this user (internal/torstart). Rewritten at each start.
SocksPort unix:/tmp/torsocks-0/socks ExtendedErrors
ControlPort unix:/tmp/torsocks-0/control
CookieAuthentication 1
CookieAuthFile /tmp/torsocks-0/control.authcookie
DataDirectory "/home/a b/.cache/torsocks/tor"
PidFile /tmp/torsocks-0/tor.pid
Log notice file /tmp/torsocks-0/tor.log
RunAsDaemon 0
# From TorConfig /j.torrc:
DirAuthority a orport=1 127.0.0.1:2 AAAA
UseBridges 1
`
	if got != want {
		t.Errorf("torrc:\n%s\nwant:\n%s", got, want)
	}
	if strings.Contains(got, "__OwningControllerProcess") || strings.Contains(got, "/etc/tor") {
		t.Error("torrc ties tor to a process or names the system torrc")
	}
	for _, bad := range []string{"socksport 9050", "  DataDirectory /x", "+ControlPort 9051", "CookieAuthFile\t/x"} {
		_, err := Torrc(p, []byte("UseBridges 1\n"+bad+"\n"), "/j.torrc")
		if err == nil || !strings.HasPrefix(err.Error(), "/j.torrc:2: ") || !strings.Contains(err.Error(), "is set by torsocks") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestParseBootstrap(t *testing.T) {
	p, err := parseBootstrap(`NOTICE BOOTSTRAP PROGRESS=45 TAG=loading_descriptors SUMMARY="Loading relay descriptors"`)
	if err != nil || p != (Progress{45, "loading_descriptors", "Loading relay descriptors", ""}) {
		t.Errorf("%+v %v", p, err)
	}
	if s := p.String(); s != "45% loading relay descriptors" {
		t.Errorf("String %q", s)
	}
	p, err = parseBootstrap(`WARN BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="Connecting to a relay" WARNING="Connection refused" REASON=CONNECTREFUSED COUNT=3 RECOMMENDATION=ignore HOSTID="X" HOSTADDR="127.0.0.1:1"`)
	if err != nil || p.Percent != 5 || p.Warning != "Connection refused" {
		t.Errorf("%+v %v", p, err)
	}
	for _, bad := range []string{"", "NOTICE CIRCUIT_ESTABLISHED", "NOTICE BOOTSTRAP TAG=x", "NOTICE BOOTSTRAP PROGRESS=101"} {
		if _, err := parseBootstrap(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// fakeOptions runs this test binary as tor (see fakeTor).
func fakeOptions(t *testing.T, p Paths, mode string) (Options, string) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(filepath.Dir(p.RunDir), "starts")
	return Options{
		Paths: p, UID: os.Getuid(), Binary: self, BootstrapTimeout: 10 * time.Second,
		Env: append(os.Environ(), "TORSTART_FAKE_TOR="+mode, "TORSTART_FAKE_LOG="+log),
	}, log
}

func starts(t *testing.T, log string) int {
	b, _ := os.ReadFile(log)
	return strings.Count(string(b), "start ")
}

func stop(t *testing.T, p Paths) {
	t.Cleanup(func() { Stop(context.Background(), p, os.Getuid()) })
}

// Racing starts end with one tor; later ones reuse it.
func TestEnsureRace(t *testing.T) {
	p := testPaths(t)
	o, log := fakeOptions(t, p, "")
	stop(t, p)
	const n = 6
	tors := make([]*Tor, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tors[i], errs[i] = Ensure(context.Background(), o)
		}()
	}
	wg.Wait()
	started := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Ensure %d: %v", i, errs[i])
		}
		if tors[i].Pid != tors[0].Pid || tors[i].Socks != p.Socks() {
			t.Errorf("Ensure %d: %+v, Ensure 0: %+v", i, tors[i], tors[0])
		}
		if tors[i].Started {
			started++
		}
		tors[i].Release()
	}
	if started != 1 || starts(t, log) != 1 {
		t.Errorf("%d Ensure started a tor, %d tor starts", started, starts(t, log))
	}
	again, err := Ensure(context.Background(), o)
	if err != nil || again.Started || again.Pid != tors[0].Pid {
		t.Errorf("later Ensure: %+v %v", again, err)
	}
	again.Release()

	ok, err := Stop(context.Background(), p, os.Getuid())
	if !ok || err != nil || !gone(tors[0].Pid) {
		t.Errorf("Stop: %v %v, gone %v", ok, err, gone(tors[0].Pid))
	}
	if ok, err := Stop(context.Background(), p, os.Getuid()); ok || err != nil {
		t.Errorf("second Stop: %v %v", ok, err)
	}
}

// A killed tor (pid file and sockets left behind) is replaced; a pid file naming another live
// process is not taken for the tor, and that process is left alone.
func TestEnsureStale(t *testing.T) {
	p := testPaths(t)
	o, log := fakeOptions(t, p, "")
	stop(t, p)
	var progress []Progress
	o.Progress = func(pr Progress) { progress = append(progress, pr) }
	first, err := Ensure(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	first.Release()
	if len(progress) == 0 || progress[len(progress)-1].Percent != 100 {
		t.Errorf("progress %v", progress)
	}
	// Killed with its keeper, so that nobody clears up after it.
	if err := unix.Kill(readPid(p.KeeperPid()), unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := unix.Kill(first.Pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for !gone(first.Pid) {
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := os.Stat(p.Control()); err != nil {
		t.Fatalf("the killed fake tor should leave its socket: %v", err)
	}
	second, err := Ensure(context.Background(), o)
	if err != nil || !second.Started || second.Pid == first.Pid {
		t.Fatalf("after a kill: %+v %v", second, err)
	}
	second.Release()
	kill(second.Pid)

	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer sleeper.Process.Kill()
	os.WriteFile(p.PidFile(), []byte(strconv.Itoa(sleeper.Process.Pid)+"\n"), 0o600)
	third, err := Ensure(context.Background(), o)
	if err != nil || !third.Started {
		t.Fatalf("pid file of another process: %+v %v", third, err)
	}
	third.Release()
	if gone(sleeper.Process.Pid) {
		t.Error("the process named by a stale pid file was killed")
	}
	if starts(t, log) != 3 {
		t.Errorf("%d starts, want 3", starts(t, log))
	}
}

// A tor that does not bootstrap in time: ErrBootstrap with its last warning, and it is stopped.
func TestEnsureTimeout(t *testing.T) {
	p := testPaths(t)
	o, log := fakeOptions(t, p, "stuck")
	stop(t, p)
	o.BootstrapTimeout = 700 * time.Millisecond
	// The error says the bootstrap time-out ended it (not how long the call took: no bound on that).
	_, err := Ensure(context.Background(), o)
	if !errors.Is(err, ErrBootstrap) || !strings.Contains(err.Error(), "timed out at 50% step 5") ||
		!strings.Contains(err.Error(), "within 700ms") ||
		!strings.HasSuffix(err.Error(), "Tor's last warning: fake: no authority reachable; its log: "+p.Log()) {
		t.Errorf("err %v", err)
	}
	if pid := lastStart(t, log); pid == 0 || !gone(pid) {
		t.Errorf("the tor that did not bootstrap is still there (pid %d)", pid)
	}
	for _, f := range []string{p.PidFile(), p.KeeperPid(), p.Control(), p.Socks()} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s left behind", f)
		}
	}
}

// lastStart is the pid of the last fake tor started.
func lastStart(t *testing.T, log string) int {
	b, _ := os.ReadFile(log)
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	pid, _ := strconv.Atoi(f[len(f)-1])
	return pid
}

// The real tor, in the test's network namespace where no authority is reachable: it starts with
// our torrc, reports progress over its control port and ends in the time-out.
func TestRealTorNoNetwork(t *testing.T) {
	tor, err := exec.LookPath("tor")
	if err != nil {
		netnstest.Skip(t, "tor is not installed (scripts/install-deps.sh)")
	}
	netnstestRequire(t)
	p := testPaths(t)
	stop(t, p)
	var progress []Progress
	o := Options{Paths: p, UID: os.Getuid(), Binary: tor, BootstrapTimeout: 8 * time.Second,
		Progress: func(pr Progress) { progress = append(progress, pr) }}
	_, err = Ensure(context.Background(), o)
	if !errors.Is(err, ErrBootstrap) {
		t.Fatalf("err %v", err)
	}
	t.Logf("error: %v; progress %v", err, progress)
	if len(progress) == 0 {
		t.Error("no progress reported")
	}
	if pid := readPid(p.PidFile()); pid != 0 && !gone(pid) {
		t.Errorf("tor %d still running", pid)
	}
}

// Racing torsocks processes (not goroutines: locks of one process are another matter) end with
// one tor, started by one of them.
func TestEnsureRaceProcesses(t *testing.T) {
	p := testPaths(t)
	stop(t, p)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(filepath.Dir(p.RunDir), "starts")
	const n = 6
	cmds := make([]*exec.Cmd, n)
	outs := make([]strings.Builder, n)
	for i := range cmds {
		cmds[i] = exec.Command(self, "-test.run=^$")
		cmds[i].Env = append(os.Environ(), "TORSTART_TEST_ENSURE="+p.RunDir+":"+p.DataDir, "TORSTART_FAKE_LOG="+log)
		cmds[i].Stdout, cmds[i].Stderr = &outs[i], &outs[i]
	}
	for _, c := range cmds {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	pids := map[string]int{}
	started := 0
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("torsocks %d: %v: %s", i, err, outs[i].String())
		}
		for _, l := range strings.Split(outs[i].String(), "\n") {
			f := strings.Fields(l)
			if len(f) == 2 {
				pids[f[0]]++
				if f[1] == "true" {
					started++
				}
			}
		}
	}
	if len(pids) != 1 || started != 1 || starts(t, log) != 1 {
		t.Errorf("tor pids %v, %d started one, %d tor starts; want one tor", pids, started, starts(t, log))
	}
}
