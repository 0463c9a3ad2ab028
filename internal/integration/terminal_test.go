package integration

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/netnstest"
)

// Ctrl-C at a terminal: the terminal signals the whole foreground process group, torsocks and the
// program alike. The program must see it exactly once (torsocks must not forward a second copy),
// and torsocks must then exit the way the program did.
func TestCtrlCAtTerminal(t *testing.T) {
	env(t)
	if _, err := exec.LookPath("script"); err != nil {
		netnstest.Skip(t, "script(1) not installed (util-linux)")
	}
	prog := `
import signal, sys, time
n = 0
def h(*a):
    global n
    n += 1
signal.signal(signal.SIGINT, h)
print("ready", flush=True)
end = time.time() + 3
while time.time() < end and n == 0:
    time.sleep(0.05)
time.sleep(0.5)  # a forwarded second copy would arrive now
print("sigints", n, flush=True)
`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// script runs the command on a new pty whose foreground group is torsocks' (and the program's).
	cmd := exec.CommandContext(ctx, "script", "-qefc", torsocksBin+" python3 -c '"+prog+"'", "/dev/null")
	cmd.WaitDelay = 5 * time.Second
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	pr, pw := io.Pipe()
	cmd.Stdout = io.MultiWriter(&out, pw)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		b := make([]byte, 4096)
		var seen string
		for {
			n, err := pr.Read(b)
			seen += string(b[:n])
			if strings.Contains(seen, "ready") {
				ready <- true
				io.Copy(io.Discard, pr)
				return
			}
			if err != nil {
				ready <- false
				return
			}
		}
	}()
	if !<-ready {
		t.Fatalf("program never became ready: %q", out.String())
	}
	in.Write([]byte{3}) // ^C typed at the terminal
	cmd.Wait()
	pw.Close()
	if !strings.Contains(out.String(), "sigints 1") {
		t.Fatalf("want exactly one SIGINT in the program, got: %q", out.String())
	}
}
