package testnet

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/sha3"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/netnstest"
)

var (
	testHost   = netnstest.DestV4.String()     // the HTTP server and onion target
	exitSource = netnstest.SocksSrcV4.String() // the exits' OutboundBindAddressExit
)

const (
	testName   = "web.test" // the test DNS server's name for testHost
	dnsAddr    = "127.0.0.1:5353"
	testPort   = 8080
	rejectPort = 25 // every exit's policy rejects it
)

// TestNetwork brings the private Tor network up and checks the paths the
// end-to-end tests rely on: an exit reaches a test host (from ExitSource),
// the onion service is reachable, an unknown onion gives an extended error,
// and the control port shows streams and isolation credentials.
func TestNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real Tor network (~15 s); skipped with -short") // asked for, so a skip in CI too
	}
	netnstest.Require(t)
	if _, err := exec.LookPath(findBinary("tor", "/usr/sbin/tor")); err != nil {
		netnstest.Skip(t, "tor is not installed (scripts/install-deps.sh)")
	}

	srv := startHTTP(t, net.JoinHostPort(testHost, fmt.Sprint(testPort)))
	dns, err := StartDNSStub(dnsAddr, map[string]netip.Addr{testName: netnstest.DestV4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Close() })

	keyCache := ""
	if dir, err := os.UserCacheDir(); err == nil {
		keyCache = filepath.Join(dir, "gotorsocks", "testnet-keys")
	}
	began := time.Now()
	n, err := Start(context.Background(), Options{
		Dir:         t.TempDir(),
		KeyCache:    keyCache,
		ExitSource:  netip.MustParseAddr(exitSource),
		OnionTarget: net.JoinHostPort(testHost, fmt.Sprint(testPort)),
		RejectPorts: []uint16{rejectPort},
		Resolver:    dnsAddr,
		Logf:        t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := n.Close(); err != nil {
			t.Error(err)
		}
	}()
	t.Logf("keys %v, consensus %v, bootstrap %v, onion descriptor %v after launch",
		n.Timings.Keys.Round(time.Millisecond), n.Timings.Consensus.Round(time.Millisecond),
		n.Timings.Bootstrap.Round(time.Millisecond), n.Timings.Onion.Round(time.Millisecond))

	t.Run("ExitByAddress", func(t *testing.T) {
		for _, socks := range []netip.AddrPort{n.SocksAddr, n.SocksAddrV6} {
			if !socks.IsValid() {
				continue
			}
			c, rep, err := socksConnect(socks, testHost, testPort, "", "")
			if err != nil {
				t.Fatalf("via %v: CONNECT %s:%d: reply %#x: %v", socks, testHost, testPort, rep, err)
			}
			body, remote := httpGet(t, c, testHost, srv)
			if body != "hello from the test host\n" {
				t.Errorf("via %v: body %q", socks, body)
			}
			if remote != exitSource {
				t.Errorf("via %v: test host saw the connection from %s, want the exits' source %s", socks, remote, exitSource)
			}
		}
	})

	t.Run("ExitByName", func(t *testing.T) {
		c, rep, err := socksConnect(n.SocksAddr, testName, testPort, "", "")
		if err != nil {
			t.Fatalf("CONNECT %s:%d: reply %#x: %v", testName, testPort, rep, err)
		}
		if body, remote := httpGet(t, c, testName, srv); body != "hello from the test host\n" || remote != exitSource {
			t.Errorf("body %q from %s", body, remote)
		}
		_, rep, err = socksConnect(n.SocksAddr, "unknown.test", testPort, "", "")
		if err == nil {
			t.Fatal("CONNECT to a name the resolver does not know succeeded")
		}
		t.Logf("unknown name: reply %#x", rep)
	})

	t.Run("Onion", func(t *testing.T) {
		start := time.Now()
		var (
			c   net.Conn
			rep byte
		)
		for {
			c, rep, err = socksConnect(n.SocksAddr, n.OnionHost, 80, "", "")
			if err == nil || time.Since(start) > 30*time.Second {
				break
			}
			t.Logf("onion CONNECT: reply %#x: %v; retrying", rep, err)
			time.Sleep(time.Second)
		}
		if err != nil {
			t.Fatalf("onion CONNECT %s: reply %#x: %v", n.OnionHost, rep, err)
		}
		body, _ := httpGet(t, c, n.OnionHost, srv)
		if body != "hello from the test host\n" {
			t.Errorf("onion: body %q", body)
		}
		t.Logf("onion reachable %v after Start was called (CONNECT and GET took %v)",
			time.Since(began).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	})

	t.Run("UnknownOnion", func(t *testing.T) {
		host := randomOnion(t)
		start := time.Now()
		c, rep, err := socksConnect(n.SocksAddr, host, 80, "", "")
		if err == nil {
			c.Close()
			t.Fatalf("CONNECT %s succeeded", host)
		}
		t.Logf("unknown onion: reply %#x after %v: %v", rep, time.Since(start).Round(time.Millisecond), err)
		if rep != 0xF0 { // Onion Service Descriptor Can Not be Found
			t.Errorf("reply %#x, want 0xf0 (ExtendedErrors)", rep)
		}
	})

	t.Run("ExitPolicyReject", func(t *testing.T) {
		start := time.Now()
		c, rep, err := socksConnect(n.SocksAddr, testHost, rejectPort, "", "")
		if err == nil {
			c.Close()
			t.Fatalf("CONNECT to port %d, which every exit rejects, succeeded", rejectPort)
		}
		t.Logf("rejected port: reply %#x after %v", rep, time.Since(start).Round(time.Millisecond))
	})

	t.Run("ControlIsolation", func(t *testing.T) {
		for _, user := range []string{"alice", "bob"} {
			c, rep, err := socksConnect(n.SocksAddr, testHost, testPort, user, "pw-"+user)
			if err != nil {
				t.Fatalf("CONNECT as %s: reply %#x: %v", user, rep, err)
			}
			defer c.Close() // kept open until the streams are listed
		}
		streams, err := n.Streams()
		if err != nil {
			t.Fatal(err)
		}
		circuits, err := n.Circuits()
		if err != nil {
			t.Fatal(err)
		}
		byID := map[string]Circuit{}
		for _, c := range circuits {
			byID[c.ID] = c
		}
		users := map[string]string{} // username -> circuit
		for _, s := range streams {
			if s.Target != fmt.Sprintf("%s:%d", testHost, testPort) || s.Status != "SUCCEEDED" {
				continue
			}
			c, ok := byID[s.CircuitID]
			if !ok {
				t.Errorf("stream %s on unknown circuit %s", s.ID, s.CircuitID)
				continue
			}
			t.Logf("stream %s -> circuit %s %s path %v user %q password %q", s.ID, c.ID, c.Status, c.Path, c.SOCKSUsername, c.SOCKSPassword)
			if c.SOCKSUsername != "" {
				users[c.SOCKSUsername] = c.ID
				if c.SOCKSPassword != "pw-"+c.SOCKSUsername {
					t.Errorf("circuit %s: password %q", c.ID, c.SOCKSPassword)
				}
			}
		}
		if users["alice"] == "" || users["bob"] == "" || users["alice"] == users["bob"] {
			t.Errorf("want alice and bob on two different circuits, got %v", users)
		}
	})
}

// testServer is the HTTP server on the test host; it records the source
// address of every connection.
type testServer struct {
	mu      sync.Mutex
	remotes map[string]string // request ID -> remote IP
}

func startHTTP(t *testing.T, addr string) *testServer {
	t.Helper()
	ts := &testServer{remotes: map[string]string{}}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		ts.mu.Lock()
		ts.remotes[r.Header.Get("X-Request-Id")] = host
		ts.mu.Unlock()
		io.WriteString(w, "hello from the test host\n")
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return ts
}

var requestSeq struct {
	sync.Mutex
	n int
}

// httpGet sends one GET over c and returns the body and the source address
// the server saw.
func httpGet(t *testing.T, c net.Conn, host string, ts *testServer) (body, remote string) {
	t.Helper()
	defer c.Close()
	requestSeq.Lock()
	requestSeq.n++
	id := fmt.Sprint(requestSeq.n)
	requestSeq.Unlock()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nX-Request-Id: %s\r\nConnection: close\r\n\r\n", host, id)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET http://%s/: %v", host, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET http://%s/: %v", host, err)
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return string(b), ts.remotes[id]
}

// socksConnect does a SOCKS5 CONNECT (with username/password authentication
// if user is set) and returns the connection, or the reply code and an error.
func socksConnect(proxy netip.AddrPort, host string, port uint16, user, pass string) (net.Conn, byte, error) {
	c, err := net.DialTimeout("tcp", proxy.String(), 10*time.Second)
	if err != nil {
		return nil, 0, err
	}
	c.SetDeadline(time.Now().Add(150 * time.Second))
	fail := func(rep byte, err error) (net.Conn, byte, error) {
		c.Close()
		return nil, rep, err
	}
	method := byte(0)
	if user != "" {
		method = 2
	}
	if _, err := c.Write([]byte{5, 1, method}); err != nil {
		return fail(0, err)
	}
	var buf [262]byte
	if _, err := io.ReadFull(c, buf[:2]); err != nil {
		return fail(0, err)
	}
	if buf[1] != method {
		return fail(0, fmt.Errorf("proxy chose method %#x", buf[1]))
	}
	if user != "" {
		msg := append([]byte{1, byte(len(user))}, user...)
		msg = append(append(msg, byte(len(pass))), pass...)
		if _, err := c.Write(msg); err != nil {
			return fail(0, err)
		}
		if _, err := io.ReadFull(c, buf[:2]); err != nil {
			return fail(0, err)
		}
		if buf[1] != 0 {
			return fail(0, fmt.Errorf("authentication refused: %#x", buf[1]))
		}
	}
	req := []byte{5, 1, 0}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Is4() {
			req = append(append(req, 1), a.AsSlice()...)
		} else {
			req = append(append(req, 4), a.AsSlice()...)
		}
	} else {
		req = append(append(req, 3, byte(len(host))), host...)
	}
	req = binary.BigEndian.AppendUint16(req, port)
	if _, err := c.Write(req); err != nil {
		return fail(0, err)
	}
	if _, err := io.ReadFull(c, buf[:4]); err != nil {
		return fail(0, err)
	}
	if rep := buf[1]; rep != 0 {
		return fail(rep, fmt.Errorf("SOCKS reply %#x", rep))
	}
	alen := 0
	switch buf[3] {
	case 1:
		alen = 4
	case 4:
		alen = 16
	case 3:
		if _, err := io.ReadFull(c, buf[:1]); err != nil {
			return fail(0, err)
		}
		alen = int(buf[0])
	default:
		return fail(0, fmt.Errorf("bad address type %#x", buf[3]))
	}
	if _, err := io.ReadFull(c, buf[:alen+2]); err != nil {
		return fail(0, err)
	}
	c.SetDeadline(time.Time{})
	return c, 0, nil
}

// randomOnion returns a well-formed v3 onion address nobody serves.
func randomOnion(t *testing.T) string {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha3.Sum256(append(append([]byte(".onion checksum"), pub...), 3))
	raw := append(append([]byte(pub), sum[:2]...), 3)
	return strings.ToLower(base32.StdEncoding.EncodeToString(raw)) + ".onion"
}
