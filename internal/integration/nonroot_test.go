package integration

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Most users are not root: torsocks works for them (pidfd_getfd and process_vm_readv on their own
// descendants, the UDP sandbox in a user namespace for DNS).
func TestNonRoot(t *testing.T) {
	env(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	script := `set -e
curl -sS --max-time 20 http://203.0.113.10/ | grep -q canary && echo fetch-ok
getent hosts example.com | grep -q fd74 && echo dns-ok
python3 -c 'import socket; s=socket.socket(); s.connect(("203.0.113.10", 80)); print("peer", s.getpeername()[0])'
`
	cmd := exec.CommandContext(ctx, torsocksBin, "sh", "-c", script)
	cmd.WaitDelay = 5 * time.Second
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("as nobody: %v\n%s\n%s", err, out.String(), errb.String())
	}
	// The sandbox worked: its factory, spawned on first use, mapped its own user namespace.
	if strings.Contains(errb.String(), "kernel-enforced layer") {
		t.Errorf("as nobody, the sandbox failed: %s", errb.String())
	}
	for _, want := range []string{"fetch-ok", "dns-ok", "peer 203.0.113.10"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("as nobody: missing %q in %q (stderr %q)", want, out.String(), errb.String())
		}
	}
	noLeaks(t)
}
