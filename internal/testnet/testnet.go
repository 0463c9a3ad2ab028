// Package testnet runs a private Tor network on loopback with the real tor
// daemon, for end-to-end tests and the demo.
//
// The network has three v3 directory authorities (non-exit), a few exit
// relays, one client with a SocksPort (127.0.0.1 and, when available, ::1)
// and a cookie-authenticated ControlPort, and optionally one v3 onion service
// in front of a TCP target. Every tor binds 127.0.0.1 only. Exits accept
// loopback and the documentation test hosts; when Options.ExitSource is set
// they connect out from that address, so a canary can tell a connection that
// went through Tor from a leak.
//
// Start launches the network in two phases: authorities and exits first;
// once every authority holds every relay's descriptor, the authorities are
// told (SIGHUP, new TestingV3AuthVotingStartOffset) to vote ~2 s later; once
// the consensus lists every relay Running and every relay holds it and all
// microdescriptors, the client and the onion service start. Start returns
// when the client has bootstrapped and can fetch the onion service's
// descriptor. Other settings: 20 s voting intervals, equal measured
// bandwidths (V3BandwidthsFile), empty GeoIP files, and a small glibc mmap
// threshold (~14 MB per tor). The client bootstraps ~12 s after launch.
//
// Keys are kept in Options.Dir (and Options.KeyCache) between runs, so
// fingerprints and the onion address stay the same; the tor data
// directories are wiped on every Start.
//
// Every tor runs with __OwningControllerProcess and a parent-death signal,
// so none outlives the process that started it.
package testnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Options configures Start. Only Dir is required.
type Options struct {
	// Dir is the working directory (keys, torrcs, logs, data directories).
	Dir string
	// KeyCache, if set, is a directory keeping the relays' and the onion
	// service's keys across networks (e.g. under os.UserCacheDir()): nodes
	// without keys in Dir take them from it, and new keys are added to it.
	// Generating keys costs a few seconds of CPU.
	KeyCache string
	// TorBinary is the tor executable; default "tor" from PATH, then /usr/sbin/tor.
	TorBinary string
	// GencertBinary is tor-gencert; default from PATH, then /usr/bin/tor-gencert.
	GencertBinary string
	// BasePort is the first port allocated on 127.0.0.1 (default 15000). Relay
	// i (authorities first) gets ORPort BasePort+2i and DirPort BasePort+2i+1;
	// the client's ControlPort follows, then its SocksPort unless SocksPort is set.
	BasePort int
	// SocksPort, if non-zero, is the client's SocksPort (e.g. 9050) on
	// 127.0.0.1 and [::1].
	SocksPort int
	// Exits is the number of exit relays (default 3).
	Exits int
	// ExitSource, if valid, is the exits' OutboundBindAddressExit: exits
	// connect to destinations from it. It must be configured on an interface.
	ExitSource netip.Addr
	// OnionTarget, if set, is the "host:port" a v3 onion service forwards its
	// port 80 to. Without it no onion service is started.
	OnionTarget string
	// OnionSource, if valid, is the address the onion service connects to
	// OnionTarget from (its OutboundBindAddressExit), so a destination can
	// tell the onion service's connections from any other by address alone.
	// It must be local (any 127.0.0.0/8 address is).
	OnionSource netip.Addr
	// Resolver, if set, is the "127.0.0.1:PORT" of the DNS server the exits
	// use. Without it they are given 127.0.0.1:53 (nothing listens there
	// unless the caller runs a server).
	Resolver string
	// RejectPorts are ports every exit's policy refuses (to test Tor's
	// exit-policy errors).
	RejectPorts []uint16
	// NoIPv6 disables the client's [::1] SocksPort even if ::1 is usable.
	NoIPv6 bool
	// Timeout bounds Start in addition to its context (default 90 s).
	Timeout time.Duration
	// Logf receives progress messages; nil discards them.
	Logf func(format string, args ...any)
}

// Role tells what a tor process does in the network.
type Role string

// Roles of the network's tor processes.
const (
	RoleAuthority Role = "authority"
	RoleExit      Role = "exit"
	RoleClient    Role = "client"
	RoleOnion     Role = "onion"
)

// Node is one tor process of the network.
type Node struct {
	Name        string
	Role        Role
	Dir         string // node directory: torrc, notice.log, data/, keys/
	ORPort      int    // relays only
	DirPort     int    // relays only
	Fingerprint string // relays only: RSA identity, 40 hex digits
	V3Ident     string // authorities only: v3 identity fingerprint
	LogFile     string // tor's notice-level log

	proc *proc
}

// Timings records how long each phase of Start took.
type Timings struct {
	Keys      time.Duration // key generation (near zero when reused)
	Consensus time.Duration // launch to a consensus listing every relay Running
	Bootstrap time.Duration // launch to the client's "Bootstrapped 100%"
	Onion     time.Duration // launch to the onion descriptor being fetched by the client
}

// Network is a running private Tor network.
type Network struct {
	// SocksAddr is the client's SocksPort on 127.0.0.1 (ExtendedErrors on,
	// IsolateSOCKSAuth as by default).
	SocksAddr netip.AddrPort
	// SocksAddrV6 is the same SocksPort on [::1]; invalid if not available.
	SocksAddrV6 netip.AddrPort
	// ControlAddr is the client's ControlPort (cookie authentication).
	ControlAddr netip.AddrPort
	// CookieFile is the client's control authentication cookie.
	CookieFile string
	// OnionHost is the onion service's "xxxx.onion" (empty without OnionTarget).
	OnionHost string
	// Nodes lists every tor process: authorities, exits, client, onion service.
	Nodes []*Node
	// Timings of Start.
	Timings Timings

	opts      Options
	firstVote time.Time // the authorities' first vote (whole second)
	spawnOnce sync.Once
	spawnReq  chan func() // runs cmd.Start on one locked thread; see spawn
	closeOnce sync.Once
	closeErr  error
}

const (
	defaultBasePort = 15000
	defaultExits    = 3
	defaultTimeout  = 90 * time.Second
	nAuthorities    = 3
)

// Start builds and launches the network and returns once the client has
// bootstrapped and, with an onion service, its descriptor can be fetched.
// On failure every started tor is stopped and the error carries an excerpt of
// the log of the tor that did not come up.
func Start(ctx context.Context, opts Options) (*Network, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	n := &Network{opts: opts}
	if err := n.start(ctx); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Network) start(ctx context.Context) error {
	opts := n.opts
	t0 := time.Now()
	if err := n.layout(); err != nil {
		return err
	}
	if err := checkPortsFree(n.ports()); err != nil {
		return err
	}
	if err := n.writeCommonFiles(); err != nil {
		return err
	}
	if err := n.loadKeyCache(); err != nil {
		return err
	}
	if err := n.makeKeys(ctx); err != nil {
		return err
	}
	n.saveKeyCache(RoleAuthority, RoleExit)
	n.Timings.Keys = time.Since(t0)
	n.logf("keys ready in %v", n.Timings.Keys.Round(time.Millisecond))

	// Phase 1: authorities and exits, with a provisional first vote.
	launch := time.Now()
	n.firstVote = launch.Add(provisionalVoteAfter).Truncate(time.Second)
	relays := n.relays()
	for _, nd := range relays {
		if err := n.prepareNode(nd); err != nil {
			return err
		}
	}
	for _, nd := range relays {
		if err := n.startTor(nd); err != nil {
			return err
		}
	}
	n.logf("launched %d authorities and %d exits", nAuthorities, opts.Exits)

	if err := n.waitDescriptors(ctx); err != nil {
		return err
	}
	if err := n.rescheduleVote(); err != nil {
		return err
	}
	n.logf("every authority has every relay's descriptor after %v; first vote at +%v",
		time.Since(launch).Round(time.Millisecond), n.firstVote.Sub(launch).Round(time.Millisecond))

	if err := n.waitConsensus(ctx); err != nil {
		return err
	}
	n.Timings.Consensus = time.Since(launch)
	n.logf("consensus lists all %d relays Running after %v", len(relays), n.Timings.Consensus.Round(time.Millisecond))

	// Relays that got 404s for the consensus before it existed back off;
	// SIGHUP resets their download schedules.
	for _, nd := range relays {
		if nd.Role == RoleExit {
			if err := nd.proc.signal(sigHUP); err != nil {
				return fmt.Errorf("testnet: SIGHUP %s: %w", nd.Name, err)
			}
		}
	}

	if err := n.waitDirInfo(ctx); err != nil {
		return err
	}
	n.logf("every relay holds the consensus and all microdescriptors after %v", time.Since(launch).Round(time.Millisecond))

	// Phase 2: client and onion service.
	for _, nd := range n.Nodes {
		if nd.Role != RoleClient && nd.Role != RoleOnion {
			continue
		}
		if err := n.prepareNode(nd); err != nil {
			return err
		}
		if err := n.startTor(nd); err != nil {
			return err
		}
	}

	if err := n.waitBootstrap(ctx); err != nil {
		return err
	}
	n.Timings.Bootstrap = time.Since(launch)
	n.logf("client bootstrapped 100%% after %v (SOCKS %v, control %v)", n.Timings.Bootstrap.Round(time.Millisecond), n.SocksAddr, n.ControlAddr)

	if n.node(RoleOnion) != nil {
		if err := n.waitOnion(ctx); err != nil {
			return err
		}
		n.Timings.Onion = time.Since(launch)
		n.saveKeyCache(RoleOnion)
		n.logf("onion service %s descriptor fetched after %v", n.OnionHost, n.Timings.Onion.Round(time.Millisecond))
	}
	return nil
}

func (o *Options) setDefaults() error {
	if o.Dir == "" {
		return errors.New("testnet: Options.Dir is required")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return fmt.Errorf("testnet: directory %q: %w", o.Dir, err)
	}
	o.Dir = dir
	if o.TorBinary == "" {
		o.TorBinary = findBinary("tor", "/usr/sbin/tor", "/usr/bin/tor")
	}
	if o.GencertBinary == "" {
		o.GencertBinary = findBinary("tor-gencert", "/usr/bin/tor-gencert", "/usr/sbin/tor-gencert")
	}
	if o.BasePort == 0 {
		o.BasePort = defaultBasePort
	}
	if o.Exits <= 0 {
		o.Exits = defaultExits
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	if o.BasePort < 1024 || o.BasePort+2*(nAuthorities+o.Exits)+2 > 65535 {
		return fmt.Errorf("testnet: BasePort %d out of range", o.BasePort)
	}
	if o.Resolver != "" {
		if _, err := netip.ParseAddrPort(o.Resolver); err != nil {
			return fmt.Errorf("testnet: Resolver %q: want 127.0.0.1:PORT: %w", o.Resolver, err)
		}
	}
	if o.ExitSource.IsValid() && o.ExitSource.Is6() && !o.ExitSource.Is4In6() {
		return fmt.Errorf("testnet: ExitSource %v: only IPv4 exits are configured", o.ExitSource)
	}
	return nil
}

// findBinary returns name's path from PATH, else the first fallback that
// exists, else name (so the exec error names it).
func findBinary(name string, fallbacks ...string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, f := range fallbacks {
		if st, err := os.Stat(f); err == nil && !st.IsDir() {
			return f
		}
	}
	return name
}

func (n *Network) logf(format string, args ...any) {
	if n.opts.Logf != nil {
		n.opts.Logf("testnet: "+format, args...)
	}
}

// layout assigns names, directories and ports to every node.
func (n *Network) layout() error {
	o := n.opts
	port := o.BasePort
	add := func(name string, role Role) *Node {
		nd := &Node{Name: name, Role: role, Dir: filepath.Join(o.Dir, name)}
		nd.LogFile = filepath.Join(nd.Dir, "notice.log")
		if role == RoleAuthority || role == RoleExit {
			nd.ORPort, nd.DirPort = port, port+1
			port += 2
		}
		n.Nodes = append(n.Nodes, nd)
		return nd
	}
	for i := 0; i < nAuthorities; i++ {
		add(fmt.Sprintf("auth%d", i), RoleAuthority)
	}
	for i := 0; i < o.Exits; i++ {
		add(fmt.Sprintf("exit%d", i), RoleExit)
	}
	client := add("client", RoleClient)
	lo := netip.MustParseAddr("127.0.0.1")
	n.ControlAddr = netip.AddrPortFrom(lo, uint16(port))
	port++
	socks := o.SocksPort
	if socks == 0 {
		socks = port
	}
	n.SocksAddr = netip.AddrPortFrom(lo, uint16(socks))
	if !o.NoIPv6 && ipv6LoopbackUsable() {
		n.SocksAddrV6 = netip.AddrPortFrom(netip.IPv6Loopback(), uint16(socks))
	}
	n.CookieFile = filepath.Join(client.Dir, "control_auth_cookie")
	if o.OnionTarget != "" {
		add("onion", RoleOnion)
	}
	for _, nd := range n.Nodes {
		if err := os.MkdirAll(nd.Dir, 0o700); err != nil {
			return fmt.Errorf("testnet: %w", err)
		}
	}
	return nil
}

func ipv6LoopbackUsable() bool {
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// ports lists every TCP port the network will listen on.
func (n *Network) ports() []netip.AddrPort {
	lo := netip.MustParseAddr("127.0.0.1")
	var ps []netip.AddrPort
	for _, nd := range n.relays() {
		ps = append(ps, netip.AddrPortFrom(lo, uint16(nd.ORPort)), netip.AddrPortFrom(lo, uint16(nd.DirPort)))
	}
	ps = append(ps, n.ControlAddr, n.SocksAddr)
	if n.SocksAddrV6.IsValid() {
		ps = append(ps, n.SocksAddrV6)
	}
	return ps
}

func checkPortsFree(ps []netip.AddrPort) error {
	for _, p := range ps {
		l, err := net.Listen("tcp", p.String())
		if err != nil {
			return fmt.Errorf("testnet: port %v is not free (another network still running? choose another BasePort): %w", p, err)
		}
		l.Close()
	}
	return nil
}

func (n *Network) relays() []*Node {
	var rs []*Node
	for _, nd := range n.Nodes {
		if nd.Role == RoleAuthority || nd.Role == RoleExit {
			rs = append(rs, nd)
		}
	}
	return rs
}

func (n *Network) node(role Role) *Node {
	for _, nd := range n.Nodes {
		if nd.Role == role {
			return nd
		}
	}
	return nil
}

// Close stops every tor of the network (SIGTERM, then SIGKILL after 5 s) and
// waits for them. It is safe to call more than once.
func (n *Network) Close() error {
	n.closeOnce.Do(func() {
		var running []*proc
		for _, nd := range n.Nodes {
			if nd.proc != nil {
				nd.proc.signal(sigTERM)
				running = append(running, nd.proc)
			}
		}
		var errs []error
		for _, p := range running {
			if err := p.stop(5 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		n.closeErr = errors.Join(errs...)
		if n.spawnReq != nil {
			close(n.spawnReq)
		}
	})
	return n.closeErr
}

// Dir is the network's working directory.
func (n *Network) Dir() string { return n.opts.Dir }

// Env returns KEY=VALUE lines describing the network (for scripts).
func (n *Network) Env() []string {
	env := []string{
		"SOCKS=" + n.SocksAddr.String(),
		"SOCKS_HOST=" + n.SocksAddr.Addr().String(),
		fmt.Sprintf("SOCKS_PORT=%d", n.SocksAddr.Port()),
	}
	if n.SocksAddrV6.IsValid() {
		env = append(env, "SOCKS6="+n.SocksAddrV6.String())
	}
	env = append(env,
		"CONTROL="+n.ControlAddr.String(),
		"CONTROL_COOKIE="+n.CookieFile,
	)
	if n.OnionHost != "" {
		env = append(env, "ONION="+n.OnionHost)
	}
	var logs []string
	for _, nd := range n.Nodes {
		logs = append(logs, nd.LogFile)
	}
	env = append(env, "TOR_LOGS="+strings.Join(logs, ":"))
	return env
}
