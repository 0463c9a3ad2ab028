package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// torsocks --doctor on this machine (the test's SOCKS server answers on 127.0.0.1:9050), and with
// a prerequisite removed: no tor binary on PATH (with TorStart always, so that the SOCKS server
// does not count), Landlock and seccomp user notification made unavailable by a seccomp filter in
// front of torsocks (kernel_older).
func TestDoctor(t *testing.T) {
	run := t.TempDir()
	env(t)
	older := buildC(t, "kernel_older")
	if err := os.Chmod(run, 0o700); err != nil {
		t.Fatal(err)
	}
	xdg := []string{"XDG_RUNTIME_DIR=" + run, "XDG_CACHE_HOME=" + filepath.Join(run, "cache")}
	var noTorPath []string
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		if _, err := os.Stat(filepath.Join(d, "tor")); err != nil {
			noTorPath = append(noTorPath, d)
		}
	}
	tests := []struct {
		name   string
		env    []string
		prefix []string
		args   []string
		code   int
		want   []string
	}{
		{name: "this machine", code: 0, want: []string{
			"ok    kernel:                    Linux ",
			"ok    seccomp user notification: available",
			"ok    Landlock:                  ABI ",
			"ok    network namespace:         can be created",
			"ok    Tor:                       a SOCKS5 server answers at 127.0.0.1:9050",
			"--    IsolateSOCKSAuth (-i):     unknown: only that tor's control port could tell",
			"      TorStart auto (default)",
			"verdict: torsocks COMMAND should work"}},
		{name: "no tor on PATH", env: []string{"PATH=" + strings.Join(noTorPath, ":")}, args: []string{"--tor-start", "always"},
			code: 1, want: []string{"FAIL  tor binary:                tor (TorBinary from default) not found: executable file not found in $PATH",
				"      TorStart always (--tor-start)", "verdict: torsocks COMMAND would not work here (1 problem above)"}},
		{name: "no Landlock", prefix: []string{older, "nolandlock"}, code: 0,
			want: []string{"WARN  Landlock:                  unavailable (function not implemented)", "verdict: torsocks COMMAND should work"}},
		{name: "no seccomp user notification", prefix: []string{older, "nonotify"}, code: 1,
			want: []string{"FAIL  seccomp user notification: unavailable: seccomp(SECCOMP_GET_NOTIF_SIZES): invalid argument",
				"verdict: torsocks COMMAND would not work here (1 problem above)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(append(append([]string{}, tt.prefix...), torsocksBin), append(tt.args, "--doctor")...)
			r := runCmd(t, append(xdg, tt.env...), args...)
			if r.code != tt.code {
				t.Errorf("exit %d, want %d", r.code, tt.code)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("no %q in the report", w)
				}
			}
			if t.Failed() {
				t.Logf("stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
			}
		})
	}
}
