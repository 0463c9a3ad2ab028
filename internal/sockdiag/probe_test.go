package sockdiag

import (
	"net"
	"testing"
)

func socketOf(t testing.TB, c *net.TCPConn) Socket {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var s Socket
	var serr error
	if err := rc.Control(func(fd uintptr) { s, serr = SocketOf(int(fd), cookieOf(t, c)) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return s
}

func alive(t *testing.T, p *Prober, s Socket) bool {
	t.Helper()
	ok, err := p.Alive(s)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// The probe agrees with the dump's rule: connected sockets (both ends, IPv4, IPv6 and v4-mapped)
// are alive; a wrong cookie, a closed socket (TIME_WAIT or orphan) and a socket another
// descriptor still holds are told apart.
func TestProberAlive(t *testing.T) {
	p := NewProber()
	defer p.Close()
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0", "[::ffff:127.0.0.1]:0"} {
		t.Run(addr, func(t *testing.T) {
			pr := newPair(t, addr, false)
			defer pr.close()
			cs, ss := socketOf(t, pr.client), socketOf(t, pr.serv)
			if !alive(t, p, cs) || !alive(t, p, ss) {
				t.Fatalf("connected sockets not alive: %+v %+v", cs, ss)
			}
			wrong := cs
			wrong.Cookie++
			if alive(t, p, wrong) {
				t.Errorf("a wrong cookie is alive")
			}
			dup, err := pr.client.File()
			if err != nil {
				t.Fatal(err)
			}
			pr.client.Close()
			if !alive(t, p, cs) {
				t.Errorf("a socket held by a duplicate descriptor is not alive")
			}
			dup.Close()
			// The client's last descriptor is closed: the kernel orphans the socket at once (it
			// lives on in FIN_WAIT or TIME_WAIT without an inode).
			if alive(t, p, cs) {
				t.Errorf("closed socket still alive")
			}
			pr.serv.Close()
			if alive(t, p, ss) {
				t.Errorf("closed server socket alive")
			}
		})
	}
}

func BenchmarkProberAlive(b *testing.B) {
	pr := newPair(b, "127.0.0.1:0", false)
	defer pr.close()
	p := NewProber()
	defer p.Close()
	s := socketOf(b, pr.client)
	for b.Loop() {
		if ok, err := p.Alive(s); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}
