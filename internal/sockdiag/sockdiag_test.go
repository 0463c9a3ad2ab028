package sockdiag

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// cookieOf reads SO_COOKIE without touching the descriptor's flags.
func cookieOf(t testing.TB, c syscall.Conn) uint64 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v uint64
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		v, gerr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_COOKIE)
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

// pair is a listener with one connection to it: three sockets.
type pair struct {
	ln           *net.TCPListener
	client, serv *net.TCPConn
}

// newPair listens on addr and connects to it, both with MPTCP or both
// without.
func newPair(t testing.TB, addr string, mptcp bool) *pair {
	t.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(mptcp)
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var d net.Dialer
	d.SetMultipathTCP(mptcp)
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return &pair{ln.(*net.TCPListener), c.(*net.TCPConn), s.(*net.TCPConn)}
}

func (p *pair) cookies(t testing.TB) map[string]uint64 {
	return map[string]uint64{
		"listener": cookieOf(t, p.ln),
		"client":   cookieOf(t, p.client),
		"server":   cookieOf(t, p.serv),
	}
}

func (p *pair) close() {
	p.client.Close()
	p.serv.Close()
	p.ln.Close()
}

func TestLayouts(t *testing.T) {
	// Sizes from linux/inet_diag.h, checked by hand against the header.
	if sizeofInetDiagSockid != 48 || sizeofInetDiagReqV2 != 56 || sizeofInetDiagMsg != 72 || cookieOffset != 44 || inodeOffset != 68 {
		t.Fatalf("layout: sockid %d req_v2 %d msg %d cookie@%d inode@%d", sizeofInetDiagSockid, sizeofInetDiagReqV2, sizeofInetDiagMsg, cookieOffset, inodeOffset)
	}
	b := request(unix.AF_INET6, unix.IPPROTO_TCP, 0xffffffff, 7)
	ne := binary.NativeEndian
	if len(b) != 72 || ne.Uint32(b) != 72 || ne.Uint16(b[4:]) != 20 || ne.Uint16(b[6:]) != 0x301 || ne.Uint32(b[8:]) != 7 {
		t.Fatalf("header % x", b[:16])
	}
	if b[16] != unix.AF_INET6 || b[17] != unix.IPPROTO_TCP || b[18] != 0 || b[19] != 0 || ne.Uint32(b[20:]) != 0xffffffff {
		t.Fatalf("request % x", b[16:24])
	}
	for _, x := range b[24:] {
		if x != 0 {
			t.Fatalf("id not zeroed: % x", b[24:])
		}
	}
}

func TestMPTCPRequest(t *testing.T) {
	// The bytes ss(8) from iproute2 6.1 sends for "ss -M" (seen with strace):
	// sdiag_protocol 6 (262 & 0xff) and an INET_DIAG_REQ_PROTOCOL attribute.
	b := request(unix.AF_INET, unix.IPPROTO_MPTCP, dumpStates, 1)
	ne := binary.NativeEndian
	if len(b) != 80 || ne.Uint32(b) != 80 || b[17] != 6 {
		t.Fatalf("request % x", b)
	}
	want := make([]byte, 8) // {8, 0, 3, 0, 6, 1, 0, 0} on little-endian
	ne.PutUint16(want, 8)
	ne.PutUint16(want[2:], 3)
	ne.PutUint32(want[4:], 262)
	if string(b[72:]) != string(want) {
		t.Fatalf("attribute % x, want % x", b[72:], want)
	}
}

func TestParse(t *testing.T) {
	ne := binary.NativeEndian
	msg := func(typ uint16, seq uint32, payload []byte) []byte {
		l := sizeofNlMsghdr + len(payload)
		b := make([]byte, (l+3)&^3)
		ne.PutUint32(b, uint32(l))
		ne.PutUint16(b[4:], typ)
		ne.PutUint16(b[6:], unix.NLM_F_MULTI)
		ne.PutUint32(b[8:], seq)
		copy(b[sizeofNlMsghdr:], payload)
		return b
	}
	diagInode := func(cookie uint64, inode uint32) []byte {
		p := make([]byte, sizeofInetDiagMsg+8) // plus an attribute's worth
		ne.PutUint32(p[cookieOffset:], uint32(cookie))
		ne.PutUint32(p[cookieOffset+4:], uint32(cookie>>32))
		ne.PutUint32(p[inodeOffset:], inode)
		return p
	}
	diag := func(cookie uint64) []byte { return diagInode(cookie, 1234) }
	var batch []byte
	batch = append(batch, msg(unix.SOCK_DIAG_BY_FAMILY, 1, diag(0x1122334455667788))...)
	batch = append(batch, msg(unix.SOCK_DIAG_BY_FAMILY, 9, diag(42))...) // other request: ignored
	batch = append(batch, msg(unix.SOCK_DIAG_BY_FAMILY, 1, diag(5))...)
	set := map[uint64]struct{}{}
	done, err := parse(batch, 1, false, set)
	if done || err != nil || len(set) != 2 {
		t.Fatalf("done %v err %v set %v", done, err, set)
	}
	if _, ok := set[0x1122334455667788]; !ok {
		t.Fatalf("cookie halves swapped: %x", set)
	}
	orphan := msg(unix.SOCK_DIAG_BY_FAMILY, 1, diagInode(77, 0))
	if parse(orphan, 1, false, set); len(set) != 2 {
		t.Fatal("orphan (inode 0) listed")
	}
	if parse(orphan, 1, true, set); len(set) != 3 {
		t.Fatal("orphan not listed when asked for")
	}
	done, err = parse(msg(unix.NLMSG_DONE, 1, make([]byte, 4)), 1, false, set)
	if !done || err != nil {
		t.Fatalf("DONE: %v %v", done, err)
	}
	e := make([]byte, 20)
	errno := -int32(unix.EPERM)
	ne.PutUint32(e, uint32(errno))
	if done, err = parse(msg(unix.NLMSG_ERROR, 1, e), 1, false, set); !done || err == nil {
		t.Fatalf("ERROR: %v %v", done, err)
	}
	if _, err = parse(msg(unix.NLMSG_DONE, 1, e[:4]), 1, false, set); err == nil {
		t.Fatal("DONE with an error status accepted")
	}
	if _, err = parse(msg(unix.SOCK_DIAG_BY_FAMILY, 1, make([]byte, 10)), 1, false, set); err == nil {
		t.Fatal("short inet_diag_msg accepted")
	}
	bad := msg(unix.SOCK_DIAG_BY_FAMILY, 1, diag(1))
	ne.PutUint32(bad, 1000)
	if _, err = parse(bad, 1, false, set); err == nil {
		t.Fatal("overlong nlmsg_len accepted")
	}
}

func TestLiveTCPCookies(t *testing.T) {
	for _, tc := range []struct {
		addr  string
		mptcp bool
	}{{"127.0.0.1:0", false}, {"[::1]:0", false}, {"127.0.0.1:0", true}, {"[::1]:0", true}} {
		t.Run(fmt.Sprintf("%s/mptcp=%v", tc.addr, tc.mptcp), func(t *testing.T) {
			if tc.mptcp && !mptcpAvailable() {
				t.Skip("no MPTCP in this kernel") // a kernel feature (net.mptcp.enabled): a skip in CI too
			}
			p := newPair(t, tc.addr, tc.mptcp)
			want := p.cookies(t)
			live, err := LiveTCPCookies()
			if err != nil {
				t.Fatal(err)
			}
			for name, c := range want {
				if c == 0 {
					t.Fatalf("%s: zero cookie", name)
				}
				if _, ok := live[c]; !ok {
					t.Errorf("%s socket (cookie %d) not listed among %d", name, c, len(live))
				}
			}
			p.close()
			// Gone at once: the client's socket lives on as an orphan
			// (closing, then TIME_WAIT), but no descriptor refers to it.
			live, err = LiveTCPCookies()
			if err != nil {
				t.Fatal(err)
			}
			for name, c := range want {
				if _, ok := live[c]; ok {
					t.Errorf("closed %s socket still listed", name)
				}
			}
		})
	}
}

// TestOrphansLeftOut checks the reason for the orphan rule: after close(), the
// kernel keeps the socket (closing states, then a TIME_WAIT mini-socket) under
// the closed socket's cookie.
func TestOrphansLeftOut(t *testing.T) {
	p := newPair(t, "127.0.0.1:0", false)
	cc := cookieOf(t, p.client)
	p.client.Close() // active close: orphan, then TIME_WAIT
	all, err := cookies(query{states: 0xffffffff, orphans: true})
	if err != nil {
		t.Fatal(err)
	}
	live, err := LiveTCPCookies()
	if err != nil {
		t.Fatal(err)
	}
	_, inAll := all[cc]
	_, inLive := live[cc]
	if !inAll || inLive {
		t.Fatalf("closed client: listed with orphans %v (want true), by LiveTCPCookies %v (want false)", inAll, inLive)
	}
	p.serv.Close()
	p.ln.Close()
}

func BenchmarkLiveTCPCookies1000(b *testing.B) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 500 { // 500 connections: 1000 sockets, plus the listener
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c, s)
	}
	b.ResetTimer()
	for b.Loop() {
		live, err := LiveTCPCookies()
		if err != nil {
			b.Fatal(err)
		}
		if len(live) < 1001 {
			b.Fatalf("%d sockets listed", len(live))
		}
	}
}
