// Package dns has one job: answer a traced program's DNS queries without a
// single packet leaving the machine except through Tor. It is the pure logic of
// the supervisor's DNS responder: a query message in, a response message out
// (Server.Answer), plus the stand-in lookup of the connect path
// (Server.StandIn). Sockets are the caller's business.
//
// How names are answered:
//
//   - localhost, localhost.localdomain, ip6-localhost, ip6-loopback and
//     *.localhost: A 127.0.0.1, AAAA ::1, locally (as torsocks does).
//   - names in /etc/hosts (read once by New): their addresses, locally; a
//     family the file does not list gets NODATA.
//   - *.onion: A from the Onion table, AAAA from the Map6 table, in both modes
//     (Tor refuses to RESOLVE onion names; a connect to the stand-in sends the
//     name to Tor).
//   - map mode (the default): A gets a stand-in from Map4, AAAA one from Map6,
//     at once. Every well-formed name with at least two labels "exists": the
//     exit resolves it when the program connects to the stand-in, and a name
//     that does not exist fails there (the connect gets "host unreachable"),
//     exactly like Tor's own AutomapHostsOnResolve. Stand-in answers carry a
//     TTL of StandInTTL (60 s) so that programs ask again: every answer
//     refreshes the entry's recency in its table, which keeps names in use from
//     being reused.
//   - resolve mode: A and AAAA through Resolver.Resolve (Tor's RESOLVE), which
//     gives one address: an IPv4 result answers A and gives AAAA NODATA, an
//     IPv6 result the other way round. Not found (Tor's reply 4) is NXDOMAIN,
//     any other failure (Tor unreachable, time-out) SERVFAIL. Results are
//     cached (positive for CacheTTL, NXDOMAIN for min(CacheTTL, 10 s), failures
//     not at all) and concurrent identical lookups share one Tor request.
//   - PTR (in-addr.arpa, ip6.arpa): stand-ins from their table (an unallocated
//     stand-in is NXDOMAIN), /etc/hosts, loopback addresses "localhost";
//     other non-global addresses (private, link-local, ULA...) NXDOMAIN without
//     asking anyone; global addresses through Resolver.ResolvePTR (Tor's
//     RESOLVE_PTR, cached like A) when a Resolver is set, else NXDOMAIN.
//   - names that are not host names (characters other than letters, digits,
//     '-' and '_', empty labels) and single-label names other than the local
//     ones: NXDOMAIN (no exit could resolve them). A/AAAA for names under
//     .arpa: NODATA.
//   - every other type (MX, TXT, SRV, HTTPS, SVCB, NS, SOA, CNAME, ANY...):
//     NOERROR with no answer (NODATA) at once, so no program waits for a
//     time-out. Class other than IN, opcode other than QUERY: NOTIMP. No
//     question or several: FORMERR. EDNS version other than 0: BADVERS.
//   - messages with the QR bit set (responses) and messages shorter than a DNS
//     header are dropped (nil), so that no loop between responders can start.
//
// Locks: Server's configuration is immutable after New and read without a
// lock. The stand-in tables have their own lock (package standin). The resolve
// cache has one lock, cache.mu, guarding its map, recency list and the map of
// lookups in flight; it is never held across a Resolver call or while waiting.
package dns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gotorsocks/torsocks/internal/standin"
	"golang.org/x/net/dns/dnsmessage"
)

// Mode is how names other than .onion and local names are answered.
type Mode string

// Modes.
const (
	// ModeMap answers A and AAAA with stand-in addresses; the exit resolves the
	// name at connect time.
	ModeMap Mode = "map"
	// ModeResolve answers with the addresses Tor's RESOLVE returns (torsocks'
	// behaviour).
	ModeResolve Mode = "resolve"
)

// Default ranges and sizes.
var (
	// DefaultOnionRange is torsocks' OnionAddrRange default.
	DefaultOnionRange = netip.MustParsePrefix("127.42.42.0/24")
	// DefaultMap4Range is Tor's VirtualAddrNetworkIPv4 default: 4 million
	// loopback addresses, so a stand-in can never leave the machine even if a
	// connection bypassed torsocks. It does not overlap DefaultOnionRange.
	DefaultMap4Range = netip.MustParsePrefix("127.192.0.0/10")
	// DefaultMap6Range is a unique local address (fd00::/8, never routed on the
	// Internet) /48; 74:6f72:736b spells "torsk".
	DefaultMap6Range = netip.MustParsePrefix("fd74:6f72:736b::/48")
)

const (
	// DefaultCacheSize is the resolve mode cache's default number of entries.
	DefaultCacheSize = 1024
	// DefaultCacheTTL is how long a resolve mode answer is cached by default.
	DefaultCacheTTL = 60 * time.Second
	// maxNegativeTTL caps how long NXDOMAIN from Tor is cached.
	maxNegativeTTL = 10 * time.Second
	// StandInTTL is the TTL of stand-in, localhost and /etc/hosts answers, in seconds.
	StandInTTL = 60
	// lookupTimeout bounds one shared Resolver call (the waiting queries give up
	// earlier if their own context ends).
	lookupTimeout = 60 * time.Second

	// MaxUDPSize is the maxSize for a query received over UDP.
	MaxUDPSize = 512
	// MaxTCPSize is the maxSize for a query received over TCP.
	MaxTCPSize = 65535
	// maxEDNSSize caps the UDP size a query's OPT record can ask for, and is the
	// size announced in our OPT records.
	maxEDNSSize = 4096
)

// ErrNotFound is a Resolver's error for a name (or address) that does not
// exist: Tor's reply 4 to RESOLVE or RESOLVE_PTR. It becomes NXDOMAIN; any other
// error becomes SERVFAIL. Test with errors.Is.
var ErrNotFound = errors.New("dns: not found")

// Resolver resolves names through Tor.
type Resolver interface {
	// Resolve returns one address for name (Tor's RESOLVE, 0xF0): IPv4, or IPv6
	// if the name has only that.
	Resolve(ctx context.Context, name string) (netip.Addr, error)
	// ResolvePTR returns the name of a (Tor's RESOLVE_PTR, 0xF1).
	ResolvePTR(ctx context.Context, a netip.Addr) (string, error)
}

// Options configure a Server.
type Options struct {
	// Mode is ModeMap (the default when empty) or ModeResolve.
	Mode Mode
	// Onion hands out the stand-ins of .onion names (A). Nil: a table on
	// DefaultOnionRange.
	Onion *standin.Table
	// Map4 hands out map mode A stand-ins. Nil: a table on DefaultMap4Range.
	// Not used in resolve mode.
	Map4 *standin.Table
	// Map6 hands out AAAA stand-ins (map mode, and .onion in both modes). Nil: a
	// table on DefaultMap6Range.
	Map6 *standin.Table
	// Resolver resolves through Tor: required in resolve mode; used for PTR of
	// real addresses in both modes; may be nil in map mode (PTR of real
	// addresses is then NXDOMAIN).
	Resolver Resolver
	// CacheSize is the number of resolve cache entries (default DefaultCacheSize).
	CacheSize int
	// CacheTTL is how long resolved answers are cached (default DefaultCacheTTL).
	CacheTTL time.Duration
	// ReadHosts returns the contents of /etc/hosts; nil reads /etc/hosts (a
	// missing file is no error). Called once, by New.
	ReadHosts func() ([]byte, error)
	// Logf, if set, receives a line for each problem (full table, resolver
	// failure).
	Logf func(format string, args ...any)
	// Reclaim, if set, is called when a stand-in table is full, before one more try: it
	// releases the stand-ins held by connections the program has closed (the supervisor's
	// registry only notices closed sockets when it sweeps).
	Reclaim func()
}

// Server answers DNS queries. Its methods may be called from any goroutine.
type Server struct {
	mode              Mode
	onion, map4, map6 *standin.Table // map4 is nil in resolve mode
	resolver          Resolver
	hosts             hostsTable
	cache             *cache
	logf              func(format string, args ...any)
	reclaim           func()

	fullMu     sync.Mutex // guards fullLogged
	fullLogged time.Time  // when a full table was last logged
}

// New returns a Server for opts.
func New(opts Options) (*Server, error) {
	s := &Server{mode: opts.Mode, onion: opts.Onion, map4: opts.Map4, map6: opts.Map6, resolver: opts.Resolver, logf: opts.Logf, reclaim: opts.Reclaim}
	if s.mode == "" {
		s.mode = ModeMap
	}
	if s.mode != ModeMap && s.mode != ModeResolve {
		return nil, fmt.Errorf("dns: unknown mode %q (want %q or %q)", opts.Mode, ModeMap, ModeResolve)
	}
	if s.mode == ModeResolve && s.resolver == nil {
		return nil, errors.New("dns: resolve mode needs a Resolver")
	}
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}
	var err error
	mk := func(t **standin.Table, p netip.Prefix) {
		if *t == nil && err == nil {
			*t, err = standin.New(p)
		}
	}
	mk(&s.onion, DefaultOnionRange)
	mk(&s.map6, DefaultMap6Range)
	if s.mode == ModeMap {
		mk(&s.map4, DefaultMap4Range)
	} else {
		s.map4 = nil
	}
	if err != nil {
		return nil, err
	}
	if !s.onion.Prefix().Addr().Is4() {
		return nil, fmt.Errorf("dns: onion range %v is not IPv4", s.onion.Prefix())
	}
	if s.map4 != nil && !s.map4.Prefix().Addr().Is4() {
		return nil, fmt.Errorf("dns: map range %v is not IPv4", s.map4.Prefix())
	}
	if !s.map6.Prefix().Addr().Is6() {
		return nil, fmt.Errorf("dns: IPv6 map range %v is not IPv6", s.map6.Prefix())
	}
	if s.map4 != nil && s.map4.Prefix().Overlaps(s.onion.Prefix()) {
		return nil, fmt.Errorf("dns: onion range %v overlaps map range %v", s.onion.Prefix(), s.map4.Prefix())
	}
	if s.map4 == s.onion || s.map6 == s.onion || s.map6 == s.map4 {
		return nil, errors.New("dns: the stand-in tables must be distinct")
	}
	size, ttl := opts.CacheSize, opts.CacheTTL
	if size <= 0 {
		size = DefaultCacheSize
	}
	if ttl <= 0 {
		ttl = DefaultCacheTTL
	}
	s.cache = newCache(size, ttl, min(ttl, maxNegativeTTL))

	read := opts.ReadHosts
	if read == nil {
		read = func() ([]byte, error) {
			b, err := os.ReadFile("/etc/hosts")
			if errors.Is(err, os.ErrNotExist) {
				return nil, nil
			}
			return b, err
		}
	}
	b, err := read()
	if err != nil {
		s.logf("DNS: cannot read /etc/hosts, its names will not be answered: %v", err)
	}
	s.hosts = parseHosts(b)
	return s, nil
}

// Mode returns the server's mode.
func (s *Server) Mode() Mode { return s.mode }

// tables returns the stand-in tables in use.
func (s *Server) tables() []*standin.Table {
	if s.map4 == nil {
		return []*standin.Table{s.onion, s.map6}
	}
	return []*standin.Table{s.onion, s.map4, s.map6}
}

// StandIn is the connect path's lookup over the stand-in ranges in use (Onion, Map4 in map mode,
// Map6): see standin.Lookup. For an allocated address a reference is held on its entry until
// Release, so the address is not reused while the connection lives. An unallocated stand-in
// (InRange, no Name) must be refused, never connected.
func (s *Server) StandIn(a netip.Addr) standin.Lookup {
	for _, t := range s.tables() {
		if t.Contains(a) {
			name, release, _ := t.Acquire(a)
			return standin.Lookup{InRange: true, Name: name, Release: release}
		}
	}
	return standin.Lookup{Release: func() {}}
}

// record is one answer: an address (A/AAAA) or a name (PTR).
type record struct {
	addr netip.Addr
	ptr  string
	ttl  uint32
}

// reply is the outcome of a question.
type reply struct {
	rcode dnsmessage.RCode
	ans   []record
}

var (
	nxdomain = reply{rcode: dnsmessage.RCodeNameError}
	servfail = reply{rcode: dnsmessage.RCodeServerFailure}
	nodata   = reply{rcode: dnsmessage.RCodeSuccess}
)

func answer(ttl uint32, a netip.Addr) reply {
	return reply{ans: []record{{addr: a, ttl: ttl}}}
}

// resolve answers one question of class IN.
func (s *Server) resolve(ctx context.Context, q dnsmessage.Question) reply {
	name := standin.Normalize(q.Name.String())
	switch q.Type {
	case dnsmessage.TypeA, dnsmessage.TypeAAAA:
		return s.resolveAddr(ctx, name, q.Type == dnsmessage.TypeAAAA)
	case dnsmessage.TypePTR:
		return s.resolvePTR(ctx, name)
	default:
		return nodata
	}
}

// resolveAddr answers A (v6 false) or AAAA (v6 true) for a normalised name.
func (s *Server) resolveAddr(ctx context.Context, name string, v6 bool) reply {
	if isLocalhost(name) {
		if v6 {
			return answer(StandInTTL, netip.IPv6Loopback())
		}
		return answer(StandInTTL, netip.AddrFrom4([4]byte{127, 0, 0, 1}))
	}
	if addrs, ok := s.hosts.byName[name]; ok {
		var r reply
		for _, a := range addrs {
			if a.Is6() == v6 {
				r.ans = append(r.ans, record{addr: a, ttl: StandInTTL})
			}
		}
		return r
	}
	if name == "" || name == "arpa" || strings.HasSuffix(name, ".arpa") {
		return nodata
	}
	if !validHost(name) || !strings.Contains(name, ".") {
		return nxdomain
	}
	if strings.HasSuffix(name, ".onion") {
		if v6 {
			return s.assign(ctx, s.map6, name)
		}
		return s.assign(ctx, s.onion, name)
	}
	if s.mode == ModeMap {
		if v6 {
			return s.assign(ctx, s.map6, name)
		}
		return s.assign(ctx, s.map4, name)
	}
	res, ttl := s.cache.do(ctx, "a "+name, func(ctx context.Context) result {
		a, err := s.resolver.Resolve(ctx, name)
		return result{addr: a.Unmap(), err: err}
	})
	switch {
	case errors.Is(res.err, errWouldWait):
		return servfail // AnswerNow gives up: this answer is not sent
	case errors.Is(res.err, ErrNotFound):
		return nxdomain
	case res.err != nil:
		s.logf("DNS: resolving %s through Tor: %v", name, res.err)
		return servfail
	case !res.addr.IsValid():
		return servfail
	case s.isStandInAddr(res.addr):
		s.logf("DNS: Tor resolved %s to %v, inside a stand-in range: answered as not found", name, res.addr)
		return nxdomain
	case res.addr.Is6() != v6:
		return nodata
	}
	return answer(ttl, res.addr)
}

func (s *Server) isStandInAddr(a netip.Addr) bool {
	for _, t := range s.tables() {
		if t.Contains(a) {
			return true
		}
	}
	return false
}

// assign answers with t's stand-in for name. A full table first gets the references of closed
// connections released (Options.Reclaim), then one more try (not under AnswerNow: a reclaim
// waits for the supervisor's sweep).
func (s *Server) assign(ctx context.Context, t *standin.Table, name string) reply {
	a, err := t.Assign(name)
	if errors.Is(err, standin.ErrFull) && s.reclaim != nil {
		if mustNotWait(ctx) {
			return servfail // AnswerNow gives up: this answer is not sent
		}
		s.reclaim()
		a, err = t.Assign(name)
	}
	if err != nil {
		s.fullMu.Lock()
		quiet := time.Since(s.fullLogged) < 10*time.Second
		if !quiet {
			s.fullLogged = time.Now()
		}
		s.fullMu.Unlock()
		if !quiet { // at most one line every 10 s: a full table makes every lookup fail
			s.logf("DNS: no stand-in address for %s in %v: %v", name, t.Prefix(), err)
		}
		return servfail
	}
	return answer(StandInTTL, a)
}

// resolvePTR answers PTR for a normalised reverse name.
func (s *Server) resolvePTR(ctx context.Context, name string) reply {
	a, ok := parseReverse(name)
	if !ok {
		return nxdomain
	}
	ptr := func(n string, ttl uint32) reply {
		if !validHost(n) {
			return nxdomain
		}
		return reply{ans: []record{{ptr: n, ttl: ttl}}}
	}
	for _, t := range s.tables() {
		if t.Contains(a) {
			if n, ok := t.Name(a); ok {
				return ptr(n, StandInTTL)
			}
			return nxdomain
		}
	}
	if n, ok := s.hosts.byAddr[a]; ok {
		return ptr(n, StandInTTL)
	}
	if a.IsLoopback() {
		return ptr("localhost", StandInTTL)
	}
	if !a.IsGlobalUnicast() || a.IsPrivate() || s.resolver == nil {
		return nxdomain
	}
	res, ttl := s.cache.do(ctx, "ptr "+a.String(), func(ctx context.Context) result {
		n, err := s.resolver.ResolvePTR(ctx, a)
		return result{name: standin.Normalize(n), err: err}
	})
	switch {
	case errors.Is(res.err, errWouldWait):
		return servfail // AnswerNow gives up: this answer is not sent
	case errors.Is(res.err, ErrNotFound):
		return nxdomain
	case res.err != nil:
		s.logf("DNS: reverse lookup of %v through Tor: %v", a, res.err)
		return servfail
	}
	return ptr(res.name, ttl)
}
