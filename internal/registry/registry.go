// Package registry has one job: keep the thread-safe registry of the sockets
// the supervisor has proxied through Tor, keyed by SO_COOKIE. It implements
// the torsocks locking design (one "registry lock", immutable connection
// objects, an atomic reference count starting at 1); docs/registry.md maps
// every step of that design to the code below.
//
// Locks: Registry.mu (the registry lock) guards the map and the bookkeeping
// next to it (gen, peak, and the writes of the atomic length) and nothing
// else. It is never held across a system call, a blocking call, a call to
// code outside this package (release functions, the live callback of
// Reclaim), or a Put. A Conn has no lock: its fields never change, and its
// reference count is atomic.
package registry

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/gotorsocks/torsocks/internal/sockdiag"
)

// ErrExists is returned by Add for a cookie that is already registered: a live
// socket is proxied at most once.
var ErrExists = errors.New("registry: socket already registered")

// Conn is one proxied socket. Its exported fields are set by NewConn and must
// never be modified afterwards (the design requires immutable connection
// objects: they are read without any lock); only the unexported reference
// count changes, atomically.
type Conn struct {
	// Cookie is the socket's SO_COOKIE: unique for the socket's life and
	// never reused, so a dup()ed descriptor, a forked child or a process the
	// socket was passed to over SCM_RIGHTS finds the same entry.
	Cookie uint64
	// Dest is the destination the program asked for: what getpeername must
	// return. For a stand-in address (.onion) it is the stand-in.
	Dest netip.AddrPort
	// Host is the name sent to Tor in CONNECT when Dest is a stand-in, ""
	// for a plain IP destination.
	Host string
	// Sock is the socket as the kernel knows it (family, local and peer addresses, cookie): what
	// the sweeper looks it up by (sockdiag.Prober). Zero if the caller did not give it.
	Sock sockdiag.Socket

	refs    atomic.Int32 // references held: the registry's (while registered) plus one per Lookup not yet Put
	release func()       // runs once, when refs drops to 0: the design's "free"
}

// NewConn returns a connection object holding one reference (seed "add" step
// 2: refcount = 1). Once added to a registry that reference is the registry's;
// if Add fails it is the caller's, to Put. release, which may be nil, runs
// exactly once, when the last reference is dropped, and outside the registry
// lock.
func NewConn(cookie uint64, dest netip.AddrPort, host string, release func()) *Conn {
	return NewConnSock(sockdiag.Socket{Cookie: cookie}, dest, host, release)
}

// NewConnSock is NewConn for a socket whose addresses are known (sockdiag.SocketOf): a
// probing sweeper (NewProbingSweeper) looks it up by them. Its Cookie is sock.Cookie.
func NewConnSock(sock sockdiag.Socket, dest netip.AddrPort, host string, release func()) *Conn {
	c := &Conn{Cookie: sock.Cookie, Dest: dest, Host: host, Sock: sock, release: release}
	c.refs.Store(1) // add 2) new_conn refcount = 1
	return c
}

// Put drops one reference (seed "lookup" step 7, "destroy" step 6:
// atomic_dec_return). The call that brings the count to 0 runs release (seed
// "lookup" step 8, "destroy" step 7: free). Putting more references than were
// taken is a bug in the caller and panics.
func (c *Conn) Put() {
	n := c.refs.Add(-1) // lookup 7), destroy 6) if atomic_dec_return(conn refcount) == 0:
	if n == 0 && c.release != nil {
		c.release() // lookup 8), destroy 7) free conn
	}
	if n < 0 {
		panic(fmt.Sprintf("registry: Put on released connection (cookie %d, refs %d)", c.Cookie, n))
	}
}

// entry is a map value: the connection and the generation of the Add that
// inserted it (see Generation).
type entry struct {
	conn *Conn
	gen  uint64
}

// Shrink rule: Go maps never give memory back when entries are deleted. When,
// after a removal, the map holds at most 1/shrinkRatio of the most entries it
// has held since it was last built (its peak), and that peak was at least
// shrinkMinPeak, the map is rebuilt at its current size. The copy costs at
// most peak/shrinkRatio insertions and follows at least
// peak*(shrinkRatio-1)/shrinkRatio deletions, so it is O(1) per deletion.
const (
	shrinkRatio   = 8
	shrinkMinPeak = 4096
)

// Registry is the connection registry: a hash table of connection objects
// indexed by SO_COOKIE. All its methods may be called from any goroutine.
type Registry struct {
	mu   sync.Mutex       // the registry lock: guards m, gen, peak, and writes of n
	m    map[uint64]entry // registered connections by cookie
	gen  uint64           // number of successful Adds so far
	peak int              // most entries m has held since it was made
	n    atomic.Int64     // len(m); written with mu held, read without it by Len
}

// New returns an empty registry.
func New() *Registry {
	return &Registry{m: make(map[uint64]entry)}
}

// Add registers c (seed "add"). The registry takes over the reference c was
// created with (NewConn's refcount of 1) and drops it in Destroy or Reclaim.
// A cookie already registered is refused with ErrExists and c is left to the
// caller, who should Put it; a socket that is connected anew after its old
// connection is gone is registered again by Destroy, then Add.
func (r *Registry) Add(c *Conn) error {
	if c.refs.Load() < 1 {
		panic(fmt.Sprintf("registry: Add of a released connection (cookie %d)", c.Cookie))
	}
	r.mu.Lock()                       // add 1) lock(registry)
	if _, dup := r.m[c.Cookie]; dup { // add, the seed's "lookup for duplicates": refuse
		r.mu.Unlock()
		return ErrExists
	}
	r.gen++
	r.m[c.Cookie] = entry{conn: c, gen: r.gen} // add 3) add to registry
	r.peak = max(r.peak, len(r.m))
	r.n.Store(int64(len(r.m)))
	r.mu.Unlock() // add 4) unlock(registry)
	return nil
}

// Lookup returns the connection registered for cookie with one more reference
// taken for the caller, who MUST Put it when done, or nil if there is none
// (seed "lookup" steps 1-5; the caller's use is step 6, its Put steps 7-8).
// The reference keeps the object valid, and its release from running, even if
// the entry is destroyed meanwhile.
func (r *Registry) Lookup(cookie uint64) *Conn {
	r.mu.Lock()          // lookup 1) lock(registry)
	e, ok := r.m[cookie] // lookup 2) conn = lookup
	if ok {              // lookup 3) if conn:
		e.conn.refs.Add(1) // lookup 4) atomic_inc(conn refcount)
	}
	r.mu.Unlock() // lookup 5) unlock(registry)
	return e.conn
}

// Destroy removes the connection registered for cookie and drops the
// registry's reference to it (seed "destroy"). It reports whether there was
// one. A holder of a Lookup reference keeps using the object; the last Put,
// here or there, runs its release.
func (r *Registry) Destroy(cookie uint64) bool {
	r.mu.Lock()          // destroy 1) lock(registry)
	e, ok := r.m[cookie] // destroy 2) conn = lookup
	if ok {              // destroy 3) if conn:
		delete(r.m, cookie) // destroy 4) remove from registry (no refcount increment)
		r.removedLocked()
	}
	r.mu.Unlock() // destroy 5) unlock(registry)
	if !ok {
		return false
	}
	e.conn.Put() // destroy 6), 7): see Put
	return true
}

// Len returns the number of registered connections, without taking the
// registry lock.
func (r *Registry) Len() int {
	return int(r.n.Load())
}

// Generation returns the number of successful Adds so far. Every entry
// registered after the call gets a larger generation; see ReclaimUpTo.
func (r *Registry) Generation() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gen
}

// Reclaim destroys every registered connection whose cookie live reports as
// not live, and returns how many it destroyed. It is ReclaimUpTo with no
// generation limit: live must therefore answer for sockets registered up to
// the moment Reclaim returns. A live set computed earlier (a sock_diag dump)
// can miss a socket connected and registered after it was taken; use
// Generation and ReclaimUpTo for that.
func (r *Registry) Reclaim(live func(cookie uint64) bool) int {
	return r.ReclaimUpTo(math.MaxUint64, live)
}

// ReclaimUpTo destroys every connection registered by an Add of generation
// at most gen (see Generation) whose cookie live reports as not live, and
// returns how many it destroyed. A sweeper reads gen before it takes the live
// set, so that a connection registered while the set was being taken, which
// the set may not list, is left alone.
//
// It works in three passes so that live, which may be slow, runs without the
// registry lock: the candidates are copied under the lock, live is asked
// outside it, and the dead ones are removed under the lock again, each only if
// the registry still holds the very same object (a Destroy and an Add of the
// same cookie may have happened in between). The registry's references are
// then dropped outside the lock, like Destroy's.
func (r *Registry) ReclaimUpTo(gen uint64, live func(cookie uint64) bool) int {
	return r.ReclaimConnsUpTo(gen, func(c *Conn) bool { return live(c.Cookie) })
}

// ReclaimConnsUpTo is ReclaimUpTo with live asked about each connection object (whose Sock a
// probe looks up) rather than its cookie.
func (r *Registry) ReclaimConnsUpTo(gen uint64, live func(c *Conn) bool) int {
	type cand struct {
		cookie uint64
		conn   *Conn
	}
	cands := make([]cand, 0, r.Len()) // allocated before taking the lock
	r.mu.Lock()                       // pass 1, locked: copy the candidates
	for cookie, e := range r.m {
		if e.gen <= gen {
			cands = append(cands, cand{cookie, e.conn})
		}
	}
	r.mu.Unlock()

	dead := cands[:0]
	for _, c := range cands { // pass 2, unlocked: ask live
		if !live(c.conn) {
			dead = append(dead, c)
		}
	}
	if len(dead) == 0 {
		return 0
	}

	removed := dead[:0]
	r.mu.Lock() // pass 3, locked: destroy 1)-5) for each dead entry still there
	for _, c := range dead {
		if e, ok := r.m[c.cookie]; ok && e.conn == c.conn {
			delete(r.m, c.cookie) // destroy 4)
			removed = append(removed, c)
		}
	}
	r.removedLocked()
	r.mu.Unlock()

	for _, c := range removed {
		c.conn.Put() // destroy 6), 7), unlocked
	}
	return len(removed)
}

// removedLocked updates the bookkeeping after deletions and applies the shrink
// rule. r.mu must be held.
func (r *Registry) removedLocked() {
	n := len(r.m)
	if r.peak >= shrinkMinPeak && n*shrinkRatio <= r.peak {
		m := make(map[uint64]entry, n)
		for k, v := range r.m {
			m[k] = v
		}
		r.m = m
		r.peak = n
	}
	r.n.Store(int64(n))
}
