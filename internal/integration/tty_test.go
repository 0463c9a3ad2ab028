package integration

import (
	"strings"
	"testing"
)

// A program under torsocks must not be able to type into a terminal (ioctl TIOCSTI): the shell
// that started torsocks would run the injected command, unwrapped, after torsocks exits. The
// terminal is a pty the test program makes itself; the injected byte must never reach the
// master, and torsocks logs the refusal once.
func TestTIOCSTIRefused(t *testing.T) {
	env(t)
	prog := `
import fcntl, os, pty, select, termios, errno
m, s = pty.openpty()
try:
    fcntl.ioctl(s, termios.TIOCSTI, b"X")
    print("injected")
except OSError as e:
    print("refused", errno.errorcode.get(e.errno, e.errno))
r, _, _ = select.select([m], [], [], 0.2)
print("master-readable" if r else "master-empty")
`
	r := torsocks(t, nil, "python3", "-c", prog)
	if r.code != 0 || !strings.Contains(r.stdout, "refused EPERM") || !strings.Contains(r.stdout, "master-empty") {
		t.Fatalf("TIOCSTI was not refused: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if n := strings.Count(r.stderr, "ioctl TIOCSTI refused"); n != 1 {
		t.Fatalf("want one log line for the refusal, got %d:\n%s", n, r.stderr)
	}
}
