package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/socks5test"
)

// unixCredsScript connects to each unix socket given (a leading @: abstract) and prints what
// happened: "PATH peer UID GID" (what the server saw in SO_PEERCRED), "PATH EACCES" or
// "PATH errno N". With "drop:G1,G2..." it first becomes nobody with those supplementary groups,
// the way a daemon drops root.
const unixCredsScript = `
import os, socket, sys
mode = sys.argv[1]
if mode.startswith("drop:"):
    os.setgroups([int(g) for g in mode[5:].split(",") if g])
    os.setgid(65534)
    os.setuid(65534)
for p in sys.argv[2:]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect("\0" + p[1:] if p.startswith("@") else p)
        print(p, "peer", s.recv(100).decode().strip())
    except PermissionError:
        print(p, "EACCES")
    except OSError as e:
        print(p, "errno", e.errno)
    s.close()
`

// unixCredServer listens on the unix socket addr and answers every connection with the uid and
// gid SO_PEERCRED gives for it.
func unixCredServer(t *testing.T, addr string) {
	t.Helper()
	s, err := socks5test.Listen("unix", addr, func(c net.Conn) {
		rc, _ := c.(*net.UnixConn).SyscallConn()
		var cred *unix.Ucred
		var cerr error
		rc.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
		if cerr == nil {
			fmt.Fprintf(c, "%d %d\n", cred.Uid, cred.Gid)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
}

// unixCredSockets makes, as root:
//   - private/root.sock: 0600 root:root in a 0700 root directory (think docker.sock);
//   - private/open.sock: 0666, but in that same directory nobody can search;
//   - public/open.sock: 0666 in a 0777 directory;
//   - public/group.sock: 0660 root:4242 in that directory;
//   - an abstract socket (no permission check at all).
func unixCredSockets(t *testing.T) (rootOnly, hidden, open, group, abstract string) {
	t.Helper()
	if os.Geteuid() != 0 {
		netnstest.Skip(t, "needs root")
	}
	base := t.TempDir()
	if err := os.Chmod(filepath.Dir(base), 0o755); err != nil { // t.TempDir's parent is 0700
		t.Fatal(err)
	}
	priv, pub := filepath.Join(base, "private"), filepath.Join(base, "public")
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{base, 0o755}, {priv, 0o700}, {pub, 0o777}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			t.Fatal(err)
		}
	}
	rootOnly, hidden = filepath.Join(priv, "root.sock"), filepath.Join(priv, "open.sock")
	open, group = filepath.Join(pub, "open.sock"), filepath.Join(pub, "group.sock")
	abstract = fmt.Sprintf("@torsocks-test-creds-%d", os.Getpid())
	for _, s := range []struct {
		path string
		mode os.FileMode
	}{{rootOnly, 0o600}, {hidden, 0o666}, {open, 0o666}, {group, 0o660}} {
		unixCredServer(t, s.path)
		if err := os.Chmod(s.path, s.mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(group, 0, 4242); err != nil {
		t.Fatal(err)
	}
	unixCredServer(t, abstract)
	return
}

// Under a root torsocks, a program that drops to nobody must not reach a root-only unix socket
// through the supervisor's credentials (a confused deputy: docker.sock would be root for anyone).
// Unix connects are made with the calling thread's fsuid, fsgid, groups and capabilities: the
// root-only socket and the one in an unsearchable directory are refused with EACCES, the open
// ones connect, a group the program holds counts, and every server sees nobody in SO_PEERCRED.
func TestUnixConnectCallerCredentials(t *testing.T) {
	env(t)
	rootOnly, hidden, open, group, abstract := unixCredSockets(t)
	r := torsocks(t, nil, "python3", "-c", unixCredsScript, "drop:4242", rootOnly, hidden, open, group, abstract)
	wantLines(t, r, rootOnly+" EACCES", hidden+" EACCES", open+" peer 65534 65534",
		group+" peer 65534 65534", abstract+" peer 65534 65534")
	// Without the group, the group's socket is refused too.
	r = torsocks(t, nil, "python3", "-c", unixCredsScript, "drop:", group, open)
	wantLines(t, r, group+" EACCES", open+" peer 65534 65534")
}

// A root program under a root torsocks still reaches the root-only socket, as root.
func TestUnixConnectRootProgram(t *testing.T) {
	env(t)
	rootOnly, hidden, open, _, abstract := unixCredSockets(t)
	r := torsocks(t, nil, "python3", "-c", unixCredsScript, "root", rootOnly, hidden, open, abstract)
	wantLines(t, r, rootOnly+" peer 0 0", hidden+" peer 0 0", open+" peer 0 0", abstract+" peer 0 0")
}

// A unix datagram the supervisor sends for the program (sendto with MSG_FASTOPEN is notified
// whatever the family) is sent with the program's credentials too: the root-only socket refuses
// it, and a receiver with SO_PASSCRED sees nobody.
func TestUnixSendCallerCredentials(t *testing.T) {
	env(t)
	if os.Geteuid() != 0 {
		netnstest.Skip(t, "needs root")
	}
	base := t.TempDir()
	if err := os.Chmod(filepath.Dir(base), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 4)
	listen := func(name string, mode os.FileMode) string {
		path := filepath.Join(base, name)
		c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		rc, _ := c.SyscallConn()
		rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
		go func() {
			buf, oob := make([]byte, 100), make([]byte, 256)
			for {
				n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
				if err != nil {
					return
				}
				msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
				for _, m := range msgs {
					if cred, err := unix.ParseUnixCredentials(&m); err == nil {
						got <- fmt.Sprintf("%s %d %d", buf[:n], cred.Uid, cred.Gid)
					}
				}
			}
		}()
		return path
	}
	rootOnly, open := listen("root.dgram", 0o600), listen("open.dgram", 0o666)
	script := `
import os, socket, sys
os.setgroups([]); os.setgid(65534); os.setuid(65534)
for p in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.sendto(os.path.basename(p).encode(), 0x20000000, p); print(p, "sent")
    except PermissionError:
        print(p, "EACCES")
`
	r := torsocks(t, nil, "python3", "-c", script, rootOnly, open)
	wantLines(t, r, rootOnly+" EACCES", open+" sent")
	if r.code == 0 {
		if g := <-got; g != "open.dgram 65534 65534" {
			t.Errorf("receiver saw %q, want open.dgram from 65534 65534", g)
		}
	}
	select {
	case g := <-got:
		t.Errorf("unexpected datagram %q", g)
	default:
	}
}

// Deputies and the supervisor's own connects interleave: processes that dropped to nobody and a
// root one connect in turn, many times, and each gets its own rights every time (a deputy thread
// that kept nobody's credentials would make root's connects fail; one that kept root's, nobody's
// succeed).
func TestUnixConnectInterleaved(t *testing.T) {
	env(t)
	rootOnly, _, open, _, _ := unixCredSockets(t)
	script := `
import os, socket, sys
root_only, open_ = sys.argv[1], sys.argv[2]
def try_(p):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(p); return s.recv(100).decode().strip()
    except PermissionError:
        return "EACCES"
    finally:
        s.close()
bad = 0
for i in range(40):
    pid = os.fork()
    if pid == 0:
        os.setgroups([]); os.setgid(65534); os.setuid(65534)
        ok = try_(open_) == "65534 65534" and try_(root_only) == "EACCES"
        os._exit(0 if ok else 1)
    if try_(root_only) != "0 0":
        bad += 1
    _, st = os.waitpid(pid, 0)
    if st != 0:
        bad += 1
print("bad", bad)
`
	r := torsocks(t, nil, "python3", "-c", script, rootOnly, open)
	wantLines(t, r, "bad 0")
}
