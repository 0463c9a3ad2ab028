package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotorsocks/torsocks/internal/policy"
	"github.com/gotorsocks/torsocks/internal/registry"
	"github.com/gotorsocks/torsocks/internal/sandbox"
	"github.com/gotorsocks/torsocks/internal/seccomp"
	"github.com/gotorsocks/torsocks/internal/sockdiag"
	"github.com/gotorsocks/torsocks/internal/socks5"
	"github.com/gotorsocks/torsocks/internal/standin"
)

// StandIns is the stand-in lookup of the connect path: see standin.Lookup.
type StandIns interface {
	StandIn(a netip.Addr) standin.Lookup
}

// Options configure a Supervisor. They are not changed after New.
type Options struct {
	// Socks is Tor's SocksPort. IPv4 sockets reach it as is; IPv6 sockets through ::ffff: when it
	// is IPv4 (unless SocksV6 is set).
	Socks netip.AddrPort
	// SocksRelay, when set, replaces Socks: Tor's SocksPort is a unix socket reached through this
	// loopback relay (internal/unixrelay).
	SocksRelay Gated
	// SocksV6, when valid, is an IPv6 SocksPort used by IPv6 sockets (required for IPV6_V6ONLY ones).
	SocksV6 netip.AddrPort
	// Auth, when set, is sent (RFC 1929) on every SOCKS request.
	Auth *socks5.Auth
	// IsolatePID gives every process of the tree its own random SOCKS credentials.
	IsolatePID bool
	// VetReceived: the filter notifies recvmsg/recvmmsg (filter.Options.VetReceived) and the
	// supervisor carries them out, refusing messages that bring sockets that could reach the
	// network around Tor (recv_linux.go).
	VetReceived bool
	// Policy decides connects, sockets and listens.
	Policy *policy.Policy
	// ConnectTimeout bounds connecting to Tor plus the SOCKS handshake (default 120 s).
	ConnectTimeout time.Duration
	// MaxInflight bounds the workers serving notifications at once (default 256): as many
	// connects can wait for Tor concurrently; more wait to be received.
	MaxInflight int
	// StepByStep makes the SOCKS5 client wait for each answer before sending the next message
	// (as the C torsocks does) instead of pipelining greeting and request (one round trip less;
	// Tor supports it).
	StepByStep bool
	// Logger receives torsocks-style log records; "pid" attributes name the program's process.
	Logger *slog.Logger
	// Sandbox, when set, is where the program's UDP sockets are created (Policy.UDPSandbox), and
	// its TCP sockets too with Policy.SealedTCP (sealed_linux.go).
	Sandbox *sandbox.Sandbox
	// SealedNetwork: the filter notifies TCP socket() (filter.Options.SealedTCP). With a Sandbox
	// and Policy.SealedTCP they are made there; without (no sandbox could be made) they are made
	// by the supervisor on the host network, as the kernel would have made them.
	SealedNetwork bool
	// AsyncConnect: a connect on a non-blocking sealed socket is answered EINPROGRESS at once and
	// completed when Tor has answered (async_linux.go).
	AsyncConnect bool
	// DNSTCP, when set, receives the program's TCP connections to port 53 (DNS over TCP).
	DNSTCP DNSTCP
	// UDPLoopback, when set (AllowOutboundLocalhost 2), makes a loopback destination of a UDP
	// connect reachable from the sandbox (internal/udprelay).
	UDPLoopback interface{ Ensure(netip.AddrPort) error }
	// StandIns, when set, maps a stand-in address (.onion, map mode) to the name Tor must connect
	// to (internal/dns's Server).
	StandIns StandIns
	// RefuseUnix, when set, vets each unix socket file the program connects or sends to (fd: an
	// O_PATH descriptor of it): an error refuses the call with its errno (torsocks' own tor's
	// control port).
	RefuseUnix func(fd int) error
	// Tracee, when set, replaces the program's real processes (tests: supervisortest.Tracee).
	Tracee Tracee
	// Side, when set, is input the worker waiting at the listener serves too (side_linux.go:
	// the DNS responder's UDP sockets).
	Side Side
}

// DNSTCP is the supervisor's DNS-over-TCP listener (internal/dnsserver).
type DNSTCP interface {
	TCPAddr() netip.AddrPort
	Expect(localPort uint16)
}

// Gated is a loopback listener of the supervisor that admits only announced local ports.
type Gated interface {
	Addr() netip.AddrPort
	Expect(localPort uint16)
}

// Supervisor serves one seccomp listener.
type Supervisor struct {
	k       Kernel
	tr      Tracee
	opts    Options
	pol     *policy.Policy
	log     *slog.Logger
	reg     *registry.Registry
	sweeper *registry.Sweeper
	prober  *sockdiag.Prober // the sweeper's lookups
	wg      sync.WaitGroup   // running workers
	role    receiver         // the receiver role (receiver_linux.go)

	errMu sync.Mutex // guards err
	err   error      // why serving stopped, if it was not POLLHUP

	proxied atomic.Int64 // connections carried through Tor
	relays  atomic.Int64 // sealed network: connections relayed now (sealed_linux.go)

	innerMu   sync.Mutex                        // guards inner, innerIdle
	inner     map[netip.AddrPort]*innerListener // sealed network: listeners in the sandbox by destination
	innerIdle idleList[*innerListener]          // those with no use (idle.go)
	peak      atomic.Int64                      // largest registry size seen after an Add
	async     asyncState                        // asynchronous connects (async_linux.go)
	socks     sockCache                         // the sockets made in the sandbox, by cookie (sockcache_linux.go)
	pidfds    pidfdCache                        // the threads' pidfds between their calls (pidfds_linux.go)
	torPool   torPool                           // sealed network: SocksPort connections made ahead (torpool_linux.go)

	mirrors mirrorSet // sealed network: the program's listeners mirrored on the host (sealed_listen_linux.go)

	isoMu sync.Mutex            // guards iso
	iso   map[int]isoCredential // tgid -> credentials, for IsolatePID

	ownOnce sync.Once // guards ownCr: the supervisor's credentials, read on first use
	ownCr   ownCreds

	// handler, when set, replaces dispatch (tests).
	handler func(*call) (reply, error)
}

// own returns the supervisor's own credentials (creds_linux.go), read once.
func (s *Supervisor) own() *ownCreds {
	s.ownOnce.Do(func() { s.ownCr = readOwnCreds() })
	return &s.ownCr
}

// New returns a supervisor for the listener k (a *seccomp.Listener).
func New(k Kernel, opts Options) *Supervisor {
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 120 * time.Second
	}
	if opts.MaxInflight <= 0 {
		opts.MaxInflight = 256
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Policy == nil {
		opts.Policy = &policy.Policy{EnableIPv6: true}
	}
	if opts.Tracee == nil {
		opts.Tracee = procTracee{}
	}
	s := &Supervisor{
		k:    k,
		tr:   opts.Tracee,
		opts: opts,
		pol:  opts.Policy,
		log:  opts.Logger,
		reg:  registry.New(),
		iso:  map[int]isoCredential{},
	}
	s.role.max = opts.MaxInflight
	s.pidfds.max = pidfdCacheSize()
	s.innerIdle.keep, s.innerIdle.max = innerIdle, maxIdleInner
	s.async.holdIdle.keep, s.async.holdIdle.max = holdIdleTime, maxIdleHolds
	s.role.spawn = s.startWorker
	// Entries of closed sockets are found by looking each one up (sockdiag.Prober), not by
	// listing every TCP socket of the namespace: a listing walks the whole TCP table, tens of
	// milliseconds with the TIME_WAIT sockets a connection-heavy program leaves, twice per sweep.
	// An entry registered without its addresses (they could not be read: the connection was
	// already gone) is not alive.
	s.prober = sockdiag.NewProber()
	alive := func(c *registry.Conn) (bool, error) {
		if c.Sock.Family == 0 {
			return false, nil
		}
		return s.prober.Alive(c.Sock)
	}
	s.sweeper = registry.NewProbingSweeper(s.reg, alive, 1024, func(f string, a ...any) {
		s.log.Warn(fmt.Sprintf(f, a...))
	})
	return s
}

// Stats are counters of a supervisor's work.
type Stats struct {
	Proxied      int64 // connections carried through Tor
	RegistryLen  int   // entries in the connection registry now
	RegistryPeak int64 // largest registry size seen
	Relays       int64 // sealed network: connections relayed now
}

// WaitRelays waits, for at most timeout, until the supervisor relays no connection (counting
// those being joined, whose program side may already be connected), and reports whether it got
// there. Called once the program's tree has exited, so that what it wrote last reaches the other
// end before torsocks exits. It polls: it runs once, and returns at once when nothing is relayed.
func (s *Supervisor) WaitRelays(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for s.relays.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// Stats returns the current counters.
func (s *Supervisor) Stats() Stats {
	return Stats{Proxied: s.proxied.Load(), RegistryLen: s.reg.Len(), RegistryPeak: s.peak.Load(), Relays: s.relays.Load()}
}

// ReclaimClosed releases now the registry entries (and what they hold, such as stand-in
// addresses) of sockets the program has closed, which the background sweeper would only notice
// later.
func (s *Supervisor) ReclaimClosed() { s.sweeper.SweepNow() }

// Serve answers notifications until no task uses the filter any more, then waits for the
// handlers still running.
//
// Workers take turns as the receiver (receiver_linux.go): the worker holding the role polls the
// listener, receives one notification and serves it itself, SOCKS handshake included (serve,
// call_linux.go). It keeps the role while the call cannot block on the program, and gets it
// straight back when the call is done; otherwise the call's lease is released and a follower
// takes over (started if none is idle and fewer than MaxInflight run).
func (s *Supervisor) Serve() error {
	defer func() {
		s.closeMirrors()
		s.torPool.close()
		s.sweeper.Close()
		s.prober.Close()
		if s.debug() {
			st := s.Stats()
			s.log.Debug(fmt.Sprintf("%d connections carried through Tor; registry: peak %d entries, %d at exit", st.Proxied, st.RegistryPeak, st.RegistryLen))
		}
	}()
	s.startWorker()
	s.wg.Wait()

	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// spareWorkers is how many idle workers may wait for the receiver role before extra ones exit.
const spareWorkers = 4

func (s *Supervisor) startWorker() {
	s.role.workers.Add(1)
	s.wg.Add(1)
	go s.worker()
}

// leadLimit is how long a call may keep the receiver role before the watchdog hands it over.
const leadLimit = time.Millisecond

// worker takes the receiver role, receives a notification, serves it, and goes back to the
// listener if it still holds the role; otherwise it waits for the role again (or exits when
// enough others wait).
func (s *Supervisor) worker() {
	defer s.wg.Done()
	defer s.role.workers.Add(-1)
	var n seccomp.Notif
	var ws waitState // waitNotif's
	holding := false // this worker got the role back from the call it served last
	for {
		if !holding {
			s.role.take()
		}
		holding = false
		if s.role.finished {
			s.role.mu.Unlock()
			return
		}
		more, kept, err := s.waitNotif(&ws)
		if !kept {
			// Side work (side_linux.go) ran long and the role went to a follower.
			if s.role.idle.Load() >= spareWorkers {
				return
			}
			continue
		}
		if err == nil && more {
			err = s.k.Recv(&n)
			if errors.Is(err, seccomp.ErrNotifGone) {
				holding = true
				continue
			}
		}
		if err != nil || !more {
			if err != nil {
				s.errMu.Lock()
				s.err = err
				s.errMu.Unlock()
			}
			s.role.finish()
			return
		}
		l := s.role.lend()
		watchdog := time.AfterFunc(leadLimit, l.release)
		s.serve(s.newCall(&n, l))
		if watchdog.Stop() && l.reclaim() {
			holding = true // nobody took the role: straight back to the listener
			continue
		}
		// The role went to a follower (or is going: a watchdog that fired releases it).
		if s.role.idle.Load() >= spareWorkers {
			return
		}
	}
}

// debug reports whether debug records are wanted (to skip formatting them otherwise).
func (s *Supervisor) debug() bool { return s.log.Enabled(context.Background(), slog.LevelDebug) }
