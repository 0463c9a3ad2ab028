package run

import (
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/config"
	"github.com/gotorsocks/torsocks/internal/dnsserver"
	"github.com/gotorsocks/torsocks/internal/filter"
	"github.com/gotorsocks/torsocks/internal/launch"
	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/policy"
	"github.com/gotorsocks/torsocks/internal/sandbox"
	"github.com/gotorsocks/torsocks/internal/unixrelay"
)

var errInjected = errors.New("injected failure")

// made is what a session's steps made, seen from the test.
type made struct {
	torHeld   int // own tor: held minus released
	relay     *unixrelay.Relay
	prepared  *sandbox.Sandbox // made by the session, not started
	sandbox   *sandbox.Sandbox // started
	dnsServer *dnsserver.Server
}

// testSteps are the real steps (the sandbox started from the test binary), recording what they
// made, with the step named fail failing instead; the program never starts (start fails).
func testSteps(t *testing.T, m *made, fail string) steps {
	t.Helper()
	return steps{
		ownTor: func(*config.Config) (torHold, error) {
			if fail == "ownTor" {
				return nil, errInjected
			}
			m.torHeld++
			return fakeTor{m}, nil
		},
		unixRelay: func(path string) (*unixrelay.Relay, error) {
			if fail == "unixRelay" {
				return nil, errInjected
			}
			r, err := unixrelay.Start(path)
			m.relay = r
			return r, err
		},
		prepare: func() *sandbox.Sandbox {
			m.prepared = sandbox.Prepare(os.Args[0])
			return m.prepared
		},
		sandbox: func(sb *sandbox.Sandbox) error {
			if fail == "sandbox" {
				return errInjected
			}
			if err := sb.Start(); err != nil {
				t.Skipf("no UDP sandbox here: %v", err)
			}
			m.sandbox = sb
			return nil
		},
		dnsServer: func(sb *sandbox.Sandbox, a dnsserver.Answerer, log *slog.Logger, d dnsserver.Dropped) (*dnsserver.Server, error) {
			if fail == "dnsServer" {
				return nil, errInjected
			}
			s, err := dnsserver.Start(sb, a, log, d)
			m.dnsServer = s
			return s, err
		},
		start: func(string, []string, []unix.SockFilter, launch.Options) (*launch.Child, error) {
			return nil, errInjected
		},
	}
}

// testConfig is the default configuration with the SocksPort on a unix socket (so that the relay
// is made), UDP to loopback relayed (so that the UDP relay is made) and the log in a file.
func testConfig(t *testing.T) *config.Config {
	t.Helper()
	inv, err := config.Parse([]string{"true"}, func(string) (string, bool) { return "", false },
		func(string) ([]byte, error) { return nil, fs.ErrNotExist })
	if err != nil {
		t.Fatal(err)
	}
	cfg := &inv.Config
	cfg.SocksUnix = filepath.Join(t.TempDir(), "socks")
	cfg.AllowOutboundLocalhost = 2
	cfg.LogFile = filepath.Join(t.TempDir(), "log")
	cfg.Warnings = nil
	return cfg
}

// open runs the session's steps up to the program's start, as Main does, and returns the first
// error.
func open(s *session) error {
	if err := s.openResources(); err != nil {
		return err
	}
	return s.launch("/bin/true", []string{"true"}, nil, filter.Options{})
}

// assertClosed fails unless everything m records is closed or released.
func assertClosed(t *testing.T, m *made) {
	t.Helper()
	if m.torHeld != 0 {
		t.Errorf("own tor held %d times after Close", m.torHeld)
	}
	if m.relay != nil {
		if c, err := net.DialTimeout("tcp", m.relay.Addr().String(), time.Second); err == nil {
			c.Close()
			t.Error("unix SocksPort relay still accepts after Close")
		}
	}
	if m.sandbox != nil {
		if fd, err := m.sandbox.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err == nil {
			unix.Close(fd)
			t.Error("UDP sandbox still makes sockets after Close")
		}
	}
	if m.dnsServer != nil {
		if c, err := net.DialTimeout("tcp", m.dnsServer.TCPAddr().String(), time.Second); err == nil {
			c.Close()
			t.Error("DNS responder still accepts after Close")
		}
	}
}

// Whichever step fails, everything opened before it is closed when the session is, and only once.
func TestSessionClosesWhatItOpened(t *testing.T) {
	for _, fail := range []string{"ownTor", "unixRelay", "start"} {
		t.Run(fail, func(t *testing.T) {
			m := &made{}
			s, err := newSession(testConfig(t), testSteps(t, m, fail), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := open(s); !errors.Is(err, errInjected) {
				t.Fatalf("open: %v, want the injected failure", err)
			}
			if fail == "start" && s.udp != nil {
				s.udp.ensure() // as the program's first UDP socket would
			}
			var loopback bool
			if s.udp != nil && s.udp.loopback != nil {
				loopback = true
			}
			s.Close()
			assertClosed(t, m)
			if loopback {
				if err := s.udp.loopback.Ensure(netip.MustParseAddrPort("127.0.0.1:9")); err == nil {
					t.Error("UDP loopback relay still makes mirrors after Close")
				}
			}
			if len(s.open) != 0 {
				t.Errorf("%d closers left after Close", len(s.open))
			}
			s.Close() // a second Close does nothing
			if m.torHeld != 0 {
				t.Errorf("own tor held %d times after a second Close", m.torHeld)
			}
			if fail == "start" && (m.sandbox == nil || m.dnsServer == nil || m.relay == nil) {
				t.Errorf("not everything was made on first use: %+v", m)
			}
		})
	}
}

// When the DNS responder cannot be made, the run goes on without UDP, torsocks says so as before
// (once, when the program first needs UDP or DNS, for what is started on first use), and what was
// made for it (the sandbox) is closed at once, not at the end of the run.
func TestSessionUDPFailureClosesAtOnce(t *testing.T) {
	for _, c := range []struct {
		name string
		fail string
		cfg  func(*config.Config)
		line string
	}{
		{name: "sandbox", fail: "sandbox", cfg: func(c *config.Config) { c.SealedNetwork = false }, line: "WARNING torsocks[%d]: UDP and DNS unavailable (injected failure): UDP sockets will be refused"},
		{name: "dnsServer", fail: "dnsServer", cfg: func(c *config.Config) { c.SealedNetwork = false }, line: "WARNING torsocks[%d]: DNS responder unavailable (injected failure): UDP sockets will be refused"},
		// SealedNetwork 1: the same single line also says that TCP sockets stay on the host.
		{name: "sandbox-sealed", fail: "sandbox", cfg: func(c *config.Config) { c.SealedNetwork = true }, line: "WARNING torsocks[%d]: the sandbox network namespace is unavailable (injected failure; user namespaces disabled? see the README): the kernel-enforced layer (SealedNetwork) is off, TCP sockets stay on the host network"},
		{name: "dnsServer-sealed", fail: "dnsServer", cfg: func(c *config.Config) { c.SealedNetwork = true }, line: "WARNING torsocks[%d]: DNS responder unavailable (injected failure): UDP sockets will be refused, and the kernel-enforced layer (SealedNetwork) is off"},
		{name: "onion range", cfg: func(c *config.Config) { c.OnionAddrRange = netip.MustParsePrefix("127.42.42.0/31") }, line: "ERROR torsocks[%d]: OnionAddrRange 127.42.42.0/31: "},
		{name: "answerer", cfg: func(c *config.Config) { c.DNSMode = "bogus" }, line: "ERROR torsocks[%d]: DNS: "},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := &made{}
			cfg := testConfig(t)
			if c.cfg != nil {
				c.cfg(cfg)
			}
			s, err := newSession(cfg, testSteps(t, m, c.fail), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.openResources(); err != nil {
				t.Fatal(err)
			}
			if c.fail != "" {
				// Started on first use: the program's first UDP sockets are refused as without a
				// sandbox, and its TCP connections to port 53 go nowhere.
				opts := s.supervisorOptions()
				for i := 0; i < 2; i++ {
					if d := opts.Policy.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK, 0); d.Action != policy.Refuse || d.Errno != unix.EPERM || d.Reason != "UDP socket refused: Tor carries TCP only" {
						t.Errorf("UDP socket after the failure: %+v", d)
					}
				}
				if a := opts.DNSTCP.TCPAddr(); a != refusing {
					t.Errorf("DNS over TCP after the failure goes to %v", a)
				}
				if opts.Sandbox.Contains(-1) {
					t.Error("the failed sandbox contains a socket")
				}
			} else {
				if s.udp != nil {
					t.Fatal("UDP sandbox in use after its failure")
				}
				if opts := s.supervisorOptions(); opts.Sandbox != nil || opts.DNSTCP != nil || opts.StandIns != nil || opts.UDPLoopback != nil || opts.Policy.UDPSandbox {
					t.Errorf("the supervisor would be given UDP: %+v", opts)
				}
			}
			// Only what was made for UDP must be closed already; the rest is the run's until Close.
			udpOnly := *m
			udpOnly.torHeld, udpOnly.relay = 0, nil
			assertClosed(t, &udpOnly)
			if m.relay == nil || m.torHeld != 1 {
				t.Errorf("the run's other resources are not all open: %+v", m)
			}
			s.Close()
			assertClosed(t, m)
			log, _ := os.ReadFile(cfg.LogFile)
			if want := strings.ReplaceAll(c.line, "%d", ""); strings.Count(stripPID(string(log)), want) != 1 {
				t.Errorf("log %q lacks %q, or has it more than once", log, want)
			}
		})
	}
}

// stripPID removes the pid from "torsocks[PID]" in a log.
func stripPID(log string) string {
	var b strings.Builder
	for {
		i := strings.Index(log, "torsocks[")
		if i < 0 {
			return b.String() + log
		}
		j := strings.IndexByte(log[i:], ']')
		if j < 0 {
			return b.String() + log
		}
		b.WriteString(log[:i] + "torsocks[")
		log = log[i+j:]
	}
}

// With everything made, the supervisor is given all of it (and a nil interface for nothing).
func TestSessionWiresSupervisor(t *testing.T) {
	m := &made{}
	cfg := testConfig(t)
	s, err := newSession(cfg, testSteps(t, m, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.openResources(); err != nil {
		t.Fatal(err)
	}
	opts := s.supervisorOptions()
	if opts.Sandbox != m.prepared || opts.DNSTCP == nil || opts.StandIns == nil || opts.UDPLoopback == nil ||
		opts.SocksRelay == nil || !opts.Policy.UDPSandbox || opts.Policy.UDPReady == nil {
		t.Fatalf("supervisor options miss a resource: %+v", opts)
	}
	// Nothing of the sandbox runs before the program needs it; its first UDP socket starts it all.
	if m.sandbox != nil || m.dnsServer != nil {
		t.Fatalf("the UDP sandbox or the DNS responder was started before first use: %+v", m)
	}
	if _, err := opts.Sandbox.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0); err == nil {
		t.Fatal("a sandbox not started yet made a socket")
	}
	if d := opts.Policy.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0); d.Action != policy.Sandboxed {
		t.Fatalf("UDP socket: %+v", d)
	}
	if m.sandbox != opts.Sandbox || m.dnsServer == nil || opts.DNSTCP.TCPAddr() != m.dnsServer.TCPAddr() {
		t.Fatalf("first use did not start the sandbox and the DNS responder: %+v", m)
	}
	fd, err := opts.Sandbox.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !opts.Sandbox.Contains(fd) {
		t.Error("a sandbox socket is not in the sandbox")
	}
	unix.Close(fd)
	s.reclaimClosed() // no supervisor yet: nothing to do, no crash
	cfg.SocksUnix, cfg.AllowOutboundLocalhost = "", 0
	s2, err := newSession(cfg, testSteps(t, &made{}, "sandbox"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.openResources(); err != nil {
		t.Fatal(err)
	}
	if opts := s2.supervisorOptions(); opts.SocksRelay != nil || opts.UDPLoopback != nil {
		t.Fatalf("nil resources passed as non-nil interfaces: %+v", opts)
	}
}

// The test binary doubles as the UDP sandbox's socket factory, as the torsocks binary does. The
// tests run in a network namespace of their own (TestAnswers opens sockets).
func TestMain(m *testing.M) {
	sandbox.RunFactoryIfAsked()
	netnstest.Main(m)
}

// fakeTor stands in for the user's own tor.
type fakeTor struct{ m *made }

func (f fakeTor) release()                                 { f.m.torHeld-- }
func (fakeTor) refuseUnix(*slog.Logger) func(fd int) error { return nil }
