package doctor

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/config"
	"github.com/gotorsocks/torsocks/internal/torstart"
)

// healthy are the probes of a machine where everything works: no tor on the default port, the
// tor binary installed, no own tor running yet.
func healthy() Probes {
	return Probes{
		Kernel:      func() (string, error) { return "6.18.0", nil },
		Notify:      func() error { return nil },
		LandlockABI: func() (int, error) { return 7, nil },
		UID:         func() int { return 1000 },
		NetNS:       func(bool) error { return nil },
		LookPath:    func(string) (string, error) { return "/usr/sbin/tor", nil },
		Socks:       func(string, string) error { return unix.ECONNREFUSED },
		OwnTor: func() (torstart.Paths, torstart.Status, error) {
			return torstart.Paths{RunDir: "/run/user/1000/torsocks", DataDir: "/home/u/.cache/torsocks/tor"}, torstart.Status{}, nil
		},
	}
}

func parse(t *testing.T, args ...string) *config.Config {
	t.Helper()
	inv, err := config.Parse(append(args, "--doctor"), func(string) (string, bool) { return "", false },
		func(string) ([]byte, error) { return nil, errNotExist })
	if err != nil {
		t.Fatal(err)
	}
	return &inv.Config
}

var errNotExist = &pathErr{}

type pathErr struct{}

func (*pathErr) Error() string { return "no such file" }
func (*pathErr) Is(target error) bool {
	return target == unix.ENOENT || target.Error() == "file does not exist"
}

func TestDoctor(t *testing.T) {
	running := func(pct int, isolate bool) func() (torstart.Paths, torstart.Status, error) {
		return func() (torstart.Paths, torstart.Status, error) {
			return torstart.Paths{RunDir: "/r"}, torstart.Status{Running: true, Pid: 42, Socks: "/r/socks",
				Bootstrap: torstart.Progress{Percent: pct, Summary: "Loading relay descriptors"}, IsolateSOCKSAuth: isolate}, nil
		}
	}
	tests := []struct {
		name   string
		args   []string
		change func(*Probes)
		code   int
		want   []string // lines (or parts of lines) of the report
	}{
		{name: "healthy, own tor to start", code: 0, want: []string{
			"ok    kernel:                    Linux 6.18.0",
			"ok    seccomp user notification: available",
			"ok    Landlock:                  ABI 7",
			"ok    user namespaces:",
			"--    Tor at the default port:   nothing answers at 127.0.0.1:9050",
			"ok    tor binary:                /usr/sbin/tor (TorBinary tor from default)",
			"ok    own tor:                   not running: torsocks starts one on demand (runtime directory /run/user/1000/torsocks",
			"      TorStart auto (default)",
			"verdict: torsocks COMMAND should work"}},
		{name: "old kernel", change: func(p *Probes) {
			p.Kernel = func() (string, error) { return "5.10.0", errors.New("this kernel (Linux 5.10.0) is too old") }
		}, code: 1, want: []string{"FAIL  kernel:                    this kernel (Linux 5.10.0) is too old", "would not work here (1 problem above)"}},
		{name: "no seccomp notify", change: func(p *Probes) { p.Notify = func() error { return unix.EINVAL } },
			code: 1, want: []string{"FAIL  seccomp user notification: unavailable: invalid argument"}},
		{name: "no Landlock", change: func(p *Probes) { p.LandlockABI = func() (int, error) { return 0, unix.ENOSYS } },
			code: 0, want: []string{"WARN  Landlock:                  unavailable (function not implemented)", "should work"}},
		{name: "Landlock ABI 3", change: func(p *Probes) { p.LandlockABI = func() (int, error) { return 3, nil } },
			code: 0, want: []string{"ok    Landlock:                  ABI 3: ptrace scoping (no network rules"}},
		{name: "no user namespaces", change: func(p *Probes) { p.NetNS = func(bool) error { return unix.EPERM } },
			code: 1, want: []string{"FAIL  user namespaces:           cannot create one as uid 1000 (operation not permitted): UDP and DNS unavailable"}},
		{name: "root needs no user namespace", change: func(p *Probes) {
			p.UID = func() int { return 0 }
			p.NetNS = func(userNS bool) error {
				if userNS {
					return unix.EPERM
				}
				return nil
			}
		}, code: 0, want: []string{"ok    network namespace:         can be created (root"}},
		{name: "no tor binary", change: func(p *Probes) {
			p.LookPath = func(string) (string, error) { return "", &exec.Error{Name: "tor", Err: exec.ErrNotFound} }
		}, code: 1, want: []string{"FAIL  tor binary:                tor (TorBinary from default) not found: executable file not found in $PATH; install the tor package"}},
		{name: "system tor answers", change: func(p *Probes) {
			p.Socks = func(string, string) error { return nil }
			p.LookPath = func(string) (string, error) { return "", exec.ErrNotFound }
		}, code: 0, want: []string{"ok    Tor:                       a SOCKS5 server answers at 127.0.0.1:9050 (TorAddress/TorPort from default)",
			"--    Tor bootstrapped:          unknown", "--    IsolateSOCKSAuth (-i):     unknown: only that tor's control port could tell"}},
		{name: "explicit port, nothing there", args: []string{"-P", "9150"}, code: 1,
			want: []string{"FAIL  Tor:                       nothing answers at 127.0.0.1:9150 (connection refused), set explicitly (from -P)"}},
		{name: "TorStart never", args: []string{"--tor-start", "never"}, code: 1,
			want: []string{"FAIL  Tor:                       nothing answers at 127.0.0.1:9050 (connection refused), and TorStart is never (from --tor-start)"}},
		{name: "own tor bootstrapped", change: func(p *Probes) { p.OwnTor = running(100, true) }, code: 0,
			want: []string{"ok    own tor:                   running, pid 42, SocksPort /r/socks", "ok    Tor bootstrapped:          yes",
				"ok    IsolateSOCKSAuth (-i):     on"}},
		{name: "own tor not bootstrapped", change: func(p *Probes) { p.OwnTor = running(45, true) }, code: 1,
			want: []string{"FAIL  Tor bootstrapped:          no: 45% loading relay descriptors; torsocks waits for it up to 2m0s"}},
		{name: "own tor without IsolateSOCKSAuth, -i", args: []string{"-i"}, change: func(p *Probes) { p.OwnTor = running(100, false) }, code: 1,
			want: []string{"FAIL  IsolateSOCKSAuth (-i):     off"}},
		{name: "stale own tor", change: func(p *Probes) {
			p.OwnTor = func() (torstart.Paths, torstart.Status, error) {
				return torstart.Paths{RunDir: "/r"}, torstart.Status{Pid: 7, Stale: true}, nil
			}
		}, code: 0, want: []string{"WARN  own tor:                   pid 7 in /r does not answer (or lost its keeper): the next torsocks replaces it"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := healthy()
			if tt.change != nil {
				tt.change(&p)
			}
			var b strings.Builder
			code := Run(&b, parse(t, tt.args...), p)
			out := b.String()
			if code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("no %q in\n%s", w, out)
				}
			}
			if t.Failed() {
				t.Logf("report:\n%s", out)
			}
		})
	}
}
