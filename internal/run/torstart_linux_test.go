package run

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/torstart"
)

// openPTY returns a new pseudo-terminal's master and its terminal side.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

var progressSteps = []torstart.Progress{
	{Percent: 5, Summary: "Connecting to a relay"},
	{Percent: 5, Summary: "Connecting to a relay", Warning: "Connection refused"},
	{Percent: 45, Summary: "Asking for relay descriptors"},
	{Percent: 100, Summary: "Done"},
}

// On a terminal the progress is one line, rewritten in place with \r and padded over a longer
// previous text, and ended with a newline.
func TestProgressLineTerminal(t *testing.T) {
	m, tty := openPTY(t)
	if !isTerminal(tty) {
		t.Fatal("isTerminal(pty) = false")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if isTerminal(w) {
		t.Error("isTerminal(pipe) = true")
	}
	p := newProgressLine(tty, isTerminal(tty))
	for _, pr := range progressSteps {
		p.show(pr)
	}
	p.end()
	tty.Close()
	var got bytes.Buffer
	buf := make([]byte, 4096)
	for { // reading the master after the terminal side is closed ends in EIO
		n, err := m.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
	}
	l1 := "torsocks: starting Tor: 5% connecting to a relay"
	l2 := l1 + " (Connection refused)"
	l3 := "torsocks: starting Tor: 45% asking for relay descriptors"
	l4 := "torsocks: starting Tor: 100% done"
	pad := func(n int) string { return string(bytes.Repeat([]byte{' '}, n)) }
	want := "\r" + l1 + "\r" + l2 + "\r" + l3 + pad(len(l2)-len(l3)) + "\r" + l4 + pad(len(l3)-len(l4)) + "\r\n" // the terminal's ONLCR
	if got.String() != want {
		t.Errorf("terminal got\n%q\nwant\n%q", got.String(), want)
	}
}

// Not on a terminal: a line per new percentage; an already bootstrapped tor shows nothing.
func TestProgressLinePlain(t *testing.T) {
	var b bytes.Buffer
	p := newProgressLine(&b, false)
	for _, pr := range progressSteps {
		p.show(pr)
	}
	p.end()
	want := "torsocks: starting Tor: 5% connecting to a relay\n" +
		"torsocks: starting Tor: 45% asking for relay descriptors\n" +
		"torsocks: starting Tor: 100% done\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
	p = newProgressLine(io.Discard, true)
	p.show(torstart.Progress{Percent: 100, Summary: "Done"})
	if p.shown {
		t.Error("a bootstrapped tor's 100% was shown")
	}
}

// TestAnswers: the SocksPort probe says yes to a listener, IPv4 and IPv6, and no to a port nothing
// listens on.
func TestAnswers(t *testing.T) {
	netnstest.Require(t)
	for _, network := range []string{"tcp4", "tcp6"} {
		host := "127.0.0.1"
		if network == "tcp6" {
			host = "::1"
		}
		ln, err := net.Listen(network, net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		addr := netip.MustParseAddrPort(ln.Addr().String())
		if !answers(addr) {
			t.Errorf("answers(%v) = false with a listener there", addr)
		}
		ln.Close()
		if answers(addr) {
			t.Errorf("answers(%v) = true with nothing listening", addr)
		}
	}
	// An IPv4-mapped address is probed as the IPv4 one.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := netip.MustParseAddrPort(ln.Addr().String()).Port()
	if mapped := netip.AddrPortFrom(netip.MustParseAddr("::ffff:127.0.0.1"), port); !answers(mapped) {
		t.Errorf("answers(%v) = false with a listener at 127.0.0.1:%d", mapped, port)
	}
}
