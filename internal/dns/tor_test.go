package dns

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/socks5"
	"github.com/gotorsocks/torsocks/internal/socks5test"
)

func startSOCKS(t *testing.T, users map[string]string) *socks5test.Server {
	t.Helper()
	srv, err := socks5test.Start(socks5test.Options{
		Listen: []string{"127.0.0.1:0"},
		Users:  users,
		Resolve: map[string][]netip.Addr{
			"example.com":    {netip.MustParseAddr("203.0.113.10")},
			"v6only.example": {netip.MustParseAddr("2001:db8::10")},
		},
		ReplyFor: func(host string, port uint16) byte {
			if host == "broken.example" {
				return socks5.ReplyGeneralFailure
			}
			return 0
		},
		Logf: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func dialer(addr string) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

func TestTorResolver(t *testing.T) {
	srv := startSOCKS(t, map[string]string{"u": "p"})
	r := &TorResolver{Dial: dialer(srv.Addrs()[0].String()), Auth: &socks5.Auth{Username: "u", Password: "p"}, Timeout: 5 * time.Second}
	ctx := context.Background()

	if a, err := r.Resolve(ctx, "example.com"); err != nil || a != netip.MustParseAddr("203.0.113.10") {
		t.Fatalf("Resolve: %v %v", a, err)
	}
	if a, err := r.Resolve(ctx, "v6only.example"); err != nil || a != netip.MustParseAddr("2001:db8::10") {
		t.Fatalf("Resolve v6: %v %v", a, err)
	}
	if _, err := r.Resolve(ctx, "nosuch.example"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown name: %v", err)
	}
	if _, err := r.Resolve(ctx, "broken.example"); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("reply 1: %v", err)
	}
	if n, err := r.ResolvePTR(ctx, netip.MustParseAddr("203.0.113.10")); err != nil || n != "example.com" {
		t.Fatalf("ResolvePTR: %q %v", n, err)
	}
	if n, err := r.ResolvePTR(ctx, netip.MustParseAddr("2001:db8::10")); err != nil || n != "v6only.example" {
		t.Fatalf("ResolvePTR v6: %q %v", n, err)
	}
	if _, err := r.ResolvePTR(ctx, netip.MustParseAddr("198.51.100.7")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("PTR without data: %v", err)
	}
	reqs := srv.Requests()
	if len(reqs) != 7 {
		t.Fatalf("%d requests", len(reqs))
	}
	for i, want := range []struct {
		cmd, atyp byte
		host      string
	}{
		{socks5.CmdResolve, socks5.AtypDomain, "example.com"},
		{socks5.CmdResolve, socks5.AtypDomain, "v6only.example"},
		{socks5.CmdResolve, socks5.AtypDomain, "nosuch.example"},
		{socks5.CmdResolve, socks5.AtypDomain, "broken.example"},
		{socks5.CmdResolvePTR, socks5.AtypIPv4, "203.0.113.10"},
		{socks5.CmdResolvePTR, socks5.AtypIPv6, "2001:db8::10"},
		{socks5.CmdResolvePTR, socks5.AtypIPv4, "198.51.100.7"},
	} {
		q := reqs[i]
		if q.Cmd != want.cmd || q.ATYP != want.atyp || q.Host != want.host || q.Port != 42 || q.Username != "u" || q.Password != "p" {
			t.Errorf("request %d: %+v, want %+v port 42 user u", i, q, want)
		}
	}

	bad := &TorResolver{Dial: dialer(srv.Addrs()[0].String()), Auth: &socks5.Auth{Username: "u", Password: "wrong"}}
	if _, err := bad.Resolve(ctx, "example.com"); !errors.Is(err, socks5.ErrAuthFailed) {
		t.Fatalf("bad credentials: %v", err)
	}
}

func TestTorResolverDownAndTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	silent := socks5test.Serve(ln, nil) // accepts and never answers
	defer silent.Close()
	// Timeout is the deadline of the lookup's context (dial, handshake and reply): the one Dial
	// gets lies Timeout after the call. Deadlines are compared, not how long anything took.
	var deadline, dialled time.Time
	r := &TorResolver{Timeout: 200 * time.Millisecond, Dial: func(ctx context.Context) (net.Conn, error) {
		deadline, _ = ctx.Deadline()
		dialled = time.Now()
		return dialer(addr)(ctx)
	}}
	before := time.Now()
	_, err = r.Resolve(context.Background(), "example.com")
	// The connection's deadline or the context's, whichever the runtime sees first.
	if errors.Is(err, ErrNotFound) || !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("silent server: %v, want the lookup's deadline exceeded", err)
	}
	if deadline.Before(before.Add(r.Timeout)) || deadline.After(dialled.Add(r.Timeout)) {
		t.Fatalf("the lookup's deadline %v is not Timeout (%v) after the call (%v)", deadline, r.Timeout, before)
	}
	// Cancellation ends a lookup before its time-out: cancelled once the server holds the
	// connection, the lookup ends with context.Canceled (its time-out would say DeadlineExceeded).
	r.Timeout = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := r.Resolve(ctx, "example.com"); done <- err }()
	if !silent.WaitAccepted(2, 30*time.Second) { // only keeps a broken lookup from hanging the test
		t.Fatal("the second lookup never connected")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	silent.Close()
	// Nothing listening: an error that is not ErrNotFound (SERVFAIL).
	_, err = r.Resolve(context.Background(), "example.com")
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("Tor down: %v", err)
	}
	if _, err := (&TorResolver{}).Resolve(context.Background(), "x.example"); err == nil {
		t.Fatal("no Dial accepted")
	}
}

// TestResolveModeThroughSOCKS runs the whole resolve path against the SOCKS test server.
func TestResolveModeThroughSOCKS(t *testing.T) {
	srv := startSOCKS(t, nil)
	s := newServer(t, Options{Mode: ModeResolve, Resolver: &TorResolver{Dial: dialer(srv.Addrs()[0].String())}})
	runCases(t, s, []tcase{
		{name: "example.com.", typ: A, answer: "203.0.113.10"},
		{name: "example.com.", typ: AAAA},
		{name: "nosuch.example.", typ: A, rcode: nx},
		{name: "broken.example.", typ: A, rcode: sf},
		{name: "10.113.0.203.in-addr.arpa.", typ: PTR, answer: "example.com."},
		{name: "abc.onion.", typ: A, answer: "127.42.42.1"},
	})
	// The onion name never reached the SOCKS server; example.com was asked once.
	n := 0
	for _, q := range srv.Requests() {
		if q.Host == "abc.onion" {
			t.Fatal("onion name sent to Tor")
		}
		if q.Host == "example.com" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("example.com asked %d times", n)
	}
}
